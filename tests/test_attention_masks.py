"""The attention rules' masks: a 2-D padding mask (what models configured for flash-attention pass) is causal too."""

from __future__ import annotations

import types

import pytest
import torch

from captum_mamba.rules import attention
from captum_mamba.rules.attention import AttentionRule, attention_with_rules


@pytest.mark.parametrize("mode", ["attnlrp", "cp"])
def test_a_two_dimensional_padding_mask_is_the_causal_mask_with_pads(mode):
    generator = torch.Generator().manual_seed(0)
    query, key, value = (torch.randn(2, 2, 5, 4, generator=generator, dtype=torch.float64) for _ in range(3))
    padding = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    module = types.SimpleNamespace(num_key_value_groups=1, is_causal=True, training=False)
    token = attention._ACTIVE.set(AttentionRule(mode))
    try:
        flash_style, _ = attention_with_rules(module, query, key, value, padding, scaling=0.5)
        # the same attention written out: causal, pads never attended, a softmax per query
        expected = torch.empty_like(flash_style)
        for row in range(2):
            for position in range(5):
                visible = [j for j in range(position + 1) if padding[row, j]]
                scores = 0.5 * torch.einsum("hd,hvd->hv", query[row, :, position], key[row, :, visible])
                expected[row, position] = torch.einsum("hv,hvd->hd", scores.softmax(-1), value[row, :, visible])
        causal_only, _ = attention_with_rules(module, query, key, value, None, scaling=0.5)
    finally:
        attention._ACTIVE.reset(token)
    torch.testing.assert_close(flash_style[:, :3], expected[:, :3], atol=1e-12, rtol=0)
    torch.testing.assert_close(flash_style[0], expected[0], atol=1e-12, rtol=0)
    torch.testing.assert_close(flash_style[0], causal_only[0], atol=1e-12, rtol=0)  # no pads: the causal mask

"""Defects met when the project was tried as a new user would (issue 16, item 5).

Each test here failed on the code before its fix (commit cce9ba7) and uses the public API only.
"""

from __future__ import annotations

import types

import pytest
import torch
from torch import nn
from transformers.activations import SiLUActivation

from captum_mamba import LayerMambaLRP, MambaLRP, canonize, mamba_lrp_rules
from captum_mamba.canonizers import SelectiveSSMCore
from captum_mamba.kernels.cuda import use_kernel
from captum_mamba.rules import GradientRule

from conftest import embeddings_of, tiny_lm, token_ids


@pytest.mark.parametrize("activation", [nn.SiLU, SiLUActivation])
def test_silu_modules_get_the_silu_rule(activation):
    torch.manual_seed(0)
    first, second = nn.Linear(3, 5, bias=False).double(), nn.Linear(5, 1, bias=False).double()
    model = nn.Sequential(first, activation(), second)
    x = torch.randn(4, 3, dtype=torch.float64)
    relevance = MambaLRP(model).attribute(x)
    # Eq. 4 by hand: silu(h) = h * [sigmoid(h)]const, so R_i = x_i * sum_j W1_ji sigmoid(h_j) W2_j
    h = x @ first.weight.T
    expected = x * ((torch.sigmoid(h) * second.weight[0]) @ first.weight)
    torch.testing.assert_close(relevance, expected, atol=1e-12, rtol=0)
    torch.testing.assert_close(relevance.sum(1), model(x)[:, 0].detach(), atol=1e-12, rtol=0)


def test_canonize_refuses_an_ssm_override_it_cannot_apply():
    model = tiny_lm(seed=1)
    with pytest.raises(ValueError, match="SSM core.*GradientRule"):
        with canonize(model, rules={SelectiveSSMCore: GradientRule}):
            pass


def test_float64_cuda_tensors_take_the_pytorch_path():
    float64_cuda = types.SimpleNamespace(is_cuda=True, dtype=torch.float64)
    assert not use_kernel(float64_cuda, lambda: None, "auto")
    with pytest.raises(ValueError, match="float64"):
        use_kernel(float64_cuda, lambda: None, "cuda")
    assert use_kernel(types.SimpleNamespace(is_cuda=True, dtype=torch.bfloat16), lambda: None, "auto")


def _right_padded(ids: torch.Tensor, lengths: list[int]) -> torch.Tensor:
    mask = torch.zeros_like(ids)
    for row, n in enumerate(lengths):
        mask[row, :n] = 1
    return mask


def test_a_given_attention_mask_makes_the_last_real_token_the_default_explained_position():
    model = tiny_lm(seed=2)
    ids = token_ids(batch=2, length=7, seed=3)
    mask = _right_padded(ids, [7, 4])
    embeds = embeddings_of(model, ids)
    relevance = MambaLRP(model).attribute(embeds, target=5, additional_forward_args=mask)
    alone = MambaLRP(model).attribute(embeds[1:, :4], target=5)
    torch.testing.assert_close(relevance[1, :4], alone[0], atol=1e-10, rtol=0)
    assert torch.all(relevance[1, 4:] == 0)  # the pad positions are not explained
    tokens = LayerMambaLRP(model, model.backbone.embeddings).attribute(ids, target=5, additional_forward_args=mask)
    torch.testing.assert_close(tokens.sum(-1)[1, :4], alone[0].sum(-1), atol=1e-10, rtol=0)


def test_keyword_arguments_given_as_a_dict():
    model = tiny_lm(seed=4)
    ids = token_ids(batch=2, length=6, seed=5)
    mask = _right_padded(ids, [6, 3])
    embeds = embeddings_of(model, ids)
    as_dict = MambaLRP(model).attribute(embeds, target=2, additional_forward_args={"attention_mask": mask})
    as_tensor = MambaLRP(model).attribute(embeds, target=2, additional_forward_args=mask)
    torch.testing.assert_close(as_dict, as_tensor, atol=0, rtol=0)


@pytest.mark.parametrize(
    "case, message",
    [
        ("empty_sequence", "sequence is empty"),
        ("empty_batch", "batch is empty"),
        ("2d_embeddings", r"expected embeddings \(batch, length, hidden\)"),
        ("1d_ids", r"expected token ids \(batch, length\)"),
    ],
)
def test_bad_input_shapes_raise_a_value_error_naming_the_expected_shape(case, message):
    model = tiny_lm(seed=6)
    embeds = embeddings_of(model, token_ids(batch=2, length=5))
    with pytest.raises(ValueError, match=message):
        if case == "empty_sequence":
            MambaLRP(model).attribute(embeds[:, :0], target=1)
        elif case == "empty_batch":
            MambaLRP(model).attribute(embeds[:0], target=1)
        elif case == "2d_embeddings":
            MambaLRP(model).attribute(embeds[0], target=1)
        else:
            LayerMambaLRP(model, model.backbone.embeddings).attribute(token_ids(batch=1, length=5)[0], target=1)


def test_half_precision_delta_is_formed_in_float32():
    model = tiny_lm(seed=7, dtype=torch.bfloat16)
    embeds = embeddings_of(model, token_ids(batch=2, length=6, seed=8))
    relevance, delta = MambaLRP(model).attribute(embeds, target=3, return_convergence_delta=True)
    with torch.no_grad():
        plain = model(inputs_embeds=embeds).logits[:, -1, 3].float()  # a separate forward pass
        with mamba_lrp_rules(model):  # ... and one through the same (rule) computation
            ruled = model(inputs_embeds=embeds).logits[:, -1, 3].float()
    assert delta.dtype == torch.float32
    torch.testing.assert_close(ruled, plain, atol=2e-2, rtol=0)  # bfloat16 rounding of two computations
    torch.testing.assert_close(delta, relevance.float().sum((1, 2)) - ruled, atol=1e-6, rtol=0)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_the_shipped_classifier_runs_and_is_explained_in_half_precision(dtype):
    """The default classifier in half precision (its backbone keeps a float32 residual stream) gave a dtype error."""
    from captum_mamba.default import SAMPLE_SENTENCES, encode, load_default_classifier

    model, tokenizer = load_default_classifier(dtype=dtype)
    ids, mask = encode(tokenizer, SAMPLE_SENTENCES[:2])
    logits = model(input_ids=ids, attention_mask=mask).logits
    assert logits.dtype == dtype and torch.isfinite(logits).all()
    relevance = LayerMambaLRP(model, model.get_input_embeddings()).attribute(
        ids, target=1, additional_forward_args=mask
    )
    assert torch.isfinite(relevance.float()).all() and relevance.float().abs().sum() > 0

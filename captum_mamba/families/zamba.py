r"""Hugging Face Zamba and Zamba2 (Zyphra): Mamba layers and one shared attention block.

Every few layers a hybrid layer runs the shared attention block on ``concat(h, e)`` — the hidden
state and the original input embeddings ``e`` — (``norm``, attention, ``norm``, gated MLP, no
residual inside), projects its output back with the layer's own ``linear`` and adds it to the
input of the layer's Mamba mixer: ``h + mixer(norm(h + linear(block(concat(h, e)))))``.
Concatenation, the projection and the sums are linear, so relevance passes them as it is
(LRP-0): the embeddings receive relevance through the residual stream and through every
concatenated copy, and an explanation at the embedding layer collects both.

* **Zamba**: Mamba-1 mixers with several heads (:class:`ZambaMixerLayout`), attention without
  rotary embeddings and with the scaling ``(head_dim / 2) ** -0.5``.
* **Zamba2**: Mamba-2 mixers (:class:`~captum_mamba.mixers.Mamba2Layout`), optional rotary
  embeddings, and per-use LoRA adapters on the shared block's ``q``/``k``/``v`` projections
  (linear, inside the attention module's own forward) and on its MLP's fused ``gate_up_proj``
  (:class:`Zamba2MLPRule`).

Both use GELU MLPs by default (:class:`~captum_mamba.rules.GELUIdentityRule`).

Their tiny test configurations (``config``) have four layers, two of them hybrid layers (two uses
of the shared block), and SDPA attention: Zamba with two Mamba-1 heads per mixer, Zamba2 with
two groups, rotary embeddings and per-use adapters. Zamba2's convolutions always have a bias (no
setting removes it; zero it for a bias-free model), and the shared block is one module only once
a checkpoint is loaded (transformers ties the copies then; a model built from a configuration has
one copy per hybrid layer). ``random_config`` draws the sizes, the layer pattern and the heads
and groups (Zamba2: also the adapters, rotary embeddings, the number of shared blocks) (see
:mod:`captum_mamba.families.tiny`).
"""

from __future__ import annotations

import random
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import Zamba2Config, ZambaConfig
from transformers.activations import GELUActivation, SiLUActivation
from transformers.models.zamba import modeling_zamba
from transformers.models.zamba2 import modeling_zamba2

from captum_mamba.families.declaration import ModelFamily
from captum_mamba.families.tiny import FLOAT64_ATTENTION, VOCAB, divisor
from captum_mamba.mixers.calls import MixerCall, check_padding, check_prefill, mask_padding
from captum_mamba.mixers.layouts import Mamba1Layout, Mamba2Layout
from captum_mamba.mixers.ops import MixerOps
from captum_mamba.rules.attention import AttentionRule
from captum_mamba.rules.block import OwnForwardRule
from captum_mamba.rules.gelu import GELUIdentityRule
from captum_mamba.rules.mlp import GatedMLPRule
from captum_mamba.rules.norm import GatedRMSNormRule, RMSNormRule
from captum_mamba.rules.silu import SiLUIdentityRule


class ZambaMixerLayout(Mamba1Layout):
    r"""
    Zamba's multi-head Mamba-1 mixer: ``in_proj`` interleaves the SSM input and the gate (even
    channels ``x``, odd channels ``z``); after the depthwise causal conv and its SiLU, the
    ``n_mamba_heads`` groups of ``mamba_head_dim`` channels each run their own selection
    (``x_proj_weight[h]``, ``dt_proj_weight[h]``, ``dt_proj_bias[h]``), scan (``A_log[h]``,
    ``D[h]``) and gate; the heads' outputs are concatenated before ``out_proj``.

    Each head is a Mamba-1 mixer under the MambaLRP rules (SiLU rule, SSM rule with
    ``delta``, ``B``, ``C`` held constant, half rule on the gate); the channel split and the
    concatenation pass relevance as they are.
    """

    held_constant = ()  # the selection's weights are parameters of the mixer, not modules

    def mix(self, mixer: nn.Module, ops: MixerOps, call: MixerCall) -> Tensor:
        self.check(mixer)
        hidden, mask, cache = call.hidden_states, call.attention_mask, call.cache
        dtype = hidden.dtype
        check_prefill(cache, self.layer_index(mixer))
        check_padding(mask, mixer.in_proj)
        projected = mixer.in_proj(mask_padding(hidden, mask))
        x, z = projected[..., 0::2], projected[..., 1::2]  # channel 2c is x's channel c, 2c + 1 is z's
        u = mask_padding(ops.activated_conv(mixer, x, cache), mask)
        rank, state = self.sizes(mixer)
        width = mixer.mamba_head_dim
        outputs, last_states = [], []
        for head in range(mixer.n_mamba_heads):
            channels = slice(head * width, (head + 1) * width)
            u_head = u[..., channels]
            # the selection: on the held-constant path of the SSM rule
            dt, B, C = torch.split(u_head @ mixer.x_proj_weight[head].transpose(0, 1), [rank, state, state], dim=-1)
            delta = mixer.dt_proj_weight[head] @ dt.transpose(1, 2)  # (batch, width, length)
            if mixer.dt_proj_bias is not None:
                delta = delta + mixer.dt_proj_bias[head].float()[:, None]
            delta = F.softplus(delta).transpose(1, 2)
            A = -torch.exp(mixer.A_log[head].float())
            y, last_state = ops.scan(mixer, u_head, delta, A, B, C, mixer.D[head].float())
            outputs.append(ops.gate(mixer, y, ops.silu(mixer, z[..., channels], "gate")))
            last_states.append(last_state)
        if cache is not None and hasattr(cache, "update_recurrent_state"):
            cache.update_recurrent_state(torch.stack(last_states, dim=1).to(dtype), self.layer_index(mixer))
        return mixer.out_proj(torch.cat(outputs, dim=-1).to(dtype))


class Zamba2MLPRule(GatedMLPRule):
    r"""
    Zamba2's MLP: one fused ``gate_up_proj`` plus the adapter of the hybrid layer that calls the
    shared block (``gate_up_proj_adapter_list``, chosen by ``layer_idx``), split into the gate and
    value branches; then the gated-MLP rule (activation rule, half rule on the product).
    """

    def branches(self, mlp: nn.Module, x: Tensor, layer_idx: int | None = None, **kwargs: Any) -> tuple[Tensor, Tensor]:
        adapter = mlp.gate_up_proj_adapter_list[mlp.layer_dic[layer_idx]]
        gate, values = (mlp.gate_up_proj(x) + adapter(x)).chunk(2, dim=-1)
        return gate, values


#: The tiny configurations' layers: Mamba, hybrid, Mamba, hybrid (two uses of the shared block).
TINY_LAYERS = ["linear_attention", "hybrid", "linear_attention", "hybrid"]


def tiny_zamba_config(**overrides: Any) -> ZambaConfig:
    """A tiny bias-free Zamba configuration for tests: two Mamba-1 heads per mixer, two uses of the shared block."""
    settings: dict[str, Any] = dict(
        vocab_size=VOCAB,
        hidden_size=12,
        intermediate_size=20,
        num_hidden_layers=len(TINY_LAYERS),
        layers_block_type=TINY_LAYERS,
        num_attention_heads=4,
        num_key_value_heads=2,
        n_mamba_heads=2,
        mamba_d_state=4,
        mamba_dt_rank=3,
        mamba_conv_bias=False,
        use_cache=False,
        tie_word_embeddings=False,
        **FLOAT64_ATTENTION,
    )
    return ZambaConfig(**{**settings, **overrides})


def tiny_zamba2_config(**overrides: Any) -> Zamba2Config:
    """A tiny Zamba2 configuration for tests (bias-free once its conv biases are zeroed): two groups, rotary, adapters."""
    settings: dict[str, Any] = dict(
        vocab_size=VOCAB,
        hidden_size=12,
        intermediate_size=20,
        num_hidden_layers=len(TINY_LAYERS),
        layers_block_type=TINY_LAYERS,
        num_attention_heads=4,
        num_key_value_heads=4,
        n_mamba_heads=4,
        mamba_d_state=4,
        mamba_ngroups=2,
        chunk_size=4,
        num_mem_blocks=1,
        use_shared_attention_adapter=True,
        adapter_rank=2,
        use_mem_rope=True,
        use_cache=False,
        tie_word_embeddings=False,
        **FLOAT64_ATTENTION,
    )
    return Zamba2Config(**{**settings, **overrides})


def _layer_pattern(rng: random.Random) -> list[str]:
    return [rng.choice(["linear_attention", "hybrid"]) for _ in range(rng.randint(1, 4))]


def random_zamba_config(rng: random.Random) -> dict[str, Any]:
    """Random sizes for the configuration sweep: the layer pattern, attention heads, Mamba heads and sizes."""
    hidden, expand = rng.choice([4, 6, 8]), rng.choice([1, 2])
    heads = divisor(rng, 2 * hidden)  # over the concatenation (2 * hidden)
    layers = _layer_pattern(rng)
    return dict(
        hidden_size=hidden,
        intermediate_size=rng.choice([4, 8]),
        num_hidden_layers=len(layers),
        layers_block_type=layers,
        num_attention_heads=heads,
        num_key_value_heads=divisor(rng, heads),
        mamba_expand=expand,
        n_mamba_heads=divisor(rng, hidden * expand),
        mamba_d_state=rng.randint(1, 4),
        mamba_d_conv=rng.randint(1, 4),
        mamba_dt_rank=rng.randint(1, 3),
    )


def random_zamba2_config(rng: random.Random) -> dict[str, Any]:
    """Random sizes for the configuration sweep: the layer pattern, heads and groups, adapters, rotary, shared blocks."""
    hidden, expand = rng.choice([4, 8]), rng.choice([1, 2])
    heads = divisor(rng, hidden)  # the head size over the concatenation, 2 * hidden / heads, is even: rotary pairs
    mamba_heads = divisor(rng, hidden * expand)
    adapters = rng.random() < 0.5
    layers = _layer_pattern(rng)
    return dict(
        hidden_size=hidden,
        intermediate_size=rng.choice([4, 8]),
        num_hidden_layers=len(layers),
        layers_block_type=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads if adapters else divisor(rng, heads),  # the adapters add full-width keys, values
        mamba_expand=expand,
        n_mamba_heads=mamba_heads,
        mamba_ngroups=divisor(rng, mamba_heads),
        mamba_d_state=rng.randint(1, 4),
        mamba_d_conv=rng.randint(1, 4),
        chunk_size=rng.randint(1, 8),
        num_mem_blocks=rng.randint(1, 2),
        use_shared_attention_adapter=adapters,
        adapter_rank=rng.randint(1, 2),
        use_mem_rope=rng.random() < 0.5,
    )


ZAMBA = ModelFamily(
    name="zamba",
    mixers={modeling_zamba.ZambaMambaMixer: ZambaMixerLayout()},
    norms={modeling_zamba.ZambaRMSNorm: RMSNormRule},
    containers=(
        modeling_zamba.ZambaModel,
        modeling_zamba.ZambaForCausalLM,
        modeling_zamba.ZambaForSequenceClassification,  # a linear score read at the last real token
    ),
    rules={
        # residuals, the concatenation, the projection back and the sums: the layers' own forwards
        modeling_zamba.ZambaMambaDecoderLayer: OwnForwardRule(),
        modeling_zamba.ZambaHybridLayer: OwnForwardRule(),
        modeling_zamba.ZambaAttentionDecoderLayer: OwnForwardRule(),
        modeling_zamba.ZambaAttention: AttentionRule(),
        modeling_zamba.ZambaMLP: GatedMLPRule(),
        GELUActivation: GELUIdentityRule,
        SiLUActivation: SiLUIdentityRule,
    },
    causal_lm=modeling_zamba.ZambaForCausalLM,
    config=tiny_zamba_config,
    random_config=random_zamba_config,
    canonizable=False,
)

ZAMBA2 = ModelFamily(
    name="zamba2",
    mixers={modeling_zamba2.Zamba2MambaMixer: Mamba2Layout()},
    norms={modeling_zamba2.Zamba2RMSNorm: RMSNormRule, modeling_zamba2.Zamba2RMSNormGated: GatedRMSNormRule},
    containers=(
        modeling_zamba2.Zamba2Model,
        modeling_zamba2.Zamba2ForCausalLM,
        modeling_zamba2.Zamba2ForSequenceClassification,
        modeling_zamba2.Zamba2RotaryEmbedding,  # positions -> cos, sin: no relevance path
    ),
    rules={
        modeling_zamba2.Zamba2MambaDecoderLayer: OwnForwardRule(),
        modeling_zamba2.Zamba2HybridLayer: OwnForwardRule(),
        modeling_zamba2.Zamba2AttentionDecoderLayer: OwnForwardRule(),
        modeling_zamba2.Zamba2Attention: AttentionRule(),  # its q/k/v adapters are linear, in its own forward
        modeling_zamba2.Zamba2MLP: Zamba2MLPRule(),
        GELUActivation: GELUIdentityRule,
        SiLUActivation: SiLUIdentityRule,
    },
    causal_lm=modeling_zamba2.Zamba2ForCausalLM,
    config=tiny_zamba2_config,
    random_config=random_zamba2_config,
    canonizable=False,
)

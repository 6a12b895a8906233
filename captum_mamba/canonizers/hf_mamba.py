"""Restructuring of Hugging Face Mamba, Mamba2 and FalconMamba models into canonical leaves.

Each function below edits one kind of module (through a :class:`ModelEdits` log, so the edit
is undone on exit) and gives it a forward that calls only leaves, with nothing between them but
re-indexing (chunk, split, transpose, slicing), padding masks and dtype casts, which move
relevance without changing it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers.modeling_outputs import SequenceClassifierOutput
from transformers.models.falcon_mamba import modeling_falcon_mamba
from transformers.models.mamba import modeling_mamba
from transformers.models.mamba2 import modeling_mamba2

from captum_mamba.canonizers.edits import ModelEdits
from captum_mamba.canonizers.leaf_modules import (
    CausalDepthwiseConv,
    FanOut,
    GateProduct,
    HeldConstant,
    LinearLeaf,
    ResidualAdd,
    RMSNormLeaf,
    SelectiveSSMCore,
    SiLULeaf,
    TokenEmbedding,
    TokenPooling,
)
from captum_mamba.canonizers.rules import BlockRelevance
from captum_mamba.models.classification import (
    FalconMambaForSequenceClassification,
    Mamba2ForSequenceClassification,
    MambaForSequenceClassification,
)
from captum_mamba.models.hf_common import CausalLMHeadRule, check_cache, check_padding, mask_padding, widened
from captum_mamba.models.hf_mamba2 import Mamba2MixerRule

_SILU_NAMES = ("silu", "swish")
_SELECTION_NORMS = ("dt_layernorm", "b_layernorm", "c_layernorm")


def _mixer_forward(
    mixer: nn.Module,
    hidden_states: Tensor,
    cache_params: Any = None,
    attention_mask: Tensor | None = None,
    **kwargs: Any,
) -> Tensor:
    """``out_proj(gate(ssm(silu(conv(x))), silu(z)))`` through the leaves; a prefill cache is filled."""
    dtype = hidden_states.dtype
    check_cache(cache_params, mixer.layer_idx)
    check_padding(attention_mask, mixer.in_proj)
    x, z = mixer.in_proj(mask_padding(hidden_states, attention_mask)).chunk(2, dim=-1)
    if cache_params is not None:
        cache_params.update_conv_state(
            x.detach().transpose(1, 2), mixer.layer_idx, conv_kernel_size=mixer.conv_kernel_size
        )
    u = mask_padding(mixer.act(mixer.conv1d(x)), attention_mask)

    state = mixer.ssm_state_size
    dt, B, C = torch.split(mixer.x_proj(u), [mixer.time_step_rank, state, state], dim=-1)
    if hasattr(mixer, "b_layernorm"):  # FalconMamba normalises dt, B and C (held constant as well)
        dt, B, C = mixer.dt_layernorm(dt), mixer.b_layernorm(B), mixer.c_layernorm(C)
    delta = F.softplus(mixer.dt_proj(dt))
    A = -torch.exp(mixer.A_log.float())
    y = mixer.ssm(u, delta=delta, A=A, B=B, C=C, D=mixer.D.float(), keep_state=cache_params is not None)
    if cache_params is not None:
        cache_params.update_recurrent_state(mixer.ssm.last_state.to(dtype), mixer.layer_idx)
    return mixer.out_proj(mixer.gate(y, mixer.gate_act(z)).to(dtype))


def canonize_mixer(mixer: nn.Module, edits: ModelEdits) -> None:
    r"""
    A Mamba-1 / FalconMamba mixer: ``conv1d`` becomes a causal depthwise conv leaf, ``act`` the
    SiLU leaf of the conv branch, ``gate_act`` (new) the SiLU leaf of the gate branch, ``ssm``
    (new) the SSM core leaf, ``gate`` (new) the gate product leaf; ``x_proj``, ``dt_proj`` (and
    FalconMamba's ``dt``, ``B``, ``C`` norms) are held constant.
    """
    activation = getattr(mixer, "activation", "silu")
    if activation not in _SILU_NAMES:
        raise ValueError(f"canonize supports SiLU mixers only; {type(mixer).__name__} uses {activation!r}")
    edits.replace_child(mixer, "in_proj", LinearLeaf(mixer.in_proj))
    edits.replace_child(mixer, "conv1d", CausalDepthwiseConv(mixer.conv1d))
    edits.replace_child(mixer, "act", SiLULeaf())
    for name in ("x_proj", "dt_proj", *_SELECTION_NORMS):
        if name in mixer._modules:
            edits.replace_child(mixer, name, HeldConstant(mixer._modules[name]))
    edits.add_child(mixer, "gate_act", SiLULeaf())
    edits.add_child(mixer, "ssm", SelectiveSSMCore())
    edits.add_child(mixer, "gate", GateProduct())
    edits.replace_child(mixer, "out_proj", LinearLeaf(mixer.out_proj))
    edits.patch_forward(mixer, functools.partial(_mixer_forward, mixer))


def _mamba2_mixer_forward(
    mixer: nn.Module,
    hidden_states: Tensor,
    cache_params: Any = None,
    attention_mask: Tensor | None = None,
    **kwargs: Any,
) -> Tensor:
    """``out_proj(norm(gate(ssd(x), silu(z))))`` with ``x|B|C = silu(conv(.))``; ``B``, ``C``, ``dt`` held constant."""
    batch, length, _ = hidden_states.shape
    dtype = hidden_states.dtype
    sizes = Mamba2MixerRule().layout(mixer)
    check_cache(cache_params, mixer.layer_idx)
    check_padding(attention_mask, mixer.in_proj)
    projected = mixer.in_proj(mask_padding(hidden_states, attention_mask))
    state_width = sizes.groups * sizes.state
    _, _, gate, xBC, dt = projected.split(
        [sizes.mlp, sizes.mlp, sizes.ssm, sizes.ssm + 2 * state_width, sizes.heads], dim=-1
    )
    if cache_params is not None:
        cache_params.update_conv_state(
            xBC.detach().transpose(1, 2), mixer.layer_idx, conv_kernel_size=mixer.conv_kernel_size
        )
    xBC = mask_padding(mixer.act(mixer.conv1d(xBC)), attention_mask)
    x, B, C = torch.split(xBC, [sizes.ssm, state_width, state_width], dim=-1)

    low, high = sizes.time_step_limit
    delta = torch.clamp(F.softplus(dt.detach() + mixer.dt_bias.to(dt.dtype)), min=low, max=high)
    y = mixer.ssm(
        x,
        delta=delta,
        A=-torch.exp(mixer.A_log.float()),
        B=B.reshape(batch, length, sizes.groups, sizes.state),
        C=C.reshape(batch, length, sizes.groups, sizes.state),
        D=mixer.D.float(),
        head_dim=sizes.head_dim,
        chunk_size=sizes.chunk_size,
        keep_state=cache_params is not None,
    )
    if cache_params is not None:
        cache_params.update_recurrent_state(mixer.ssm.last_state.to(dtype), layer_idx=mixer.layer_idx)
    y = mixer.norm(mixer.gate(y, mixer.gate_act(gate.to(y.dtype))))
    return mixer.out_proj(y.to(dtype))


def canonize_mamba2_mixer(mixer: nn.Module, edits: ModelEdits) -> None:
    r"""
    A Mamba2 mixer: ``conv1d`` and ``act`` become the conv and SiLU leaves of the ``x|B|C``
    stream, ``ssm`` (new) the SSD core leaf (``dt``, ``B``, ``C``, decays held constant),
    ``gate_act`` and ``gate`` (new) the gate branch, and the gated group norm ``norm`` the
    RMSNorm leaf (per group) after the gate product.
    """
    activation = getattr(mixer, "activation", "silu")
    if activation not in _SILU_NAMES:
        raise ValueError(f"canonize supports SiLU mixers only; {type(mixer).__name__} uses {activation!r}")
    if not isinstance(getattr(mixer, "norm", None), nn.Module):
        raise ValueError(f"canonize expects a gated norm in {type(mixer).__name__}")
    edits.replace_child(mixer, "in_proj", LinearLeaf(mixer.in_proj))
    edits.replace_child(mixer, "conv1d", CausalDepthwiseConv(mixer.conv1d))
    edits.replace_child(mixer, "act", SiLULeaf())
    edits.add_child(mixer, "ssm", SelectiveSSMCore())
    edits.add_child(mixer, "gate_act", SiLULeaf())
    edits.add_child(mixer, "gate", GateProduct())
    edits.replace_child(mixer, "norm", RMSNormLeaf(mixer.norm))
    edits.replace_child(mixer, "out_proj", LinearLeaf(mixer.out_proj))
    edits.patch_forward(mixer, functools.partial(_mamba2_mixer_forward, mixer))


def _block_forward(
    block: nn.Module,
    hidden_states: Tensor,
    cache_params: Any = None,
    attention_mask: Tensor | None = None,
    **kwargs: Any,
) -> Tensor:
    """``residual + mixer(norm(x))`` with the residual stream copied explicitly for its two readers."""
    copies = block.fan_out(hidden_states)
    normed = block.norm(copies[:, 0].to(dtype=block.norm.weight.dtype))
    residual = widened(copies[:, 1]) if block.residual_in_fp32 else copies[:, 1]
    update = block.mixer(normed, cache_params=cache_params, attention_mask=attention_mask)
    return block.residual_add(residual, update)


def canonize_block(block: nn.Module, edits: ModelEdits) -> None:
    r"""
    A residual block: ``fan_out`` (new) copies the stream, ``norm`` becomes the RMSNorm leaf,
    ``residual_add`` (new) adds; ``block.rule`` lets ``LayerLRP(model, block)`` read the block's
    relevance. The residual is widened, never narrowed (as in MambaLRP).
    """
    edits.add_child(block, "fan_out", FanOut(copies=2))
    edits.replace_child(block, "norm", RMSNormLeaf(block.norm))
    edits.add_child(block, "residual_add", ResidualAdd())
    edits.set_attribute(block, "rule", BlockRelevance(block.fan_out, block.residual_add))
    edits.patch_forward(block, functools.partial(_block_forward, block))


def canonize_backbone(backbone: nn.Module, edits: ModelEdits) -> None:
    """The backbone's own forward is kept; its embedding and final norm become leaves."""
    edits.replace_child(backbone, "embeddings", TokenEmbedding(backbone.embeddings))
    edits.replace_child(backbone, "norm_f", RMSNormLeaf(backbone.norm_f))


def _classifier_forward(
    model: nn.Module,
    input_ids: Tensor | None = None,
    attention_mask: Tensor | None = None,
    inputs_embeds: Tensor | None = None,
    labels: Tensor | None = None,
    use_cache: bool | None = False,
    **kwargs: Any,
) -> SequenceClassifierOutput:
    hidden = model.backbone(
        input_ids=input_ids, inputs_embeds=inputs_embeds, attention_mask=attention_mask, use_cache=False
    ).last_hidden_state
    logits = model.score(model.pool(hidden, attention_mask=attention_mask))
    loss = None if labels is None else F.cross_entropy(logits, labels)
    return SequenceClassifierOutput(loss=loss, logits=logits)


def canonize_classifier(model: nn.Module, edits: ModelEdits) -> None:
    """A sequence classifier: the token pooling becomes a leaf (``pool``, new) before ``score``."""
    edits.add_child(model, "pool", TokenPooling(model.pooling))
    edits.replace_child(model, "score", LinearLeaf(model.score))
    edits.patch_forward(model, functools.partial(_classifier_forward, model))


def _causal_lm(output_class: type) -> Callable[[nn.Module, ModelEdits], None]:
    def canonize_causal_lm(model: nn.Module, edits: ModelEdits) -> None:
        """A causal LM: ``lm_head`` on the backbone, logits widened to at least float32, never narrowed."""
        edits.replace_child(model, "lm_head", LinearLeaf(model.lm_head))
        edits.patch_forward(model, functools.partial(CausalLMHeadRule(output_class).module_forward, model))

    return canonize_causal_lm


#: How each supported module type is restructured.
CANONIZERS: dict[type[nn.Module], Callable[[nn.Module, ModelEdits], None]] = {
    modeling_mamba.MambaMixer: canonize_mixer,
    modeling_falcon_mamba.FalconMambaMixer: canonize_mixer,
    modeling_mamba2.Mamba2Mixer: canonize_mamba2_mixer,
    modeling_mamba.MambaBlock: canonize_block,
    modeling_falcon_mamba.FalconMambaBlock: canonize_block,
    modeling_mamba2.Mamba2Block: canonize_block,
    modeling_mamba.MambaModel: canonize_backbone,
    modeling_falcon_mamba.FalconMambaModel: canonize_backbone,
    modeling_mamba2.Mamba2Model: canonize_backbone,
    MambaForSequenceClassification: canonize_classifier,
    FalconMambaForSequenceClassification: canonize_classifier,
    Mamba2ForSequenceClassification: canonize_classifier,
    modeling_mamba.MambaForCausalLM: _causal_lm(modeling_mamba.MambaCausalLMOutput),
    modeling_falcon_mamba.FalconMambaForCausalLM: _causal_lm(modeling_falcon_mamba.FalconMambaCausalLMOutput),
    modeling_mamba2.Mamba2ForCausalLM: _causal_lm(modeling_mamba2.Mamba2CausalLMOutput),
}

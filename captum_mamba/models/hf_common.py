"""Pieces shared by the Hugging Face Mamba families (Mamba, Mamba2, FalconMamba)."""

from __future__ import annotations

import inspect
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from captum_mamba.kernels.cuda import load_causal_conv1d_fn, use_kernel
from captum_mamba.options import current_options
from captum_mamba.rules.base import MambaLRPRule
from captum_mamba.rules.gate import GateHalfRule
from captum_mamba.rules.silu import SiLUIdentityRule
from captum_mamba.rules.ssm import SelectiveSSMRule, plain_selective_ssm, scan_heads


def widened(tensor: Tensor) -> Tensor:
    """``tensor`` in at least ``float32``; ``float64`` stays ``float64``."""
    return tensor.to(torch.promote_types(tensor.dtype, torch.float32))


def mask_padding(hidden: Tensor, attention_mask: Tensor | None) -> Tensor:
    """Zero the states of padding tokens, as the Hugging Face mixers do."""
    if attention_mask is None:
        return hidden
    return (hidden * attention_mask[:, :, None]).to(hidden.dtype)


class MixerRule(MambaLRPRule):
    r"""
    Base of the mixer rules: the component rules of a Mamba mixer and the computations they
    select (a component set to ``None`` runs plainly, with gradients through everything).

    Args:
        silu (SiLUIdentityRule, optional): rule for the SiLUs. Default: ``SiLUIdentityRule()``
        ssm (SelectiveSSMRule, optional): rule for the selective scan. Default: ``SelectiveSSMRule()``
        gate (GateHalfRule, optional): rule for the multiplicative gate. Default: ``GateHalfRule()``
    """

    replaces_forward = True

    def __init__(
        self,
        silu: SiLUIdentityRule | None = SiLUIdentityRule(),
        ssm: SelectiveSSMRule | None = SelectiveSSMRule(),
        gate: GateHalfRule | None = GateHalfRule(),
    ) -> None:
        self.silu = silu
        self.ssm = ssm
        self.gate = gate

    def module_forward(  # type: ignore[override]
        self,
        mixer: nn.Module,
        hidden_states: Tensor,
        cache_params: Any = None,
        attention_mask: Tensor | None = None,
        **kwargs: Any,
    ) -> Tensor:
        """The Hugging Face mixer signature; the computation is the family's :meth:`mix`."""
        return self.mix(mixer, hidden_states, attention_mask, cache_params)

    def mix(
        self, mixer: nn.Module, hidden_states: Tensor, attention_mask: Tensor | None = None, cache_params: Any = None
    ) -> Tensor:
        raise NotImplementedError

    def _silu(self, x: Tensor) -> Tensor:
        return F.silu(x) if self.silu is None else self.silu.apply(x)

    def _gate(self, y: Tensor, gate: Tensor) -> Tensor:
        return y * gate if self.gate is None else self.gate.apply(y, gate)

    def _scan(self, *args: Tensor) -> tuple[Tensor, Tensor]:
        scan = plain_selective_ssm if self.ssm is None else self.ssm.apply
        return scan(*args, return_last_state=True)  # type: ignore[return-value]

    def _scan_heads(self, *args: Tensor, chunk_size: int = 256) -> tuple[Tensor, Tensor]:
        if self.ssm is None:
            return scan_heads(plain_selective_ssm, *args)
        return self.ssm.apply_heads(*args, chunk_size=chunk_size)


def check_cache(cache_params: Any, layer_idx: int) -> None:
    """MambaLRP explains whole sequences: a cache may only be filled (prefill), not continued."""
    if cache_params is not None and cache_params.get_conv_state(layer_idx) is not None:
        raise NotImplementedError(
            "MambaLRP explains whole sequences; call the model without a filled cache "
            "(use_cache=False) rather than on single decoding steps"
        )


def check_padding(attention_mask: Tensor | None, in_proj: nn.Module) -> None:
    r"""
    Left padding is exact when ``in_proj`` has no bias: the mixers zero padded positions before
    ``in_proj`` and after the conv, so no padding reaches a real token's state. With a bias the
    padded positions would feed ``in_proj``'s bias into the conv of the first real tokens.
    """
    if attention_mask is None or in_proj.bias is None:
        return
    if (attention_mask[:, 0] == 0).any() and (attention_mask[:, -1] != 0).any():
        raise ValueError(
            "left padding changes the recurrent state of a Mamba mixer whose in_proj has a bias; "
            "pad on the right and explain each row's last real token (explained_position='last_real')"
        )


def causal_conv(mixer: nn.Module, x: Tensor, cache_params: Any) -> Tensor:
    r"""
    The mixer's depthwise causal ``conv1d`` on ``x`` ``(batch, length, channels)``, through the
    module (so a rule set on it applies), filling a prefill cache as the Hugging Face mixers do.

    Returns:
        *Tensor* ``(batch, length, channels)`` before the activation.
    """
    length = x.shape[1]
    conv_input = x.transpose(1, 2)
    if cache_params is not None:
        conv_input = cache_params.update_conv_state(
            conv_input, mixer.layer_idx, conv_kernel_size=mixer.conv_kernel_size
        )
    conv = mixer.conv1d
    if "forward" not in conv.__dict__ and use_kernel(conv_input, load_causal_conv1d_fn, current_options().backend):
        # The fused kernel, without its activation: the SiLU rule is applied outside.
        if conv_input.stride(1) != 1 or conv_input.stride(0) % 8 or conv_input.stride(2) % 8:
            conv_input = conv_input.contiguous()  # else the kernel reads the channel-last view directly
        causal = load_causal_conv1d_fn()(conv_input, conv.weight.squeeze(1), conv.bias, activation=None)
    else:
        causal = conv(conv_input)[..., : conv_input.shape[-1]]  # drop the right padding: causal
    return causal[..., -length:].transpose(1, 2)


class CausalLMHeadRule(MambaLRPRule):
    r"""
    ``lm_head(backbone(x))``: LRP-0 through the (usually tied, bias-free) output projection.

    The Hugging Face ``*ForCausalLM`` forward casts logits with ``.float()``, which narrows a
    ``float64`` model's output; this forward widens to at least ``float32`` instead, so relevance
    and the explained logit agree to ``float64`` precision. Everything else is as in the model.

    Args:
        output_class (type): the model's ``ModelOutput`` class for causal-LM outputs.
    """

    replaces_forward = True

    def __init__(self, output_class: type) -> None:
        self.output_class = output_class

    def module_forward(self, model: nn.Module, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        # The families order their forward arguments differently: bind them by the model's own signature.
        bound = inspect.signature(type(model).forward).bind(model, *args, **kwargs)
        bound.apply_defaults()
        arguments = dict(bound.arguments)
        extra = arguments.pop("kwargs", {})
        outputs = model.backbone(
            arguments["input_ids"],
            cache_params=arguments["cache_params"],
            inputs_embeds=arguments["inputs_embeds"],
            output_hidden_states=arguments["output_hidden_states"],
            return_dict=True,
            use_cache=arguments["use_cache"],
            attention_mask=arguments["attention_mask"],
        )
        hidden = outputs.last_hidden_state
        keep = arguments["logits_to_keep"]
        keep = slice(-keep, None) if isinstance(keep, int) else keep
        logits = widened(model.lm_head(hidden[:, keep].to(model.lm_head.weight.dtype)))
        labels = arguments["labels"]
        loss = None
        if labels is not None:
            loss = model.loss_function(logits=logits, labels=labels, vocab_size=model.config.vocab_size, **extra)
        result = self.output_class(
            loss=loss, logits=logits, cache_params=outputs.cache_params, hidden_states=outputs.hidden_states
        )
        return_dict = arguments["return_dict"]
        use_dict = return_dict if return_dict is not None else model.config.return_dict
        return result if use_dict else result.to_tuple()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.output_class.__name__})"

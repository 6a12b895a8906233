"""How a mixer was called: its input, padding mask and cache, read from the implementation's own signature.

The package replaces only a mixer's ``forward``; its caller (the block of the model, unchanged)
keeps passing arguments under whatever names its release uses (``cache_params`` in transformers
up to 5.23, ``cache`` from 5.24, ``inference_params`` in mamba-ssm). The arguments are bound to
the mixer class's own signature and recognised by role: the first argument is the input, the
cache is the argument that behaves like one, the padding mask is ``attention_mask``.
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

#: Packed-sequence arguments (mamba-ssm's; transformers' ``cu_seq_lens_q`` for its Gated DeltaNets): a
#: packed batch is not (batch, length, hidden).
_PACKED_ARGUMENTS = ("seqlen", "seq_idx", "cu_seqlens", "cu_seq_lens_q")


@dataclass
class MixerCall:
    r"""
    One call of a mixer.

    Args:
        hidden_states (Tensor): the input ``(batch, length, hidden)``.
        attention_mask (Tensor, optional): ``(batch, length)``, 1 for real tokens.
        cache (Any, optional): a Hugging Face cache (prefill) or mamba-ssm inference parameters.
    """

    hidden_states: Tensor
    attention_mask: Tensor | None = None
    cache: Any = None


@functools.cache
def _signature(mixer_type: type) -> inspect.Signature:
    return inspect.signature(mixer_type.forward)  # follows functools.wraps (deprecation decorators)


def _is_cache(value: Any) -> bool:
    return hasattr(value, "update_conv_state") or hasattr(value, "seqlen_offset")


def bind_mixer_call(mixer: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> MixerCall:
    r"""
    Read a mixer call's input, padding mask and cache from its arguments.

    Args:
        mixer (nn.Module): the mixer (its class's ``forward`` signature is used).
        args (tuple): positional arguments of the call.
        kwargs (dict): keyword arguments of the call.

    Returns:
        *MixerCall*.

    Raises:
        NotImplementedError: for packed sequences (mamba-ssm's ``seq_idx``, ``cu_seqlens``).
    """
    bound = _signature(type(mixer)).bind(mixer, *args, **kwargs)
    arguments = dict(bound.arguments)
    arguments.pop(next(iter(arguments)))  # self
    for name, parameter in _signature(type(mixer)).parameters.items():
        if parameter.kind is inspect.Parameter.VAR_KEYWORD:
            arguments.update(arguments.pop(name, {}))
    hidden_name = next(iter(arguments))
    hidden_states = arguments.pop(hidden_name)
    packed = [name for name in _PACKED_ARGUMENTS if arguments.get(name) is not None]
    if packed:
        raise NotImplementedError(
            f"MambaLRP explains (batch, length, hidden) inputs, not packed sequences ({', '.join(packed)} given)"
        )
    cache = next((value for value in arguments.values() if _is_cache(value)), None)
    return MixerCall(hidden_states, arguments.get("attention_mask"), cache)


def check_prefill(cache: Any, layer_idx: int | None) -> None:
    r"""
    MambaLRP explains whole sequences: a cache may be filled (prefill), not continued.

    Raises:
        NotImplementedError: if the cache already holds this layer's state (a decoding step).
    """
    if cache is None:
        return
    if getattr(cache, "seqlen_offset", 0) > 0:
        raise NotImplementedError("MambaLRP explains whole sequences, not single decoding steps")
    has_previous_state = getattr(cache, "has_previous_state", None)
    if has_previous_state is not None and layer_idx is not None and has_previous_state(layer_idx):
        raise NotImplementedError(
            "MambaLRP explains whole sequences; call the model without a filled cache "
            "(use_cache=False) rather than on single decoding steps"
        )


def check_padding(attention_mask: Tensor | None, in_proj: nn.Module) -> None:
    r"""
    Left padding is exact when ``in_proj`` has no bias: the mixers zero padded positions before
    ``in_proj`` and after the conv, so no padding reaches a real token's state. With a bias the
    padded positions would feed ``in_proj``'s bias into the conv of the first real tokens.

    Raises:
        ValueError: for left padding with an ``in_proj`` bias.
    """
    if attention_mask is None or getattr(in_proj, "bias", None) is None:
        return
    if (attention_mask[:, 0] == 0).any() and (attention_mask[:, -1] != 0).any():
        raise ValueError(
            "left padding changes the recurrent state of a Mamba mixer whose in_proj has a bias; "
            "pad on the right and explain each row's last real token (explained_position='last_real')"
        )


def mask_padding(hidden: Tensor, attention_mask: Tensor | None) -> Tensor:
    """Zero the states of padding tokens, as the Hugging Face mixers do."""
    if attention_mask is None:
        return hidden
    return (hidden * attention_mask[:, :, None]).to(hidden.dtype)

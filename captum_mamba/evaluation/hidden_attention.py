"""Attention-rollout baselines over Mamba's hidden attention (Ali, Zimerman and Wolf, 2024).

A Mamba-1 selective SSM is, per channel ``d``, a causal linear operator ``y_t = sum_j
alpha^d_{tj} u_j`` with the *hidden attention*

    alpha^d_{tj} = sum_n C_{t,n} exp(sum_{k=j+1..t} delta_{k,d} A_{d,n}) delta_{j,d} B_{j,n}.

Two token-relevance baselines are built from it:

* ``AttnRoll``: per layer the channel mean of ``|alpha|``, mixed with the identity for the
  residual (``0.5 A + 0.5 I``) and row-normalised, multiplied across layers (attention rollout,
  Abnar & Zuidema, 2020);
* ``G x AttnRoll``: per layer the channel mean of ``relu(alpha^d_{tj} * dF/dalpha^d_{tj})``, where
  ``dF/dalpha^d_{tj} = dF/dy_{t,d} * u_{j,d}``, accumulated as ``R <- R + A R`` from ``R = I``
  (gradient-weighted rollout, Chefer et al., 2021).

The explained output's row of the rolled-out matrix (mean over the real tokens for
mean-pooling classifiers) gives the token scores. Memory is quadratic in the length (an
``(length, length, channels, state)`` tensor per layer); inputs longer than ``max_length`` are
refused with an error.

Only models whose every token-mixing layer is a Mamba-1 mixer are covered: a hybrid's attention
layers (and Mamba-2 mixers, whose hidden attention is not implemented here) would be skipped by
the rollout, so such models are refused with a clear error (:func:`rollout_unsupported` says
why; the evaluation tables list the rollouts as not applicable instead of running them).
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from captum.attr import Attribution
from torch import Tensor, nn

from captum_mamba.explained_logits import ExplainedLogits
from captum_mamba.families import FAMILIES
from captum_mamba.mixers.layouts import Mamba1Layout
from captum_mamba.rule_context import plan_rules
from captum_mamba.rules.attention import AttentionRule
from captum_mamba.rules.mixer import MixerRule, causal_conv
from captum_mamba.targets import last_token_positions

DEFAULT_MAX_LENGTH = 1024


def _is_mamba1_mixer(module: nn.Module) -> bool:
    return hasattr(module, "x_proj") and hasattr(module, "A_log") and hasattr(module, "conv1d")


def rollout_unsupported(model: nn.Module) -> str | None:
    r"""
    Why the hidden-attention rollouts cannot explain ``model``, or ``None`` when they can.

    They need Mamba-1 mixers as the only token-mixing layers: attention layers (hybrids) and
    other SSM mixers (Mamba-2) are not part of the rolled-out matrices.

    Args:
        model (nn.Module): the model (or its :class:`~captum_mamba.ExplainedLogits`).

    Returns:
        *str* or *None*.
    """
    if isinstance(model, ExplainedLogits):
        model = model.model
    plan = plan_rules(model)
    modules = dict(model.named_modules(remove_duplicate=False))
    planned = [(type(modules[name]).__name__, rule) for name, rule in plan.rules.items() if name in modules]
    attention = sorted({name for name, rule in planned if isinstance(rule, AttentionRule)})
    others = sorted(
        {
            name
            for name, rule in planned
            if isinstance(rule, MixerRule) and rule.layout is not None and not isinstance(rule.layout, Mamba1Layout)
        }
    )
    mixers = [m for m in model.modules() if _is_mamba1_mixer(m)]
    problems = []
    if attention:
        problems.append(f"attention layers ({', '.join(attention)})")
    if others:
        problems.append(f"mixers other than Mamba-1 ({', '.join(others)})")
    if not problems and not mixers:
        problems.append("no Mamba-1 mixer")
    if not problems:
        return None
    return (
        "hidden-attention rollout covers only models whose token mixers are all Mamba-1 mixers (Hugging Face "
        f"Mamba, FalconMamba); {type(model).__name__} has {' and '.join(problems)}: use mamba_lrp or mamba_lrp_cp"
    )


def _mixers(model: nn.Module) -> list[nn.Module]:
    reason = rollout_unsupported(model)
    if reason is not None:
        from captum_mamba.evaluation.methods import MethodNotApplicableError

        raise MethodNotApplicableError(reason)
    return [m for m in model.modules() if _is_mamba1_mixer(m)]


def hidden_attention(
    mixer: nn.Module, hidden_states: Tensor, direction: Literal["forward", "backward"] = "forward"
) -> tuple[Tensor, Tensor, Tensor]:
    r"""
    The hidden attention of one Mamba-1 mixer (or of one scan direction of a bidirectional one) for its input.

    Args:
        mixer (nn.Module): a Hugging Face ``MambaMixer`` (or ``FalconMambaMixer``), or a
                    bidirectional Vim mixer (:class:`~captum_mamba.models.vim.VimMamba`).
        hidden_states (Tensor): the mixer's input ``(batch, length, hidden)``.
        direction (str, optional): ``"forward"``, or ``"backward"`` for the scan of a
                    bidirectional mixer over the reversed sequence (with its ``conv1d_b``,
                    ``x_proj_b``, ``dt_proj_b``, ``A_b_log``). Default: "forward"

    Returns:
        *tuple* ``(alpha, u, gate)``: ``alpha`` ``(batch, channels, length, length)`` (query ``t``
        by key ``j``, zero above the diagonal), the scan input ``u`` and ``silu(z)``, both
        ``(batch, length, channels)``. ``y = einsum("bdtj,bjd->btd", alpha, u) + D u``. For
        ``"backward"`` all three are in the scan's order, i.e. position ``t`` is token
        ``length - 1 - t`` (flip both axes of ``alpha`` for the tokens' order).
    """
    layout = FAMILIES.mixer_layout(type(mixer))
    x, z = mixer.in_proj(hidden_states).chunk(2, dim=-1)
    if direction == "backward":
        if not hasattr(layout, "backward"):
            raise ValueError(f"{type(mixer).__name__} has one scan direction; ask for direction='forward'")
        mixer, x, z = layout.backward(mixer), x.flip(1), z.flip(1)
    elif direction != "forward":
        raise ValueError(f"direction must be 'forward' or 'backward', got {direction!r}")
    u = F.silu(causal_conv(mixer, x, None))
    dt, B, C = layout.selection(mixer, u)
    delta = F.softplus(dt @ mixer.dt_proj.weight.T + mixer.dt_proj.bias).double()
    A = -torch.exp(mixer.A_log.double())  # (channels, state)
    cumulative = torch.cumsum(delta[..., None] * A, dim=1)  # (batch, length, channels, state)
    length = u.shape[1]
    causal = torch.tril(torch.ones(length, length, dtype=torch.bool, device=u.device))
    log_decay = cumulative[:, :, None] - cumulative[:, None, :]  # [t, j] = sum_{k=j+1..t} delta_k A
    decay = torch.where(causal[None, :, :, None, None], log_decay, torch.full_like(log_decay, -torch.inf)).exp()
    alpha = torch.einsum("btn,btjdn,bjd,bjn->bdtj", C.double(), decay, delta, B.double())
    return alpha.to(u.dtype), u, F.silu(z)


class _HiddenAttentionRollout(Attribution):
    gradient_weighted = False

    def __init__(self, forward_func: nn.Module, max_length: int = DEFAULT_MAX_LENGTH) -> None:
        super().__init__(forward_func)
        self.model = getattr(forward_func, "model", forward_func)
        self.mixers = _mixers(self.model)
        self.max_length = max_length

    def attribute(  # type: ignore[override]
        self, inputs: Tensor, target: Any = None, additional_forward_args: Any = None
    ) -> Tensor:
        r"""
        Args:
            inputs (Tensor): input embeddings ``(batch, length, hidden)``.
            target (int or Tensor): the explained class (or token) per example.
            additional_forward_args (tuple, optional): ``(attention_mask,)``.

        Returns:
            *Tensor* ``(batch, length, 1)``: one score per token (sum over the last dimension).
        """
        batch, length, _ = inputs.shape
        if length > self.max_length:
            raise ValueError(
                f"hidden-attention rollout needs memory quadratic in the length: {length} tokens exceed "
                f"max_length={self.max_length} (raise it if you have the memory, or use MambaLRP)"
            )
        mask = additional_forward_args[0] if isinstance(additional_forward_args, tuple) else additional_forward_args
        captured: dict[int, dict[str, Tensor]] = {}
        handles = []
        for index, mixer in enumerate(self.mixers):

            def keep_input(module, args, kwargs, index=index):
                captured.setdefault(index, {})["hidden"] = (args[0] if args else kwargs["hidden_states"]).detach()

            def keep_gated(module, args, index=index):
                gated = args[0]
                if gated.requires_grad:
                    gated.retain_grad()
                captured.setdefault(index, {})["gated"] = gated

            handles.append(mixer.register_forward_pre_hook(keep_input, with_kwargs=True))
            handles.append(mixer.out_proj.register_forward_pre_hook(keep_gated))
        try:
            with torch.enable_grad():
                embeds = inputs.detach().requires_grad_(self.gradient_weighted)
                logits = self.forward_func(embeds, mask)
                if self.gradient_weighted:
                    targets = torch.as_tensor(target, device=logits.device).long().expand(batch)
                    logits.gather(1, targets[:, None]).sum().backward()
        finally:
            for handle in handles:
                handle.remove()
        rollout = torch.eye(length, dtype=torch.float64, device=inputs.device).expand(batch, -1, -1).clone()
        for index, mixer in enumerate(self.mixers):
            with torch.no_grad():
                alpha, u, gate = hidden_attention(mixer, captured[index]["hidden"])
            if self.gradient_weighted:
                grad_y = captured[index]["gated"].grad * gate  # dF/dy_{t,d}
                relevance = (
                    alpha.double()
                    * grad_y.transpose(1, 2).double()[..., None]
                    * u.transpose(1, 2).double()[:, :, None, :]
                )
                layer = relevance.clamp(min=0).mean(1)
                rollout = rollout + layer @ rollout
            else:
                layer = 0.5 * alpha.double().abs().mean(1) + 0.5 * torch.eye(
                    length, dtype=torch.float64, device=inputs.device
                )
                layer = layer / layer.sum(-1, keepdim=True).clamp(min=1e-30)
                rollout = layer @ rollout
        return self._read_out(rollout, logits, mask).to(inputs.dtype)[..., None]

    def _read_out(self, rollout: Tensor, logits: Tensor, mask: Tensor | None) -> Tensor:
        batch, length, _ = rollout.shape
        real = torch.ones(batch, length, device=rollout.device) if mask is None else mask.to(rollout.device).double()
        if getattr(self.model, "pooling", "last") == "mean":
            return (rollout * real[..., None]).sum(1) / real.sum(1, keepdim=True).clamp(min=1)
        positions = last_token_positions(real.long())
        return rollout[torch.arange(batch, device=rollout.device), positions]


class AttentionRollout(_HiddenAttentionRollout):
    r"""
    Attention rollout over Mamba-1's hidden attention (AttnRoll).

    Args:
        forward_func (nn.Module): :class:`~captum_mamba.evaluation.ExplainedLogits` of a
                    Hugging Face Mamba or FalconMamba model.
        max_length (int, optional): longest input accepted (memory is quadratic). Default: 1024
    """


class GradientAttentionRollout(_HiddenAttentionRollout):
    r"""Gradient-weighted rollout over Mamba-1's hidden attention (G x AttnRoll); see :class:`AttentionRollout`."""

    gradient_weighted = True

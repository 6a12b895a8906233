"""One autograd node for a whole Mamba-1 mixer under the MambaLRP rules, on the CUDA kernels.

The rule-by-rule CUDA path (``Mamba1Layout.mix`` under ``MixerRule``) launches one autograd node per rule; at a
few thousand tokens its time is bound by those launches. This function runs the same
computation as one node whose backward is written out for the rules, so it launches fewer
kernels than even the plain gradient through Hugging Face's fused ``mamba_inner_fn``: nothing
flows back through ``x_proj`` / ``dt_proj`` (``delta``, ``B``, ``C`` are held constant) and no
parameter gradient is formed.

Forward (activations in ``(batch, channels, length)`` with the length contiguous)::

    x, z = in_proj(h);  c = conv(x);  u = silu(c);  dt, B, C = x_proj(u)
    y = scan(u; delta = softplus(dt_proj(dt)), A, B, C, D);  out = out_proj(y * silu(z))

Backward of the rules, for ``g = d out``, with ``p = y * silu(z)`` and ``gp = out_proj^T g``:

* gate rule (Eq. 9) ``0.5 p + 0.5 [p]const``: ``dy = 0.5 gp silu(z)``, ``d silu(z) = 0.5 gp y``;
* SiLU rule (Eq. 4) on both SiLUs: ``dz = d silu(z) * sigmoid(z)``, ``dc = du * sigmoid(c)``;
* SSM rule (Eqs. 6-7): ``du`` through the scan with ``delta``, ``B``, ``C`` constant, including
  the ``D`` skip: the adjoint recurrence run by the selective-scan *forward* kernel on the
  reversed sequence (:func:`held_constant_scan_backward`), so no gradient of ``delta``, ``A``,
  ``B``, ``C`` or ``D`` is ever formed;
* ``dh = in_proj^T [dx; dz]`` with ``dx`` from the convolution's backward, ``dx`` and ``dz``
  written into one buffer.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import Any

import torch
from torch import Tensor, nn

from captum_mamba.errors import MissingDependencyError

_MIXER_PARTS = ("in_proj", "conv1d", "x_proj", "dt_proj", "out_proj")
SelectionNorm = Callable[[Tensor, Tensor, Tensor], tuple[Tensor, Tensor, Tensor]]
"""``normalise(dt, B, C)``: a normalisation of the selection, on ``(batch, length, features)`` tensors."""


@cache
def load_raw_kernels() -> tuple[Any, Any, Any]:
    r"""
    The kernels' forward and backward entry points (not their autograd wrappers).

    Returns:
        *tuple* ``(selective_scan_cuda, causal_conv1d_fwd, causal_conv1d_bwd)``.

    Raises:
        MissingDependencyError: if ``mamba-ssm`` or ``causal-conv1d`` is not installed.
    """
    try:
        import selective_scan_cuda
    except (ImportError, OSError) as error:
        raise MissingDependencyError("mamba-ssm", "The fused CUDA mixer", "gpu") from error
    try:
        from causal_conv1d.cpp_functions import causal_conv1d_bwd_function, causal_conv1d_fwd_function
    except (ImportError, OSError) as error:
        raise MissingDependencyError("causal-conv1d", "The fused CUDA mixer", "gpu") from error
    return selective_scan_cuda, causal_conv1d_fwd_function, causal_conv1d_bwd_function


def raw_kernels_available() -> bool:
    """Whether :func:`load_raw_kernels` succeeds."""
    try:
        load_raw_kernels()
    except MissingDependencyError:
        return False
    return True


_HALF_OR_FLOAT = (torch.float32, torch.bfloat16, torch.float16)


def _fusable(mixer: nn.Module, hidden_states: Tensor, parts: tuple[str, ...], parameters: tuple[str, ...]) -> bool:
    r"""
    Whether a fused node computes exactly what the rule-by-rule path would: CUDA inputs in
    float32, bfloat16 or float16 with the layers' weights in that dtype, no per-module rule or
    hook on the layers ``parts`` (they would be bypassed), frozen parameters (the layers' and
    ``parameters``, e.g. ``A_log``, ``D``), ``x_proj`` without bias, the kernels importable.
    ``A`` is formed in float32 from ``A_log`` whatever its dtype, as the kernels' callers do.
    """
    if not (hidden_states.is_cuda and hidden_states.dtype in _HALF_OR_FLOAT):
        return False
    for name in parts:
        part = getattr(mixer, name, None)
        if part is None or "forward" in part.__dict__ or part._forward_hooks or part._forward_pre_hooks:
            return False
        if any(p.requires_grad for p in part.parameters()) or part.weight.dtype != hidden_states.dtype:
            return False
        if name.startswith("x_proj") and part.bias is not None:
            return False
    if any(getattr(mixer, name).requires_grad for name in parameters):
        return False
    return raw_kernels_available()


def fusable(mixer: nn.Module, hidden_states: Tensor) -> bool:
    r"""
    Whether :func:`fused_mixer` computes exactly what the rule-by-rule path would: CUDA inputs
    in float32, bfloat16 or float16 (the model's dtype), no rule or hook on the mixer's layers,
    frozen parameters, the kernels importable.
    """
    return _fusable(mixer, hidden_states, _MIXER_PARTS, ("A_log", "D"))


def fused_mixer(
    mixer: nn.Module, hidden_states: Tensor, rank: int, state: int, normalise: SelectionNorm | None = None
) -> Tensor:
    r"""
    A Mamba-1 mixer's output with the SiLU, SSM and gate rules, as one autograd node.

    Args:
        mixer (nn.Module): the mixer (``in_proj``, ``conv1d``, ``x_proj``, ``dt_proj``,
                    ``A_log``, ``D``, ``out_proj``), parameters frozen.
        hidden_states (Tensor): ``(batch, length, hidden)`` on CUDA, in float32, bfloat16 or
                    float16 (the model's dtype; the scan accumulates in float32).
        rank (int): rank of ``dt`` (``x_proj``'s first outputs).
        state (int): SSM state size.
        normalise (Callable, optional): ``normalise(dt, B, C)`` on ``(batch, length, features)``:
                    a normalisation of ``x_proj``'s outputs (FalconMamba's RMSNorms; held
                    constant like the rest of the selection). Default: none

    Returns:
        *Tensor* ``(batch, length, hidden)``.
    """
    return _FusedMambaLRPMixer.apply(
        hidden_states,
        mixer.in_proj.weight,
        mixer.in_proj.bias,
        mixer.out_proj.weight,
        mixer.out_proj.bias,
        rank,
        state,
        normalise,
        *_direction_parts(mixer, ""),
    )


def _direction_parts(mixer: nn.Module, suffix: str) -> tuple[Tensor, ...]:
    """What one scan direction reads: conv weight and bias, ``x_proj``, ``dt_proj`` weight and bias, ``A``, ``D``."""
    conv, dt_proj = getattr(mixer, "conv1d" + suffix), getattr(mixer, "dt_proj" + suffix)
    return (
        conv.weight.squeeze(1),
        conv.bias,
        getattr(mixer, "x_proj" + suffix).weight,
        dt_proj.weight,
        dt_proj.bias,
        -torch.exp(getattr(mixer, "A_b_log" if suffix else "A_log").float()),
        getattr(mixer, "D" + suffix).float(),
    )


def _channels_by_length(weight: Tensor, rows: Tensor, batch: int) -> Tensor:
    """``weight @ rows`` ``(out, batch * length)`` viewed as ``(batch, out, length)``, length contiguous."""
    product = weight @ rows
    return product.view(product.shape[0], batch, -1).permute(1, 0, 2)


def _in_projection(hidden: Tensor, weight: Tensor, bias: Tensor | None) -> tuple[Tensor, Tensor]:
    """``x, z = in_proj(hidden)`` in ``(batch, channels, length)``, each contiguous."""
    xz = _channels_by_length(weight, hidden.reshape(-1, hidden.shape[-1]).t(), hidden.shape[0])
    if bias is not None:
        xz = xz + bias[None, :, None]
    x, z = xz.chunk(2, dim=1)
    return x.contiguous(), z.contiguous()


def _in_projection_backward(grad_xz: Tensor, weight: Tensor) -> Tensor:
    """``in_proj``'s input gradient ``(batch, length, hidden)`` from ``[dx; dz]`` ``(batch, 2 channels, length)``."""
    rows = grad_xz.permute(1, 0, 2).reshape(grad_xz.shape[1], -1)  # (2 channels, batch * length)
    return (rows.t() @ weight).view(grad_xz.shape[0], -1, weight.shape[1])


def _out_projection_backward(grad: Tensor, weight: Tensor, scale: float) -> Tensor:
    """``scale * out_projᵀ grad`` in ``(batch, channels, length)``, contiguous (the scale applied to the small weight)."""
    product = _channels_by_length((weight * scale).t(), grad.reshape(-1, grad.shape[-1]).t(), grad.shape[0])
    return product.contiguous()


def _gradient_buffers(x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``[dx; dz]`` ``(batch, 2 channels, length)`` and its two halves, written in place by the backward (no concatenation)."""
    grad_xz = x.new_empty(x.shape[0], 2 * x.shape[1], x.shape[2])
    grad_x, grad_z = grad_xz.chunk(2, dim=1)
    return grad_xz, grad_x, grad_z


class _FusedMambaLRPMixer(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx,
        hidden: Tensor,
        in_weight: Tensor,
        in_bias: Tensor | None,
        out_weight: Tensor,
        out_bias: Tensor | None,
        rank: int,
        state: int,
        normalise: SelectionNorm | None,
        *parts: Tensor,
    ) -> Tensor:
        x, z = _in_projection(hidden, in_weight, in_bias)
        gated, saved = _direction_forward(x, z, parts, rank, state, normalise)
        ctx.save_for_backward(x, z, in_weight, *saved)
        ctx.parts, ctx.out_weight = parts, out_weight
        return torch.nn.functional.linear(gated.transpose(1, 2), out_weight, out_bias)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        x, z, in_weight, *saved = ctx.saved_tensors
        half = _out_projection_backward(grad, ctx.out_weight, 0.5)  # the gate rule's half share
        grad_xz, grad_x, grad_z = _gradient_buffers(x)
        _direction_backward(x, z, tuple(saved), ctx.parts, half, grad_x, grad_z)
        return (_in_projection_backward(grad_xz, in_weight),) + (None,) * (7 + len(ctx.parts))


# --- Vision Mamba's bidirectional mixer ------------------------------------------------------------

_BIDIRECTIONAL_PARTS = ("in_proj", "conv1d", "x_proj", "dt_proj", "conv1d_b", "x_proj_b", "dt_proj_b", "out_proj")


def bidirectional_fusable(mixer: nn.Module, hidden_states: Tensor) -> bool:
    r"""
    Whether :func:`fused_bidirectional_mixer` computes exactly what the rule-by-rule path would
    (the conditions of :func:`fusable`, on both directions' layers).
    """
    return _fusable(mixer, hidden_states, _BIDIRECTIONAL_PARTS, ("A_log", "A_b_log", "D", "D_b"))


def fused_bidirectional_mixer(mixer: nn.Module, hidden_states: Tensor, rank: int, state: int) -> Tensor:
    r"""
    Vision Mamba's bidirectional mixer (``in_proj``, a forward scan and a scan of the reversed
    sequence, their mean or sum, ``out_proj``) with the SiLU, SSM and gate rules on both
    directions, as one autograd node; also in bfloat16 / float16 (the kernels' own precisions:
    the scan accumulates in float32). The layer scale ``gamma``, if any, is applied by the caller.

    Returns:
        *Tensor* ``(batch, length, hidden)`` in the input's dtype.
    """
    return _FusedBidirectionalMixer.apply(
        hidden_states,
        mixer.in_proj.weight,
        mixer.in_proj.bias,
        mixer.out_proj.weight,
        mixer.out_proj.bias,
        0.5 if mixer.if_divide_out else 1.0,
        rank,
        state,
        *_direction_parts(mixer, ""),
        *_direction_parts(mixer, "_b"),
    )


def _direction_forward(
    x: Tensor, z: Tensor, parts: tuple[Tensor, ...], rank: int, state: int, normalise: SelectionNorm | None = None
) -> tuple[Tensor, tuple[Tensor, ...]]:
    r"""
    One direction on ``(batch, channels, length)`` inputs: the gated scan output and what its
    backward needs. Of the channel-sized activations only ``y`` is kept (besides ``x`` and ``z``,
    kept by the caller): ``conv``, ``u`` and ``delta`` are recomputed in the backward from ``x``
    and the low-rank ``dt`` (as ``mamba_inner_fn`` does for the plain gradient), so MambaLRP keeps
    less than Gradient x Input through the same kernels.
    """
    scan_cuda, conv_fwd, _ = load_raw_kernels()
    conv_weight, conv_bias, x_proj_weight, dt_weight, dt_bias, A, D = parts
    batch, length = x.shape[0], x.shape[-1]
    u = conv_fwd(x, conv_weight, conv_bias, None, None, None, True)  # silu(conv(x)), as the model's forward forms it
    selected = x_proj_weight @ u.permute(1, 0, 2).reshape(u.shape[1], -1)  # (rank + 2 state, batch * length)
    if normalise is not None:  # on (batch, length, features) views; small tensors
        rows = selected.t().view(batch, length, -1).split([rank, state, state], dim=-1)
        selected = torch.cat(normalise(*rows), dim=-1).view(batch * length, -1).t()
    dt = selected[:rank].contiguous()
    delta = _channels_by_length(dt_weight, dt, batch)
    B = selected[rank : rank + state].view(state, batch, length).permute(1, 0, 2).unsqueeze(1).contiguous()
    C = selected[rank + state :].view(state, batch, length).permute(1, 0, 2).unsqueeze(1).contiguous()
    y, _, gated = scan_cuda.fwd(u, delta, A, B, C, D, z, dt_bias.float(), True)
    return gated, (dt, B, C, y)


#: The smallest time step the reversed scan divides by (a softplus output rounded to 0 is replaced).
_SMALLEST_STEP = 1e-30


@cache
def _triton_importable() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def use_triton_elementwise(x: Tensor) -> bool:
    r"""
    Whether the node's backward runs its element-wise steps as the two Triton kernels of
    :mod:`~captum_mamba.kernels.fused_mixer_triton` (CUDA tensors, Triton importable; mamba-ssm
    depends on it) instead of PyTorch's element-wise operations (the same values).
    """
    return x.is_cuda and _triton_importable()


def held_constant_scan_backward(
    scan_cuda: Any,
    reversed_grad_y: Tensor,
    reversed_delta: Tensor,
    dt_bias: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor,
) -> Tensor:
    r"""
    ``du`` of the selective scan ``y = scan(u)`` with ``Δ = softplus(delta + dt_bias)``, ``A``,
    ``B``, ``C`` held constant (the SSM rule), by mamba-ssm's *forward* scan kernel on the
    reversed sequence, which costs less than half its backward kernel (that one re-runs the forward
    scan and forms the gradients of ``Δ``, ``A``, ``B``, ``C`` and ``D``, which the rule discards).
    Sequences come and go in reversed time, so the caller flips once on each side.

    With ``h_t = exp(Δ_t A) h_{t-1} + Δ_t B_t u_t`` and ``y_t = C_t·h_t + D u_t``, the adjoint
    state ``g_t = ∂L/∂h_t`` obeys ``g_t = exp(Δ_{t+1} A) g_{t+1} + C_t dy_t`` and
    ``du_t = Δ_t B_t·g_t + D dy_t``. In reversed time ``s = L-1-t`` this is the kernel's own
    recurrence ``h'_s = exp(δ_s A) h'_{s-1} + δ_s B'_s x_s``, ``y'_s = C'_s·h'_s`` with the time step
    ``δ_s = Δ_{t+1}`` (the reversed steps shifted by one; any positive number at ``s = 0``, where
    nothing is carried), ``B' = C``, ``C' = B`` and the input ``x_s = dy_t / δ_s``, so that
    ``δ_s x_s = dy_t``.

    Args:
        scan_cuda (module): mamba-ssm's ``selective_scan_cuda``.
        reversed_grad_y (Tensor): ``dy`` ``(batch, channels, length)`` in reversed time, float32.
        reversed_delta (Tensor): ``(batch, channels, length)``, the time steps before bias and
                    softplus, in reversed time.
        dt_bias (Tensor): ``(channels,)``.
        A (Tensor): ``(channels, state)``, float32.
        B (Tensor): ``(batch, 1, state, length)`` (forward time).
        C (Tensor): ``(batch, 1, state, length)`` (forward time).
        D (Tensor): ``(channels,)``, float32.

    Returns:
        *Tensor* ``du`` ``(batch, channels, length)`` in reversed time, float32.
    """
    # Δ in reversed time (the kernel's softplus threshold, 20, is torch's too); a step rounded to 0 is
    # replaced by the smallest one (exp(δA) is 1 either way), so that dy / δ stays finite
    step = torch.nn.functional.softplus(reversed_delta.float() + dt_bias.float()[:, None]).clamp_(min=_SMALLEST_STEP)
    shifted = torch.nn.functional.pad(step[..., :-1], (1, 0), value=1.0)  # δ_s = Δ_{t+1}
    carried = _reversed_scan(scan_cuda, reversed_grad_y / shifted, shifted, A, B, C)
    del shifted
    return step.mul_(carried).addcmul_(reversed_grad_y, D[:, None])


def _reversed_scan(scan_cuda: Any, reversed_input: Tensor, shifted: Tensor, A: Tensor, B: Tensor, C: Tensor) -> Tensor:
    r"""
    ``B_t·g_t`` in reversed time (the adjoint state ``g`` of :func:`held_constant_scan_backward`):
    mamba-ssm's forward scan kernel on the reversed input and shifted steps, ``B`` and ``C``
    swapped and reversed.
    """
    carried, *_ = scan_cuda.fwd(
        reversed_input, shifted, A, C.float().flip(-1), B.float().flip(-1), None, None, None, False
    )
    return carried


def _direction_backward(
    x: Tensor,
    z: Tensor,
    saved: tuple[Tensor, ...],
    parts: tuple[Tensor, ...],
    half: Tensor,
    grad_x: Tensor,
    grad_z: Tensor,
) -> None:
    r"""
    The rules' backward of one direction, for ``half = 0.5 d gated`` (the gate rule's share):
    writes ``dx`` and ``dz`` into ``grad_x`` and ``grad_z``, with the SSM rule through the scan
    (:func:`held_constant_scan_backward`), the SiLU rule on ``conv`` and on ``z``. ``conv`` and
    ``delta`` are recomputed as the forward formed them (same kernels, same values).
    """
    scan_cuda, conv_fwd, conv_bwd = load_raw_kernels()
    dt, B, C, y = saved
    conv_weight, conv_bias, _, dt_weight, dt_bias, A, D = parts
    batch = x.shape[0]
    # Δ's pre-activation in reversed time, from the low-rank dt reversed (a small tensor)
    reversed_delta = _channels_by_length(
        dt_weight, dt.view(dt.shape[0], batch, -1).flip(-1).view(dt.shape[0], -1), batch
    )
    if use_triton_elementwise(x):  # the element-wise steps in two kernels (fused_mixer_triton)
        from captum_mamba.kernels import fused_mixer_triton as elementwise

        reversed_delta, bias = reversed_delta.contiguous(), dt_bias.float()
        shifted, reversed_input = elementwise.prepare_reversed_scan(
            z, y, half, reversed_delta, bias, grad_z, _SMALLEST_STEP
        )
        carried = _reversed_scan(scan_cuda, reversed_input, shifted, A, B, C)
        del shifted, reversed_input
        conv = conv_fwd(x, conv_weight, conv_bias, None, None, None, False)
        grad_conv = elementwise.finish_conv_gradient(carried, reversed_delta, bias, D, z, half, conv, _SMALLEST_STEP)
        del conv, carried, reversed_delta
    else:
        # the gate rule's share of the scan output's gradient, 0.5 d gated · silu(z), in reversed time
        reversed_grad_y = torch.nn.functional.silu(z.float()).mul_(half).flip(-1)
        reversed_grad_u = held_constant_scan_backward(scan_cuda, reversed_grad_y, reversed_delta, dt_bias, A, B, C, D)
        del reversed_grad_y, reversed_delta
        torch.sigmoid(z, out=grad_z).mul_(y).mul_(half)  # the SiLU rule on z: dz = σ(z) · y · 0.5 d gated
        conv = conv_fwd(x, conv_weight, conv_bias, None, None, None, False)
        grad_conv = reversed_grad_u.flip(-1).mul_(torch.sigmoid(conv.float())).to(x.dtype)  # the SiLU rule on conv
        del conv, reversed_grad_u
    conv_bwd(x, conv_weight, conv_bias, grad_conv, None, None, None, grad_x, False, False)


class _FusedBidirectionalMixer(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx,
        hidden: Tensor,
        in_weight: Tensor,
        in_bias: Tensor | None,
        out_weight: Tensor,
        out_bias: Tensor | None,
        scale: float,
        rank: int,
        state: int,
        *parts: Tensor,
    ) -> Tensor:
        x, z = _in_projection(hidden, in_weight, in_bias)
        forward_parts, backward_parts = parts[:7], parts[7:]
        gated, saved_forward = _direction_forward(x, z, forward_parts, rank, state)
        x_rev, z_rev = x.flip(-1).contiguous(), z.flip(-1).contiguous()
        gated_rev, saved_backward = _direction_forward(x_rev, z_rev, backward_parts, rank, state)
        mixed = gated + gated_rev.flip(-1)
        ctx.save_for_backward(x, z, x_rev, z_rev, in_weight, *saved_forward, *saved_backward)
        ctx.parts = (forward_parts, backward_parts)
        ctx.out_weight, ctx.scale = out_weight, scale
        return torch.nn.functional.linear(mixed.transpose(1, 2) * scale, out_weight, out_bias)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        x, z, x_rev, z_rev, in_weight, *saved = ctx.saved_tensors
        forward_parts, backward_parts = ctx.parts
        # the gate rule's half share of d(mixed), with the directions' mean or sum
        half = _out_projection_backward(grad, ctx.out_weight, 0.5 * ctx.scale)
        per_direction = len(saved) // 2
        grad_xz, grad_x, grad_z = _gradient_buffers(x)
        _direction_backward(x, z, tuple(saved[:per_direction]), forward_parts, half, grad_x, grad_z)
        reversed_xz, grad_x_rev, grad_z_rev = _gradient_buffers(x)
        _direction_backward(
            x_rev,
            z_rev,
            tuple(saved[per_direction:]),
            backward_parts,
            half.flip(-1).contiguous(),
            grad_x_rev,
            grad_z_rev,
        )
        grad_hidden = _in_projection_backward(grad_xz.add_(reversed_xz.flip(-1)), in_weight)
        return (grad_hidden,) + (None,) * (7 + len(forward_parts) + len(backward_parts))

"""Normalisation rules (MambaLRP, App. C): the normaliser is held constant."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from captum_mamba.rules.activation import SigmoidIdentityRule
from captum_mamba.rules.base import MambaLRPRule
from captum_mamba.rules.gate import GateHalfRule
from captum_mamba.rules.silu import SiLUIdentityRule


def _compute_dtype(x: Tensor) -> torch.dtype:
    return torch.promote_types(x.dtype, torch.float32)


def _grouped_inverse_rms(wide: Tensor, eps: float, group_size: int | None) -> tuple[Tensor, Tensor]:
    """``wide`` viewed as ``(..., groups, group_size)`` and each group's ``1 / sqrt(mean(x²) + eps)`` ``(..., groups, 1)``."""
    grouped = wide.reshape(*wide.shape[:-1], -1, group_size or wide.shape[-1])
    return grouped, torch.rsqrt(grouped.pow(2).mean(-1, keepdim=True) + eps)


def _epsilon_of(module: nn.Module) -> float:
    for name in ("variance_epsilon", "eps", "epsilon"):
        if hasattr(module, name):
            return float(getattr(module, name))
    raise AttributeError(f"{type(module).__name__} has no epsilon attribute (variance_epsilon, eps)")


class RMSNormRule(MambaLRPRule):
    r"""
    ``x / [rms(x)]const * w``: with the root mean square detached the norm is a diagonal
    linear map, so relevance passes element-wise (``R_in = R_out``).

    Works for RMSNorm modules with a ``weight`` (or none) and an epsilon attribute named
    ``variance_epsilon``, ``eps`` or ``epsilon`` (Hugging Face and mamba-ssm conventions). Computes
    in ``float32`` or wider, like the models do, but never narrows a ``float64`` input.

    Args:
        weight_offset (float, optional): a constant added to the stored weight: ``1.0`` for the
                    zero-centred norms of Qwen3-Next / Qwen3.5, which scale by ``1 + w``. The scale
                    is a constant either way, so relevance passes element-wise. Default: 0.0
        scale_before_cast (bool, optional): scale in the wide dtype, then cast to the input's
                    (Qwen3-Next, Qwen3.5, OLMo), instead of casting, then scaling (Llama, Mamba):
                    the same value in float32 and float64, the model's own rounding in half
                    precision. Default: False
    """

    replaces_forward = True

    def __init__(self, weight_offset: float = 0.0, scale_before_cast: bool = False) -> None:
        self.weight_offset = weight_offset
        self.scale_before_cast = scale_before_cast

    def apply(self, x: Tensor, weight: Tensor | None, eps: float, group_size: int | None = None) -> Tensor:
        r"""
        Args:
            x (Tensor): input, normalised over the last dimension.
            weight (Tensor, optional): element-wise scale (plus ``weight_offset``).
            eps (float): added to the mean square.
            group_size (int, optional): normalise groups of this many features separately
                        (Mamba2's grouped norm). Default: the whole last dimension

        Returns:
            *Tensor* equal to ``rmsnorm(x)`` in ``x``'s dtype.
        """
        wide = x.to(_compute_dtype(x))
        grouped, inverse_rms = _grouped_inverse_rms(wide, eps, group_size)
        normed = (grouped * inverse_rms.detach()).reshape(wide.shape)
        scale = None if weight is None else weight + self.weight_offset if self.weight_offset else weight
        if scale is not None and self.scale_before_cast:
            return (normed * scale.to(wide.dtype)).to(x.dtype)
        normed = normed.to(x.dtype)
        return normed if scale is None else scale * normed

    def module_forward(self, module: nn.Module, x: Tensor) -> Tensor:  # type: ignore[override]
        return self.apply(x, getattr(module, "weight", None), _epsilon_of(module))


#: The gate activations of the gated norms (a module's ``activation`` attribute names one).
GATE_ACTIVATIONS = ("silu", "swish", "sigmoid")


class GatedRMSNormRule(MambaLRPRule):
    r"""
    Mamba2's gated norm ``rmsnorm(y * silu(z))`` (per group): the gate product gets the gate
    rule, ``silu(z)`` the SiLU rule and the normaliser is held constant. Norms that gate after
    normalising (``norm_before_gate``, FalconH1's option: ``rmsnorm(y) * w * silu(z)``) get the
    same three rules in that order. Norms gated by a sigmoid (Kimi Delta Attention's
    ``rmsnorm(o) * w * σ(z)``) get the sigmoid's identity rule ``z·[σ(z)/z]const`` in place of the
    SiLU rule (AttnLRP's rule for the sigmoid, as the attention output gates of
    :class:`~captum_mamba.rules.SigmoidGateRule`): the product's relevance still splits half to
    ``y``, half to ``z``.

    The groups are read from the module's ``group_size`` or ``n_groups`` (one group if neither).

    Args:
        gate (GateHalfRule, optional): rule for ``y * act(z)``; ``None``: plain product.
        silu (SiLUIdentityRule, optional): rule for ``silu(z)``; ``None``: plain SiLU.
        norm (RMSNormRule, optional): rule for the normalisation; ``None``: plain RMSNorm.
        norm_before_gate (bool, optional): whether the module normalises before gating
                    (``rmsnorm(y) * w * silu(z)``: the Gated DeltaNets' output norms, which
                    declare it in no attribute); ``None`` reads the module's
                    ``norm_before_gate`` attribute (False without one). Default: None
        sigmoid (SigmoidIdentityRule, optional): rule for ``σ(z)`` in sigmoid-gated norms; ``None``:
                    plain sigmoid. Default: ``SigmoidIdentityRule()``
        activation (str, optional): the gate's activation, ``"silu"`` (or ``"swish"``) or
                    ``"sigmoid"``; ``None`` reads the module's ``activation`` attribute (SiLU
                    without one). Default: None
    """

    replaces_forward = True
    components = {"gate": "gate", "silu": "silu", "sigmoid": "sigmoid", "norm": "norm"}

    def __init__(
        self,
        gate: GateHalfRule | None = GateHalfRule(),
        silu: SiLUIdentityRule | None = SiLUIdentityRule(),
        norm: RMSNormRule | None = RMSNormRule(),
        norm_before_gate: bool | None = None,
        sigmoid: SigmoidIdentityRule | None = SigmoidIdentityRule(),
        activation: str | None = None,
    ) -> None:
        if activation is not None and activation not in GATE_ACTIVATIONS:
            raise ValueError(f"activation must be one of {GATE_ACTIVATIONS} or None, got {activation!r}")
        self.gate = gate
        self.silu = silu
        self.norm = norm
        self.norm_before_gate = norm_before_gate
        self.sigmoid = sigmoid
        self.activation = activation

    def _activate(self, z: Tensor, activation: str) -> Tensor:
        """``act(z)`` under its identity rule (or plainly where that component is switched off)."""
        if activation == "sigmoid":
            return torch.sigmoid(z) if self.sigmoid is None else self.sigmoid.apply(z)
        return F.silu(z) if self.silu is None else self.silu.apply(z)

    def apply(
        self,
        y: Tensor,
        z: Tensor | None,
        weight: Tensor | None,
        eps: float,
        group_size: int | None = None,
        norm_before_gate: bool = False,
        activation: str = "silu",
    ) -> Tensor:
        r"""
        Args:
            y (Tensor): the SSM output.
            z (Tensor, optional): the gate pre-activation; ``None`` for no gate.
            weight (Tensor, optional): element-wise scale.
            eps (float): added to the mean square.
            group_size (int, optional): features per normalised group.
            norm_before_gate (bool, optional): gate the normalised, scaled ``y``
                        (``rmsnorm(y) * w * silu(z)``) instead of normalising the gated one.
                        Default: False
            activation (str, optional): the gate's activation, ``"silu"`` (``"swish"``) or
                        ``"sigmoid"``. Default: "silu"

        Returns:
            *Tensor* equal to the gated norm, in ``y``'s dtype.
        """
        if self._fuses(z, weight, norm_before_gate, activation):
            return _HeldConstantGatedRMSNorm.apply(y, z, weight, eps, group_size)
        wide = y.to(_compute_dtype(y))
        rms_norm = plain_rms_norm if self.norm is None else self.norm.apply
        activated = None
        if z is not None:
            activated = self._activate(z.to(wide.dtype), activation)
        if norm_before_gate:
            normed = rms_norm(wide, weight, eps, group_size)  # scaled in the wide dtype, as FalconH1 does
            if activated is not None:
                normed = normed * activated if self.gate is None else self.gate.apply(normed, activated)
            return normed.to(y.dtype)
        if activated is not None:
            wide = wide * activated if self.gate is None else self.gate.apply(wide, activated)
        normed = rms_norm(wide, None, eps, group_size).to(y.dtype)
        return normed if weight is None else weight * normed

    def _fuses(self, z: Tensor | None, weight: Tensor | None, norm_before_gate: bool, activation: str) -> bool:
        """Whether the default rules of ``rmsnorm(y * silu(z)) * w`` run as one node (:class:`_HeldConstantGatedRMSNorm`)."""
        return (
            z is not None
            and not norm_before_gate
            and activation in ("silu", "swish")
            and type(self.gate) is GateHalfRule
            and type(self.silu) is SiLUIdentityRule
            and type(self.norm) is RMSNormRule
            and (weight is None or not weight.requires_grad)
        )

    def module_forward(self, module: nn.Module, hidden_states: Tensor, gate: Tensor | None = None) -> Tensor:  # type: ignore[override]
        group_size = getattr(module, "group_size", None)
        groups = getattr(module, "n_groups", None)
        if group_size is None and groups:
            group_size = hidden_states.shape[-1] // groups
        return self.apply(
            hidden_states,
            gate,
            getattr(module, "weight", None),
            _epsilon_of(module),
            group_size,
            bool(getattr(module, "norm_before_gate", False))
            if self.norm_before_gate is None
            else self.norm_before_gate,
            self._activation_of(module),
        )

    def _activation_of(self, module: nn.Module) -> str:
        activation = self.activation if self.activation is not None else getattr(module, "activation", "silu")
        if not isinstance(activation, str) or activation not in GATE_ACTIVATIONS:
            raise ValueError(
                f"GatedRMSNormRule covers gates activated by {', '.join(GATE_ACTIVATIONS)}; "
                f"{type(module).__name__} uses {activation!r}"
            )
        return activation


class _HeldConstantGatedRMSNorm(torch.autograd.Function):
    r"""
    ``rmsnorm(y * silu(z)) * w`` (per group) with the three default rules as one node: the gate
    rule (half of the product's gradient to each factor), the SiLU rule (``silu(z)``'s gradient
    ``sigmoid(z)``) and the normaliser held constant. Keeps ``y``, ``z`` (a view of the input
    projection in the mixers) and the per-group inverse RMS; ``silu(z)`` and ``sigmoid(z)`` are
    recomputed in the backward pass instead of keeping the activated gate. Same values and
    gradients as the three rules composed.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx, y: Tensor, z: Tensor, weight: Tensor | None, eps: float, group_size: int | None
    ) -> Tensor:
        wide = y.to(_compute_dtype(y))
        gated = wide * F.silu(z.to(wide.dtype))
        grouped, inverse_rms = _grouped_inverse_rms(gated, eps, group_size)
        normed = (grouped * inverse_rms).reshape(gated.shape).to(y.dtype)
        ctx.save_for_backward(y, z, inverse_rms, weight)
        return normed if weight is None else weight * normed

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        y, z, inverse_rms, weight = ctx.saved_tensors
        grad_normed = grad if weight is None else grad * weight
        wide_dtype = inverse_rms.dtype
        grad_gated = grad_normed.to(wide_dtype)
        grad_gated = (grad_gated.reshape(inverse_rms.shape[:-1] + (-1,)) * inverse_rms).reshape(grad_gated.shape)
        wide_z = z.to(wide_dtype)
        sigmoid = torch.sigmoid(wide_z)
        half = grad_gated.mul_(0.5)  # the gate rule: half of the product's gradient to each factor
        grad_y = (half * (wide_z * sigmoid)).to(y.dtype)  # d/dy of y * silu(z), halved
        grad_z = half.mul_(y.to(wide_dtype)).mul_(sigmoid).to(z.dtype)  # halved, then the SiLU rule: · sigmoid(z)
        return grad_y, grad_z, None, None, None


class LayerNormRule(MambaLRPRule):
    r"""
    ``(x - mean(x)) / [std(x)]const * w + b``: the centring stays a linear map; only the standard
    deviation is detached (Ali et al., 2022). The bias absorbs relevance (the convergence delta).
    """

    replaces_forward = True

    def apply(self, x: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float) -> Tensor:
        r"""
        Args:
            x (Tensor): input, normalised over the last dimension.
            weight (Tensor, optional): element-wise scale.
            bias (Tensor, optional): element-wise shift.
            eps (float): added to the variance.

        Returns:
            *Tensor* equal to ``layer_norm(x)`` in ``x``'s dtype.
        """
        wide = x.to(_compute_dtype(x))
        centred = wide - wide.mean(-1, keepdim=True)
        std = torch.sqrt(centred.pow(2).mean(-1, keepdim=True) + eps).detach()
        out = (centred / std).to(x.dtype)
        if weight is not None:
            out = out * weight
        if bias is not None:
            out = out + bias
        return out

    def module_forward(self, module: nn.Module, x: Tensor) -> Tensor:  # type: ignore[override]
        if isinstance(module, nn.LayerNorm) and len(module.normalized_shape) != 1:
            raise ValueError("LayerNormRule supports normalisation over the last dimension only")
        return self.apply(x, getattr(module, "weight", None), getattr(module, "bias", None), _epsilon_of(module))


def plain_rms_norm(x: Tensor, weight: Tensor | None, eps: float, group_size: int | None = None) -> Tensor:
    """RMSNorm with gradients through the normaliser: the computation when the rule is off."""
    wide = x.to(_compute_dtype(x))
    grouped, inverse_rms = _grouped_inverse_rms(wide, eps, group_size)
    normed = (grouped * inverse_rms).reshape(wide.shape).to(x.dtype)
    return normed if weight is None else weight * normed


def plain_layer_norm(x: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float) -> Tensor:
    """LayerNorm with gradients through the normaliser."""
    return F.layer_norm(x, x.shape[-1:], weight, bias, eps)

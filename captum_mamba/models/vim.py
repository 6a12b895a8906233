"""Vision Mamba (Vim; Zhu et al., ICML 2024): the bidirectional Mamba image classifier.

The module names and state-dict keys are those of hustvl/Vim's ``VisionMamba`` (with its
``bimamba_type="v2"`` Mamba mixer), so an official checkpoint loads from a local file with
:func:`load_vim_checkpoint`. What is supported of the official options: absolute position
embeddings, one class token (in the middle or at the start) or none with mean / last-token
pooling, RMSNorm or LayerNorm, ``if_divide_out`` and ``init_layer_scale``. Rotary embeddings,
double class tokens, random token orders and the paired-layer ``if_bidirectional`` mode raise.

The forward is plain PyTorch with a linear-time scan on the CPU, and causal-conv1d /
mamba-ssm's selective-scan kernels on CUDA tensors when they are installed (the ``gpu`` extra).
A Vim mixer computes, per direction ``d`` (forward; backward on the flipped sequence, its own
``conv1d_b``, ``x_proj_b``, ``dt_proj_b``, ``A_b_log``, ``D_b``)::

    x, z = in_proj(h);   u = silu(conv_d(x));   dt, B, C = x_proj_d(u)
    y_d = (SSM(u; softplus(dt_proj_d(dt)), -exp(A_d_log), B, C) + D_d u) * silu(z)
    out = out_proj((y_forward + flip(y_backward)) / 2)        (the /2 when if_divide_out)
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from captum_mamba.kernels.cuda import load_causal_conv1d_fn, load_selective_scan_fn, use_kernel
from captum_mamba.kernels.selective_scan import differentiable_selective_scan

#: The keyword arguments of :class:`VisionMamba` (the official constructor's names).
VIM_OPTIONS: dict[str, Any] = dict(
    img_size=224,
    patch_size=16,
    stride=16,
    depth=24,
    embed_dim=192,
    d_state=16,
    channels=3,
    num_classes=1000,
    ssm_cfg=None,
    drop_rate=0.0,
    drop_path_rate=0.0,
    norm_epsilon=1e-5,
    rms_norm=True,
    fused_add_norm=True,
    residual_in_fp32=True,
    final_pool_type="mean",
    if_abs_pos_embed=True,
    if_rope=False,
    if_rope_residual=False,
    if_bidirectional=False,
    bimamba_type="v2",
    if_cls_token=True,
    if_divide_out=True,
    init_layer_scale=None,
    use_double_cls_token=False,
    use_middle_cls_token=True,
)

#: The official variants (``vim_{tiny,small,base}_patch16_224_bimambav2_final_pool_mean_abs_pos_embed_with_midclstok_div2``).
VIM_VARIANTS: dict[str, dict[str, Any]] = {
    "vim-tiny": dict(embed_dim=192, depth=24),
    "vim-small": dict(embed_dim=384, depth=24),
    "vim-base": dict(embed_dim=768, d_state=16, depth=24),
}


class VimRMSNorm(nn.Module):
    r"""
    RMSNorm ``x / rms(x) * weight``, computed in float32 or wider (mamba-ssm's ``RMSNorm``,
    state-dict key ``weight``).

    Args:
        hidden_size (int): normalised width.
        eps (float, optional): added to the mean square. Default: 1e-5
    """

    def __init__(self, hidden_size: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(hidden_size))

    def forward(self, x: Tensor) -> Tensor:
        wide = x.to(torch.promote_types(x.dtype, torch.float32))
        normed = (wide * torch.rsqrt(wide.pow(2).mean(-1, keepdim=True) + self.eps)).to(x.dtype)
        return self.weight * normed


class DropPath(nn.Module):
    """Stochastic depth: drops the whole residual update of an example while training."""

    def __init__(self, rate: float = 0.0) -> None:
        super().__init__()
        self.rate = rate

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.rate == 0.0:
            return x
        keep = x.new_empty(x.shape[0], *([1] * (x.dim() - 1))).bernoulli_(1 - self.rate)
        return x * keep / (1 - self.rate)


class PatchProjection(nn.Conv2d):
    """The patch-embedding convolution (a ``Conv2d``; its own type so that a pixel rule can be declared for it)."""


class PatchEmbed(nn.Module):
    r"""
    Image to patch embeddings: ``proj`` (kernel = patch size) then flatten to ``(batch, patches, dim)``.

    Args:
        img_size (int): image height and width.
        patch_size (int): patch height and width.
        stride (int): patch stride (the official models use ``patch_size``).
        in_chans (int): image channels.
        embed_dim (int): embedding width.
    """

    def __init__(self, img_size: int, patch_size: int, stride: int, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        self.img_size = (img_size, img_size)
        self.patch_size = (patch_size, patch_size)
        self.stride = stride
        side = (img_size - patch_size) // stride + 1
        self.grid_size = (side, side)
        self.num_patches = side * side
        self.proj = PatchProjection(in_chans, embed_dim, kernel_size=patch_size, stride=stride)

    def forward(self, x: Tensor) -> Tensor:
        if tuple(x.shape[-2:]) != self.img_size:
            raise ValueError(
                f"the model takes {self.img_size[0]} x {self.img_size[1]} images, got {tuple(x.shape[-2:])}; "
                "resize the images first"
            )
        return self.proj(x).flatten(2).transpose(1, 2)


class VimMamba(nn.Module):
    r"""
    The bidirectional Mamba mixer of Vim (``bimamba_type="v2"``): two selective scans over the
    sequence and its reversal sharing ``in_proj`` and ``out_proj`` (official names:
    ``in_proj, conv1d, x_proj, dt_proj, A_log, D`` and ``conv1d_b, x_proj_b, dt_proj_b, A_b_log,
    D_b``, ``out_proj``).

    Args:
        d_model (int): model width.
        d_state (int, optional): SSM state size. Default: 16
        d_conv (int, optional): causal convolution width. Default: 4
        expand (int, optional): inner width = ``expand * d_model``. Default: 2
        dt_rank (int or "auto", optional): rank of ``dt``; ``"auto"`` is ``ceil(d_model / 16)``.
        conv_bias (bool, optional): bias of the causal convolutions. Default: True
        bias (bool, optional): bias of ``in_proj`` / ``out_proj``. Default: False
        layer_idx (int, optional): the layer's index.
        if_divide_out (bool, optional): average (rather than sum) the two directions. Default: True
        init_layer_scale (float, optional): a learned output scale ``gamma`` when given.
    """

    def __init__(
        self,
        d_model: int,
        d_state: int = 16,
        d_conv: int = 4,
        expand: int = 2,
        dt_rank: int | str = "auto",
        conv_bias: bool = True,
        bias: bool = False,
        layer_idx: int | None = None,
        if_divide_out: bool = True,
        init_layer_scale: float | None = None,
        dt_min: float = 0.001,
        dt_max: float = 0.1,
        **ignored: Any,
    ) -> None:
        super().__init__()
        self.d_model, self.d_state, self.d_conv, self.expand = d_model, d_state, d_conv, expand
        self.d_inner = int(expand * d_model)
        self.dt_rank = math.ceil(d_model / 16) if dt_rank == "auto" else int(dt_rank)
        self.layer_idx = layer_idx
        self.if_divide_out = if_divide_out
        self.activation = "silu"
        self.init_layer_scale = init_layer_scale
        if init_layer_scale is not None:
            self.gamma = nn.Parameter(init_layer_scale * torch.ones(d_model))
        # Parameters in the official registration order (state-dict order).
        self.in_proj = nn.Linear(d_model, 2 * self.d_inner, bias=bias)
        self.conv1d = self._conv(conv_bias)
        self.act = nn.SiLU()
        self.x_proj = nn.Linear(self.d_inner, self.dt_rank + 2 * d_state, bias=False)
        self.dt_proj = self._dt_proj(dt_min, dt_max)
        self.A_log = nn.Parameter(self._s4d_real())
        self.D = nn.Parameter(torch.ones(self.d_inner))
        self.A_b_log = nn.Parameter(self._s4d_real())
        self.conv1d_b = self._conv(conv_bias)
        self.x_proj_b = nn.Linear(self.d_inner, self.dt_rank + 2 * d_state, bias=False)
        self.dt_proj_b = self._dt_proj(dt_min, dt_max)
        self.D_b = nn.Parameter(torch.ones(self.d_inner))
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=bias)

    def _conv(self, bias: bool) -> nn.Conv1d:
        return nn.Conv1d(
            self.d_inner, self.d_inner, kernel_size=self.d_conv, groups=self.d_inner, padding=self.d_conv - 1, bias=bias
        )

    def _dt_proj(self, dt_min: float, dt_max: float) -> nn.Linear:
        # Mamba's initialisation: softplus(bias) log-uniform in [dt_min, dt_max].
        proj = nn.Linear(self.dt_rank, self.d_inner, bias=True)
        nn.init.uniform_(proj.weight, -(self.dt_rank**-0.5), self.dt_rank**-0.5)
        dt = torch.exp(torch.rand(self.d_inner) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        dt = dt.clamp(min=1e-4)
        with torch.no_grad():
            proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # inverse softplus
        return proj

    def _s4d_real(self) -> Tensor:
        return torch.log(torch.arange(1, self.d_state + 1, dtype=torch.float32).repeat(self.d_inner, 1))

    def direction(self, suffix: str) -> dict[str, Any]:
        """The modules and parameters of one scan direction (``""`` forward, ``"_b"`` backward)."""
        return {
            "conv1d": getattr(self, "conv1d" + suffix),
            "x_proj": getattr(self, "x_proj" + suffix),
            "dt_proj": getattr(self, "dt_proj" + suffix),
            "A_log": getattr(self, "A_b_log" if suffix else "A_log"),
            "D": getattr(self, "D" + suffix),
        }

    def _scan_direction(self, x: Tensor, z: Tensor, parts: Mapping[str, Any]) -> Tensor:
        """``(SSM(silu(conv(x))) + D u) * silu(z)`` for one direction; ``x``, ``z`` ``(batch, length, inner)``."""
        conv, x_proj, dt_proj = parts["conv1d"], parts["x_proj"], parts["dt_proj"]
        A = -torch.exp(parts["A_log"].float())
        length = x.shape[1]
        if use_kernel(x, load_selective_scan_fn, "auto") and use_kernel(x, load_causal_conv1d_fn, "auto"):
            u = load_causal_conv1d_fn()(
                x.transpose(1, 2).contiguous(), conv.weight.squeeze(1), conv.bias, activation="silu"
            )  # (batch, inner, length)
            dt, B, C = torch.split(x_proj(u.transpose(1, 2)), [self.dt_rank, self.d_state, self.d_state], dim=-1)
            y = load_selective_scan_fn()(
                u,
                (dt @ dt_proj.weight.t()).transpose(1, 2).contiguous(),
                A,
                B.transpose(1, 2).contiguous(),
                C.transpose(1, 2).contiguous(),
                parts["D"].float(),
                z=z.transpose(1, 2).contiguous(),
                delta_bias=dt_proj.bias.float(),
                delta_softplus=True,
            )
            return y.transpose(1, 2)
        u = F.silu(conv(x.transpose(1, 2))[..., :length].transpose(1, 2))
        dt, B, C = torch.split(x_proj(u), [self.dt_rank, self.d_state, self.d_state], dim=-1)
        # dt_proj's bias and D in float32, as the official kernels take them
        delta = F.softplus(dt @ dt_proj.weight.t() + dt_proj.bias.float())
        y = differentiable_selective_scan(u, delta, A, B, C) + u * parts["D"].float()
        return (y * F.silu(z)).to(x.dtype)

    def forward(self, hidden_states: Tensor, inference_params: Any = None) -> Tensor:
        if inference_params is not None:
            raise NotImplementedError("VimMamba runs whole sequences (no inference cache)")
        x, z = self.in_proj(hidden_states).chunk(2, dim=-1)
        forward = self._scan_direction(x, z, self.direction(""))
        backward = self._scan_direction(x.flip(1), z.flip(1), self.direction("_b")).flip(1)
        mixed = forward + backward
        out = self.out_proj((mixed / 2 if self.if_divide_out else mixed).to(hidden_states.dtype))
        return out * self.gamma if self.init_layer_scale is not None else out


class Block(nn.Module):
    r"""
    Vim's block, "add, norm, mix": ``residual = residual + hidden`` (or ``hidden`` for the first
    block), ``hidden = mixer(norm(residual))``; returns ``(hidden, residual)``.

    Args:
        dim (int): model width.
        mixer (nn.Module): the mixer.
        norm (nn.Module): the norm.
        residual_in_fp32 (bool, optional): keep the residual stream in float32 (or wider). Default: False
        drop_path (float, optional): stochastic-depth rate. Default: 0
    """

    def __init__(
        self, dim: int, mixer: nn.Module, norm: nn.Module, residual_in_fp32: bool = False, drop_path: float = 0.0
    ) -> None:
        super().__init__()
        self.residual_in_fp32 = residual_in_fp32
        self.mixer = mixer
        self.norm = norm
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(
        self, hidden_states: Tensor, residual: Tensor | None = None, inference_params: Any = None
    ) -> tuple[Tensor, Tensor]:
        residual = hidden_states if residual is None else residual + self.drop_path(hidden_states)
        hidden_states = self.norm(residual.to(dtype=self.norm.weight.dtype))
        if self.residual_in_fp32:  # float32 or wider: a float64 model stays float64
            residual = residual.to(torch.promote_types(residual.dtype, torch.float32))
        return self.mixer(hidden_states, inference_params=inference_params), residual


class VisionMamba(nn.Module):
    r"""
    Vision Mamba, with hustvl/Vim's ``VisionMamba`` constructor arguments (see
    :data:`VIM_OPTIONS`) and state-dict keys.

    Args:
        **options: the official keyword arguments, e.g. ``img_size=224, patch_size=16,
                    embed_dim=384, depth=24, num_classes=1000``.

    Raises:
        NotImplementedError: for official options this definition does not implement (rotary
                    embeddings, double class tokens, ``if_bidirectional``, ``bimamba_type`` other
                    than ``"v2"``).
    """

    def __init__(self, **options: Any) -> None:
        super().__init__()
        unknown = sorted(set(options) - set(VIM_OPTIONS) - {"device", "dtype"})
        if unknown:
            raise TypeError(f"unknown VisionMamba options {unknown}; known: {sorted(VIM_OPTIONS)}")
        config = {**VIM_OPTIONS, **{k: v for k, v in options.items() if k in VIM_OPTIONS}}
        _check_supported(config)
        self.config = config
        embed_dim, depth = config["embed_dim"], config["depth"]
        self.residual_in_fp32 = config["residual_in_fp32"]
        self.fused_add_norm = config["fused_add_norm"]
        self.final_pool_type = config["final_pool_type"]
        self.if_abs_pos_embed = config["if_abs_pos_embed"]
        self.if_cls_token = config["if_cls_token"]
        self.use_middle_cls_token = config["use_middle_cls_token"]
        self.num_tokens = 1 if self.if_cls_token else 0
        self.num_classes = config["num_classes"]
        self.d_model = self.num_features = self.embed_dim = embed_dim

        self.patch_embed = PatchEmbed(
            config["img_size"], config["patch_size"], config["stride"], config["channels"], embed_dim
        )
        num_patches = self.patch_embed.num_patches
        if self.if_cls_token:
            self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        if self.if_abs_pos_embed:
            self.pos_embed = nn.Parameter(torch.zeros(1, num_patches + self.num_tokens, embed_dim))
            self.pos_drop = nn.Dropout(p=config["drop_rate"])
        self.head = nn.Linear(embed_dim, self.num_classes) if self.num_classes > 0 else nn.Identity()
        rates = [0.0] + torch.linspace(0, config["drop_path_rate"], depth).tolist()
        self.drop_path = DropPath(config["drop_path_rate"]) if config["drop_path_rate"] > 0 else nn.Identity()
        ssm = dict(config["ssm_cfg"] or {})
        self.layers = nn.ModuleList(
            Block(
                embed_dim,
                VimMamba(
                    embed_dim,
                    d_state=config["d_state"],
                    layer_idx=index,
                    if_divide_out=config["if_divide_out"],
                    init_layer_scale=config["init_layer_scale"],
                    **ssm,
                ),
                _norm(config),
                residual_in_fp32=self.residual_in_fp32,
                drop_path=rates[index],
            )
            for index in range(depth)
        )
        self.norm_f = _norm(config)
        self._initialise()

    def _initialise(self) -> None:
        # The official initialisation, in outline: truncated-normal embeddings and head,
        # LeCun-normal patch projection, zero linear biases except dt_proj's.
        if self.if_cls_token:
            nn.init.trunc_normal_(self.cls_token, std=0.02)
        if self.if_abs_pos_embed:
            nn.init.trunc_normal_(self.pos_embed, std=0.02)
        proj = self.patch_embed.proj
        fan_in = proj.in_channels * proj.kernel_size[0] * proj.kernel_size[1]
        nn.init.trunc_normal_(proj.weight, std=math.sqrt(1.0 / fan_in))
        nn.init.zeros_(proj.bias)
        if isinstance(self.head, nn.Linear):
            nn.init.trunc_normal_(self.head.weight, std=0.02)
            nn.init.zeros_(self.head.bias)
        for layer in self.layers:
            for linear in (layer.mixer.in_proj, layer.mixer.out_proj):
                if linear.bias is not None:
                    nn.init.zeros_(linear.bias)

    @property
    def token_position(self) -> int | None:
        """The class token's index in the token sequence (``None`` without one)."""
        if not self.if_cls_token:
            return None
        return self.patch_embed.num_patches // 2 if self.use_middle_cls_token else 0

    def embed(self, x: Tensor) -> Tensor:
        """The token sequence entering the first block: patch embeddings, class token, position embeddings."""
        tokens = self.patch_embed(x)
        position = self.token_position
        if position is not None:
            cls = self.cls_token.expand(tokens.shape[0], -1, -1).to(tokens.dtype)
            tokens = torch.cat((tokens[:, :position], cls, tokens[:, position:]), dim=1)
        if self.if_abs_pos_embed:
            tokens = self.pos_drop(tokens + self.pos_embed)
        return tokens

    def forward_features(self, x: Tensor, inference_params: Any = None) -> Tensor:
        """The pooled features: the class token's final state (or the pooled tokens without one)."""
        hidden_states, residual = self.embed(x), None
        for layer in self.layers:
            hidden_states, residual = layer(hidden_states, residual, inference_params=inference_params)
        residual = residual + self.drop_path(hidden_states)
        hidden_states = self.norm_f(residual.to(dtype=self.norm_f.weight.dtype))
        position = self.token_position
        if position is not None:
            return hidden_states[:, position, :]
        if self.final_pool_type == "mean":
            return hidden_states.mean(dim=1)
        return hidden_states[:, -1, :]

    def forward(self, x: Tensor, return_features: bool = False, inference_params: Any = None) -> Tensor:
        features = self.forward_features(x, inference_params)
        return features if return_features else self.head(features)

    def save_pretrained(self, directory: str | Path) -> None:
        """Write ``config.json`` (the constructor options) and ``model.safetensors``."""
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "config.json").write_text(json.dumps({"architecture": "VisionMamba", **self.config}, indent=2))
        save_file({k: v.contiguous() for k, v in self.state_dict().items()}, str(directory / "model.safetensors"))

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> VisionMamba:
        r"""
        A model written by :meth:`save_pretrained` (a local directory; nothing is downloaded).

        Raises:
            FileNotFoundError: naming the missing file.
        """
        from safetensors.torch import load_file

        directory = Path(directory)
        for name in ("config.json", "model.safetensors"):
            if not (directory / name).is_file():
                raise FileNotFoundError(
                    f"{directory / name} is missing; a Vim directory holds config.json and model.safetensors"
                )
        options = json.loads((directory / "config.json").read_text())
        options.pop("architecture", None)
        model = cls(**options)
        model.load_state_dict(load_file(str(directory / "model.safetensors")))
        return model.eval()


def _norm(config: Mapping[str, Any]) -> nn.Module:
    if config["rms_norm"]:
        return VimRMSNorm(config["embed_dim"], eps=config["norm_epsilon"])
    return nn.LayerNorm(config["embed_dim"], eps=config["norm_epsilon"])


def _check_supported(config: Mapping[str, Any]) -> None:
    unsupported = {
        "if_rope": "rotary embeddings",
        "if_rope_residual": "rotary embeddings on the residual",
        "if_bidirectional": "paired-layer bidirectional mode",
        "use_double_cls_token": "double class tokens",
    }
    for name, what in unsupported.items():
        if config[name]:
            raise NotImplementedError(f"VisionMamba here does not implement {what} ({name}=True)")
    if config["bimamba_type"] != "v2":
        raise NotImplementedError(f"VisionMamba here implements bimamba_type='v2', got {config['bimamba_type']!r}")
    if config["final_pool_type"] not in ("mean", "none"):
        raise NotImplementedError(f"final_pool_type must be 'mean' or 'none', got {config['final_pool_type']!r}")


def vim_model(variant: str = "vim-small", **options: Any) -> VisionMamba:
    r"""
    An official Vim variant with random weights.

    Args:
        variant (str): ``"vim-tiny"``, ``"vim-small"`` or ``"vim-base"`` (patch 16, 224 x 224,
                    middle class token).
        **options: further :class:`VisionMamba` options (e.g. ``num_classes``).
    """
    if variant not in VIM_VARIANTS:
        raise ValueError(f"unknown Vim variant {variant!r}; choose one of {sorted(VIM_VARIANTS)}")
    return VisionMamba(**{**VIM_VARIANTS[variant], **options})


def load_vim_checkpoint(path: str | Path, variant: str = "vim-small", **options: Any) -> VisionMamba:
    r"""
    An official hustvl/Vim checkpoint (``.pth``, e.g. ``vim_s_midclstok_80p5acc.pth``) from a
    local file; nothing is downloaded.

    Args:
        path (str or Path): the checkpoint file (its ``"model"`` entry, or the state dict itself).
        variant (str, optional): the checkpoint's variant (see :func:`vim_model`). Default: "vim-small"
        **options: further :class:`VisionMamba` options.

    Returns:
        *VisionMamba* in eval mode.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: if the checkpoint's keys do not match the variant.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}; download the official .pth file and pass its path")
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    state = checkpoint.get("model", checkpoint) if isinstance(checkpoint, dict) else checkpoint
    model = vim_model(variant, **options)
    expected = {key: tuple(value.shape) for key, value in model.state_dict().items()}
    found = {key: tuple(value.shape) for key, value in state.items()}
    missing, unexpected = sorted(set(expected) - set(found)), sorted(set(found) - set(expected))
    reshaped = sorted(key for key in set(expected) & set(found) if expected[key] != found[key])
    if missing or unexpected or reshaped:
        detail = "; ".join(
            f"{what} {keys[:3]}{' ...' if len(keys) > 3 else ''}"
            for what, keys in (("missing", missing), ("unexpected", unexpected), ("other shapes for", reshaped))
            if keys
        )
        raise ValueError(
            f"the checkpoint does not match {variant!r} ({detail}); choose the variant the checkpoint was trained as, "
            "or pass its options (embed_dim=..., depth=...)"
        )
    model.load_state_dict(state)
    return model.eval()

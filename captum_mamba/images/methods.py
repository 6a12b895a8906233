"""Image attribution methods, in one place: MambaLRP, naive LRP and the baselines, by name.

:data:`IMAGE_METHODS` serves the image evaluation (:mod:`captum_mamba.images.evaluation`), the
image comparison page (:mod:`captum_mamba.compare.image_compare`) and the ``explain-image`` /
``compare-images`` commands. :func:`attribute_images` runs one method on a batch with the
prediction, the explained logit, the relevance sum and the convergence delta.
"""

from __future__ import annotations

import contextlib
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
from captum.attr import InputXGradient, IntegratedGradients, NoiseTunnel, Saliency
from torch import Tensor, nn

from captum_mamba.evaluation.methods import ablated_rules
from captum_mamba.images.patches import patch_geometry, upsample_patches
from captum_mamba.images.rollout import rollout_patch_scores
from captum_mamba.mamba_lrp import MambaLRP
from captum_mamba.models.vim import PatchProjection
from captum_mamba.rules.gamma import SignedGammaRule


@dataclass(frozen=True)
class ImageMethodSpec:
    r"""
    An image attribution method known to the image evaluation.

    Args:
        name (str): registry key, e.g. ``"mamba_lrp"``.
        label (str): display name, e.g. ``"MambaLRP"``.
        explain (Callable): ``explain(model, images, target) -> Tensor``: the relevance of every
                    pixel, ``(batch, channels, height, width)`` or already ``(batch, height, width)``.
        description (str): one line for tables.
        family (str): ``"lrp"``, ``"gradient"``, ``"attention"`` or ``"control"``.
        additive (bool): whether the relevances sum to (about) the explained logit, so that the
                    convergence delta (sum minus logit) means something. Default: True
    """

    name: str
    label: str
    explain: Callable[[nn.Module, Tensor, Tensor], Tensor]
    description: str = ""
    family: str = "gradient"
    additive: bool = True


IMAGE_METHODS: dict[str, ImageMethodSpec] = {}
"""The registered image methods by name (see :func:`register_image_method`)."""


def register_image_method(spec: ImageMethodSpec) -> ImageMethodSpec:
    r"""
    Add (or replace) a method in :data:`IMAGE_METHODS`.

    Args:
        spec (ImageMethodSpec): the method.

    Returns:
        *ImageMethodSpec* ``spec``.
    """
    IMAGE_METHODS[spec.name] = spec
    return spec


def check_image_methods(names: Sequence[str]) -> list[str]:
    r"""
    Args:
        names (Sequence[str]): method names.

    Returns:
        *list[str]*: the names without repeats.

    Raises:
        ValueError: naming the unknown method names and listing the known ones, or for no name.
    """
    unknown = [name for name in names if name not in IMAGE_METHODS]
    if unknown:
        raise ValueError(f"unknown image methods {unknown}; known: {', '.join(IMAGE_METHODS)}")
    if not names:
        raise ValueError("choose at least one image attribution method")
    return list(dict.fromkeys(names))


@contextlib.contextmanager
def _seeded(device: torch.device, seed: int = 0) -> Iterator[None]:
    """Seed torch's generators for the block and restore their states afterwards."""
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def _mamba_lrp(model: nn.Module, images: Tensor, target: Tensor) -> Tensor:
    return MambaLRP(model).attribute(images, target=target)


def _naive_lrp(model: nn.Module, images: Tensor, target: Tensor) -> Tensor:
    # the text naive_lrp's ablation: the mixers' SiLU, SSM and gate rules off (gradient x input
    # through them); the norm rule and the patch projection's gamma rule stay
    return MambaLRP(model, rules=ablated_rules(model, {"silu", "ssm", "gate"})).attribute(images, target=target)


def _input_x_gradient(model: nn.Module, images: Tensor, target: Tensor) -> Tensor:
    return InputXGradient(model).attribute(images, target=target)


def _integrated_gradients(model: nn.Module, images: Tensor, target: Tensor) -> Tensor:
    return IntegratedGradients(model).attribute(
        images, baselines=0.0, target=target, n_steps=32, internal_batch_size=128
    )


def _smoothgrad(model: nn.Module, images: Tensor, target: Tensor) -> Tensor:
    # noise standard deviation 0.1 x the batch's pixel standard deviation (as the text smoothgrad
    # scales by the embeddings' std); seeded, so a batch always gets the same noise
    stdev = 0.1 * float(images.detach().std()) if images.numel() > 1 else 0.1
    with _seeded(images.device):
        return NoiseTunnel(InputXGradient(model)).attribute(
            images, nt_type="smoothgrad", nt_samples=16, nt_samples_batch_size=16, stdevs=stdev, target=target
        )


def _attention_rollout(model: nn.Module, images: Tensor, target: Tensor) -> Tensor:
    # class-independent: the rollout ignores the target
    scores = rollout_patch_scores(model, images)
    (patch_h, patch_w), _ = patch_geometry(model)
    return upsample_patches(scores, (patch_h, patch_w), tuple(images.shape[-2:])).to(images.dtype)


def _saliency(model: nn.Module, images: Tensor, target: Tensor) -> Tensor:
    return Saliency(model).attribute(images, target=target, abs=True)


def _random(model: nn.Module, images: Tensor, target: Tensor) -> Tensor:
    generator = torch.Generator().manual_seed(0)
    shape = (images.shape[0], *images.shape[-2:])
    return torch.rand(shape, generator=generator, dtype=torch.float64).to(images)


def _builtin_image_methods() -> None:
    builtins = [
        ImageMethodSpec("mamba_lrp", "MambaLRP", _mamba_lrp, "all MambaLRP rules; LRP-gamma on the pixels", "lrp"),
        ImageMethodSpec(
            "naive_lrp",
            "naive LRP",
            _naive_lrp,
            "MambaLRP with the mixers' SiLU, SSM and gate rules off (norm and pixel rules kept)",
            "lrp",
        ),
        ImageMethodSpec("input_x_gradient", "Gradient x Input", _input_x_gradient, "Gradient x Input"),
        ImageMethodSpec(
            "integrated_gradients",
            "Integrated Gradients",
            _integrated_gradients,
            "Integrated Gradients from the normalised-zero image, 32 steps",
        ),
        ImageMethodSpec(
            "smoothgrad",
            "SmoothGrad",
            _smoothgrad,
            "NoiseTunnel(InputXGradient), 16 samples, noise 0.1 x the images' std",
        ),
        ImageMethodSpec(
            "attention_rollout",
            "AttnRoll",
            _attention_rollout,
            "attention rollout over Vim's bidirectional hidden attention (class token's row)",
            "attention",
            additive=False,
        ),
        ImageMethodSpec("saliency", "Saliency", _saliency, "absolute gradient (unsigned)", additive=False),
        ImageMethodSpec(
            "random", "random", _random, "uniform random pixel scores (control)", "control", additive=False
        ),
    ]
    for spec in builtins:
        register_image_method(spec)


_builtin_image_methods()
EVALUATED_IMAGE_METHODS: tuple[str, ...] = (
    "mamba_lrp",
    "naive_lrp",
    "input_x_gradient",
    "integrated_gradients",
    "smoothgrad",
    "attention_rollout",
    "random",
)
"""The rows of the image evaluation's table unless others are asked for."""

COMPARED_IMAGE_METHODS: tuple[str, ...] = ("mamba_lrp", "input_x_gradient", "integrated_gradients", "smoothgrad")
"""The columns of the image comparison unless others are asked for."""


@dataclass
class ImageAttribution:
    r"""
    One method's explanation of a batch of images.

    Args:
        method (str): the registry name.
        relevance (Tensor): ``(batch, channels, height, width)``.
        predicted (Tensor): ``(batch,)`` the predicted classes.
        targets (Tensor): ``(batch,)`` the explained classes.
        logits (Tensor): ``(batch,)`` the explained logits.
        probabilities (Tensor): ``(batch,)`` the softmax probabilities of the explained classes.
        sums (Tensor): ``(batch,)`` the sums of the relevances.
        deltas (Tensor or None): ``(batch,)`` sum minus explained logit; None for methods that are not additive.
        seconds (float): wall time of the attribution.
    """

    method: str
    relevance: Tensor
    predicted: Tensor
    targets: Tensor
    logits: Tensor
    probabilities: Tensor
    sums: Tensor
    deltas: Tensor | None
    seconds: float


def attribute_images(
    model: nn.Module,
    images: Tensor,
    method: str = "mamba_lrp",
    target: int | Sequence[int] | Tensor | None = None,
    gamma: float | None = None,
    seed: int = 0,
) -> ImageAttribution:
    r"""
    Explain an image classifier's logits with one method of :data:`IMAGE_METHODS`.

    Args:
        model (nn.Module): the classifier, ``images -> (batch, classes)`` logits (e.g. a
                    :class:`~captum_mamba.models.vim.VisionMamba`), in eval mode.
        images (Tensor): ``(batch, channels, height, width)``, normalised as the model expects.
        method (str, optional): a name of :data:`IMAGE_METHODS`. Default: "mamba_lrp"
        target (int, Sequence[int] or Tensor, optional): the class explained, one for all images
                    or one per image. Default: each image's predicted class.
        gamma (float, optional): γ of MambaLRP's pixel rule (``mamba_lrp`` only). Default: the
                    family's (0.25).
        seed (int, optional): seeds the random noise (SmoothGrad), so runs repeat. Default: 0

    Returns:
        *ImageAttribution*.

    Raises:
        ValueError: an unknown method, ``gamma`` for another method or below 0, a target out of range.
    """
    spec = IMAGE_METHODS[check_image_methods([method])[0]]
    if gamma is not None and method != "mamba_lrp":
        raise ValueError(f"gamma applies to mamba_lrp only, not to {method}")
    if gamma is not None and gamma < 0:
        raise ValueError(f"gamma must be 0 or more, got {gamma}")
    parameter = next(model.parameters(), None)
    if parameter is not None:
        images = images.to(device=parameter.device, dtype=parameter.dtype)
    with torch.no_grad():
        logits = model(images)
    predicted = logits.argmax(-1)
    classes = logits.shape[-1]
    if target is None:
        targets = predicted.clone()
    else:
        targets = torch.as_tensor(target, device=logits.device, dtype=torch.long).reshape(-1)
        targets = targets.expand(len(images)).clone() if targets.numel() == 1 else targets
        if targets.numel() != len(images):
            raise ValueError(f"{targets.numel()} targets for {len(images)} images; give one for all or one per image")
        if bool(((targets < 0) | (targets >= classes)).any()):
            raise ValueError(f"target {targets.tolist()} out of range; the model has classes 0 to {classes - 1}")
    explained = logits.gather(1, targets[:, None])[:, 0]
    probabilities = logits.float().softmax(-1).gather(1, targets[:, None])[:, 0]
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        # Captum's gradient methods warn that they set requires_grad on the (detached) inputs: expected here
        warnings.filterwarnings("ignore", message="Input Tensor .* did not already require gradients")
        torch.manual_seed(seed)
        start = time.perf_counter()
        if gamma is None:
            relevance = spec.explain(model, images, targets).detach()
        else:  # MambaLRP with another γ at the pixels
            rules = {PatchProjection: SignedGammaRule(gamma=gamma)}
            relevance = MambaLRP(model, rules=rules).attribute(images, target=targets).detach()
        seconds = time.perf_counter() - start
    sums = relevance.flatten(1).double().sum(1)
    return ImageAttribution(
        method=method,
        relevance=relevance,
        predicted=predicted,
        targets=targets,
        logits=explained,
        probabilities=probabilities,
        sums=sums,
        deltas=sums - explained.double() if spec.additive else None,
        seconds=seconds,
    )

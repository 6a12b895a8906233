"""Attribution methods for image classifiers, in one place: MambaLRP and the Captum baselines.

:data:`IMAGE_METHODS` names every method the image commands offer (``explain-image --method``,
``compare-images --methods``) and :func:`attribute_images` runs one of them on a batch, with the
prediction, the explained logit, the relevance sum and the convergence delta. Both commands and
:func:`~captum_mamba.compare.image_compare.compare_images` go through :func:`attribute_images`
only, so the methods can be swapped for another registry here without touching them.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from captum.attr import InputXGradient, IntegratedGradients, NoiseTunnel, Saliency
from torch import Tensor, nn

#: ``explainer(model, images, targets, gamma) -> relevances`` shaped like ``images``.
Explainer = Callable[[nn.Module, Tensor, Tensor, "float | None"], Tensor]


@dataclass(frozen=True)
class ImageMethod:
    r"""
    An attribution method for image classifiers.

    Args:
        name (str): registry name (``"mamba_lrp"``).
        label (str): display name (``"MambaLRP"``).
        description (str): one line on what it computes.
        explainer (Callable): ``(model, images, targets, gamma) -> relevances`` shaped like ``images``.
        additive (bool): whether the relevances sum to (about) the explained logit, so that the
                    convergence delta (sum minus logit) is meaningful. Default: True
    """

    name: str
    label: str
    description: str
    explainer: Explainer
    additive: bool = True


def _mamba_lrp(model: nn.Module, images: Tensor, targets: Tensor, gamma: float | None) -> Tensor:
    from captum_mamba.mamba_lrp import MambaLRP
    from captum_mamba.models.vim import PatchProjection
    from captum_mamba.rules.gamma import SignedGammaRule

    rules = None if gamma is None else {PatchProjection: SignedGammaRule(gamma=gamma)}
    return MambaLRP(model, rules=rules).attribute(images, target=targets)


def _input_x_gradient(model: nn.Module, images: Tensor, targets: Tensor, gamma: float | None) -> Tensor:
    return InputXGradient(model).attribute(images, target=targets)


def _integrated_gradients(model: nn.Module, images: Tensor, targets: Tensor, gamma: float | None) -> Tensor:
    return IntegratedGradients(model).attribute(
        images, baselines=0.0, target=targets, n_steps=32, internal_batch_size=64
    )


def _smoothgrad(model: nn.Module, images: Tensor, targets: Tensor, gamma: float | None) -> Tensor:
    # one image at a time: the noise level follows each image's range, whatever the batch
    rows = []
    for image, target in zip(images, targets):
        spread = float(image.max() - image.min()) or 1.0
        rows.append(
            NoiseTunnel(InputXGradient(model)).attribute(
                image[None],
                target=target[None],
                nt_type="smoothgrad",
                nt_samples=16,
                nt_samples_batch_size=16,
                stdevs=0.15 * spread,
            )
        )
    return torch.cat(rows)


def _saliency(model: nn.Module, images: Tensor, targets: Tensor, gamma: float | None) -> Tensor:
    return Saliency(model).attribute(images, target=targets, abs=True)


IMAGE_METHODS: dict[str, ImageMethod] = {
    method.name: method
    for method in (
        ImageMethod(
            "mamba_lrp",
            "MambaLRP",
            "relevance propagation (LRP-γ at the pixels, γ = 0.25 unless --gamma), one backward pass",
            _mamba_lrp,
        ),
        ImageMethod(
            "input_x_gradient", "Gradient x Input", "Gradient x Input on the unmodified model", _input_x_gradient
        ),
        ImageMethod(
            "integrated_gradients",
            "Integrated Gradients",
            "Integrated Gradients from the all-zero (normalised mean) image, 32 steps",
            _integrated_gradients,
        ),
        ImageMethod(
            "smoothgrad",
            "SmoothGrad",
            "NoiseTunnel(InputXGradient), 16 samples, noise 0.15 x each image's value range",
            _smoothgrad,
        ),
        ImageMethod("saliency", "Saliency", "absolute gradient (unsigned)", _saliency, additive=False),
    )
}
"""Every image attribution method, by registry name."""

DEFAULT_IMAGE_METHODS: tuple[str, ...] = ("mamba_lrp", "input_x_gradient", "integrated_gradients", "smoothgrad")
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


def check_image_methods(methods: Sequence[str]) -> list[str]:
    r"""
    Validate method names against :data:`IMAGE_METHODS`.

    Args:
        methods (Sequence[str]): the names.

    Returns:
        *list[str]*: the names, without repeats; a ``ValueError`` lists the known ones for an unknown name.
    """
    unknown = [name for name in methods if name not in IMAGE_METHODS]
    if unknown:
        raise ValueError(
            f"unknown image attribution method{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}; "
            f"choose from {', '.join(IMAGE_METHODS)}"
        )
    if not methods:
        raise ValueError("choose at least one image attribution method")
    return list(dict.fromkeys(methods))


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
        relevance = spec.explainer(model, images, targets, gamma).detach()
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

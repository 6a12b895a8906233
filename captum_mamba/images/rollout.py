"""Attention rollout over Vision Mamba's hidden attention (Ali, Zimerman and Wolf, 2024).

Each direction of a Vim mixer is a Mamba-1 selective SSM, per channel ``d`` the causal linear
operator ``y_t = sum_j alpha^d_{tj} u_j (+ D_d u_t)`` with the hidden attention of
:func:`captum_mamba.evaluation.hidden_attention.hidden_attention`. The backward direction scans
the reversed token sequence, so its matrix, computed in scan order, is flipped along both axes
back to the tokens' order (where it is anti-causal: token ``t`` attends to ``j >= t``).

Per block ``l``, with ``L`` tokens and the channel mean of the absolute hidden attention
(the text rollout's convention, :class:`~captum_mamba.evaluation.hidden_attention.AttentionRollout`)::

    A_l   = (mean_d |alpha_forward| + flip(mean_d |alpha_backward|)) / 2      (L x L)
    M_l   = row_normalise(0.5 A_l + 0.5 I)                                    (the residual)
    R     = M_depth ... M_2 M_1                                               (rollout)

The class token's row of ``R`` restricted to the patch tokens gives one score per patch
(Abnar & Zuidema, 2020); without a class token, the mean of the rows (mean pooling) or the last
token's row. The scores do not depend on the explained class. Memory: one example at a time, a
``(tokens, tokens, channels, state)`` float64 tensor per direction and block.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from captum_mamba.evaluation.hidden_attention import hidden_attention


def direction_attention(mixer: nn.Module, hidden_states: Tensor, direction: str) -> Tensor:
    r"""
    The channel mean of one direction's absolute hidden attention, in the tokens' order.

    Args:
        mixer (nn.Module): a :class:`~captum_mamba.models.vim.VimMamba`.
        hidden_states (Tensor): the mixer's input ``(batch, length, hidden)``.
        direction (str): ``"forward"`` or ``"backward"``.

    Returns:
        *Tensor* ``(batch, length, length)`` in float64, query token by key token: lower
        triangular for ``"forward"``, upper triangular for ``"backward"``.
    """
    alpha, _, _ = hidden_attention(mixer, hidden_states, direction)  # (batch, channels, L, L), scan order
    matrix = alpha.double().abs().mean(1)
    # scan position s is token L - 1 - s: flip queries and keys back to the tokens' order
    return matrix.flip(-2, -1) if direction == "backward" else matrix


def block_attention(mixer: nn.Module, hidden_states: Tensor) -> Tensor:
    r"""
    The hidden attention of a bidirectional Vim mixer: the mean of its two directions' matrices.

    Args:
        mixer (nn.Module): a :class:`~captum_mamba.models.vim.VimMamba`.
        hidden_states (Tensor): the mixer's input ``(batch, length, hidden)``.

    Returns:
        *Tensor* ``(batch, length, length)`` in float64 (before the residual and normalisation).
    """
    forward = direction_attention(mixer, hidden_states, "forward")
    backward = direction_attention(mixer, hidden_states, "backward")
    return 0.5 * (forward + backward)


def _mixer_inputs(model: nn.Module, images: Tensor) -> list[Tensor]:
    """Run ``model`` once and keep the input of every block's mixer ``(batch, tokens, hidden)``."""
    captured: list[Tensor] = []
    handles = [
        layer.mixer.register_forward_pre_hook(lambda module, args: captured.append(args[0].detach()))
        for layer in model.layers
    ]
    try:
        with torch.no_grad():
            model(images)
    finally:
        for handle in handles:
            handle.remove()
    return captured


def rollout_matrix(model: nn.Module, images: Tensor) -> Tensor:
    r"""
    The rolled-out hidden attention of a Vision Mamba over all its blocks.

    Args:
        model (nn.Module): a :class:`~captum_mamba.models.vim.VisionMamba`.
        images (Tensor): ``(batch, channels, height, width)``.

    Returns:
        *Tensor* ``(batch, tokens, tokens)`` in float64 (class token included); every row sums to 1.
    """
    inputs = _mixer_inputs(model, images)
    batch, length = inputs[0].shape[:2]
    identity = torch.eye(length, dtype=torch.float64, device=images.device)
    rollout = identity.expand(batch, -1, -1).clone()
    for layer, hidden in zip(model.layers, inputs):
        # one example at a time: the hidden attention holds a (tokens, tokens, channels, state) tensor
        with torch.no_grad():
            attention = torch.cat([block_attention(layer.mixer, example) for example in hidden.split(1)])
        mixed = 0.5 * attention + 0.5 * identity  # the residual connection
        mixed = mixed / mixed.sum(-1, keepdim=True).clamp(min=1e-30)
        rollout = mixed @ rollout
    return rollout


def rollout_patch_scores(model: nn.Module, images: Tensor) -> Tensor:
    r"""
    Attention-rollout patch scores of a Vision Mamba: the explained token's row over the patches.

    Args:
        model (nn.Module): a :class:`~captum_mamba.models.vim.VisionMamba`.
        images (Tensor): ``(batch, channels, height, width)``.

    Returns:
        *Tensor* ``(batch, grid_height, grid_width)`` in float64, non-negative: the class
        token's row of :func:`rollout_matrix` without the class token's own column. A model
        without a class token pools its tokens: the mean of all rows (``final_pool_type="mean"``)
        or the last token's row.
    """
    rollout = rollout_matrix(model, images)
    position = model.token_position
    if position is None:
        pooled = rollout.mean(1) if model.final_pool_type == "mean" else rollout[:, -1]
        return pooled.reshape(-1, *model.patch_embed.grid_size)
    row = rollout[:, position]
    patches = torch.cat((row[:, :position], row[:, position + 1 :]), dim=1)
    return patches.reshape(-1, *model.patch_embed.grid_size)

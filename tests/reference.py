"""A from-scratch MambaLRP for Hugging Face Mamba-1 models, written from the paper's equations.

It shares no code with the package: explicit loops over time for the causal convolution and the
selective scan, the rules written out inline. Used as the independent reference in the tests.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def _rms_norm(norm: torch.nn.Module, x: Tensor) -> Tensor:
    scale = 1.0 / torch.sqrt((x * x).mean(-1, keepdim=True) + norm.variance_epsilon)
    return x * scale.detach() * norm.weight  # Eq. (App. C): normaliser held constant


def _mixer(mixer: torch.nn.Module, x: Tensor, conv_bias: Tensor | None) -> Tensor:
    batch, length, _ = x.shape
    channels = mixer.intermediate_size
    projected = x @ mixer.in_proj.weight.T
    if mixer.in_proj.bias is not None:
        projected = projected + mixer.in_proj.bias
    xs, z = projected[..., :channels], projected[..., channels:]

    kernel = mixer.conv1d.weight[:, 0, :]  # (channels, K)
    width = kernel.shape[1]
    conv_steps = []
    for t in range(length):
        acc = torch.zeros(batch, channels, dtype=x.dtype)
        for k in range(width):
            source = t - (width - 1) + k
            if source >= 0:
                acc = acc + kernel[:, k] * xs[:, source]
        if conv_bias is not None:
            acc = acc + conv_bias
        conv_steps.append(acc)
    conv = torch.stack(conv_steps, 1)
    u = conv * torch.sigmoid(conv).detach()  # Eq. (4): SiLU with the sigmoid held constant

    rank, state = mixer.time_step_rank, mixer.ssm_state_size
    dbc = u @ mixer.x_proj.weight.T
    dt, B, C = dbc[..., :rank], dbc[..., rank : rank + state], dbc[..., rank + state :]
    delta = F.softplus(dt @ mixer.dt_proj.weight.T + mixer.dt_proj.bias.float()).detach()  # Eqs. (6-7)
    B, C = B.detach(), C.detach()
    A = -torch.exp(mixer.A_log.float()).to(x.dtype)
    D = mixer.D.float().to(x.dtype)

    h = torch.zeros(batch, channels, state, dtype=x.dtype)
    ys = []
    for t in range(length):
        h = torch.exp(delta[:, t, :, None] * A) * h + (delta[:, t] * u[:, t])[:, :, None] * B[:, t, None, :]
        ys.append((h * C[:, t, None, :]).sum(-1) + D * u[:, t])
    y = torch.stack(ys, 1)

    gate = z * torch.sigmoid(z).detach()
    product = y * gate
    gated = 0.5 * product + 0.5 * product.detach()  # Eq. (9): half rule on the multiplicative gate
    out = gated @ mixer.out_proj.weight.T
    if mixer.out_proj.bias is not None:
        out = out + mixer.out_proj.bias
    return out


def reference_hidden(backbone: torch.nn.Module, embeds: Tensor, conv_biases: list[Tensor | None]) -> Tensor:
    hidden = embeds
    for block, bias in zip(backbone.layers, conv_biases):
        hidden = hidden + _mixer(block.mixer, _rms_norm(block.norm, hidden), bias)
    return _rms_norm(backbone.norm_f, hidden)


def reference_explanation(
    model: torch.nn.Module, embeds: Tensor, target: int, head: str = "lm", position: int = -1
) -> tuple[Tensor, Tensor, Tensor]:
    """Returns (relevance of the embeddings, explained logit, relevance absorbed by the conv biases)."""
    with torch.enable_grad():
        x = embeds.detach().clone().requires_grad_()
        backbone = model.backbone
        biases = [
            None if b.mixer.conv1d.bias is None else b.mixer.conv1d.bias.detach().clone().requires_grad_()
            for b in backbone.layers
        ]
        hidden = reference_hidden(backbone, x, biases)
        if head == "lm":
            logits = hidden[:, position] @ model.lm_head.weight.T
        else:
            pooled = hidden.mean(1) if model.pooling == "mean" else hidden[:, -1]
            logits = pooled @ model.score.weight.T
            if model.score.bias is not None:
                logits = logits + model.score.bias
        explained = logits[:, target]
        leaves = [x] + [b for b in biases if b is not None]
        relevance = torch.zeros_like(x)
        bias_relevance = torch.zeros(x.shape[0], dtype=x.dtype)
        for row in range(x.shape[0]):  # one backward per example: bias gradients are shared by the batch
            grads = torch.autograd.grad(explained[row], leaves, retain_graph=True)
            relevance[row] = (x * grads[0])[row]
            bias_relevance[row] = sum((g * b).sum() for g, b in zip(grads[1:], leaves[1:])) if len(leaves) > 1 else 0.0
    return relevance.detach(), explained.detach(), bias_relevance

"""A from-scratch AttnLRP / CP-LRP for Nemotron-H and Granite 4.0 hybrid decoders, written from the rules' equations.

It shares no code with the package: the attention with explicit loops over heads and positions
(scaled by the model's own scaling: ``1/sqrt(head_dim)`` for Nemotron-H, the ``attention_multiplier``
for Granite; rotary embeddings where the model has them), the uniform (half) rule on q·kᵀ and A·V
(AttnLRP) or the attention weights held constant (CP-LRP); the MLPs with their activations'
identity rules (squared ReLU ``x·[relu(x)]const``, SiLU ``x·[σ(x)]const``) and the half rule on a
gated MLP's product; the µP multipliers as the constants they are. The Mamba-2 mixers come from
the Mamba reference (``reference.py``), the RMSNorm and the rotary embedding from
``reference_attention.py``.

The mixture-of-experts layers: each model's router written out (Nemotron-H: sigmoid scores in
float32, the correction bias for the choice only, the best groups, then the top-k, renormalised and
scaled; Granite: float32 logits, top-k, softmax over the chosen logits), computed in float32 as
the models compute them (the weights are held constant, so their precision is the model's); the
experts as the loop of ``reference_moe.py`` with the routing weights held constant (Granite's
SwiGLU experts as written there, Nemotron-H's ungated squared-ReLU experts here), Nemotron-H's
optional latent projections around them and its shared expert beside them, Granite's shared MLP
beside them.

The shared family suite calls :func:`reference_logits` through ``family_references.py`` (the
relevances are Gradient x Input of its logit).
"""

from __future__ import annotations

import torch

from reference import _mamba2_mixer
from reference_attention import _attention, _half, _rms
from reference_moe import experts_loop


def _squared_relu_mlp(mlp: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Nemotron-H's MLP ``down(relu(up(x))²)``: the squared ReLU as ``x·[relu(x)]const``."""
    up = x @ mlp.up_proj.weight.T
    activated = up * torch.relu(up).detach()
    return activated @ mlp.down_proj.weight.T


def _granite_mlp(mlp: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Granite's shared MLP: one projection to both branches (gate first), SiLU rule, half rule on the product."""
    projected = x @ mlp.input_linear.weight.T
    width = projected.shape[-1] // 2
    gate, values = projected[..., :width], projected[..., width:]
    activated = gate * torch.sigmoid(gate).detach()
    return _half(activated, values) @ mlp.output_linear.weight.T


def _nemotron_h_route(router: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Nemotron-H's routing of tokens ``x`` ``(tokens, hidden)``: (weights, experts), each ``(tokens, top_k)``."""
    scores = torch.sigmoid(x.float() @ router.weight.float().T)  # float32, as the model routes
    choice = scores + router.e_score_correction_bias  # the bias steers the choice, not the weights
    size = router.num_experts // router.num_group
    chosen = []
    for token in range(x.shape[0]):
        row = choice[token].tolist()
        groups = [row[g * size : (g + 1) * size] for g in range(router.num_group)]
        group_scores = [sum(sorted(group, reverse=True)[:2]) for group in groups]  # each group's best two
        kept = sorted(range(router.num_group), key=group_scores.__getitem__, reverse=True)[: router.topk_group]
        candidates = [g * size + e for g in kept for e in range(size)]
        chosen.append(sorted(candidates, key=row.__getitem__, reverse=True)[: router.top_k])
    chosen = torch.tensor(chosen)
    weights = scores.gather(1, chosen)
    if router.norm_topk_prob:
        weights = weights / (weights.sum(-1, keepdim=True) + 1e-20)
    return (weights * router.routed_scaling_factor).to(x.dtype), chosen


def _squared_relu_expert(experts: torch.nn.Module, expert: int, x: torch.Tensor) -> torch.Tensor:
    """One Nemotron-H expert ``down(relu(up(x))²)`` on one token, the squared ReLU as ``x·[relu(x)]const``."""
    up = experts.up_proj[expert] @ x
    return experts.down_proj[expert] @ (up * torch.relu(up).detach())


def _nemotron_h_moe(moe: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``fc2(experts(fc1(x))) + shared(x)``: routed on ``x``, the latent projections (if any) linear."""
    batch, length, hidden = x.shape
    tokens = x.reshape(batch * length, hidden)
    weights, chosen = _nemotron_h_route(moe.gate, tokens)
    latent = moe.config.moe_latent_size is not None
    inner = tokens @ moe.fc1_latent_proj.weight.T if latent else tokens
    routed = experts_loop(moe.experts, inner, weights, chosen, expert=_squared_relu_expert)
    routed = routed @ moe.fc2_latent_proj.weight.T if latent else routed
    return routed.reshape(batch, length, hidden) + _squared_relu_mlp(moe.shared_experts, x)


def _granite_moe(moe: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Granite's experts: float32 logits, top-k, softmax over the chosen logits; SwiGLU experts (reference_moe)."""
    batch, length, hidden = x.shape
    tokens = x.reshape(batch * length, hidden)
    logits = (tokens @ moe.router.weight.T).float()
    top_logits, chosen = torch.topk(logits, moe.router.top_k, dim=-1)
    weights = torch.softmax(top_logits, dim=-1).to(x.dtype)
    return experts_loop(moe.experts, tokens, weights, chosen).reshape(batch, length, hidden)


def _nemotron_h_hidden(model: torch.nn.Module, x: torch.Tensor, mode: str) -> torch.Tensor:
    hidden = x
    for block in model.model.layers:  # each layer: h + mixer(norm(h)), the mixer by the hybrid pattern
        normed = _rms(block.norm, hidden)
        kind = model.config.layers_block_type[block.layer_idx]
        if kind == "linear_attention":
            update = _mamba2_mixer(block.mixer, normed, block.mixer.conv1d.bias, None)
        elif kind == "full_attention":  # no positional embedding
            update = _attention(block.mixer, normed, None, None, mode)  # no positional embedding
        elif kind == "mlp":
            update = _squared_relu_mlp(block.mixer, normed)
        elif kind == "moe":
            update = _nemotron_h_moe(block.mixer, normed)
        else:
            raise NotImplementedError(f"the reference has no {kind!r} layer")
        hidden = hidden + update
    return _rms(model.model.norm_f, hidden)


def _granite_hidden(model: torch.nn.Module, x: torch.Tensor, mode: str) -> torch.Tensor:
    config = model.config
    hidden = x * config.embedding_multiplier
    cos = sin = None
    if model.model.rotary_emb is not None:
        positions = torch.arange(x.shape[1])[None].expand(x.shape[0], -1)
        cos, sin = model.model.rotary_emb(hidden, positions)  # constants of the positions
    residual = config.residual_multiplier
    for index, layer in enumerate(model.model.layers):
        normed = _rms(layer.input_layernorm, hidden)
        if config.layers_block_type[index] == "linear_attention":
            update = _mamba2_mixer(layer.mamba, normed, layer.mamba.conv1d.bias, None)
        else:
            update = _attention(layer.self_attn, normed, cos, sin, mode)  # the module's scaling: µP's multiplier
        hidden = hidden + residual * update
        normed = _rms(layer.post_attention_layernorm, hidden)
        feed_forward = _granite_mlp(layer.shared_mlp, normed)
        if config.num_local_experts > 0:  # the experts beside the shared MLP
            feed_forward = feed_forward + _granite_moe(layer.block_sparse_moe, normed)
        hidden = hidden + residual * feed_forward
    return _rms(model.model.norm, hidden)


def reference_logits(model: torch.nn.Module, x: torch.Tensor, mode: str) -> torch.Tensor:
    """The last position's logits of the rules' forward (its value is the model's, in float64 throughout)."""
    if model.config.model_type == "nemotron_h":
        return _nemotron_h_hidden(model, x, mode)[:, -1] @ model.lm_head.weight.T
    return _granite_hidden(model, x, mode)[:, -1] @ model.lm_head.weight.T / model.config.logits_scaling

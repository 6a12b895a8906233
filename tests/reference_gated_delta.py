"""A from-scratch MambaLRP / AttnLRP / CP-LRP for the Gated DeltaNet hybrids (Qwen3-Next, Qwen3.5, OLMo hybrid).

It shares no code with the package. The Gated DeltaNet is written out step by step: the
projections read from the weights (Qwen3-Next's per-key-head grouping of ``in_proj_qkvz`` and
``in_proj_ba`` indexed explicitly), the depthwise causal convolution as a sum over its taps, the
SiLU identity rule ``x·[σ(x)]const``, the L2 norms of ``q`` and ``k``, ``β`` and the decay, then the
recurrence ``S_t = α_t (I - β_t k_t k_tᵀ) S_{t-1} + β_t k_t v_tᵀ``, ``o_t = S_tᵀ q_t`` as a loop
over the positions with ``α``, ``β``, ``k`` and ``q`` detached (:func:`delta_rule_loop`); the gated
norm per head with its normaliser detached, the SiLU rule on the gate and the half rule on the
product. Relevance is the reference's own Gradient x Input through that forward.

The attention: loops over heads and positions, zero-centred ``(1 + w)`` q/k norms per head
(Qwen) or plain ones over all heads (OLMo), rotary embeddings on the rotated part, the half rule on
q·kᵀ and A·V (AttnLRP) or the attention weights detached (CP-LRP), and Qwen's output gate
``out · σ(g)`` with the half rule and the identity rule on the sigmoid (``g·[σ(g)/g]const``).
SwiGLU MLPs and routed experts come from ``reference_attention.py`` / ``reference_moe.py``; the
shared expert's sigmoid gate is detached (held constant, as the routing weights).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from reference_attention import _half, _mlp, _rotate
from reference_moe import experts_loop


def _norm_eps(norm: torch.nn.Module) -> float:
    return norm.variance_epsilon if hasattr(norm, "variance_epsilon") else norm.eps


def _rms(norm: torch.nn.Module, x: Tensor, zero_centred: bool) -> Tensor:
    """RMSNorm with the normaliser held constant; zero-centred norms scale by ``1 + w``."""
    scale = 1.0 / torch.sqrt((x * x).mean(-1, keepdim=True) + _norm_eps(norm))
    weight = 1.0 + norm.weight if zero_centred else norm.weight
    return x * scale.detach() * weight


def _silu_rule(x: Tensor) -> Tensor:
    return x * torch.sigmoid(x).detach()


def _l2(x: Tensor) -> Tensor:
    return x / torch.sqrt((x * x).sum(-1, keepdim=True) + 1e-6)


def delta_rule_loop(
    q: Tensor, k: Tensor, v: Tensor, g: Tensor, beta: Tensor, scale: float, hold: bool = True, state=None
) -> tuple[Tensor, Tensor]:
    r"""
    The gated delta rule one position at a time. ``q``, ``k`` ``(batch, length, key_heads, dk)``
    (L2-normalised), ``v`` ``(batch, length, heads, dv)``, ``g``, ``beta`` ``(batch, length, heads)``;
    value head ``h`` reads key head ``h // (heads // key_heads)``. With ``hold`` the rule: ``q``,
    ``k``, ``α = exp(g)`` and ``β`` detached. Returns ``(o (batch, length, heads, dv), last state)``.
    """
    if hold:
        q, k, g, beta = q.detach(), k.detach(), g.detach(), beta.detach()
    batch, length, heads, dv = v.shape
    per_key = heads // k.shape[2]
    if state is None:
        state = torch.zeros(batch, heads, k.shape[-1], dv, dtype=v.dtype)
    outputs = []
    for t in range(length):
        kt = k[:, t].repeat_interleave(per_key, dim=1)  # (batch, heads, dk)
        qt = q[:, t].repeat_interleave(per_key, dim=1) * scale
        decayed = torch.exp(g[:, t])[..., None, None] * state
        remembered = torch.einsum("bhkv,bhk->bhv", decayed, kt)  # what the decayed state predicts for k_t
        correction = beta[:, t, :, None] * (v[:, t] - remembered)
        state = decayed + kt[..., :, None] * correction[..., None, :]
        outputs.append(torch.einsum("bhkv,bhk->bhv", state, qt))
    return torch.stack(outputs, 1), state


def float64_chunk_gated_delta_rule(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    g: Tensor,
    beta: Tensor,
    chunk_size: int = 64,
    initial_state: Tensor | None = None,
    output_final_state: bool = False,
    use_qk_l2norm_in_kernel: bool = False,
    **_,
) -> tuple[Tensor, Tensor | None]:
    """transformers' PyTorch gated delta rule without its float32 casts: the plain recurrence, every input live."""
    if use_qk_l2norm_in_kernel:
        query, key = _l2(query), _l2(key)
    out, state = delta_rule_loop(query, key, value, g, beta, query.shape[-1] ** -0.5, hold=False, state=initial_state)
    return out.to(query.dtype), state if output_final_state else None


def _conv(conv: torch.nn.Conv1d, x: Tensor) -> Tensor:
    """The depthwise causal convolution of ``x`` ``(batch, length, channels)``: a sum over the kernel's taps."""
    taps = conv.weight.shape[-1]
    out = torch.zeros_like(x)
    for j in range(taps):
        shift = taps - 1 - j  # tap j reads position t - shift
        if shift < x.shape[1]:
            out[:, shift:] = out[:, shift:] + conv.weight[:, 0, j] * x[:, : x.shape[1] - shift]
    return out


def _projections(mixer: torch.nn.Module, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """``q, k`` (batch, length, key heads, dk), ``v, z`` (batch, length, heads, dv), ``b, a`` (batch, length, heads)."""
    batch, length, _ = x.shape
    hk, h, dk, dv = mixer.num_k_heads, mixer.num_v_heads, mixer.head_k_dim, mixer.head_v_dim
    per_key = h // hk
    if hasattr(mixer, "in_proj_qkvz"):  # Qwen3-Next: per key head [q | k | v... | z...] and [b... | a...]
        qkvz, ba = x @ mixer.in_proj_qkvz.weight.T, x @ mixer.in_proj_ba.weight.T
        width = 2 * dk + 2 * per_key * dv
        q = torch.stack([qkvz[..., i * width : i * width + dk] for i in range(hk)], 2)
        k = torch.stack([qkvz[..., i * width + dk : i * width + 2 * dk] for i in range(hk)], 2)
        v, z, b, a = [], [], [], []
        for i in range(hk):
            base = i * width + 2 * dk
            for j in range(per_key):
                v.append(qkvz[..., base + j * dv : base + (j + 1) * dv])
                z.append(qkvz[..., base + per_key * dv + j * dv : base + per_key * dv + (j + 1) * dv])
                b.append(ba[..., i * 2 * per_key + j])
                a.append(ba[..., i * 2 * per_key + per_key + j])
        mixed = torch.cat([q.reshape(batch, length, -1), k.reshape(batch, length, -1), torch.cat(v, -1)], -1)
        return mixed, torch.stack(z, 2), torch.stack(b, -1), torch.stack(a, -1)
    if hasattr(mixer, "in_proj_qkv"):  # Qwen3.5
        mixed = x @ mixer.in_proj_qkv.weight.T
        z, b, a = (x @ p.weight.T for p in (mixer.in_proj_z, mixer.in_proj_b, mixer.in_proj_a))
    else:  # OLMo hybrid
        mixed = torch.cat([x @ p.weight.T for p in (mixer.q_proj, mixer.k_proj, mixer.v_proj)], -1)
        z, b, a = (x @ p.weight.T for p in (mixer.g_proj, mixer.b_proj, mixer.a_proj))
    return mixed, z.reshape(batch, length, h, dv), b, a


def gated_delta_net(mixer: torch.nn.Module, x: Tensor, delta_rule: bool = True) -> Tensor:
    """One Gated DeltaNet under the rules (``delta_rule=False``: the recurrence with every input live)."""
    batch, length, _ = x.shape
    hk, h, dk, dv = mixer.num_k_heads, mixer.num_v_heads, mixer.head_k_dim, mixer.head_v_dim
    mixed, z, b, a = _projections(mixer, x)
    mixed = _silu_rule(_conv(mixer.conv1d, mixed))
    q = _l2(mixed[..., : hk * dk].reshape(batch, length, hk, dk))
    k = _l2(mixed[..., hk * dk : 2 * hk * dk].reshape(batch, length, hk, dk))
    v = mixed[..., 2 * hk * dk :].reshape(batch, length, h, dv)
    beta = torch.sigmoid(b) * (2.0 if getattr(mixer, "allow_neg_eigval", False) else 1.0)
    g = -torch.exp(mixer.A_log) * F.softplus(a + mixer.dt_bias)
    out, _ = delta_rule_loop(q, k, v, g, beta, dk**-0.5, hold=delta_rule)
    norm = mixer.o_norm if hasattr(mixer, "o_norm") else mixer.norm
    normed = _rms(norm, out, zero_centred=False)  # per head (the last dimension is dv), then the gate
    gated = _half(normed, _silu_rule(z))
    projection = mixer.o_proj if hasattr(mixer, "o_proj") else mixer.out_proj
    return gated.reshape(batch, length, h * dv) @ projection.weight.T


def _sigmoid_rule(g: Tensor) -> Tensor:
    """The identity rule on the sigmoid: ``g · [σ(g)/g]const``."""
    return g * (torch.sigmoid(g) / g).detach()


def _attention(attention: torch.nn.Module, x: Tensor, cos, sin, mode: str, qwen: bool) -> Tensor:
    batch, length, _ = x.shape
    config = attention.config
    heads, kv_heads, dim = config.num_attention_heads, config.num_key_value_heads, attention.head_dim
    projected = x @ attention.q_proj.weight.T
    gate = None
    if projected.shape[-1] == 2 * heads * dim:  # Qwen's gated attention: per head [q | gate]
        projected = projected.reshape(batch, length, heads, 2 * dim)
        q, gate = projected[..., :dim], projected[..., dim:].reshape(batch, length, heads * dim)
    else:
        q = projected
    k = x @ attention.k_proj.weight.T
    v = (x @ attention.v_proj.weight.T).reshape(batch, length, kv_heads, dim)
    if qwen:  # zero-centred, per head
        q = _rms(attention.q_norm, q.reshape(batch, length, heads, dim), True)
        k = _rms(attention.k_norm, k.reshape(batch, length, kv_heads, dim), True)
    else:  # OLMo: over all heads
        q = _rms(attention.q_norm, q, False).reshape(batch, length, heads, dim)
        k = _rms(attention.k_norm, k, False).reshape(batch, length, kv_heads, dim)
    rows = []
    for b in range(batch):
        head_outputs = []
        for hd in range(heads):
            kv = hd // (heads // kv_heads)
            qh, kh = q[b, :, hd], k[b, :, kv]
            if cos is not None:
                qh, kh = _rotate(qh, cos[b], sin[b]), _rotate(kh, cos[b], sin[b])
            outputs = []
            for t in range(length):
                scores = []
                for s in range(t + 1):
                    product = _half(qh[t], kh[s]) if mode == "attnlrp" else qh[t] * kh[s]
                    scores.append(product.sum() * attention.scaling)
                weights = torch.softmax(torch.stack(scores), dim=0)
                out = torch.zeros(dim, dtype=x.dtype)
                for s in range(t + 1):
                    value = v[b, s, kv]
                    out = out + (_half(weights[s], value) if mode == "attnlrp" else weights[s].detach() * value)
                outputs.append(out)
            head_outputs.append(torch.stack(outputs))
        rows.append(torch.cat(head_outputs, dim=-1))
    out = torch.stack(rows)
    if gate is not None:
        out = _half(out, _sigmoid_rule(gate))
    return out @ attention.o_proj.weight.T


def _feed_forward(module: torch.nn.Module, x: Tensor) -> Tensor:
    """A SwiGLU MLP, or routed experts plus the shared expert with its sigmoid gate detached."""
    if not hasattr(module, "experts"):
        return _mlp(module, x)
    batch, length, hidden = x.shape
    tokens = x.reshape(batch * length, hidden)
    # the router in float32, as the models route (the weights are held constant: their precision is the model's)
    probabilities = torch.softmax((tokens @ module.gate.weight.T).to(torch.float32), dim=-1)
    weights, chosen = torch.topk(probabilities, module.gate.top_k, dim=-1)
    if getattr(module.gate, "norm_topk_prob", True):  # Qwen3.5-MoE always renormalises
        weights = weights / weights.sum(-1, keepdim=True)
    weights = weights.to(x.dtype)
    routed = experts_loop(module.experts, tokens, weights, chosen)
    shared_gate = torch.sigmoid(tokens @ module.shared_expert_gate.weight.T).detach()  # held constant
    return (routed + shared_gate * _mlp(module.shared_expert, tokens)).reshape(batch, length, hidden)


def _layer(layer: torch.nn.Module, hidden: Tensor, cos, sin, mode: str, delta_rule: bool, qwen: bool) -> Tensor:
    """One decoder layer; Qwen's norms are zero-centred, OLMo's attention layers normalise after each branch."""
    if hasattr(layer, "input_layernorm"):  # pre-norm: every Qwen layer, OLMo's Gated DeltaNet layers
        normed = _rms(layer.input_layernorm, hidden, qwen)
        if hasattr(layer, "linear_attn"):
            update = gated_delta_net(layer.linear_attn, normed, delta_rule)
        else:
            update = _attention(layer.self_attn, normed, cos, sin, mode, qwen)
        hidden = hidden + update
        return hidden + _feed_forward(layer.mlp, _rms(layer.post_attention_layernorm, hidden, qwen))
    attended = _attention(layer.self_attn, hidden, cos, sin, mode, False)
    hidden = hidden + _rms(layer.post_attention_layernorm, attended, False)
    return hidden + _rms(layer.post_feedforward_layernorm, _mlp(layer.mlp, hidden), False)


def reference_logits(model: torch.nn.Module, x: Tensor, mode: str, delta_rule: bool = True) -> Tensor:
    """The last position's logits of the rules' forward (its value is the model's, in float64 throughout)."""
    batch, length, _ = x.shape
    backbone = model.model
    positions = torch.arange(length)[None].expand(batch, -1)
    rotary = getattr(backbone, "rotary_emb", None)
    cos = sin = None
    if rotary is not None:
        if "Qwen3_5" in type(rotary).__name__:  # multimodal positions: (text, height, width), all the text's
            positions = positions[None].expand(3, -1, -1)
        cos, sin = rotary(x, positions)  # constants of the positions
    qwen = "Olmo" not in type(backbone).__name__
    hidden = x
    for layer in backbone.layers:
        hidden = _layer(layer, hidden, cos, sin, mode, delta_rule, qwen)
    return _rms(backbone.norm, hidden, qwen)[:, -1] @ model.lm_head.weight.T


def reference(model: torch.nn.Module, embeds: Tensor, target: int, mode: str) -> tuple[Tensor, Tensor]:
    """(relevance of the embeddings, explained logit at the last position)."""
    x = embeds.clone().requires_grad_()
    logit = reference_logits(model, x, mode)[:, target]
    (gradient,) = torch.autograd.grad(logit.sum(), x)
    return (x * gradient).detach(), logit.detach()

"""A from-scratch MambaLRP / AttnLRP / CP-LRP for Kimi Linear, LFM2 and LFM2-MoE, sharing no code with the package.

**Kimi Delta Attention**, written out step by step: ``q|k|v`` from their projections, the depthwise
causal convolution as a sum over its taps, the SiLU identity rule ``x·[σ(x)]const``, the L2 norms,
``β = σ(b)``, the forget gate ``g = -exp(A_log)·softplus(f_b(f_a(h)) + dt_bias)`` per key channel,
then the recurrence ``S_t = (I - β_t k_t k_tᵀ) Diag(exp g_t) S_{t-1} + β_t k_t v_tᵀ``,
``o_t = S_tᵀ q_t`` as a loop over positions (:func:`kda_loop`) with ``g``, ``β``, ``k``, ``q``
detached; the gated norm per head with its normaliser detached, the identity rule on the
sigmoid gate (``z·[σ(z)/z]const``) and the half rule on the product. The MLA attention: ``q``
through its low-rank projection and latent norm, keys and values expanded from the normalised
latent plus the shared key part, loops over heads and positions with the half rule on q·kᵀ and
A·V (AttnLRP) or the weights detached (CP-LRP). The sigmoid router (its weights held constant),
the experts loop of ``reference_moe.py``, the shared experts as MLPs.

**LFM2's gated short convolution**: ``B | C | x`` from ``in_proj``, ``C ⊙ conv(B ⊙ x)`` (biases of
``in_proj``, the convolution and ``out_proj`` where ``conv_bias`` gives them) with each
product either with ``B``, ``C`` detached (``"constant"``), under the half rule (``"half"``) or plain
(``"plain"``, the rule switched off); attention with per-head q/k norms and rotary embeddings; the
MLP ``w2(silu(w1 h) ⊙ w3 h)`` with the SiLU identity rule and the half rule; LFM2-MoE's sigmoid
router with its expert bias. Relevance is the reference's own Gradient x Input through that forward.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from reference_moe import experts_loop


def _half(a: Tensor, b: Tensor) -> Tensor:
    """The uniform rule on a product of two relevance carriers: each factor receives half."""
    return 0.5 * a * b.detach() + 0.5 * a.detach() * b


def _silu_rule(x: Tensor) -> Tensor:
    return x * torch.sigmoid(x).detach()


def _sigmoid_rule(x: Tensor) -> Tensor:
    """The identity rule on the sigmoid: ``x · [σ(x)/x]const``."""
    return x * (torch.sigmoid(x) / x).detach()


def _rms(norm: torch.nn.Module, x: Tensor) -> Tensor:
    """RMSNorm ``x / [rms(x)]const · w`` (the normaliser held constant)."""
    scale = 1.0 / torch.sqrt((x * x).mean(-1, keepdim=True) + norm.variance_epsilon)
    return x * scale.detach() * norm.weight


def _linear(x: Tensor, projection: torch.nn.Module) -> Tensor:
    """``x Wᵀ (+ b)``: LFM2's ``in_proj`` / ``out_proj`` have biases with ``conv_bias``, Kimi's MLA with ``attention_bias``."""
    out = x @ projection.weight.T
    bias = getattr(projection, "bias", None)  # the routers have none
    return out if bias is None else out + bias


def _causal_conv(conv: torch.nn.Conv1d, x: Tensor) -> Tensor:
    """Depthwise causal convolution of ``x`` ``(batch, length, channels)``: output t sums taps over x[t - shift] (+ bias)."""
    taps = conv.weight.shape[-1]
    out = torch.zeros_like(x) if conv.bias is None else conv.bias.expand_as(x).clone()
    for tap in range(taps):
        shift = taps - 1 - tap
        if shift < x.shape[1]:
            out[:, shift:] = out[:, shift:] + conv.weight[:, 0, tap] * x[:, : x.shape[1] - shift]
    return out


# --- Kimi Delta Attention ---------------------------------------------------------------------------


def kda_loop(
    q: Tensor, k: Tensor, v: Tensor, g: Tensor, beta: Tensor, scale: float, hold: bool = True, state=None
) -> tuple[Tensor, Tensor]:
    r"""
    The delta rule with per-channel decays, one position at a time. ``q``, ``k`` ``(batch, length,
    key_heads, key_dim)`` (L2-normalised), ``v`` ``(batch, length, heads, value_dim)``, ``g``
    ``(batch, length, heads, key_dim)`` log decays, ``beta`` ``(batch, length, heads)``; value head
    ``h`` reads key head ``h // (heads // key_heads)`` (Kimi: as many of each). With ``hold`` the
    rule: ``q``, ``k``, ``g`` and ``β`` detached. Returns ``(o (batch, length, heads, value_dim), last
    state)``.
    """
    if hold:
        q, k, g, beta = q.detach(), k.detach(), g.detach(), beta.detach()
    batch, length, heads, dv = v.shape
    q, k = (x.repeat_interleave(heads // x.shape[2], dim=2) for x in (q, k))
    if state is None:
        state = torch.zeros(batch, heads, k.shape[-1], dv, dtype=v.dtype)
    outputs = []
    for t in range(length):
        decayed = torch.exp(g[:, t])[..., :, None] * state  # each key channel (a row of the state) decays alone
        predicted = torch.einsum("bhkv,bhk->bhv", decayed, k[:, t])
        written = beta[:, t, :, None] * (v[:, t] - predicted)
        state = decayed + k[:, t, :, :, None] * written[:, :, None, :]
        outputs.append(torch.einsum("bhkv,bhk->bhv", state, q[:, t] * scale))
    return torch.stack(outputs, 1), state


def _l2(x: Tensor) -> Tensor:
    return x / torch.sqrt((x * x).sum(-1, keepdim=True) + 1e-6)


def float64_chunk_kda(
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
    """transformers' PyTorch Kimi delta rule without its float32 casts: the plain recurrence, every input live."""
    if use_qk_l2norm_in_kernel:
        query, key = _l2(query), _l2(key)
    out, state = kda_loop(query, key, value, g, beta, query.shape[-1] ** -0.5, hold=False, state=initial_state)
    return out.to(query.dtype), state if output_final_state else None


def kimi_delta_attention(mixer: torch.nn.Module, x: Tensor, delta_rule: bool = True) -> Tensor:
    """One Kimi Delta Attention under the rules (``delta_rule=False``: the recurrence with every input live)."""
    batch, length, _ = x.shape
    heads, dim = mixer.num_heads, mixer.head_dim
    mixed = torch.cat([_linear(x, mixer.q_proj), _linear(x, mixer.k_proj), _linear(x, mixer.v_proj)], -1)
    mixed = _silu_rule(_causal_conv(mixer.conv1d, mixed))
    q, k, v = (mixed[..., i * heads * dim : (i + 1) * heads * dim].reshape(batch, length, heads, dim) for i in range(3))
    q, k = _l2(q), _l2(k)
    beta = torch.sigmoid(_linear(x, mixer.b_proj))
    forget = mixer.forget_gate
    f = _linear(_linear(x, forget.f_a_proj), forget.f_b_proj) + forget.dt_bias
    g = -torch.exp(forget.A_log.reshape(heads, 1)) * F.softplus(f.reshape(batch, length, heads, dim))
    out, _ = kda_loop(q, k, v, g, beta, dim**-0.5, hold=delta_rule)
    gate = _linear(_linear(x, mixer.g_a_proj), mixer.g_b_proj).reshape(batch, length, heads, dim)
    gated = _half(_rms(mixer.o_norm, out), _sigmoid_rule(gate))  # per head: rmsnorm(o)·w · σ(gate)
    return _linear(gated.reshape(batch, length, heads * dim), mixer.o_proj)


# --- attention (MLA and LFM2's), MLPs, routers ------------------------------------------------------


def _attend(q: Tensor, k: Tensor, v: Tensor, scaling: float, mode: str) -> Tensor:
    r"""
    Causal attention looped over rows, heads and positions: ``q`` ``(batch, length, heads, d)``,
    ``k`` ``(batch, length, kv_heads, d)``, ``v`` ``(batch, length, kv_heads, dv)``; query head ``h``
    reads key/value head ``h // (heads // kv_heads)``. AttnLRP: the half rule on each q·k and
    weight·value product (the softmax by its gradient); CP-LRP: the weights detached.
    Returns ``(batch, length, heads * dv)``.
    """
    batch, length, heads, _ = q.shape
    per_kv = heads // k.shape[2]
    rows = []
    for b in range(batch):
        head_outputs = []
        for h in range(heads):
            qh, kh, vh = q[b, :, h], k[b, :, h // per_kv], v[b, :, h // per_kv]
            outputs = []
            for t in range(length):
                scores = torch.stack(
                    [
                        (_half(qh[t], kh[s]) if mode == "attnlrp" else qh[t] * kh[s]).sum() * scaling
                        for s in range(t + 1)
                    ]
                )
                weights = torch.softmax(scores, dim=0)
                out = torch.zeros(vh.shape[-1], dtype=v.dtype)
                for s in range(t + 1):
                    out = out + (_half(weights[s], vh[s]) if mode == "attnlrp" else weights[s].detach() * vh[s])
                outputs.append(out)
            head_outputs.append(torch.stack(outputs))
        rows.append(torch.cat(head_outputs, dim=-1))
    return torch.stack(rows)


def _mla(attention: torch.nn.Module, x: Tensor, mode: str) -> Tensor:
    """Kimi's multi-head latent attention (no rotary embeddings)."""
    batch, length, _ = x.shape
    heads, nope, rope, dv = (
        attention.num_heads,
        attention.qk_nope_head_dim,
        attention.qk_rope_head_dim,
        attention.v_head_dim,
    )
    if attention.q_lora_rank is None:
        q = _linear(x, attention.q_proj)
    else:
        q = _linear(_rms(attention.q_a_layernorm, _linear(x, attention.q_a_proj)), attention.q_b_proj)
    q = q.reshape(batch, length, heads, nope + rope)
    compressed = _linear(x, attention.kv_a_proj_with_mqa)
    latent, shared_key = compressed[..., : attention.kv_lora_rank], compressed[..., attention.kv_lora_rank :]
    expanded = _linear(_rms(attention.kv_a_layernorm, latent), attention.kv_b_proj).reshape(batch, length, heads, -1)
    k_nope, v = expanded[..., :nope], expanded[..., nope:]
    k = torch.cat([k_nope, shared_key[:, :, None, :].expand(batch, length, heads, rope)], -1)  # one key part for all
    assert v.shape[-1] == dv
    return _linear(_attend(q, k, v, attention.scaling, mode), attention.o_proj)


def _rotate(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotary embedding of ``x`` ``(batch, length, heads, d)`` with ``cos``, ``sin`` ``(batch, length, d)``."""
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos[:, :, None] + rotated * sin[:, :, None]


def _lfm2_attention(attention: torch.nn.Module, x: Tensor, cos: Tensor, sin: Tensor, mode: str) -> Tensor:
    batch, length, _ = x.shape
    dim = attention.head_dim
    q = _rms(attention.q_layernorm, _linear(x, attention.q_proj).reshape(batch, length, -1, dim))
    k = _rms(attention.k_layernorm, _linear(x, attention.k_proj).reshape(batch, length, -1, dim))
    v = _linear(x, attention.v_proj).reshape(batch, length, -1, dim)
    q, k = _rotate(q, cos, sin), _rotate(k, cos, sin)
    return _linear(_attend(q, k, v, attention.scaling, mode), attention.out_proj)


def _swiglu(x: Tensor, gate_proj, up_proj, down_proj) -> Tensor:
    """``down(silu(gate x) ⊙ up x)``: the SiLU identity rule, the half rule on the product."""
    return _linear(_half(_silu_rule(_linear(x, gate_proj)), _linear(x, up_proj)), down_proj)


def _kimi_route(router: torch.nn.Module, tokens: Tensor) -> tuple[Tensor, Tensor]:
    """Kimi's router: sigmoid scores, the top-k of the scores plus a correction bias, renormalised, scaled."""
    assert router.num_group == 1, "the reference routes one expert group"
    scores = torch.sigmoid(_linear(tokens, router))
    chosen = torch.topk(scores + router.e_score_correction_bias, router.top_k, dim=-1).indices
    weights = scores.gather(1, chosen)
    if router.norm_topk_prob:
        weights = weights / (weights.sum(-1, keepdim=True) + 1e-20)
    return weights * router.routed_scaling_factor, chosen


def _lfm2_route(block: torch.nn.Module, tokens: Tensor) -> tuple[Tensor, Tensor]:
    """LFM2-MoE's router: sigmoid scores, top-k of the scores plus the expert bias, renormalised, scaled."""
    router = block.gate
    scores = torch.sigmoid(_linear(tokens, router))
    ranking = scores + block.expert_bias if router.use_expert_bias else scores
    chosen = torch.topk(ranking, router.top_k, dim=-1).indices
    weights = scores.gather(1, chosen)
    if router.norm_topk_prob:
        weights = weights / (weights.sum(-1, keepdim=True) + 1e-6)
    return weights * router.routed_scaling_factor, chosen


def _kimi_feed_forward(module: torch.nn.Module, x: Tensor) -> Tensor:
    if not hasattr(module, "experts"):
        return _swiglu(x, module.gate_proj, module.up_proj, module.down_proj)
    batch, length, hidden = x.shape
    tokens = x.reshape(batch * length, hidden)
    weights, chosen = _kimi_route(module.gate, tokens)
    routed = experts_loop(module.experts, tokens, weights, chosen)
    shared = module.shared_experts
    return (routed + _swiglu(tokens, shared.gate_proj, shared.up_proj, shared.down_proj)).reshape(batch, length, hidden)


def _lfm2_feed_forward(module: torch.nn.Module, x: Tensor) -> Tensor:
    if not hasattr(module, "experts"):
        return _swiglu(x, module.w1, module.w3, module.w2)
    batch, length, hidden = x.shape
    tokens = x.reshape(batch * length, hidden)
    weights, chosen = _lfm2_route(module, tokens)
    return experts_loop(module.experts, tokens, weights, chosen).reshape(batch, length, hidden)


# --- LFM2's gated short convolution -----------------------------------------------------------------


def _gated(gate: Tensor, x: Tensor, gates: str) -> Tensor:
    if gates == "constant":  # the gate held constant: all of the product's relevance to x
        return gate.detach() * x
    if gates == "half":
        return _half(gate, x)
    assert gates == "plain"
    return gate * x


def short_conv(mixer: torch.nn.Module, x: Tensor, gates: str) -> Tensor:
    """``out_proj(C ⊙ conv(B ⊙ x))`` with ``B | C | x = in_proj(h)``, each product by the ``gates`` choice."""
    width = x.shape[-1]
    projected = _linear(x, mixer.in_proj)
    B, C, xs = projected[..., :width], projected[..., width : 2 * width], projected[..., 2 * width :]
    convolved = _causal_conv(mixer.conv, _gated(B, xs, gates))
    return _linear(_gated(C, convolved, gates), mixer.out_proj)


# --- whole models ---------------------------------------------------------------------------------


def reference_logits(model: torch.nn.Module, x: Tensor, mode: str, gates: str = "half", rules: bool = True) -> Tensor:
    r"""
    The last position's logits of the rules' forward (its value is the model's, in float64
    throughout). ``mode``: the attention rule; ``gates``: LFM2's gate choice; ``rules=False``:
    Kimi's recurrence with every input live (the delta rule switched off).
    """
    batch, length, _ = x.shape
    backbone = model.model
    hidden = x
    if hasattr(backbone, "embedding_norm"):  # LFM2 / LFM2-MoE
        rotary = getattr(backbone, "rotary_emb", None) or backbone.pos_emb
        cos, sin = rotary(x, torch.arange(length)[None].expand(batch, -1))  # constants of the positions
        for layer in backbone.layers:
            normed = _rms(layer.operator_norm, hidden)
            if hasattr(layer, "conv"):
                hidden = hidden + short_conv(layer.conv, normed, gates)
            else:
                hidden = hidden + _lfm2_attention(layer.self_attn, normed, cos, sin, mode)
            hidden = hidden + _lfm2_feed_forward(layer.feed_forward, _rms(layer.ffn_norm, hidden))
        final = backbone.embedding_norm
    else:  # Kimi Linear
        for layer in backbone.layers:
            normed = _rms(layer.input_layernorm, hidden)
            if layer.block_type == "linear_attention":
                hidden = hidden + kimi_delta_attention(layer.self_attn, normed, rules)
            else:
                hidden = hidden + _mla(layer.self_attn, normed, mode)
            hidden = hidden + _kimi_feed_forward(layer.mlp, _rms(layer.post_attention_layernorm, hidden))
        final = backbone.norm
    return _rms(final, hidden)[:, -1] @ model.lm_head.weight.T


def reference(
    model: torch.nn.Module, embeds: Tensor, target: int, mode: str, gates: str = "half"
) -> tuple[Tensor, Tensor]:
    """(relevance of the embeddings, explained logit at the last position)."""
    x = embeds.clone().requires_grad_()
    logit = reference_logits(model, x, mode, gates)[:, target]
    (gradient,) = torch.autograd.grad(logit.sum(), x)
    return (x * gradient).detach(), logit.detach()

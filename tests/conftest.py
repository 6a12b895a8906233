"""Tiny random Mamba models, built in float64, shared by the tests."""

from __future__ import annotations

import math
import sys

import pytest
import torch
import torch.nn.functional as F

from captum_mamba.families import FAMILIES as DECLARED
from captum_mamba.families.tiny import VOCAB
from captum_mamba.rules.norm import GatedRMSNormRule, RMSNormRule

# In CI (CI=true) a skipped test fails unless it is a CUDA test (tests/ci_guards.py).
pytest_plugins = ["ci_guards"]

# Tiny float64 models: one thread is faster (a float64 depthwise conv1d on 2 threads can take
# a thousand times longer on a busy 2-core machine) and keeps results deterministic.
torch.set_num_threads(1)


#: Test modules that face the models (families, rules, references, Captum API): CI runs them on
#: the oldest transformers release of the tested range too (``pytest -m model_facing``).
MODEL_FACING = {
    "test_attention_rules",
    "test_batches",
    "test_canonize",
    "test_captum_api",
    "test_captum_wrappers",
    "test_compat",
    "test_conservation",
    "test_errors",
    "test_families",
    "test_family_suite",
    "test_forward_equivalence",
    "test_gated_delta_families",
    "test_gated_delta_rule",
    "test_hybrid_families_nh",
    "test_hybrid_families_fz",
    "test_kimi_lfm2_families",
    "test_kimi_lfm2_rules",
    "test_llm_attribution",
    "test_long_context_options",
    "test_model_restored",
    "test_moe_families",
    "test_new_user_defects",
    "test_padding_and_targets",
    "test_reference",
    "test_rules",
    "test_scan",
    "test_synthetic_copying_qwen3_5",
    "test_toy_family",
}


def pytest_collection_modifyitems(items):
    for item in items:
        if item.module.__name__ in MODEL_FACING:
            item.add_marker(pytest.mark.model_facing)


#: The declared families with test configurations and random configurations for the sweep, by
#: name: the shared suite runs on each (test_family_suite.py checks that every family with a test
#: configuration is among them).
FAMILIES = {
    family.name: family
    for family in DECLARED.families()
    if family.config is not None and family.random_config is not None
}


def tiny_config(family: str = "mamba", **overrides):
    return FAMILIES[family].config(vocab_size=VOCAB, **overrides)


@torch.no_grad()
def randomise(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Weights of order one, so that every non-linearity matters (HF's init is near-linear)."""
    generator = torch.Generator().manual_seed(seed)
    for name, parameter in model.named_parameters():
        noise = torch.randn(parameter.shape, generator=generator, dtype=parameter.dtype)
        if name.endswith("A_log"):
            parameter.copy_(
                torch.log(torch.rand(parameter.shape, generator=generator, dtype=parameter.dtype) * 4 + 0.5)
            )
        elif name.endswith(("dt_proj.bias", "dt_bias")):
            parameter.copy_(
                torch.log(torch.expm1(torch.rand(parameter.shape, generator=generator).double() * 0.3 + 0.05))
            )
        elif name.endswith(".D"):
            parameter.copy_(1 + 0.5 * noise)
        elif "norm" in name:
            parameter.copy_(1 + 0.2 * noise)
        elif parameter.dim() == 3:  # depthwise convs (channels, 1, kernel), stacked experts (experts, out, in)
            parameter.copy_(noise / math.sqrt(parameter.shape[-1]) * (1.5 if "conv1d" in name else 1.0))
        elif parameter.dim() >= 2:
            parameter.copy_(noise / math.sqrt(parameter[0].numel()))
        else:
            parameter.copy_(0.3 * noise)
    for name, buffer in model.named_buffers():
        # the routing choice biases of Nemotron-H and Kimi Linear, LFM2-MoE's expert bias (zero at init)
        if name.endswith(("e_score_correction_bias", "expert_bias")):
            buffer.copy_(0.1 * torch.randn(buffer.shape, generator=generator, dtype=buffer.dtype))
    return model


def tiny_lm(seed: int = 0, dtype: torch.dtype = torch.float64, family: str = "mamba", **overrides) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = FAMILIES[family].build_lm(vocab_size=VOCAB, **overrides)
    return randomise(model, seed).to(dtype).eval()


def tiny_classifier(
    seed: int = 0,
    pooling: str = "mean",
    classifier_bias: bool = False,
    dtype: torch.dtype = torch.float64,
    family: str = "mamba",
    **overrides,
) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = FAMILIES[family].build_classifier(pooling, classifier_bias, num_labels=3, vocab_size=VOCAB, **overrides)
    return randomise(model, seed).to(dtype).eval()


def embeddings_of(model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    return model.get_input_embeddings()(ids).detach()


def token_ids(batch: int = 2, length: int = 11, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, VOCAB, (batch, length), generator=torch.Generator().manual_seed(seed))


def cached_states(output, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A layer's conv and recurrent states, read the way the installed transformers release stores them."""
    # renamed in transformers 5.24; the hybrids (attention and Mamba layers) used past_key_values before
    cache = getattr(output, "cache", None) or getattr(output, "cache_params", None) or output.past_key_values
    if hasattr(cache, "get_conv_state"):
        return cache.get_conv_state(layer), cache.get_recurrent_state(layer)
    return cache.layers[layer].conv_states[0], cache.layers[layer].recurrent_states[0]  # before 5.2x


@pytest.fixture
def ids() -> torch.Tensor:
    return token_ids()


# --- Hugging Face's torch paths without their float32 casts -------------------------------------
# HF narrows float64 models to float32 inside the scans and norms; to compare outputs at 1e-10 the
# tests swap in these cast-free versions of exactly those functions.


def _scan_without_narrowing(
    hidden_states, dt, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False, return_last_state=False, **_
):
    if delta_bias is not None:
        dt = dt + delta_bias[..., None]
    if delta_softplus:
        dt = F.softplus(dt)
    decay = torch.exp(A[None, :, None, :] * dt[..., None])
    drive = dt[..., None] * B.transpose(1, 2)[:, None] * hidden_states[..., None]
    state = torch.zeros_like(decay[:, :, 0])
    outputs = []
    for t in range(hidden_states.shape[-1]):
        state = decay[:, :, t] * state + drive[:, :, t]
        outputs.append((state * C[:, None, :, t]).sum(-1))
    y = (torch.stack(outputs, -1) + hidden_states * D[None, :, None]) * F.silu(z)
    return (y, state) if return_last_state else y


def _ssd_without_narrowing(
    hidden_states,
    dt,
    A,
    B,
    C,
    chunk_size,
    D=None,
    dt_bias=None,
    initial_states=None,
    dt_softplus=False,
    dt_limit=(0.0, float("inf")),
    return_final_states=False,
    **_,
):
    batch, length, heads, head_dim = hidden_states.shape
    if dt_bias is not None:
        dt = dt + dt_bias
    if dt_softplus:
        dt = F.softplus(dt)
    dt = torch.clamp(dt, dt_limit[0], dt_limit[1])
    per_group = heads // B.shape[2]
    B, C = B.repeat_interleave(per_group, dim=2), C.repeat_interleave(per_group, dim=2)
    state = torch.zeros(batch, heads, head_dim, B.shape[-1], dtype=hidden_states.dtype)
    outputs = []
    for t in range(length):
        decay = torch.exp(dt[:, t] * A)[..., None, None]
        state = decay * state + (dt[:, t, :, None] * hidden_states[:, t])[..., None] * B[:, t, :, None, :]
        outputs.append((state * C[:, t, :, None, :]).sum(-1) + D[:, None] * hidden_states[:, t])
    y = torch.stack(outputs, 1)
    return (y, state) if return_final_states else y


def _rms_norm_without_narrowing(self, hidden_states):
    variance = hidden_states.pow(2).mean(-1, keepdim=True)
    return self.weight * hidden_states * torch.rsqrt(variance + self.variance_epsilon)


def _gated_rms_norm_without_narrowing(self, hidden_states, gate=None):
    """A gated group norm: gate then norm, or (Falcon-H1's ``norm_before_gate``) norm then gate."""
    before = getattr(self, "norm_before_gate", False)
    if gate is not None and not before:
        hidden_states = hidden_states * F.silu(gate)
    width = hidden_states.shape[-1]
    groups = getattr(self, "n_groups", None)  # Falcon-H1 names its groups, the others their size
    group_size = width // groups if groups else getattr(self, "group_size", width)  # ungrouped before 5.2x
    grouped = hidden_states.reshape(*hidden_states.shape[:-1], -1, group_size)
    grouped = grouped * torch.rsqrt(grouped.pow(2).mean(-1, keepdim=True) + self.variance_epsilon)
    normed = self.weight * grouped.reshape(hidden_states.shape)
    return normed * F.silu(gate) if gate is not None and before else normed


def _eager_attention_without_narrowing(module, query, key, value, attention_mask, scaling, dropout=0.0, **_):
    """transformers' eager attention (grouped-query heads, additive mask) with its softmax in the inputs' dtype."""
    groups = query.shape[1] // key.shape[1]
    key, value = key.repeat_interleave(groups, dim=1), value.repeat_interleave(groups, dim=1)
    scores = query @ key.transpose(2, 3) * scaling
    if attention_mask is not None:
        scores = scores + attention_mask
    weights = torch.softmax(scores, dim=-1)
    return (weights @ value).transpose(1, 2).contiguous(), weights


#: transformers' module-level functions that narrow float64 to float32, and their cast-free versions.
_NARROWING_FUNCTIONS = {
    "mamba_selective_scan": _scan_without_narrowing,
    "mamba2_chunk_scan": _ssd_without_narrowing,
    "eager_attention_forward": _eager_attention_without_narrowing,
}


def _narrowing(families) -> tuple[list[tuple[object, str, object]], list[tuple[type, object]]]:
    """The modeling modules' narrowing functions and the RMSNorm / gated-norm classes the families declare."""
    functions, norms = [], []
    for family in families:
        for module_type, rule in family.module_rules().items():
            module = sys.modules[module_type.__module__]
            if module.__name__.startswith("transformers."):
                functions += [
                    (module, name, patch) for name, patch in _NARROWING_FUNCTIONS.items() if hasattr(module, name)
                ]
            rule_type = rule if isinstance(rule, type) else type(rule)
            if issubclass(rule_type, GatedRMSNormRule):
                norms.append((module_type, _gated_rms_norm_without_narrowing))
            elif issubclass(rule_type, RMSNormRule):
                norms.append((module_type, _rms_norm_without_narrowing))
    return functions, norms


@pytest.fixture
def float64_faithful_hf(monkeypatch):
    r"""
    HF's torch paths with their float32 casts removed, for every family with a test configuration:
    first each family's own, as its entry in ``family_references.py`` removes them
    (``faithful_float64``: the linear-attention hybrids' delta rules, decays, zero-centred,
    norm-then-gate and sigmoid-gated norms, routers); then the scans (``mamba_selective_scan``,
    ``mamba2_chunk_scan``), the eager attention's softmax and the forwards of the other norms the
    families declare with the RMSNorm and gated-norm rules (found from the declarations, so a new
    family's are too).
    """
    from family_references import reference_of

    functions, norms = _narrowing(FAMILIES.values())
    declared = {norm: norm.forward for norm, _ in norms}
    for name in FAMILIES:
        reference_of(name).faithful_float64(monkeypatch)
    for module, name, patch in functions:
        monkeypatch.setattr(module, name, patch)
    for norm, patch in norms:
        if norm.forward is declared[norm]:  # not the family's own patch
            monkeypatch.setattr(norm, "forward", patch)

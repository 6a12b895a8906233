"""The CUDA kernel path (mamba-ssm, causal-conv1d) against the pure-PyTorch path; mamba-ssm models.

Marked ``gpu``: skipped without CUDA and the ``gpu`` extra. Run on the device machine with
``python -m pytest -m gpu tests/test_gpu.py -s`` (``-s`` shows the measured errors).
"""

from __future__ import annotations

import os

import pytest
import torch

from captum_mamba import LayerMambaLRP, MambaLRP
from captum_mamba.kernels.cuda import conv_kernels_available, kernels_available, ssd_kernels_available

from conftest import randomise

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        not (torch.cuda.is_available() and kernels_available() and conv_kernels_available()),
        reason="needs CUDA and the gpu extra (mamba-ssm, causal-conv1d)",
    ),
]

FAMILY_SIZES = {
    "mamba": dict(hidden_size=64, state_size=16, time_step_rank=4),
    # d_in_proj = 2*128 + 2*64 + 8 = 392, a multiple of 8 as causal-conv1d's channel-last layout needs
    "mamba2": dict(hidden_size=64, state_size=64, num_heads=8, head_dim=16, chunk_size=64),
    "falcon_mamba": dict(hidden_size=64, state_size=16, time_step_rank=4),
}


def _model(family: str, seed: int = 0, dtype: torch.dtype = torch.float32, **overrides) -> torch.nn.Module:
    from conftest import FAMILIES

    settings = {**FAMILY_SIZES[family], "vocab_size": 128, **overrides}
    torch.manual_seed(seed)
    model = FAMILIES[family].build_lm(**settings)
    return randomise(model, seed).to(device="cuda", dtype=dtype).eval()


def _ids(batch: int, length: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 128, (batch, length), generator=generator).cuda()


# mamba-ssm's Triton SSD kernels (Mamba2) run float32 matmuls in TF32 (10-bit mantissa) unless
# TRITON_F32_DEFAULT=ieee is set before they compile; the CUDA selective scan (Mamba,
# FalconMamba) is exact float32.
IEEE_TRITON = os.environ.get("TRITON_F32_DEFAULT") == "ieee"
TOLERANCE = {"mamba": 1e-4, "falcon_mamba": 1e-4, "mamba2": 1e-4 if IEEE_TRITON else 2e-3}


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).abs().max() / b.float().abs().max())


@pytest.mark.parametrize("family", list(FAMILY_SIZES))
def test_kernel_path_equals_torch_path(family):
    if family == "mamba2" and not ssd_kernels_available():
        pytest.skip("mamba-ssm's Triton SSD kernels are not available")
    model = _model(family, use_conv_bias=True)
    ids = _ids(2, 300)
    kernel = LayerMambaLRP(model, model.backbone.embeddings, backend="cuda").attribute(ids, target=[3, 7])
    torch_path = LayerMambaLRP(model, model.backbone.embeddings, backend="torch").attribute(ids, target=[3, 7])
    error = _relative(kernel, torch_path)
    precision = " (Triton in IEEE float32)" if IEEE_TRITON and family == "mamba2" else ""
    print(f"\n{family}: kernel vs PyTorch path{precision}, max |dR| / max |R| = {error:.2e}")
    assert error <= TOLERANCE[family]


@pytest.mark.parametrize("family", list(FAMILY_SIZES))
def test_float64_cuda_inputs_take_the_pytorch_path(family):
    model = _model(family, seed=2, dtype=torch.float64)
    ids = _ids(2, 96, seed=2)
    relevance, delta = LayerMambaLRP(model, model.backbone.embeddings).attribute(
        ids, target=[3, 7], return_convergence_delta=True
    )  # backend "auto": the kernels have no float64, so the PyTorch path runs
    print(f"\n{family}: float64 CUDA input, |delta| max {delta.abs().max().item():.2e}")
    assert torch.isfinite(relevance).all() and delta.abs().max() < 1e-8
    with pytest.raises(ValueError, match="float64"):
        LayerMambaLRP(model, model.backbone.embeddings, backend="cuda").attribute(ids, target=[3, 7])


def _counting_fused_calls(monkeypatch) -> list[int]:
    """Count the fused Mamba-1 node's calls."""
    from captum_mamba.kernels import fused_mixer

    calls: list[int] = []
    original = fused_mixer._FusedMambaLRPMixer.apply
    monkeypatch.setattr(
        fused_mixer._FusedMambaLRPMixer, "apply", lambda *a: calls.append(1) or original(*a), raising=True
    )
    return calls


@pytest.mark.parametrize("family", ["mamba", "falcon_mamba"])
@pytest.mark.parametrize("bias", [False, True])
def test_fused_mixer_equals_the_rule_by_rule_kernel_path(family, bias, monkeypatch):
    from captum_mamba.families import FAMILIES as DECLARED
    from captum_mamba.rules import MixerRule

    calls = _counting_fused_calls(monkeypatch)
    model = _model(family, seed=3, use_conv_bias=bias, use_bias=bias)
    ids = _ids(3, 257, seed=3)
    layer = model.backbone.embeddings
    fused, fused_delta = LayerMambaLRP(model, layer, backend="cuda").attribute(
        ids, target=[1, 5, 9], return_convergence_delta=True
    )
    assert len(calls) == model.config.num_hidden_layers  # the fused node ran in every block
    mixer_type = type(model.backbone.layers[0].mixer)
    layout = DECLARED.mixer_layout(mixer_type)
    unfused_rules = {mixer_type: MixerRule(fused=False, layout=layout)}
    unfused, unfused_delta = LayerMambaLRP(model, layer, rules=unfused_rules, backend="cuda").attribute(
        ids, target=[1, 5, 9], return_convergence_delta=True
    )
    assert len(calls) == model.config.num_hidden_layers
    torch_path = LayerMambaLRP(model, layer, backend="torch").attribute(ids, target=[1, 5, 9])
    error, error_torch = _relative(fused, unfused), _relative(fused, torch_path)
    print(f"\n{family} fused mixer (bias={bias}): vs rule-by-rule kernels {error:.2e}, vs PyTorch {error_torch:.2e}")
    assert error <= 1e-5 and error_torch <= 1e-4
    assert torch.allclose(fused_delta, unfused_delta, atol=1e-4 * float(fused.abs().sum(-1).max()))


def test_conservation_at_8192_tokens_on_the_kernels():
    model = _model("mamba", seed=1, hidden_size=128, num_hidden_layers=4)
    ids = _ids(1, 8192, seed=1)
    relevance, delta = LayerMambaLRP(model, model.backbone.embeddings, backend="cuda").attribute(
        ids, target=5, return_convergence_delta=True
    )
    reference = model.double()
    exact, exact_delta = LayerMambaLRP(reference, reference.backbone.embeddings, backend="torch").attribute(
        ids, target=5, return_convergence_delta=True
    )
    logit = relevance.double().sum() - delta.double()
    print(
        f"\nL=8192: float32 kernels delta {float(delta):.2e} (logit {float(logit):.4f}); float64 torch delta {float(exact_delta):.2e}"
    )
    assert abs(float(exact_delta)) <= 1e-8 * max(1.0, abs(float(logit)))
    assert abs(float(delta)) <= 1e-4 * max(1.0, abs(float(logit)))
    assert _relative(relevance.double(), exact) <= 1e-3


def test_memory_lean_mode_on_the_kernels():
    model = _model("mamba", seed=2, num_hidden_layers=3)
    embeds = model.get_input_embeddings()(_ids(1, 4096, seed=2)).detach()
    plain = MambaLRP(model).attribute(embeds, target=1)
    lean = MambaLRP(model, memory_lean=True).attribute(embeds, target=1)
    offload = MambaLRP(model, memory_lean="offload").attribute(embeds, target=1)
    assert _relative(lean, plain) <= 1e-5 and _relative(offload, plain) <= 1e-5


@pytest.mark.parametrize("family", ["mamba", "mamba2"])
def test_memory_lean_mode_keeps_the_chosen_backend_in_the_recomputation(family):
    # autograd runs the CUDA backward pass on a thread of its own: the recomputed blocks (and the
    # recomputed convolutions) must still take the PyTorch path that was asked for
    model = _model(family, seed=4, num_hidden_layers=2)
    embeds = model.get_input_embeddings()(_ids(1, 512, seed=4)).detach()
    plain = MambaLRP(model, backend="torch").attribute(embeds, target=3)
    lean = MambaLRP(model, backend="torch", memory_lean=True).attribute(embeds, target=3)
    assert _relative(lean, plain) <= 1e-6


def test_long_offloaded_run_against_a_float64_run_on_a_prefix():
    """The million-token benchmark's method at a test's size: 131,072 tokens with the block inputs offloaded.

    The relevances' sum is compared with the logit of a separate no-grad forward; the first 4,096
    tokens are explained again by the offloaded float32 kernels and by the float64 PyTorch path of
    the same weights, whose sum equals the model's own (float32 kernel) logit to float32 rounding.
    """
    import copy

    model = _model("mamba", seed=3, hidden_size=128, num_hidden_layers=4)
    embeds = model.get_input_embeddings()(_ids(1, 131_072, seed=3)).detach()
    explainer = MambaLRP(model, memory_lean="offload")
    relevance = explainer.attribute(embeds, target=7)
    with torch.no_grad():
        logit = float(model(inputs_embeds=embeds, logits_to_keep=1).logits[0, -1, 7])
    long_error = abs(float(relevance.double().sum()) - logit)
    assert torch.isfinite(relevance).all() and long_error <= 1e-3 * max(1.0, abs(logit))

    prefix = embeds[:, :4096]
    short = explainer.attribute(prefix, target=7)
    with torch.no_grad():
        logit32 = float(model(inputs_embeds=prefix, logits_to_keep=1).logits[0, -1, 7])  # kernels: no float64
    reference = copy.deepcopy(model).double()
    exact, exact_delta = MambaLRP(reference, backend="torch").attribute(
        prefix.double(), target=7, return_convergence_delta=True
    )
    exact_error = abs(float(exact.sum()) - logit32)
    error = _relative(short.double(), exact)
    print(
        f"\n131,072 tokens offloaded: |sum - forward logit| {long_error:.2e} (logit {logit:.4f}); "
        f"4,096-token prefix: float64 delta {float(exact_delta):.2e}, |float64 sum - float32 forward logit| "
        f"{exact_error:.2e}, float32 offload vs float64 {error:.2e}"
    )
    assert abs(float(exact_delta)) <= 1e-10 * max(1.0, abs(logit32))
    assert exact_error <= 1e-4 * max(1.0, abs(logit32))
    assert error <= 1e-3


@pytest.mark.parametrize("family", ["mamba", "falcon_mamba"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_on_the_kernels(family, dtype, monkeypatch):
    """Half precision runs the fused node (every rule kept) and agrees with the float32 rule-by-rule path."""
    from captum_mamba.families import FAMILIES as DECLARED
    from captum_mamba.rules import MixerRule

    model32 = _model(family, seed=3)
    model16 = _model(family, seed=3, dtype=dtype)
    ids = _ids(2, 512, seed=3)
    mixer_type = type(model32.backbone.layers[0].mixer)
    rule_by_rule = {mixer_type: MixerRule(fused=False, layout=DECLARED.mixer_layout(mixer_type))}
    reference, reference_delta = LayerMambaLRP(model32, model32.backbone.embeddings, rules=rule_by_rule).attribute(
        ids, target=2, return_convergence_delta=True
    )
    calls = _counting_fused_calls(monkeypatch)
    half, half_delta = LayerMambaLRP(model16, model16.backbone.embeddings).attribute(
        ids, target=2, return_convergence_delta=True
    )
    assert len(calls) == model16.config.num_hidden_layers  # the fused node, in half precision
    unfused = LayerMambaLRP(model16, model16.backbone.embeddings, rules=rule_by_rule).attribute(ids, target=2)
    reference, half, unfused = reference.sum(-1), half.float().sum(-1), unfused.float().sum(-1)
    error, error_unfused = _relative(half, reference), _relative(half, unfused)
    correlation = float(torch.corrcoef(torch.stack([half.flatten(), reference.flatten()]))[0, 1])
    logit = reference.sum(-1).double() - reference_delta.double()
    print(
        f"\n{family} {dtype}: fused half vs float32 rule-by-rule: token relevance max error {error:.2e} of max |R|, "
        f"correlation {correlation:.5f}; vs half rule-by-rule {error_unfused:.2e}; "
        f"delta {half_delta.float().abs().max():.2e} (float32 {reference_delta.abs().max():.2e}, logit {logit.abs().max():.3f})"
    )
    assert half_delta.dtype in (torch.float32, torch.float64) and torch.isfinite(half).all()
    assert correlation > 0.99 and error_unfused < 0.05


def _ssm_lm(layer: str, **ssm_cfg):
    from mamba_ssm.models.config_mamba import MambaConfig as SsmConfig
    from mamba_ssm.models.mixer_seq_simple import MambaLMHeadModel

    torch.manual_seed(4)
    config = SsmConfig(
        d_model=64, n_layer=2, vocab_size=128, ssm_cfg={"layer": layer, **ssm_cfg}, rms_norm=True,
        fused_add_norm=True, residual_in_fp32=True, pad_vocab_size_multiple=8,
    )  # fmt: skip
    return MambaLMHeadModel(config, device="cuda", dtype=torch.float32).eval()


def test_mamba_ssm_model_equals_the_hugging_face_model_with_the_same_weights():
    from transformers import MambaConfig, MambaForCausalLM

    ssm_model = _ssm_lm("Mamba1")
    randomise(ssm_model, seed=4)
    hf_model = MambaForCausalLM(
        MambaConfig(
            hidden_size=64, num_hidden_layers=2, vocab_size=128, state_size=16, expand=2, conv_kernel=4,
            time_step_rank=4, use_conv_bias=True, layer_norm_epsilon=1e-5, residual_in_fp32=True,
            tie_word_embeddings=True,
        )
    ).cuda().eval()  # fmt: skip
    missing, unexpected = hf_model.load_state_dict(ssm_model.state_dict(), strict=False)
    assert not unexpected and all("embedding" in key or "lm_head" in key for key in missing), (missing, unexpected)
    hf_model.tie_weights()
    ids = _ids(2, 200, seed=5)
    with torch.no_grad():
        torch.testing.assert_close(hf_model(ids).logits, ssm_model(ids).logits, atol=1e-3, rtol=1e-3)
    from_ssm = LayerMambaLRP(ssm_model, ssm_model.backbone.embedding).attribute(ids, target=9)
    from_hf = LayerMambaLRP(hf_model, hf_model.backbone.embeddings).attribute(ids, target=9)
    error = _relative(from_ssm, from_hf)
    print(f"\nmamba-ssm Mamba vs HF Mamba, same weights: max |dR| / max |R| = {error:.2e}")
    assert error <= 1e-4


def test_mamba_ssm_model_computes_logits_from_the_explained_position_on():
    model = _ssm_lm("Mamba1")
    randomise(model, seed=5)
    ids = _ids(2, 300, seed=5)
    seen = []
    hook = model.lm_head.register_forward_pre_hook(lambda module, args: seen.append(args[0].shape[1]))
    try:
        relevance = LayerMambaLRP(model, model.backbone.embedding).attribute(
            ids, target=[3, 4], explained_position=[299, 250]
        )
        every = LayerMambaLRP(lambda i: model(i).logits, model.backbone.embedding, model=model).attribute(
            ids, target=[3, 4], explained_position=[299, 250]
        )
    finally:
        hook.remove()
    assert seen == [50, 300]  # from position 250 on; then all positions
    assert _relative(relevance, every) <= 1e-6


def test_mamba_ssm_mamba2_conserves_and_matches_its_torch_path():
    if not ssd_kernels_available():
        pytest.skip("mamba-ssm's Triton SSD kernels are not available")
    model = _ssm_lm("Mamba2", d_state=64, headdim=16, chunk_size=64)
    randomise(model, seed=6)
    for block in model.backbone.layers:
        block.mixer.conv1d.bias = None
    ids = _ids(1, 256, seed=6)
    kernel, delta = LayerMambaLRP(model, model.backbone.embedding, backend="cuda").attribute(
        ids, target=4, return_convergence_delta=True
    )
    torch_path = LayerMambaLRP(model, model.backbone.embedding, backend="torch").attribute(ids, target=4)
    error = _relative(kernel, torch_path)
    logit = float(kernel.double().sum() - delta.double())
    print(f"\nmamba-ssm Mamba2: kernel vs torch {error:.2e}; delta {float(delta):.2e} (logit {logit:.3f})")
    assert error <= TOLERANCE["mamba2"] and abs(float(delta)) <= TOLERANCE["mamba2"] * max(1.0, abs(logit))


# --- Vision Mamba (bidirectional blocks) -----------------------------------------------------------

VIM_SIZES = dict(img_size=32, patch_size=4, stride=4, embed_dim=64, depth=3, d_state=16, channels=3, num_classes=5)


def _vim(seed: int = 0, dtype: torch.dtype = torch.float32, **overrides) -> torch.nn.Module:
    from captum_mamba.models import VisionMamba

    torch.manual_seed(seed)
    model = VisionMamba(**{**VIM_SIZES, **overrides})
    return model.to(device="cuda", dtype=dtype).eval().requires_grad_(False)


def _images(batch: int, seed: int = 0, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, 32, 32, generator=generator).to(device="cuda", dtype=dtype)


def test_vim_cuda_forward_equals_the_cpu_forward():
    model = _vim(seed=1)
    images = _images(4, seed=1)
    cuda_logits = model(images)
    cpu_model = _vim(seed=1).cpu()
    cpu_logits = cpu_model(images.cpu())
    error = _relative(cuda_logits.cpu(), cpu_logits)
    print(f"\nVim forward, kernels vs PyTorch: {error:.2e}")
    assert error <= 1e-4


def test_vim_fused_bidirectional_node_equals_the_rule_by_rule_paths(monkeypatch):
    from captum_mamba.kernels import fused_mixer
    from captum_mamba.models.vim import VimMamba
    from captum_mamba.rules import MixerRule

    calls = []
    original = fused_mixer._FusedBidirectionalMixer.apply
    monkeypatch.setattr(fused_mixer._FusedBidirectionalMixer, "apply", lambda *a: calls.append(1) or original(*a))
    model = _vim(seed=2)
    images = _images(3, seed=2)
    fused, fused_delta = MambaLRP(model).attribute(images, target=[0, 1, 2], return_convergence_delta=True)
    assert len(calls) == len(model.layers)
    unfused, unfused_delta = MambaLRP(model, rules={VimMamba: MixerRule(fused=False)}).attribute(
        images, target=[0, 1, 2], return_convergence_delta=True
    )
    assert len(calls) == len(model.layers)
    cpu = _vim(seed=2).cpu()
    torch_path = MambaLRP(cpu).attribute(images.cpu(), target=[0, 1, 2])
    error, error_torch = _relative(fused, unfused), _relative(fused.cpu(), torch_path)
    print(f"\nVim fused node: vs rule-by-rule kernels {error:.2e}, vs PyTorch {error_torch:.2e}")
    assert error <= 1e-5 and error_torch <= 1e-4
    assert torch.allclose(fused_delta, unfused_delta, atol=1e-4 * float(fused.abs().sum((1, 2, 3)).max()))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_vim_half_precision_on_the_kernels(dtype):
    from captum_mamba import patch_relevance

    reference_model, half_model = _vim(seed=3), _vim(seed=3, dtype=dtype)
    images = _images(4, seed=3)
    reference = patch_relevance(MambaLRP(reference_model).attribute(images, target=1), 4)
    half, delta = MambaLRP(half_model).attribute(images.to(dtype), target=1, return_convergence_delta=True)
    half = patch_relevance(half.float(), 4)
    correlation = float(torch.corrcoef(torch.stack([half.flatten(), reference.flatten()]))[0, 1])
    print(f"\nVim {dtype}: patch relevance correlation with float32 {correlation:.5f}, delta {delta.tolist()}")
    assert torch.isfinite(half).all() and correlation > 0.98


@pytest.mark.skipif(not ssd_kernels_available(), reason="needs mamba-ssm's Triton SSD kernels")
@pytest.mark.parametrize("with_skip", [False, True])
def test_held_constant_ssd_node_equals_the_kernels_autograd(with_skip):
    """The x-only backward of the SSD node equals mamba-ssm's full backward's dx (dt, B, C detached)."""
    from mamba_ssm.ops.triton.ssd_combined import mamba_chunk_scan_combined

    from captum_mamba.kernels.ssd_cuda import held_constant_chunk_scan

    generator = torch.Generator(device="cuda").manual_seed(5)

    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, device="cuda", generator=generator)

    batch, length, heads, head_dim, groups, state, chunk = 2, 300, 4, 16, 2, 32, 64
    x = rand(batch, length, heads, head_dim)
    dt = torch.nn.functional.softplus(rand(batch, length, heads) - 2)
    A = -torch.rand(heads, device="cuda", generator=generator) - 0.5
    B, C = rand(batch, length, groups, state), rand(batch, length, groups, state)
    D = rand(heads) if with_skip else None
    dout = rand(batch, length, heads, head_dim)
    x1 = x.clone().requires_grad_()
    y1, last1 = held_constant_chunk_scan(x1, dt, A, B, C, chunk, D=D)
    (y1 * dout).sum().backward()
    x2 = x.clone().requires_grad_()
    y2, last2 = mamba_chunk_scan_combined(x2, dt, A, B, C, chunk, D=D, return_final_states=True)
    (y2 * dout).sum().backward()
    error = _relative(x1.grad, x2.grad)
    print(f"\nheld-constant SSD node (skip={with_skip}): forward {_relative(y1, y2):.1e}, dx {error:.2e}")
    assert torch.equal(y1, y2) and torch.equal(last1, last2) and error <= 1e-5


def _fla_importable() -> bool:
    try:
        from captum_mamba.rules.delta import load_fla_chunk_gated_delta_rule

        load_fla_chunk_gated_delta_rule()
    except ImportError:
        return False
    return True


@pytest.mark.skipif(not _fla_importable(), reason="needs flash-linear-attention (fla-core)")
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_gated_delta_rule_on_flash_linear_attention_equals_the_pytorch_kernel(dtype):
    """The fla dispatch (half precision) against the chunked PyTorch kernel in float32, with q, k, g, beta held."""
    from captum_mamba.kernels.gated_delta import linear_gated_delta
    from captum_mamba.rules.delta import GatedDeltaRule

    generator = torch.Generator(device="cuda").manual_seed(11)
    batch, length, key_heads, heads, key_dim, value_dim = 2, 700, 2, 4, 64, 64
    q = torch.nn.functional.normalize(
        torch.randn(batch, length, key_heads, key_dim, device="cuda", generator=generator), dim=-1
    )
    k = torch.nn.functional.normalize(
        torch.randn(batch, length, key_heads, key_dim, device="cuda", generator=generator), dim=-1
    )
    v = torch.randn(batch, length, heads, value_dim, device="cuda", generator=generator)
    g = -torch.rand(batch, length, heads, device="cuda", generator=generator) * 0.2
    beta = torch.rand(batch, length, heads, device="cuda", generator=generator)
    dout = torch.randn(batch, length, heads, value_dim, device="cuda", generator=generator)
    v_half = v.to(dtype).requires_grad_()
    out, _ = GatedDeltaRule(backend="cuda").apply(q, k, v_half, g, beta)
    (out.float() * dout).sum().backward()
    v32 = v.clone().requires_grad_()
    reference, _ = linear_gated_delta(q, k, v32, g, beta)
    (reference * dout).sum().backward()
    error_out, error_grad = _relative(out, reference), _relative(v_half.grad, v32.grad)
    print(f"\nfla gated delta rule {dtype}: output {error_out:.2e}, value gradient {error_grad:.2e} of max")
    assert error_out < 3e-2 and error_grad < 3e-2

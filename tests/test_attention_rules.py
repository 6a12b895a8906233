"""Attention rules (AttnLRP, CP-LRP) at transformers' attention interface, on tiny Llama and Qwen3.

The reference is written here from the rules' equations with explicit loops over heads and
positions (importing no package rule code): RMSNorms with the normaliser held constant, rotary
embeddings applied to q and k, the uniform (half) rule on q·kᵀ and on A·V (AttnLRP) or the
attention weights held constant (CP-LRP), the SwiGLU MLP with the SiLU identity rule and the
half rule on its product.
"""

from __future__ import annotations

import pytest
import torch
from transformers import BambaConfig, BambaForCausalLM, LlamaConfig, LlamaForCausalLM, Qwen3Config, Qwen3ForCausalLM
from transformers.models.bamba import modeling_bamba
from transformers.models.llama import modeling_llama
from transformers.models.qwen3 import modeling_qwen3

from captum_mamba import LayerMambaLRP, MambaLRP, UnsupportedModuleError, mamba_lrp_rules
from captum_mamba.rules import GradientRule
from captum_mamba.rules.attention import AttentionRule

from conftest import _gated_rms_norm_without_narrowing, _rms_norm_without_narrowing, randomise
from reference_attention import reference, reference_logits

VOCAB = 40
SIZES = dict(
    vocab_size=VOCAB,
    hidden_size=16,
    intermediate_size=24,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=4,
    use_cache=False,
    tie_word_embeddings=False,
)
#: Bamba: Mamba-2 layers around one attention layer (partial rotary embeddings), MLPs everywhere.
BAMBA_SIZES = dict(
    attn_layer_indices=[1],
    num_hidden_layers=3,
    mamba_n_heads=4,
    mamba_d_head=8,
    mamba_n_groups=1,
    mamba_d_state=8,
    mamba_d_conv=4,
    mamba_expand=2,
    mamba_chunk_size=16,
    mamba_conv_bias=False,
    mamba_proj_bias=False,
)
MODELS = {
    "llama": (LlamaConfig, LlamaForCausalLM, modeling_llama.LlamaAttention),
    "qwen3": (Qwen3Config, Qwen3ForCausalLM, modeling_qwen3.Qwen3Attention),
    "bamba": (BambaConfig, BambaForCausalLM, modeling_bamba.BambaAttention),
}


@pytest.fixture(autouse=True)
def faithful_float64_norms(monkeypatch):
    """HF's RMSNorms compute in float32: remove the cast, so float64 comparisons are exact."""
    for norm in (modeling_llama.LlamaRMSNorm, modeling_qwen3.Qwen3RMSNorm, modeling_bamba.BambaRMSNorm):
        monkeypatch.setattr(norm, "forward", _rms_norm_without_narrowing)
    monkeypatch.setattr(modeling_bamba.BambaRMSNormGated, "forward", _gated_rms_norm_without_narrowing)


def build(name: str, seed: int = 0, implementation: str = "sdpa", **overrides) -> torch.nn.Module:
    config_type, model_type, _ = MODELS[name]
    torch.manual_seed(seed)
    config = config_type(**{**SIZES, **(BAMBA_SIZES if name == "bamba" else {}), **overrides})
    config._attn_implementation = implementation
    # float32 weights (as the mixers keep their SSM parameters) of order one, then float64 arithmetic
    model = randomise(model_type(config), seed).double().eval()
    return model


def embeds_of(model: torch.nn.Module, batch: int, length: int, seed: int) -> torch.Tensor:
    ids = torch.randint(0, VOCAB, (batch, length), generator=torch.Generator().manual_seed(seed))
    return model.get_input_embeddings()(ids).detach()


def _explainer(name: str, model: torch.nn.Module, mode: str, **kwargs) -> MambaLRP:
    return MambaLRP(model, rules={MODELS[name][2]: AttentionRule(mode)}, **kwargs)


# --- the tests ----------------------------------------------------------------------------------


@pytest.mark.parametrize("implementation", ["eager", "sdpa"])
@pytest.mark.parametrize("name", list(MODELS))
def test_forward_with_rules_equals_the_model_forward(name, implementation):
    model = build(name, seed=1, implementation=implementation)
    embeds = embeds_of(model, 2, 7, seed=1)
    with torch.no_grad():
        original = model(inputs_embeds=embeds).logits
        with mamba_lrp_rules(model):
            ruled = model(inputs_embeds=embeds).logits
    # eager attention computes its softmax in float32 even for float64 models, and so does Bamba's
    # PyTorch Mamba-2 path its scan; the rules never narrow (and equal the float64 reference, below)
    exact = implementation == "sdpa" and name != "bamba"
    torch.testing.assert_close(ruled, original, atol=1e-10 if exact else 1e-5, rtol=0)
    with torch.no_grad():
        torch.testing.assert_close(ruled[:, -1], reference_logits(model, embeds, "cp"), atol=1e-10, rtol=0)
    assert model.config._attn_implementation == implementation  # restored


@pytest.mark.parametrize("mode", ["attnlrp", "cp"])
@pytest.mark.parametrize("name", list(MODELS))
def test_relevances_equal_the_loop_based_reference(name, mode):
    model = build(name, seed=2)
    embeds = embeds_of(model, 2, 6, seed=2)
    expected, logit = reference(model, embeds, target=5, mode=mode)
    relevance, delta = _explainer(name, model, mode).attribute(embeds, target=5, return_convergence_delta=True)
    torch.testing.assert_close(relevance, expected, atol=1e-10, rtol=0)
    # the delta equals the one the reference computes (exactly zero for CP-LRP on this bias-free model)
    torch.testing.assert_close(delta, expected.sum((1, 2)) - logit, atol=1e-10, rtol=0)
    if mode == "cp":
        assert delta.abs().max() < 1e-10
    else:
        assert delta.abs().max() > 1e-6  # the softmax rule is not conservative


@pytest.mark.parametrize("name", list(MODELS))
def test_cp_lrp_conserves_at_every_layer(name):
    model = build(name, seed=3)
    ids = torch.randint(0, VOCAB, (2, 6), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():  # the logit from the float64 reference forward, computed independently
        logit = reference_logits(model, model.get_input_embeddings()(ids), "cp")[:, 4]
    rules = {MODELS[name][2]: AttentionRule("cp")}
    for layer in [model.get_input_embeddings(), *model.model.layers]:
        for to_input in (False, True):
            relevance = LayerMambaLRP(model, layer, rules=rules).attribute(
                ids, target=4, attribute_to_layer_input=to_input and layer is not model.get_input_embeddings()
            )
            relevance = relevance[0] if isinstance(relevance, tuple) else relevance
            torch.testing.assert_close(relevance.sum((1, 2)), logit, atol=1e-8, rtol=0)


@pytest.mark.parametrize("name", list(MODELS))
def test_negative_controls(name):
    model = build(name, seed=4)
    embeds = embeds_of(model, 2, 6, seed=4)
    expected, logit = reference(model, embeds, target=1, mode="attnlrp")
    leaf = embeds.clone().requires_grad_()
    (gradient,) = torch.autograd.grad(model(inputs_embeds=leaf).logits[:, -1, 1].sum(), leaf)
    plain = (leaf * gradient).detach()
    assert ((plain.sum((1, 2)) - logit).abs() > 0.1 * logit.abs()).any()  # Gradient x Input misses the logit
    without_attention_rule = MambaLRP(model, rules={MODELS[name][2]: GradientRule()}).attribute(embeds, target=1)
    assert (without_attention_rule - expected).abs().max() > 1e-4  # dropping the rule breaks the equality


@pytest.mark.parametrize("name", list(MODELS))
def test_right_padded_batch_equals_rows_alone(name):
    model = build(name, seed=5)
    ids = torch.randint(0, VOCAB, (3, 7), generator=torch.Generator().manual_seed(5))
    lengths = [7, 4, 2]
    mask = torch.zeros_like(ids)
    for row, length in enumerate(lengths):
        mask[row, :length] = 1
    rules = {MODELS[name][2]: AttentionRule("attnlrp")}
    explainer = LayerMambaLRP(model, model.get_input_embeddings(), rules=rules)
    together = explainer.attribute(ids, target=[1, 2, 3], additional_forward_args=mask).sum(-1)
    for row, length in enumerate(lengths):
        alone = explainer.attribute(ids[row : row + 1, :length], target=row + 1).sum(-1)
        torch.testing.assert_close(together[row, :length], alone[0], atol=1e-10, rtol=0)
        assert torch.all(together[row, length:] == 0)


def test_cp_lrp_can_be_chosen_per_module():
    model = build("llama", seed=6)
    embeds = embeds_of(model, 1, 5, seed=6)
    first, second = (layer.self_attn for layer in model.model.layers)
    first.rule = AttentionRule("cp")  # Captum's convention: a module's own rule wins
    try:
        plan = MambaLRP(model).rule_plan()
        assert plan.rules["model.layers.0.self_attn"].mode == "cp"
        assert plan.rules["model.layers.1.self_attn"].mode == "attnlrp"
        mixed = MambaLRP(model).attribute(embeds, target=0)
    finally:
        del first.rule
    everywhere_cp = _explainer("llama", model, "cp").attribute(embeds, target=0)
    everywhere_attnlrp = _explainer("llama", model, "attnlrp").attribute(embeds, target=0)
    assert (mixed - everywhere_cp).abs().max() > 1e-8 and (mixed - everywhere_attnlrp).abs().max() > 1e-8


def test_unknown_mode_and_unsupported_module_are_clear():
    with pytest.raises(ValueError, match="mode must be one of"):
        AttentionRule("softmax")

    class Mystery(torch.nn.Module):
        def forward(self, x):
            return x

    model = build("llama", seed=7)
    model.model.layers[0].mystery = torch.nn.Linear(2, 2)
    model.model.layers[0].extra = Mystery()
    model.model.layers[0].extra.weight = torch.nn.Parameter(torch.zeros(1))
    with pytest.raises(UnsupportedModuleError, match=r"Mystery.*model\.layers\.0\.extra.*register_rule"):
        MambaLRP(model).attribute(embeds_of(model, 1, 3, seed=7), target=0)


@pytest.mark.parametrize("name", list(MODELS))
def test_captum_llm_attribution_and_noise_tunnel(name):
    from captum.attr import LLMGradientAttribution, NoiseTunnel, TextTokenInput
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from captum_mamba.llm import MambaLLMAttribution

    words = "the cat sat on mat a dog ran".split()
    vocab = {"[PAD]": 0, "[UNK]": 1, "[BOS]": 2, "[EOS]": 3, **{w: i + 4 for i, w in enumerate(words)}}
    word_level = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    word_level.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=word_level, pad_token="[PAD]", unk_token="[UNK]")
    model = build(name, seed=8)
    layer = LayerMambaLRP(model, model.get_input_embeddings(), rules={MODELS[name][2]: AttentionRule("cp")})
    captum_result = LLMGradientAttribution(layer, tokenizer).attribute(
        TextTokenInput("the cat sat on the", tokenizer), target="mat a"
    )
    assert captum_result.token_attr.shape == (2, 5) and torch.isfinite(captum_result.token_attr).all()
    ours = MambaLLMAttribution(
        model, tokenizer, explain="logit", rules={MODELS[name][2]: AttentionRule("cp")}
    ).attribute(TextTokenInput("the cat sat on the", tokenizer), target="mat")
    ids = torch.tensor([tokenizer.encode("the cat sat on the")])
    with torch.no_grad():  # explained logits (not log-probabilities): CP-LRP relevances sum to them exactly
        logit = reference_logits(model, model.get_input_embeddings()(ids), "cp")[0, vocab["mat"]]
    torch.testing.assert_close(ours.seq_attr.sum().double(), logit, atol=1e-8, rtol=0)
    embeds = embeds_of(model, 1, 5, seed=8)
    smoothed = NoiseTunnel(_explainer(name, model, "attnlrp")).attribute(
        embeds, target=2, nt_type="smoothgrad", nt_samples=3, stdevs=0.01
    )
    assert smoothed.shape == embeds.shape and torch.isfinite(smoothed).all()


def test_relevance_split_by_layer_kind_equals_layer_mamba_lrp_per_module():
    from captum_mamba import relevance_split

    model = build("bamba", seed=9)
    embeds = embeds_of(model, 2, 6, seed=9)
    rules = {MODELS["bamba"][2]: AttentionRule("cp")}
    rows = relevance_split(MambaLRP(model, rules=rules), embeds, target=3)
    assert [(row.layer, row.kind) for row in rows] == [
        (0, "ssm"),
        (0, "mlp"),
        (1, "attention"),
        (1, "mlp"),
        (2, "ssm"),
        (2, "mlp"),
    ]
    modules = dict(model.named_modules())
    for row in rows:
        alone = LayerMambaLRP(model, modules[row.module], rules=rules).attribute(embeds, target=3)
        alone = alone[0] if isinstance(alone, tuple) else alone
        torch.testing.assert_close(row.relevance, alone.sum((1, 2)), atol=1e-10, rtol=0)

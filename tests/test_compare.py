"""The comparison view's data, page, web API and CLI (no browser; see test_compare_browser.py)."""

from __future__ import annotations

import json
import re

import pytest
import torch
from captum.attr import IntegratedGradients

from captum_mamba import MambaLRP
from captum_mamba.cli import main
from captum_mamba.compare import (
    ComparisonInputError,
    TextModel,
    check_methods,
    compare_text,
    create_app,
    render_page,
)
from captum_mamba.evaluation.flipping import flipping_curves
from captum_mamba.evaluation.methods import METHODS, ExplainedLogits, MethodSpec

TEXT = "a gorgeous , witty and deeply moving film ."


@pytest.fixture(scope="module")
def text_model() -> TextModel:
    return TextModel.default(max_tokens=64)


@pytest.fixture(scope="module")
def example(text_model):
    return compare_text(text_model, TEXT, ["mamba_lrp", "integrated_gradients", "saliency"], label="positive")


def _rows(example):
    return {row["name"]: row for row in example["methods"]}


def test_rows_equal_the_methods_called_directly(text_model, example):
    model = text_model.model
    ids, tokens = text_model.encode(TEXT)
    assert example["tokens"] == tokens == TEXT.split()
    embeds = model.get_input_embeddings()(ids).detach()
    forward = ExplainedLogits(model)
    with torch.no_grad():
        logits = forward(embeds)[0]
    assert example["prediction"]["name"] == "positive" == example["label"]
    assert example["prediction"]["logit"] == pytest.approx(float(logits.max()), abs=1e-5)
    target = int(logits.argmax())

    relevance, delta = MambaLRP(forward, model=model).attribute(embeds, target=target, return_convergence_delta=True)
    lrp = _rows(example)["mamba_lrp"]
    assert lrp["scores"] == pytest.approx(relevance.sum(-1)[0].tolist(), abs=1e-5)
    assert lrp["delta"] == pytest.approx(float(delta), abs=1e-4)  # relevance absorbed by the model's biases
    assert abs(lrp["delta"]) < 0.05 * abs(example["prediction"]["logit"])

    # Integrated Gradients: Captum's delta is sum - (f(x) - f(0)), the row's is sum - f(x)
    _, ig_delta = IntegratedGradients(forward).attribute(
        embeds, target=target, n_steps=32, internal_batch_size=64, return_convergence_delta=True
    )
    with torch.no_grad():
        baseline_logit = float(forward(torch.zeros_like(embeds))[0, target])
    assert _rows(example)["integrated_gradients"]["delta"] == pytest.approx(float(ig_delta) - baseline_logit, abs=1e-3)
    assert _rows(example)["saliency"]["delta"] is None  # unsigned norms are not additive

    curves = flipping_curves(forward, embeds, relevance.sum(-1), torch.tensor([target]), steps=9)
    assert lrp["delta_af"] == pytest.approx(float(curves.delta_af[0]), abs=1e-5)
    assert lrp["morf"][0] == pytest.approx(example["prediction"]["logit"], abs=1e-5)
    assert len(lrp["fractions"]) == len(lrp["morf"]) == len(lrp["lerf"]) == len(tokens) + 1
    assert all(row["seconds"] > 0 for row in example["methods"])


def test_bad_input_is_named(text_model):
    with pytest.raises(ComparisonInputError, match="empty"):
        compare_text(text_model, "   ")
    with pytest.raises(ComparisonInputError, match="70 tokens, more than this model's limit of 64"):
        compare_text(text_model, "good " * 70)
    with pytest.raises(ComparisonInputError, match="unknown attribution method 'bogus'; known methods: .*mamba_lrp"):
        compare_text(text_model, TEXT, ["mamba_lrp", "bogus"])
    with pytest.raises(ComparisonInputError, match="at least one"):
        check_methods([])


def test_a_failing_method_reports_its_error_in_its_row(text_model, monkeypatch):
    def broken(forward, model):
        raise RuntimeError("this method needs a GPU")

    monkeypatch.setitem(METHODS, "broken", MethodSpec("broken", "Broken", broken))
    example = compare_text(text_model, TEXT, ["broken", "mamba_lrp"])
    rows = _rows(example)
    assert rows["broken"]["error"] == "RuntimeError: this method needs a GPU" and rows["broken"]["scores"] == []
    assert rows["mamba_lrp"]["error"] is None and len(rows["mamba_lrp"]["scores"]) == len(example["tokens"])


def test_page_embeds_the_data_safely(example):
    hostile = dict(example, text="</script><script>alert(1)</script>")
    page = render_page([hostile], ["mamba_lrp"], "model <b>", 64)
    assert page.count("</script>") == 2  # the data block and the code block, nothing injected
    data = re.search(r'<script type="application/json" id="comparison-data">(.*?)</script>', page, re.S).group(1)
    decoded = json.loads(data)
    assert decoded["examples"][0]["text"] == hostile["text"] and decoded["live"] is False
    assert [m["name"] for m in decoded["catalogue"]] == list(METHODS)
    assert "/*__JS__*/" not in page and "__DATA__" not in page and "http" not in page.split("<body>")[0]


def test_web_api_answers_bad_input_and_keeps_serving(text_model, example):
    client = create_app(text_model, [example], ["mamba_lrp"]).test_client()
    page = client.get("/")
    assert page.status_code == 200 and b'"live": true' in page.data
    for body, message in (
        ({"text": ""}, "empty"),
        ({"text": "good " * 70}, "limit of 64"),
        ({"text": TEXT, "methods": ["nope"]}, "unknown attribution method 'nope'"),
        ({"text": TEXT, "methods": "mamba_lrp"}, "list of method names"),
    ):
        answer = client.post("/api/explain", json=body)
        assert answer.status_code == 400 and message in answer.get_json()["error"]
    assert client.post("/api/explain", data="not json").status_code == 400
    answer = client.post("/api/explain", json={"text": "a dull mess .", "methods": ["mamba_lrp", "saliency"]})
    assert answer.status_code == 200
    assert [r["name"] for r in answer.get_json()["methods"]] == ["mamba_lrp", "saliency"]
    assert b"a dull mess ." in client.get("/").data  # kept for the next page load
    assert {m["name"] for m in client.get("/api/methods").get_json()} == set(METHODS)


def test_compare_command_writes_a_report_and_rejects_bad_input(tmp_path, capsys):
    out = tmp_path / "report.html"
    assert main(["compare", TEXT, "--methods", "mamba_lrp", "input_x_gradient", "--html", str(out)]) == 0
    page = out.read_text(encoding="utf-8")
    assert "Compare attribution methods" in page and '"mamba_lrp"' in page
    assert main(["compare", "--methods", "bogus", "--html", str(out)]) == 2
    assert "unknown attribution method 'bogus'" in capsys.readouterr().err
    assert main(["compare", "  ", "--html", str(out)]) == 2
    assert "the text is empty" in capsys.readouterr().err
    assert main(["compare", "good " * 20, "--max-tokens", "10", "--html", str(out)]) == 2
    assert "20 tokens, more than this model's limit of 10" in capsys.readouterr().err


def test_linear_time_forward_keeps_the_gradients_and_leaves_other_families_alone(text_model):
    from contextlib import nullcontext

    from transformers import Mamba2Config, Mamba2ForCausalLM

    from captum_mamba.evaluation.linear_time import linear_time_forward

    model = text_model.model
    embeds = model.get_input_embeddings()(text_model.encode(TEXT)[0]).detach()

    def gradient() -> torch.Tensor:
        leaf = embeds.clone().requires_grad_()
        ExplainedLogits(model)(leaf)[0, 1].backward()
        return leaf.grad

    reference = gradient()  # Hugging Face's own path
    with linear_time_forward(model):
        fast = gradient()
    torch.testing.assert_close(fast, reference, atol=1e-5, rtol=1e-4)
    assert not torch.equal(fast, torch.zeros_like(fast))
    mamba2 = Mamba2ForCausalLM(
        Mamba2Config(
            vocab_size=16, hidden_size=16, num_hidden_layers=1, num_heads=4, head_dim=8, state_size=4, n_groups=1
        )
    )
    assert isinstance(linear_time_forward(mamba2), nullcontext)


# --- the shipped copying LMs ----------------------------------------------------------------------

COPYING_METHODS = ["mamba_lrp", "mamba_lrp_cp", "input_x_gradient", "integrated_gradients", "smoothgrad"]
COPYING_LENGTH = 12


@pytest.fixture(scope="module", params=["copying", "copying_qwen3_5", "copying_gated_deltanet"])
def copying_model(request) -> TextModel:
    from captum_mamba.compare import copying_text_model

    return copying_text_model(request.param, max_tokens=64)


def _copying_batch():
    from captum_mamba.evaluation.synthetic.tasks import copying_batch

    return copying_batch(1, COPYING_LENGTH, torch.Generator().manual_seed(0))  # what copying_texts(1, 12) draws


@pytest.mark.parametrize("k", [0, 3])
def test_copying_rows_equal_direct_calls_and_the_source_is_the_tasks(copying_model, k):
    from transformers.models.qwen3_5.modeling_qwen3_5 import Qwen3_5Attention

    from captum_mamba.compare import copying_texts
    from captum_mamba.evaluation.methods import token_attributions
    from captum_mamba.rules import AttentionRule

    batch = _copying_batch()
    position = COPYING_LENGTH - 4 + k  # the k-th output: at the delimiter and the positions after it
    prefix = batch.input_ids[:, : position + 1]
    text = copying_texts(1, COPYING_LENGTH)[k]
    assert text.split() == ["|" if i == 0 else "_" if i == 1 else str(i) for i in prefix[0].tolist()]
    example = compare_text(copying_model, text, COPYING_METHODS)
    rows = _rows(example)
    model = copying_model.model

    # the known truth is the task's: the source of output k, its token the expected output
    source = int(batch.source_position[0, position])
    assert source == k and example["source"] == {"position": source, "token": example["tokens"][source]}
    assert example["label"] == str(int(batch.labels[0, position]))
    assert example["explained_position"] == position
    # the explained target is the model's prediction at that position (a plain forward)
    with torch.no_grad():
        logits = model(input_ids=prefix).logits[0, -1]
    target = int(logits.argmax())
    assert example["prediction"]["index"] == target and example["prediction"]["name"] == example["label"]
    assert example["prediction"]["logit"] == pytest.approx(float(logits[target]), abs=1e-5)

    # each row is its method called directly; MambaLRP by its own class, Gradient x Input by autograd
    embeds = model.get_input_embeddings()(prefix).detach()
    cp = {Qwen3_5Attention: AttentionRule("cp")}
    direct = {
        "mamba_lrp": MambaLRP(model).attribute(embeds, target=target).sum(-1)[0],
        "mamba_lrp_cp": MambaLRP(model, rules=cp).attribute(embeds, target=target).sum(-1)[0],
    }
    leaf = embeds.clone().requires_grad_()
    model(inputs_embeds=leaf).logits[0, -1, target].backward()
    direct["input_x_gradient"] = (leaf.grad * embeds).sum(-1)[0]
    direct["integrated_gradients"] = token_attributions("integrated_gradients", model, prefix, target)[0]
    with torch.random.fork_rng():
        torch.manual_seed(0)  # the view draws SmoothGrad's noise from seed 0
        direct["smoothgrad"] = token_attributions("smoothgrad", model, prefix, target)[0]
    for name, scores in direct.items():
        assert rows[name]["scores"] == pytest.approx(scores.tolist(), abs=1e-6), name
        top1 = int(scores[:-1].argmax())  # the explained position excluded, as evaluate copying
        assert rows[name]["top1"] == top1 and rows[name]["top1_is_source"] == (top1 == source), name

    # conservation: the relevances sum to the explained logit of the plain forward (bias-free models);
    # AttnLRP for the Qwen3.5 model's attention layer is not conservative, CP-LRP is
    conservative = "mamba_lrp" if copying_model.model.config.model_type == "mamba" else "mamba_lrp_cp"
    assert sum(rows[conservative]["scores"]) == pytest.approx(float(logits[target]), abs=1e-5)
    assert abs(rows[conservative]["delta"]) < 1e-5
    assert rows["mamba_lrp"]["top1_is_source"] and rows["mamba_lrp_cp"]["top1_is_source"]

    # token flipping holds the explained position, as evaluate copying does (10 steps or one per token)
    changeable = torch.ones_like(prefix, dtype=torch.bool)
    changeable[:, -1] = False
    steps = min(10, position)
    curves = flipping_curves(
        ExplainedLogits(model), embeds, direct["mamba_lrp"][None], target, None, steps=steps, changeable=changeable
    )
    assert len(rows["mamba_lrp"]["fractions"]) == steps + 1
    assert rows["mamba_lrp"]["delta_af"] == pytest.approx(float(curves.delta_af[0]), abs=1e-6)


def test_copying_examples_are_the_generators_and_read_back():
    from captum_mamba.cli.compare import COPYING_MODEL_NAMES, _methods
    from captum_mamba.compare import COPYING_MODELS, copying_texts, format_copying_sequence, parse_copying_sequence
    from captum_mamba.evaluation.synthetic.tasks import copying_batch

    batch = copying_batch(3, 20, torch.Generator().manual_seed(0))
    texts = copying_texts(3, 20)
    assert len(texts) == 12
    for index, text in enumerate(texts):
        row, k = divmod(index, 4)
        position = 16 + k
        ids, source = parse_copying_sequence(text)
        assert ids == batch.input_ids[row, : position + 1].tolist() and format_copying_sequence(ids) == text
        assert source == int(batch.source_position[row, position])
    assert parse_copying_sequence("7, 3, 12, 9, 1, 1, 0, 1") == ([7, 3, 12, 9, 1, 1, 0, 1], 1)  # ids and commas
    assert set(COPYING_MODEL_NAMES) == set(COPYING_MODELS)
    assert _methods(None, "copying_qwen3_5")[:2] == ["mamba_lrp", "mamba_lrp_cp"]  # it has an attention layer
    for name in ("copying", "copying_gated_deltanet"):  # no attention: MambaLRP alone conserves
        assert "mamba_lrp_cp" not in _methods(None, name)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("7 3 x 9 _ |", "item 3, 'x', is not a token of the copying task; type the data tokens as ids 2-15"),
        ("7 3 16 9 _ |", "item 3, '16', is not a token of the copying task"),
        ("7 3 _ 9 _ |", "item 3, '_', is not a data token: a copying sequence starts with the 4 data tokens"),
        ("7 3 12 9 _ _", "no delimiter |: end it with | to explain the first copied token"),
        ("7", "quote it"),
        ("7 3 12 9 | _ |", "2 delimiters (|, items 5, 7); a copying sequence has one"),
        ("7 3 12 9 _ 5 |", "item 6, '5', stands between the data and the delimiter, where the task has blanks"),
        ("7 3 12 9 _ | 7", "item 7, '7', stands after the delimiter, where the task has blanks (the model writes"),
        ("7 3 12 9 _ | _ _ _ _", "4 blanks after the delimiter; the 4 copied tokens are output at the delimiter"),
        ("  ", "the text is empty: enter a copying sequence ending at the output to explain"),
    ],
)
def test_a_malformed_copying_sequence_is_named_with_the_remedy(text, message):
    from captum_mamba.compare import copying_text_model

    with pytest.raises(ComparisonInputError) as error:
        copying_text_model("copying", max_tokens=64).encode(text)
    assert message in str(error.value)


def test_copying_web_api_marks_the_source_and_refuses_bad_sequences(copying_model):
    client = create_app(copying_model, [], ["mamba_lrp"]).test_client()
    page = client.get("/").data.decode()
    assert "a copying sequence ending at the output to explain" in page and "Copying task" in page
    answer = client.post("/api/explain", json={"text": "7 3 12 9 _ _ x |"})
    assert answer.status_code == 400 and "item 7, 'x', is not a token of the copying task" in answer.get_json()["error"]
    answer = client.post("/api/explain", json={"text": "7 3 12 9 _ _ _ | _ _", "methods": ["mamba_lrp"]})
    assert answer.status_code == 200
    example = answer.get_json()
    assert example["source"] == {"position": 2, "token": "12"} and example["prediction"]["name"] == "12"
    assert example["methods"][0]["top1"] == 2 and example["methods"][0]["top1_is_source"] is True


def _page_data(path) -> dict:
    page = path.read_text(encoding="utf-8")
    return json.loads(re.search(r'id="comparison-data">(.*?)</script>', page, re.S).group(1))


def test_compare_command_on_the_copying_models(tmp_path, capsys):
    from captum_mamba.compare import copying_texts

    out = tmp_path / "copying.html"
    command = ["compare", "--model", "copying", "--sequences", "1", "--length", "12", "--methods", "mamba_lrp"]
    assert main([*command, "--html", str(out)]) == 0
    data = _page_data(out)
    assert "copying LM copying (Mamba" in data["model_name"] and "MODEL_CARD.md" in data["about"]
    assert [e["source"]["position"] for e in data["examples"]] == [0, 1, 2, 3]
    assert [e["text"] for e in data["examples"]] == copying_texts(1, 12)
    assert all(e["methods"][0]["top1_is_source"] for e in data["examples"])

    typed = ["compare", "--model", "copying_qwen3_5", "7 3 12 9 _ _ _ _ | _", "--html", str(out)]
    assert main(typed) == 0
    data = _page_data(out)
    assert data["selected_methods"][:2] == ["mamba_lrp", "mamba_lrp_cp"]
    assert [e["source"]["position"] for e in data["examples"]] == [1]
    capsys.readouterr()


def test_an_unknown_model_name_is_refused_with_the_choices(capsys):
    with pytest.raises(SystemExit) as exit_info:  # argparse's usage error, as for every --model of the CLI
        main(["compare", "--model", "copying-qwen3_5"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "Traceback" not in err
    assert "argument --model: invalid choice: 'copying-qwen3_5' (choose from " in err and "copying_qwen3_5" in err


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--model", "copying", "7 3 12 9 _ _"], "no delimiter |: end it with |"),
        (["--model", "copying", "7 3 12 9 _ | _", "7 3 x"], "sequence 2 of 2: item 3, 'x', is not a token"),
        (["--model", "copying", "7", "3", "12", "9", "_", "|"], "sequence 1 of 6: the sequence has no delimiter | "),
        (["--model", "copying", "--held-out", "4"], "--model copying has no held-out set"),
        (
            ["--length", "20"],
            "--length applies to the copying LMs (--model copying, copying_qwen3_5 or copying_gated_deltanet)",
        ),
        (["--model", "copying", "--length", "5"], "--length 5 is too short: a copying sequence has at least 9"),
        (["--model", "copying", "7 3 12 9 _ |", "--sequences", "2"], "give sequences or --sequences / --length"),
    ],
)
def test_compare_command_refuses_bad_copying_input_without_a_traceback(tmp_path, capsys, arguments, message):
    assert main(["compare", *arguments, "--methods", "mamba_lrp", "--html", str(tmp_path / "r.html")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err

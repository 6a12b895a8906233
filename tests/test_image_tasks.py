"""The image tasks (captum_mamba.images): data, the shipped tiny Vim models, training, the CLI."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import torch

from captum_mamba.cli import main
from captum_mamba.images.data import (
    DIGITS_MEAN,
    DIGITS_STD,
    SHAPE_NAMES,
    TARGET_COLOUR,
    ImageSplit,
    digits_split,
    shape_template,
    shapes_dataset,
)
from captum_mamba.images.tasks import (
    ASSETS_DIR,
    IMAGE_TASKS,
    class_names,
    load_image_model,
    sample_images,
    task_split,
    task_test_split,
)
from captum_mamba.images.train import evaluate, train_vim

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def digits():
    return digits_split(seed=0)


@pytest.fixture(scope="module")
def shapes() -> ImageSplit:
    return shapes_dataset(400, seed=3)


# --- digits ---------------------------------------------------------------------------------


def test_digits_split_shapes_and_ranges(digits):
    train, test = digits
    assert (len(train), len(test)) == (1438, 359)
    assert train.images.shape == (1438, 1, 32, 32) and test.images.shape == (359, 1, 32, 32)
    assert train.images.dtype == torch.float32 and train.labels.dtype == torch.int64
    assert train.masks is None and test.masks is None
    assert (train.mean, train.std) == (DIGITS_MEAN, DIGITS_STD)
    pixels = torch.cat([train.denormalise(), test.denormalise()])
    assert pixels.min() == 0.0 and pixels.max() == pytest.approx(1.0, abs=1e-5)
    # the normalisation constants are the data's own statistics (rounded)
    assert float(pixels.mean()) == pytest.approx(DIGITS_MEAN[0], abs=1e-3)
    assert float(pixels.std()) == pytest.approx(DIGITS_STD[0], abs=1e-3)
    assert sorted(torch.cat([train.labels, test.labels]).unique().tolist()) == list(range(10))


def test_digits_split_is_deterministic_and_disjoint(digits):
    again = digits_split(seed=0)
    assert torch.equal(again.train.images, digits.train.images) and torch.equal(again.test.labels, digits.test.labels)
    other = digits_split(seed=1)
    assert not torch.equal(other.test.labels, digits.test.labels)
    flat = lambda split: {tuple(row.tolist()) for row in split.images.flatten(1)[:, ::7]}  # noqa: E731
    assert not flat(digits.train) & flat(digits.test)  # (the data hold no exact duplicates)


# --- shapes ---------------------------------------------------------------------------------


def test_shapes_are_deterministic_and_prefix_stable(shapes):
    again = shapes_dataset(400, seed=3)
    assert torch.equal(again.images, shapes.images) and torch.equal(again.masks, shapes.masks)
    assert torch.equal(again.labels, shapes.labels)
    prefix = shapes_dataset(10, seed=3)
    assert torch.equal(prefix.images, shapes.images[:10]) and torch.equal(prefix.labels, shapes.labels[:10])
    assert not torch.equal(shapes_dataset(10, seed=4).images, prefix.images)
    assert shapes.images.shape == (400, 3, 32, 32) and shapes.masks.shape == (400, 32, 32)
    assert shapes.masks.dtype == torch.bool


def _red(split: ImageSplit) -> torch.Tensor:
    """Pixels of exactly the target colour, from the denormalised images: ``(N, H, W)`` bool."""
    colour = torch.tensor(TARGET_COLOUR).view(1, 3, 1, 1)
    return ((split.denormalise() - colour).abs() < 1e-4).all(dim=1)


def test_shapes_masks_are_exactly_the_red_pixels(shapes):
    assert torch.equal(_red(shapes), shapes.masks)


def test_shapes_have_one_red_shape_of_the_labelled_type(shapes):
    for image in range(40):
        mask = shapes.masks[image]
        rows, cols = mask.any(1).nonzero().flatten(), mask.any(0).nonzero().flatten()
        top, left = int(rows[0]), int(cols[0])
        side = int(rows[-1]) - top + 1
        assert side == int(cols[-1]) - left + 1  # one shape: its box is square
        template = torch.from_numpy(shape_template(int(shapes.labels[image]), side))
        assert torch.equal(mask[top : top + side, left : left + side], template), image
        assert int(mask.sum()) == int(template.sum())  # no red pixel outside the box


def test_shapes_labels_are_balanced_and_distractors_vary(shapes):
    counts = torch.bincount(shapes.labels, minlength=len(SHAPE_NAMES))
    assert counts.min() >= 0.8 * len(shapes) / 4 and counts.max() <= 1.2 * len(shapes) / 4
    # other shapes are drawn in the other colours: some pixels of full green or blue exist beyond the target
    pixels = shapes.denormalise()
    saturated = (pixels > 1 - 1e-4) | (pixels < 1e-4)
    other = saturated.all(dim=1) & ~shapes.masks & (pixels.sum(dim=1) > 0.5)
    assert bool(other.flatten(1).any(1).all()), "every scene has at least one distractor shape"


def test_shapes_normalisation_round_trips(shapes):
    assert shapes.denormalise().min() >= 0.0 and shapes.denormalise().max() <= 1.0
    means = shapes.denormalise().mean(dim=(0, 2, 3))
    assert torch.allclose(means, torch.tensor(shapes.mean), atol=0.02)


# --- the shipped models ---------------------------------------------------------------------


@pytest.mark.parametrize("task", IMAGE_TASKS)
def test_shipped_model_reaches_its_recorded_accuracy(task):
    metrics = json.loads((ASSETS_DIR / task / "metrics.json").read_text(encoding="utf-8"))
    model = load_image_model(task)
    assert not model.training
    assert model.num_classes == len(class_names(task))
    torch.set_num_threads(1)
    test = task_test_split(task, metrics["seed"])
    assert len(test) == metrics["test_size"]
    result = evaluate(model, test)
    # one image's leeway: a different thread count may flip a near-tie
    assert abs(result["correct"] - metrics["test_correct"]) <= 1, (result, metrics["test_correct"])
    assert metrics["test_accuracy"] >= (0.95 if task == "digits" else 0.9)


@pytest.mark.parametrize("task", IMAGE_TASKS)
def test_shipped_metrics_name_a_clean_commit(task):
    metrics = json.loads((ASSETS_DIR / task / "metrics.json").read_text(encoding="utf-8"))
    record = metrics["provenance"]
    assert re.fullmatch(r"[0-9a-f]{40}", record["commit"]) and record["dirty"] is False
    assert metrics["command"].startswith(f"captum-mamba train vim-{task} --out captum_mamba/images/assets/{task}")
    shallow = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--is-shallow-repository"], capture_output=True, text=True, check=False
    )
    if shallow.returncode == 0 and shallow.stdout.strip() == "false":
        done = subprocess.run(
            ["git", "-C", str(ROOT), "merge-base", "--is-ancestor", record["commit"], "HEAD"], check=False
        )
        assert done.returncode == 0, f"{record['commit']} is not in this branch's history"
    card = (ASSETS_DIR / task / "MODEL_CARD.md").read_text(encoding="utf-8")
    assert metrics["command"] in card and f"{metrics['test_accuracy']:.4f}" in card


@pytest.mark.parametrize("task", IMAGE_TASKS)
def test_sample_images_are_the_first_test_images(task):
    batch = sample_images(task, count=5)
    assert len(batch) == 5
    test = task_split(task, 0, train_size=1).test
    assert torch.equal(task_test_split(task).images, test.images)
    assert torch.equal(batch.images, test.images[:5]) and torch.equal(batch.labels, test.labels[:5])
    assert (batch.masks is not None) == (task == "shapes")
    assert batch.images.shape[1] == (1 if task == "digits" else 3)


def test_class_names():
    assert class_names("digits") == [str(d) for d in range(10)]
    assert class_names("shapes") == list(SHAPE_NAMES) == ["square", "circle", "triangle", "cross"]


def test_unknown_task_names_the_tasks():
    for call in (load_image_model, class_names, sample_images):
        with pytest.raises(ValueError, match="unknown image task 'nope'; choose one of digits, shapes"):
            call("nope")
    with pytest.raises(ValueError, match="count must lie in 1..359"):
        sample_images("digits", count=0)


def test_mamba_lrp_explains_the_shipped_model():
    from captum_mamba import MambaLRP

    model = load_image_model("shapes")
    batch = sample_images("shapes", count=2)
    relevance = MambaLRP(model).attribute(batch.images, target=batch.labels)
    assert relevance.shape == (2, 3, 32, 32) and torch.isfinite(relevance).all()


# --- training -------------------------------------------------------------------------------


def test_train_vim_is_bit_reproducible(tmp_path):
    budget = dict(epochs=1, max_train=48, batch_size=16, embed_dim=16, depth=1)
    first = train_vim("digits", tmp_path / "a", **budget)
    second = train_vim("digits", tmp_path / "b", **budget)
    a = (tmp_path / "a" / "model.safetensors").read_bytes()
    assert a == (tmp_path / "b" / "model.safetensors").read_bytes()
    assert first["test_correct"] == second["test_correct"] and first["steps"] == 3
    assert first["command"] == (
        f"captum-mamba train vim-digits --out {tmp_path / 'a'} --epochs 1 --batch-size 16 --embed-dim 16 --depth 1 "
        "--max-train 48"
    )
    for name in ("config.json", "model.safetensors", "metrics.json", "MODEL_CARD.md"):
        assert (tmp_path / "a" / name).is_file()
    third = train_vim("digits", tmp_path / "c", seed=1, **budget)
    assert third["seed"] == 1
    assert (tmp_path / "c" / "model.safetensors").read_bytes() != a


def test_train_vim_rejects_bad_settings(tmp_path):
    with pytest.raises(ValueError, match="unknown image task"):
        train_vim("mnist", tmp_path)
    with pytest.raises(ValueError, match="unknown training options"):
        train_vim("digits", tmp_path, learning_rate=1.0)
    with pytest.raises(ValueError, match="train-size"):
        train_vim("digits", tmp_path, train_size=10)
    with pytest.raises(ValueError, match="max-train 5000 exceeds"):
        train_vim("digits", tmp_path, max_train=5000)
    assert not any(tmp_path.iterdir())


def _usage_error(argv: list[str], capsys) -> str:
    try:
        code = main(argv)
    except SystemExit as exit_info:  # argparse's own usage errors
        code = exit_info.code
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and "error: " in err, err
    return err


def test_cli_rejects_bad_arguments(tmp_path, capsys):
    assert "the following arguments are required: --out" in _usage_error(["train", "vim-digits"], capsys)
    err = _usage_error(["train", "vim-shapes", "--out", str(tmp_path), "--epochs", "0"], capsys)
    assert "expected a positive integer" in err
    err = _usage_error(["train", "vim-digits", "--out", str(tmp_path), "--seed", "-1"], capsys)
    assert "expected an integer of 0 or more" in err
    err = _usage_error(["train", "vim-digits", "--out", str(tmp_path), "--lr", "nan"], capsys)
    assert "expected a positive number" in err
    assert "unrecognized arguments: --train-size" in _usage_error(
        ["train", "vim-digits", "--out", str(tmp_path), "--train-size", "10"], capsys
    )
    err = _usage_error(["train", "vim-digits", "--out", str(tmp_path), "--max-train", "99999"], capsys)
    assert "max-train 99999 exceeds the 1438 training images" in err and "captum-mamba train vim-digits --help" in err
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert "output folder --out" in _usage_error(["train", "vim-digits", "--out", str(blocker / "sub")], capsys)


def test_cli_passes_the_options_and_the_command_to_train_vim(monkeypatch, tmp_path):
    import captum_mamba.images.train as module

    calls = []
    monkeypatch.setattr(module, "train_vim", lambda *args, **kwargs: calls.append((args, kwargs)))
    options = ["--out", str(tmp_path / "m"), "--epochs", "2", "--seed", "3", "--train-size", "100", "--lr", "0.01"]
    assert main(["train", "vim-shapes", *options]) == 0
    (task, out), kwargs = calls[0]
    assert (task, out) == ("shapes", tmp_path / "m")
    assert kwargs == dict(
        seed=3,
        epochs=2,
        threads=1,
        max_train=None,
        command="captum-mamba train vim-shapes " + " ".join(options),
        lr=0.01,
        train_size=100,
    )
    assert not (tmp_path / "m").exists()  # nothing is created before training

"""Image evaluation of Vision Mamba explanations: methods, patch flipping, known-mask metrics, rollout, report, CLI."""

from __future__ import annotations

import json
import math
import sys
import types
from types import SimpleNamespace

import matplotlib.image
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from captum_mamba.cli import main
from captum_mamba.evaluation.hidden_attention import hidden_attention
from captum_mamba.images.evaluation import (
    evaluate_images,
    image_attributions,
    mean_sem,
    patch_flipping,
    pointing_game,
    relevance_mass_accuracy,
    relevance_rank_accuracy,
    write_image_report,
)
from captum_mamba.images.methods import EVALUATED_IMAGE_METHODS as DEFAULT_IMAGE_METHODS
from captum_mamba.images.methods import IMAGE_METHODS
from captum_mamba.images.patches import images_to_patches, patches_to_images
from captum_mamba.images.rollout import block_attention, direction_attention, rollout_matrix, rollout_patch_scores
from captum_mamba.models.vim import VisionMamba


def tiny_vim(seed: int = 0, dtype: torch.dtype = torch.float64) -> VisionMamba:
    torch.manual_seed(seed)
    model = VisionMamba(img_size=16, patch_size=4, stride=4, embed_dim=8, depth=2, d_state=4, channels=3, num_classes=3)
    return model.to(dtype).eval()


def images(count: int = 2, seed: int = 1, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    return torch.randn(count, 3, 16, 16, generator=torch.Generator().manual_seed(seed), dtype=dtype)


# methods


def test_every_method_gives_pixel_and_patch_relevance():
    model, batch = tiny_vim(seed=10, dtype=torch.float32), images(dtype=torch.float32)
    assert set(DEFAULT_IMAGE_METHODS) == {
        "mamba_lrp",
        "naive_lrp",
        "input_x_gradient",
        "integrated_gradients",
        "smoothgrad",
        "attention_rollout",
        "random",
    }
    for name in DEFAULT_IMAGE_METHODS:
        pixel, patch = image_attributions(name, model, batch, torch.tensor([0, 2]))
        assert pixel.shape == (2, 16, 16) and patch.shape == (2, 4, 4), name
        assert torch.isfinite(pixel).all() and torch.isfinite(patch).all(), name
        # the patch relevance is the sum over the patch's pixels
        torch.testing.assert_close(patch, pixel.reshape(2, 4, 4, 4, 4).sum((2, 4)))
    lrp, _ = image_attributions("mamba_lrp", model, batch, 1)
    naive, _ = image_attributions("naive_lrp", model, batch, 1)
    assert not torch.allclose(lrp, naive)  # the ablation changes the rules
    again, _ = image_attributions("smoothgrad", model, batch, 1)
    torch.testing.assert_close(again, image_attributions("smoothgrad", model, batch, 1)[0])  # seeded noise
    with pytest.raises(ValueError, match="unknown image methods"):
        image_attributions("nope", model, batch, 0)


def test_mamba_lrp_pixel_relevance_is_the_channel_sum_of_mamba_lrp():
    from captum_mamba import MambaLRP

    model, batch = tiny_vim(seed=11), images()
    pixel, _ = image_attributions("mamba_lrp", model, batch, torch.tensor([1, 0]))
    torch.testing.assert_close(pixel, MambaLRP(model).attribute(batch, target=torch.tensor([1, 0])).sum(1))


# patch flipping


class LinearPatches(nn.Module):
    """Logits that are a known linear function of the patches: ``f_c(x) = sum_p w[c, p] s_p(x) + b_c``,
    ``s_p`` the sum of patch ``p``'s pixels (4 x 4 patches of 16 x 16 images)."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.weight = nn.Parameter(torch.randn(2, 4, 4, generator=generator, dtype=torch.float64))
        self.bias = nn.Parameter(torch.tensor([0.5, -0.25], dtype=torch.float64))

    def patch_sums(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], 3, 4, 4, 4, 4).sum((1, 3, 5))  # (batch, grid rows, grid columns)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.einsum("bhw,chw->bc", self.patch_sums(x), self.weight) + self.bias


def _expected_curve(contributions: torch.Tensor, logit: torch.Tensor, descending: bool) -> torch.Tensor:
    """Deleting patch p (zero baseline) removes exactly its contribution w_p s_p: one patch per step."""
    ordered = contributions.sort(descending=descending).values
    removed = torch.cat([torch.zeros(1, dtype=ordered.dtype), ordered.cumsum(0)])
    return logit - removed


def test_flipping_a_linear_model_with_its_ideal_scores_follows_the_contributions():
    model = LinearPatches(seed=3)
    batch = images(3, seed=4) + 0.5
    target = torch.tensor([0, 1, 0])
    contributions = model.patch_sums(batch) * model.weight[target]  # the ideal patch scores
    result = patch_flipping(model, batch, contributions, target, steps=16, patch_size=(4, 4))
    logits = model(batch).gather(1, target[:, None])[:, 0]
    assert result.fractions == [k / 16 for k in range(17)]
    for row in range(3):
        flat = contributions[row].flatten()
        torch.testing.assert_close(
            result.morf[row].double(), _expected_curve(flat, logits[row], True), atol=1e-5, rtol=0
        )
        torch.testing.assert_close(
            result.lerf[row].double(), _expected_curve(flat, logits[row], False), atol=1e-5, rtol=0
        )
    assert (result.morf <= result.lerf + 1e-6).all()  # the top k contributions sum to at least the bottom k
    # the fully flipped image is the zero image: only the bias is left
    torch.testing.assert_close(result.morf[:, -1].double(), model.bias[target].detach(), atol=1e-6, rtol=0)
    # the areas: trapezoids over [0, 1] of the curves divided by |f(x)|
    torch.testing.assert_close(result.unperturbed.double(), logits.detach(), atol=1e-5, rtol=0)
    normalised = result.normalised(result.morf)
    torch.testing.assert_close(normalised[:, 0], torch.sign(result.unperturbed))
    width = 1 / 16
    trapezoid = width * (normalised[:, 1:] + normalised[:, :-1]).sum(1) / 2
    torch.testing.assert_close(result.area_morf, trapezoid)
    torch.testing.assert_close(
        result.delta_af, (torch.trapezoid(result.lerf - result.morf, dx=width)) / result.unperturbed.abs()
    )
    # the ideal ordering beats any other; reversing it negates ΔA^F exactly
    reversed_scores = patch_flipping(model, batch, -contributions, target, steps=16, patch_size=(4, 4))
    torch.testing.assert_close(reversed_scores.delta_af, -result.delta_af)
    shuffled = contributions.flatten(1)[:, torch.randperm(16, generator=torch.Generator().manual_seed(5))]
    other = patch_flipping(model, batch, shuffled, target, steps=16, patch_size=(4, 4))
    assert (result.delta_af >= other.delta_af - 1e-6).all() and (result.delta_af > 0).all()


def test_flipping_steps_and_a_per_channel_baseline():
    model = LinearPatches(seed=6)
    batch = images(2, seed=7)
    scores = torch.arange(16, dtype=torch.float64).expand(2, 16).reshape(2, 4, 4)
    baseline = [0.1, -0.2, 0.3]
    result = patch_flipping(model, batch, scores, 1, steps=4, baseline=baseline, patch_size=(4, 4))
    assert len(result.fractions) == 5
    # after one step of four patches, MoRF has replaced the four highest-scoring patches (12..15)
    expected = batch.clone()
    for channel, value in enumerate(baseline):
        expected[:, channel, 12:16, :] = value  # patches 12..15 are the last grid row
    torch.testing.assert_close(result.morf[:, 1].double(), model(expected)[:, 1].detach(), atol=1e-5, rtol=0)
    everything = torch.tensor(baseline, dtype=torch.float64)[None, :, None, None].expand(2, 3, 16, 16)
    torch.testing.assert_close(result.lerf[:, -1].double(), model(everything)[:, 1].detach(), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="one value per channel"):
        patch_flipping(model, batch, scores, 1, baseline=[0.0, 1.0], patch_size=(4, 4))


def test_patches_round_trip_in_the_patch_embedding_order():
    model, batch = tiny_vim(seed=12), images(2, seed=8)
    patches = images_to_patches(batch, (4, 4), (4, 4))
    torch.testing.assert_close(patches_to_images(patches, (4, 4), (4, 4), (16, 16)), batch)
    # patch p of the sequence is the model's token p: the projection of its pixels
    projection = model.patch_embed.proj
    tokens = model.patch_embed(batch)
    flat_weight = projection.weight.reshape(projection.out_channels, -1)
    torch.testing.assert_close(tokens, patches @ flat_weight.T + projection.bias)


# known-mask metrics


def test_pointing_game_mass_and_rank_accuracy_on_hand_built_maps():
    relevance = torch.tensor(
        [
            [[0.0, 1.0, -2.0], [3.0, 0.5, 0.0], [0.0, 0.0, 1.0]],
            [[-1.0, -1.0, -1.0], [-1.0, -1.0, -1.0], [-1.0, -1.0, -0.5]],
            [[0.0, 2.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]],
            [[1.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]],
        ]
    )
    masks = torch.zeros(4, 3, 3, dtype=torch.bool)
    masks[0, 1, 0] = masks[0, 1, 1] = True  # the maximum (3) and 0.5 inside
    masks[1, 0, 0] = True  # no positive relevance at all; the maximum (-0.5) outside
    masks[2, 0, :] = True  # everything inside
    # image 3: empty mask
    pointing = pointing_game(relevance, masks)
    mass = relevance_mass_accuracy(relevance, masks)
    rank = relevance_rank_accuracy(relevance, masks)
    assert pointing[:3].tolist() == [1.0, 0.0, 1.0]
    # positive relevance 1 + 3 + 0.5 + 1 = 5.5, inside 3 + 0.5
    assert mass[:3].tolist() == pytest.approx([3.5 / 5.5, 0.0, 1.0])
    # image 0, K = 2: the top two are 3 (inside) and the first 1 in raster order (outside); image 2,
    # K = 3: 2, then the zeros tied after it in raster order, (0, 0) and (0, 2), all inside
    assert rank[:3].tolist() == pytest.approx([0.5, 0.0, 1.0])
    assert all(math.isnan(float(metric[3])) for metric in (pointing, mass, rank))
    mean, sem, count = mean_sem(pointing)
    assert (mean, count) == (pytest.approx(2 / 3), 3)
    assert sem == pytest.approx(torch.tensor([1.0, 0.0, 1.0]).std().item() / 3**0.5)
    with pytest.raises(ValueError, match="height, width"):
        pointing_game(relevance, masks[:, :2])


# attention rollout over the hidden attention


def _loop_hidden_attention(mixer: nn.Module, hidden: torch.Tensor, backward: bool):
    """Hidden attention written out with loops: u_t = silu(causal conv), then
    alpha[d, t, j] = sum_n C[t, n] exp(sum_{k=j+1..t} delta[k, d] A[d, n]) delta[j, d] B[j, n]."""
    suffix = "_b" if backward else ""
    conv = getattr(mixer, "conv1d" + suffix)
    x_proj, dt_proj = getattr(mixer, "x_proj" + suffix), getattr(mixer, "dt_proj" + suffix)
    A = -torch.exp(getattr(mixer, "A_b_log" if backward else "A_log"))
    x, z = mixer.in_proj(hidden[0]).chunk(2, dim=-1)  # (length, inner): one example
    if backward:
        x, z = x.flip(0), z.flip(0)
    length, inner = x.shape
    width = conv.weight.shape[-1]
    u = torch.zeros(length, inner, dtype=x.dtype)
    for t in range(length):
        total = conv.bias.clone()
        for k in range(width):
            source = t - (width - 1) + k
            if source >= 0:
                total = total + conv.weight[:, 0, k] * x[source]
        u[t] = F.silu(total)
    dt, B, C = torch.split(x_proj(u), [mixer.dt_rank, mixer.d_state, mixer.d_state], dim=-1)
    delta = F.softplus(dt @ dt_proj.weight.T + dt_proj.bias)  # (length, inner)
    alpha = torch.zeros(inner, length, length, dtype=x.dtype)
    for t in range(length):
        for j in range(t + 1):
            decay = torch.exp(delta[j + 1 : t + 1].sum(0)[:, None] * A)  # (inner, state)
            alpha[:, t, j] = (C[t][None, :] * decay * B[j][None, :]).sum(-1) * delta[j]
    return alpha, u, z


@pytest.mark.parametrize("backward", [False, True], ids=["forward", "backward"])
def test_vim_hidden_attention_matches_a_loop_and_the_scan(backward):
    model = tiny_vim(seed=13)
    mixer = model.layers[1].mixer
    hidden = torch.randn(1, 17, 8, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    with torch.no_grad():
        alpha, u, gate = hidden_attention(mixer, hidden, "backward" if backward else "forward")
        expected, loop_u, z = _loop_hidden_attention(mixer, hidden, backward)
        torch.testing.assert_close(alpha[0], expected, atol=1e-12, rtol=1e-9)
        torch.testing.assert_close(u[0], loop_u)
        # sum_j alpha_tj u_j + D u_t, gated, is the model's own scan of that direction
        D = mixer.D_b if backward else mixer.D
        y = torch.einsum("dtj,jd->td", expected, loop_u) + D * loop_u
        x, zz = mixer.in_proj(hidden).chunk(2, dim=-1)
        if backward:
            x, zz = x.flip(1), zz.flip(1)
        scanned = mixer._scan_direction(x, zz, mixer.direction("_b" if backward else ""))
        torch.testing.assert_close(y * F.silu(z), scanned[0], atol=1e-12, rtol=1e-9)
        torch.testing.assert_close(gate[0], F.silu(z))
        # in the tokens' order: the backward matrix flipped on both axes (anti-causal)
        mean = expected.abs().mean(0)
        ordered = direction_attention(mixer, hidden, "backward" if backward else "forward")[0]
        torch.testing.assert_close(ordered, mean.flip(0, 1) if backward else mean, atol=1e-12, rtol=1e-9)
        assert torch.equal(ordered.tril(-1) if backward else ordered.triu(1), torch.zeros_like(ordered))


def test_rollout_is_the_product_of_the_blocks_residual_normalised_attention():
    model, batch = tiny_vim(seed=14), images(2, seed=10)
    inputs = []
    handles = [layer.mixer.register_forward_pre_hook(lambda m, args: inputs.append(args[0])) for layer in model.layers]
    with torch.no_grad():
        model(batch)
    for handle in handles:
        handle.remove()
    expected = torch.eye(17, dtype=torch.float64).expand(2, 17, 17)
    with torch.no_grad():
        for layer, hidden in zip(model.layers, inputs):
            rows = []
            for example in range(2):
                forward, _, _ = _loop_hidden_attention(layer.mixer, hidden[example : example + 1], False)
                backward, _, _ = _loop_hidden_attention(layer.mixer, hidden[example : example + 1], True)
                rows.append(0.5 * (forward.abs().mean(0) + backward.abs().mean(0).flip(0, 1)))
            attention = torch.stack(rows)
            torch.testing.assert_close(block_attention(layer.mixer, hidden), attention, atol=1e-12, rtol=1e-9)
            mixed = 0.5 * attention + 0.5 * torch.eye(17, dtype=torch.float64)
            expected = (mixed / mixed.sum(-1, keepdim=True)) @ expected
    rollout = rollout_matrix(model, batch)
    torch.testing.assert_close(rollout, expected, atol=1e-12, rtol=1e-9)
    torch.testing.assert_close(rollout.sum(-1), torch.ones(2, 17, dtype=torch.float64))
    scores = rollout_patch_scores(model, batch)
    position = model.token_position
    row = expected[:, position]
    torch.testing.assert_close(scores, torch.cat((row[:, :position], row[:, position + 1 :]), 1).reshape(2, 4, 4))
    assert (scores >= 0).all()
    # the rollout method spreads each patch's score over its pixels
    pixel, patch = image_attributions("attention_rollout", model, batch, 0)
    torch.testing.assert_close(patch, scores)
    torch.testing.assert_close(pixel[:, :4, :4], scores[:, :1, :1].expand(2, 4, 4) / 16)


# runner, report, heatmap grid


def _split(count: int = 4, dtype: torch.dtype = torch.float32) -> SimpleNamespace:
    masks = torch.zeros(count, 16, 16, dtype=torch.bool)
    masks[:, 4:12, 4:12] = True
    return SimpleNamespace(
        images=images(count, seed=11, dtype=dtype),
        labels=torch.arange(count) % 3,
        masks=masks,
        denormalise=lambda x: (x * 0.25 + 0.5).clamp(0, 1),
    )


def test_evaluate_images_writes_the_table_and_the_heatmap_grid(tmp_path):
    model, split = tiny_vim(seed=15, dtype=torch.float32), _split()
    evaluation = evaluate_images(model, split, DEFAULT_IMAGE_METHODS, steps=8, batch_size=3, keep=3)
    rows = {row["method"]: row for row in evaluation.table()}
    assert list(rows) == list(DEFAULT_IMAGE_METHODS)
    for row in rows.values():
        for key in ("delta_af", "area_morf", "area_lerf", "pointing_game", "mass_accuracy", "rank_accuracy"):
            assert math.isfinite(row[key]) and row[f"{key}_n"] == 4 and row[f"{key}_sem"] >= 0
        assert row["delta_af"] == pytest.approx(row["area_lerf"] - row["area_morf"])
    assert evaluation.results["mamba_lrp"].maps.shape == (3, 16, 16)
    paths = write_image_report(
        evaluation, tmp_path, "images_tiny", "captum-mamba evaluate images", "tiny", split.denormalise, ["a", "b", "c"]
    )
    document = json.loads(paths[0].read_text())
    assert document["provenance"]["commit"] is not None
    assert [row["method"] for row in document["rows"]] == list(DEFAULT_IMAGE_METHODS)
    assert len(document["mean_curves"]["random"]["morf"]) == 9 and document["n"] == 4
    markdown = paths[1].read_text()
    assert "| MambaLRP |" in markdown and "pointing game" in markdown
    picture = matplotlib.image.imread(paths[2])
    assert paths[2].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and picture.shape[0] > 100 and picture.shape[1] > 400
    # without masks: no mask metrics, and the table says so
    no_masks = SimpleNamespace(**{**vars(split), "masks": None})
    plain = evaluate_images(model, no_masks, ["random"], steps=4, explained="label")
    assert "pointing_game" not in plain.table()[0] and plain.explained == "label"


# command line


def _exit_status(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exit_info:  # argparse's own usage errors
        return exit_info.code


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--task", "nope"], "argument --task: invalid choice: 'nope'"),
        (["--task", "digits", "--methods", "foo"], "unknown image attribution method 'foo'; choose from"),
        (["--task", "shapes", "--n", "0"], "argument --n: expected a positive integer"),
        (["--task", "shapes", "--explain", "maybe"], "argument --explain: invalid choice"),
        (["--task", "digits", "--out", "/proc/nope"], "output folder --out /proc/nope"),
        ([], "the following arguments are required: --task"),
    ],
    ids=lambda value: " ".join(value) if isinstance(value, list) else None,
)
def test_the_cli_rejects_bad_arguments(argv, message, capsys):
    code = _exit_status(["evaluate", "images", *argv])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err and "error: " in err and message in err
    if "choose from" in message:
        assert "mamba_lrp" in err and "attention_rollout" in err


def test_the_cli_refuses_an_untraceable_results_folder_before_computing(tmp_path, monkeypatch, capsys):
    import captum_mamba.evaluation.provenance as provenance

    monkeypatch.delenv(provenance.ALLOW_DIRTY_ENV, raising=False)
    monkeypatch.setattr(provenance, "provenance", lambda *a, **k: {"commit": "0" * 40, "dirty": True})
    out = tmp_path / "benchmarks" / "results" / "images"
    assert _exit_status(["evaluate", "images", "--task", "digits", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "refusing to write" in err and "outside benchmarks/results/" in err


def test_the_cli_runs_on_the_task_api(tmp_path, monkeypatch, capsys):
    # a stand-in for captum_mamba.images.tasks (shipped by the data branch)
    tasks = types.ModuleType("captum_mamba.images.tasks")
    tasks.IMAGE_TASKS = {"digits": None, "shapes": None}
    tasks.load_image_model = lambda task: tiny_vim(seed=16, dtype=torch.float32)
    tasks.sample_images = lambda task, count: _split(count)
    tasks.class_names = lambda task: ["zero", "one", "two"]
    monkeypatch.setitem(sys.modules, "captum_mamba.images.tasks", tasks)
    argv = ["evaluate", "images", "--task", "shapes", "--n", "3", "--methods", "mamba_lrp", "random"]
    assert main([*argv, "--steps", "4", "--examples", "2", "--out", str(tmp_path)]) == 0
    document = json.loads((tmp_path / "images_shapes.json").read_text())
    assert [row["method"] for row in document["rows"]] == ["mamba_lrp", "random"] and document["n"] == 3
    assert document["command"].startswith("captum-mamba evaluate images --task shapes")
    assert (tmp_path / "images_shapes.md").is_file() and (tmp_path / "images_shapes_heatmaps.png").is_file()
    assert "| MambaLRP |" in capsys.readouterr().out


def test_every_registered_method_has_a_label_and_family():
    for spec in IMAGE_METHODS.values():
        assert spec.label and spec.family in ("lrp", "gradient", "attention", "control")

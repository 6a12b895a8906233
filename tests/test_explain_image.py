"""Image explanations: the heatmap figure and page, ``captum-mamba explain-image``, the image
comparison (``compare-images`` and :func:`~captum_mamba.compare.compare_images`), on a tiny random
Vision Mamba saved to a folder; the shipped tasks' runs skip while ``captum_mamba.images`` is absent."""

from __future__ import annotations

import re
import sys
import types

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
import torch
from captum.attr import InputXGradient
from captum.attr import visualization as captum_viz
from matplotlib import image as mpimage

from captum_mamba import MambaLRP
from captum_mamba.cli import main
from captum_mamba.cli.explain_image import read_image
from captum_mamba.compare import compare_images, render_image_comparison
from captum_mamba.images.methods import IMAGE_METHODS, ImageMethodSpec
from captum_mamba.models import VisionMamba
from captum_mamba.models.vim import PatchProjection
from captum_mamba.rules.gamma import SignedGammaRule
from captum_mamba.visualization import (
    ImageExplanation,
    image_heatmap_figure,
    image_report_html,
    to_captum_layout,
    write_image_heatmap_png,
)
from captum_mamba.visualization.image import MASK_COLOR, heatmap_rgb

TINY = dict(img_size=16, patch_size=4, stride=4, embed_dim=8, depth=2, d_state=4, channels=3, num_classes=3)

LINE = re.compile(
    r"^(?P<name>.+): predicted (?P<predicted>\S+) \(p = [0-9.]+\); explaining (?P<explained>\S+): "
    r"logit (?P<logit>\S+), sum of relevances (?P<sum>\S+), delta (?P<delta>\S+) -> (?P<png>.+)$"
)


def tiny_vim(seed: int = 0, **options) -> VisionMamba:
    torch.manual_seed(seed)
    model = VisionMamba(**{**TINY, **options})
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # non-trivial weights, so that the classes and relevances differ
        for name, parameter in model.named_parameters():
            if "A_log" not in name and "norm" not in name:
                parameter.add_(0.3 * torch.randn(parameter.shape, generator=generator))
    return model.eval()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A saved tiny Vim, an RGB PNG of another size and a grey PNG."""
    folder = tmp_path_factory.mktemp("images")
    tiny_vim().save_pretrained(folder / "vim")
    rng = np.random.default_rng(0)
    mpimage.imsave(folder / "a.png", rng.random((20, 24, 3)))
    grey = (rng.random((16, 16)) * 255).astype(np.uint8)
    mpimage.imsave(folder / "b.png", np.repeat(grey[..., None], 3, axis=2))
    return folder


def _lines(out: str) -> list[dict[str, str]]:
    return [match.groupdict() for line in out.splitlines() if (match := LINE.match(line))]


def _usage_error(argv: list[str], capsys) -> str:
    assert main(argv) == 2, argv
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err, err
    return err


def test_explain_image_writes_heatmaps_and_a_page_that_agree_with_mamba_lrp(files, tmp_path, capsys):
    out = tmp_path / "out"
    a, b = str(files / "a.png"), str(files / "b.png")
    assert main(["explain-image", a, b, "--model", str(files / "vim"), "--out", str(out)]) == 0
    lines = _lines(capsys.readouterr().out)
    assert [line["name"] for line in lines] == [a, b]
    assert (out / "a_relevance.png").stat().st_size > 5000 and (out / "b_relevance.png").stat().st_size > 5000
    page = (out / "index.html").read_text(encoding="utf-8")
    assert page.count('src="data:image/png;base64,') == 2 and "convergence delta" in page

    model = VisionMamba.from_pretrained(files / "vim")
    images = torch.stack([read_image(a, 3, (16, 16)), read_image(b, 3, (16, 16))])
    with torch.no_grad():
        logits = model(images)
    predicted = logits.argmax(-1)
    relevance, delta = MambaLRP(model).attribute(images, target=predicted, return_convergence_delta=True)
    for row, line in enumerate(lines):
        assert line["predicted"] == line["explained"] == str(int(predicted[row]))
        assert float(line["logit"]) == pytest.approx(float(logits[row, predicted[row]]), abs=2e-6)
        assert float(line["sum"]) == pytest.approx(float(relevance[row].sum()), abs=2e-6)
        assert float(line["delta"]) == pytest.approx(float(delta[row]), rel=2e-3, abs=1e-7)
        assert float(line["sum"]) - float(line["logit"]) == pytest.approx(float(line["delta"]), rel=2e-3, abs=1e-5)
        assert f"{float(line['logit']):+.4f}" in page


def test_image_files_are_converted_resized_and_normalised(files, tmp_path, capsys):
    grey = read_image(files / "b.png", 1, (8, 8))
    assert grey.shape == (1, 8, 8) and 0 <= float(grey.min()) and float(grey.max()) <= 1
    rgb = read_image(files / "b.png", 3, (16, 16))
    torch.testing.assert_close(rgb[0], rgb[1])  # a grey file repeated over the channels
    assert read_image(files / "a.png", 3, (16, 16)).shape == (3, 16, 16)
    # --mean/--std: the same explanation as the normalised images explained directly
    model = VisionMamba.from_pretrained(files / "vim")
    argv = ["explain-image", str(files / "a.png"), "--model", str(files / "vim"), "--out", str(tmp_path)]
    assert main([*argv, "--mean", "0.5", "--std", "0.2", "0.25", "0.3", "--target", "1"]) == 0
    (line,) = _lines(capsys.readouterr().out)
    std = torch.tensor([0.2, 0.25, 0.3])[:, None, None]
    image = ((read_image(files / "a.png", 3, (16, 16)) - 0.5) / std)[None]
    relevance = MambaLRP(model).attribute(image, target=1)
    assert line["explained"] == "1" and float(line["sum"]) == pytest.approx(float(relevance.sum()), abs=2e-6)


def test_method_and_gamma_options(files, tmp_path, capsys):
    base = ["explain-image", str(files / "a.png"), "--model", str(files / "vim"), "--out", str(tmp_path)]
    model = VisionMamba.from_pretrained(files / "vim")
    image = read_image(files / "a.png", 3, (16, 16))[None]
    assert main([*base, "--method", "input_x_gradient", "--target", "0"]) == 0
    (line,) = _lines(capsys.readouterr().out)
    assert float(line["sum"]) == pytest.approx(
        float(InputXGradient(model).attribute(image.clone().requires_grad_(), target=0).detach().sum()), abs=2e-6
    )
    assert main([*base, "--gamma", "0.7", "--target", "2"]) == 0
    (line,) = _lines(capsys.readouterr().out)
    expected = MambaLRP(model, rules={PatchProjection: SignedGammaRule(0.7)}).attribute(image, target=2)
    assert float(line["sum"]) == pytest.approx(float(expected.sum()), abs=2e-6)


def test_errors_exit_2_with_the_remedy(files, tmp_path, capsys):
    model, a = str(files / "vim"), str(files / "a.png")
    out = ["--out", str(tmp_path / "o")]
    err = _usage_error(["explain-image", str(files / "missing.png"), "--model", model, *out], capsys)
    assert "missing.png does not exist; check the path" in err
    assert "give --task or --model, not both" in _usage_error(
        ["explain-image", a, "--model", model, "--task", "digits"], capsys
    )
    err = _usage_error(["explain-image", a, *out], capsys)
    assert "give --task digits|shapes" in err and "--model DIR" in err
    err = _usage_error(["explain-image", a, "--model", model, "--target", "7", *out], capsys)
    assert "unknown target '7'" in err and "index from 0 to 2" in err
    not_an_image = tmp_path / "notes.png"
    not_an_image.write_text("not an image")
    err = _usage_error(["explain-image", str(not_an_image), "--model", model, *out], capsys)
    assert f"cannot read {not_an_image} as an image" in err and "give a PNG or JPEG file" in err
    assert "--model comes with no images" in _usage_error(["explain-image", "--model", model, *out], capsys)
    err = _usage_error(["explain-image", a, "--model", str(tmp_path), *out], capsys)
    assert "config.json is missing" in err and "VisionMamba.save_pretrained" in err
    err = _usage_error(
        ["explain-image", a, "--model", model, "--method", "input_x_gradient", "--gamma", "1", *out], capsys
    )
    assert "--gamma sets MambaLRP's pixel rule" in err
    assert "--mean has 2 values" in _usage_error(
        ["explain-image", a, "--model", model, "--mean", "0", "1", *out], capsys
    )


def test_figure_has_the_image_the_heatmap_a_colorbar_and_the_patch_grid(tmp_path):
    relevance = torch.randn(3, 16, 16, generator=torch.Generator().manual_seed(1))
    image = torch.rand(1, 16, 16, generator=torch.Generator().manual_seed(2))
    mask = torch.zeros(16, 16)
    mask[4:10, 5:12] = 1
    figure = image_heatmap_figure(image, relevance, title="x  ->  predicted 1", patch_size=4, mask=mask)
    labels = [axis.get_ylabel() for axis in figure.axes]
    assert "relevance" in labels and "relevance per patch" in labels
    heatmap = figure.axes[1].images[0]
    limit = float(relevance.sum(0).abs().max())
    assert heatmap.norm.vmin == pytest.approx(-limit) and heatmap.norm.vmax == pytest.approx(limit)
    np.testing.assert_allclose(heatmap.get_array(), relevance.sum(0).numpy(), rtol=1e-5, atol=1e-6)
    patches = next(axis for axis in figure.axes if axis.get_title() == "4 x 4 patches").images[0].get_array()
    np.testing.assert_allclose(patches.sum(), float(relevance.sum()), rtol=1e-5)
    path = write_image_heatmap_png(tmp_path / "f.png", image, relevance, patch_size=4)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the mask outline, in the green of MASK_COLOR, on the RGB heatmap of the comparison page
    rgb = heatmap_rgb(relevance, scale=2, mask=mask)
    assert rgb.shape == (32, 32, 3) and (rgb == MASK_COLOR).all(-1).sum() > 0
    assert not (rgb[10:18, 12:22] == MASK_COLOR).all(-1).any()  # inside the mask: no outline


def test_captum_visualize_image_attr_takes_the_layout():
    model = tiny_vim(seed=3)
    images = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    relevance = MambaLRP(model).attribute(images, target=0)
    assert to_captum_layout(relevance).shape == (16, 16, 3)
    display = (images - images.min()) / (images.max() - images.min())
    for image in (display[0], display[0, :1]):
        figure, _ = captum_viz.visualize_image_attr(
            to_captum_layout(relevance[0]),
            to_captum_layout(image),
            method="blended_heat_map",
            sign="all",
            show_colorbar=True,
            use_pyplot=False,
        )
        assert len(figure.axes) >= 2


def test_report_page_embeds_each_figure_with_its_numbers():
    entry = ImageExplanation(
        title="cat.png  ->  predicted <b>",
        image=torch.rand(3, 8, 8),
        relevance=torch.randn(3, 8, 8),
        predicted="<b>",
        explained="<b>",
        logit=1.25,
        relevance_sum=1.2,
        delta=-0.05,
        probability=0.5,
        file="cat_relevance.png",
    )
    page = image_report_html([entry], "Vim")
    assert page.count("data:image/png;base64,") == 1 and "<b>" not in page and "&lt;b&gt;" in page
    assert "+1.2500" in page and "+1.2000" in page and "-5.00e-02" in page and 'href="cat_relevance.png"' in page


def test_compare_images_takes_a_model_and_images(files, monkeypatch):
    model = VisionMamba.from_pretrained(files / "vim")
    images = torch.stack([read_image(files / "a.png", 3, (16, 16)), read_image(files / "b.png", 3, (16, 16))])
    masks = torch.zeros(2, 16, 16, dtype=torch.bool)
    masks[:, 4:12, 4:12] = True
    methods = ["mamba_lrp", "input_x_gradient", "integrated_gradients", "smoothgrad"]
    examples = compare_images(model, images, methods, labels=[0, 1], class_names=["x", "y", "z"], masks=masks)
    relevance, delta = MambaLRP(model).attribute(images, target=model(images).argmax(-1), return_convergence_delta=True)
    for row, example in enumerate(examples):
        assert [r.name for r in example.rows] == methods and all(r.error is None for r in example.rows)
        lrp = example.rows[0]
        assert lrp.total == pytest.approx(float(relevance[row].sum()), abs=1e-6)
        assert lrp.delta == pytest.approx(float(delta[row]), rel=1e-3, abs=1e-8)
        np.testing.assert_allclose(lrp.relevance, relevance[row].sum(0).numpy(), rtol=1e-5, atol=1e-8)
    page = render_image_comparison(examples, "tiny Vim")
    assert page.count('class="example-row"') == 2 and page.count("data:image/png;base64,") == 2 * (1 + len(methods))
    for label in ("MambaLRP", "Gradient x Input", "Integrated Gradients", "SmoothGrad", "outlined in green"):
        assert label in page
    assert f"&Sigma; {examples[0].rows[0].total:+.4f}" in page

    def broken(model, images, targets):
        raise RuntimeError("no gradients today")

    broken_saliency = ImageMethodSpec("saliency", "Saliency", broken, "broken", additive=False)
    monkeypatch.setitem(IMAGE_METHODS, "saliency", broken_saliency)
    (example,) = compare_images(model, images[:1], ["mamba_lrp", "saliency"])
    assert example.rows[1].error == "RuntimeError: no gradients today" and example.rows[0].error is None
    assert "no gradients today" in render_image_comparison([example], "tiny Vim")


def test_compare_images_command(files, tmp_path, capsys):
    html = tmp_path / "compare.html"
    a, b, model = str(files / "a.png"), str(files / "b.png"), str(files / "vim")
    assert (
        main(["compare-images", a, b, "--model", model, "--methods", "mamba_lrp", "saliency", "--html", str(html)]) == 0
    )
    page = html.read_text(encoding="utf-8")
    assert page.count('class="example-row"') == 2 and 'data-method="saliency"' in page
    err = _usage_error(["compare-images", a, "--model", model, "--methods", "bogus", "--html", str(html)], capsys)
    assert "unknown image attribution method 'bogus'" in err and "put the image files before --methods" in err


def _fake_tasks(monkeypatch) -> None:
    """A stand-in for captum_mamba.images.tasks: one grey task, its model and held-out images."""
    model = tiny_vim(seed=5, channels=1)
    mean, std = 0.25, 0.5

    def sample_images(task: str, count: int):
        generator = torch.Generator().manual_seed(7)
        pixels = torch.rand(count, 1, 16, 16, generator=generator)
        masks = torch.zeros(count, 16, 16, dtype=torch.bool)
        masks[:, 3:9, 5:13] = True
        return types.SimpleNamespace(
            images=(pixels - mean) / std,
            labels=torch.arange(count) % 3,
            masks=masks,
            denormalise=lambda images: (images * std + mean).clamp(0, 1),
        )

    package = types.ModuleType("captum_mamba.images")
    tasks = types.ModuleType("captum_mamba.images.tasks")
    tasks.IMAGE_TASKS = {"toy": types.SimpleNamespace(name="toy")}
    tasks.load_image_model = lambda task: model
    tasks.sample_images = sample_images
    tasks.class_names = lambda task: ["zero", "one", "two"]
    package.tasks = tasks
    monkeypatch.setitem(sys.modules, "captum_mamba.images", package)
    monkeypatch.setitem(sys.modules, "captum_mamba.images.tasks", tasks)
    return model, sample_images, mean, std


def test_task_samples_files_and_normalisation_through_the_tasks_api(files, tmp_path, monkeypatch, capsys):
    model, sample_images, mean, std = _fake_tasks(monkeypatch)
    out = tmp_path / "out"
    assert main(["explain-image", "--task", "toy", "--samples", "3", "--out", str(out), "--target", "TWO"]) == 0
    lines = _lines(capsys.readouterr().out)
    assert [line["name"] for line in lines] == ["toy #0", "toy #1", "toy #2"]
    assert all(line["explained"] == "two" for line in lines) and (out / "toy-002_relevance.png").exists()
    relevance = MambaLRP(model).attribute(sample_images("toy", 3).images, target=2)
    for row, line in enumerate(lines):
        assert float(line["sum"]) == pytest.approx(float(relevance[row].sum()), abs=2e-6)
    index = (out / "index.html").read_text(encoding="utf-8")
    assert "true class" in index and "outlined in green" in index
    # a file with --task: grey, resized, normalised with the task's mean and std (read off denormalise)
    assert main(["explain-image", str(files / "a.png"), "--task", "toy", "--out", str(out)]) == 0
    (line,) = _lines(capsys.readouterr().out)
    image = ((read_image(files / "a.png", 1, (16, 16)) - mean) / std)[None]
    target = int(model(image).argmax())
    assert float(line["sum"]) == pytest.approx(float(MambaLRP(model).attribute(image, target=target).sum()), abs=1e-5)
    html = tmp_path / "toy.html"
    assert main(["compare-images", "--task", "toy", "--samples", "2", "--html", str(html)]) == 0
    page = html.read_text(encoding="utf-8")
    assert page.count('class="example-row"') == 2 and "outlined in green" in page and "label:" in page
    err = _usage_error(["explain-image", "--task", "nope", "--out", str(out)], capsys)
    assert "unknown image task 'nope'; choose from toy, or give --model DIR" in err
    assert "--mean and --std go with --model" in _usage_error(["explain-image", "--task", "toy", "--mean", "0"], capsys)
    err = _usage_error(["explain-image", str(files / "a.png"), "--task", "toy", "--samples", "2"], capsys)
    assert "give image files or --samples N, not both" in err


def test_task_without_the_images_package_names_the_remedy(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "captum_mamba.images", None)  # as if it were not installed
    monkeypatch.delitem(sys.modules, "captum_mamba.images.tasks", raising=False)
    err = _usage_error(["explain-image", "--task", "digits"], capsys)
    assert "shipped image tasks" in err and "give --model DIR" in err


def test_shipped_digits_explained(tmp_path, capsys):
    tasks = pytest.importorskip("captum_mamba.images.tasks")
    out = tmp_path / "digits"
    assert main(["explain-image", "--task", "digits", "--samples", "2", "--out", str(out)]) == 0
    lines = _lines(capsys.readouterr().out)
    assert len(lines) == 2 and (out / "index.html").exists()
    model = tasks.load_image_model("digits").eval()
    samples = tasks.sample_images("digits", 2)
    relevance = MambaLRP(model).attribute(samples.images, target=model(samples.images).argmax(-1))
    names = list(tasks.class_names("digits"))
    for row, line in enumerate(lines):
        assert line["explained"] == str(names[int(model(samples.images[row : row + 1]).argmax())])
        assert float(line["sum"]) == pytest.approx(float(relevance[row].sum()), abs=1e-5)
    err = _usage_error(["explain-image", "--task", "digits", "--target", str(len(names)), "--out", str(out)], capsys)
    assert "unknown target" in err


def test_shipped_shapes_compared_with_masks(tmp_path, capsys):
    pytest.importorskip("captum_mamba.images.tasks")
    html = tmp_path / "shapes.html"
    assert main(["compare-images", "--task", "shapes", "--samples", "2", "--html", str(html)]) == 0
    page = html.read_text(encoding="utf-8")
    assert page.count('class="example-row"') == 2 and "outlined in green" in page
    for label in ("MambaLRP", "Gradient x Input", "Integrated Gradients", "SmoothGrad"):
        assert label in page

"""``captum-mamba compare-images``: attribution methods side by side on images, as an HTML report."""

from __future__ import annotations

import argparse

from captum_mamba.cli.errors import UsageError, output_file, unknown_names
from captum_mamba.cli.explain_image import add_input_options, check_image_options, load_image_inputs

DEFAULT_SAMPLES = 4
"""Held-out images compared with ``--task`` and no files, unless ``--samples`` says otherwise."""

DEFAULT_HTML = "compare-images.html"

USAGE = """\
examples:
  captum-mamba compare-images --task shapes --html shapes.html          4 held-out shapes, masks outlined
  captum-mamba compare-images --task digits --samples 8 --methods all --html digits.html
  captum-mamba compare-images a.png b.png --model my-vim --methods mamba_lrp integrated_gradients

Each row of the page is an image: its prediction, the image, then one heatmap per method with the
sum of relevances, the convergence delta (the sum minus the explained logit) and the runtime.
Methods: mamba_lrp, input_x_gradient, integrated_gradients, smoothgrad, saliency, or all (default:
the first four). The predicted class is explained. Put image files before --methods."""


def _methods(names: list[str] | None) -> list[str]:
    from captum_mamba.images.methods import COMPARED_IMAGE_METHODS, IMAGE_METHODS

    if names is None:
        return list(COMPARED_IMAGE_METHODS)
    hint = "; --methods takes every word after it: put the image files before --methods"
    error = unknown_names("image attribution method", names, ["all", *IMAGE_METHODS], hint)
    if error is not None:
        raise error
    return list(IMAGE_METHODS) if "all" in names else list(dict.fromkeys(names))


def run(args: argparse.Namespace) -> int:
    r"""
    Explain the images with every method and write the comparison page.

    Args:
        args (argparse.Namespace): the parsed options of ``compare-images``.

    Returns:
        *int*: 0; a bad file, model, task, method or option raises :class:`~captum_mamba.cli.errors.UsageError`.
    """
    check_image_options(args)
    methods = _methods(args.methods)
    if args.gamma is not None and "mamba_lrp" not in methods:
        raise UsageError("--gamma sets MambaLRP's pixel rule; add mamba_lrp to --methods or drop --gamma")
    path = output_file(args.html, "--html")
    inputs = load_image_inputs(args, DEFAULT_SAMPLES)

    from captum_mamba.compare.image_compare import compare_images, write_image_comparison

    examples = []
    for index in range(len(inputs.images)):
        chosen = slice(index, index + 1)
        examples += compare_images(
            inputs.model,
            inputs.images[chosen],
            methods,
            labels=None if inputs.labels is None else inputs.labels[chosen],
            class_names=inputs.class_names,
            display=inputs.display[chosen],
            masks=None if inputs.masks is None else inputs.masks[chosen],
            names=inputs.names[chosen],
            gamma=args.gamma,
        )
        example = examples[-1]
        failed = [row.label for row in example.rows if row.error is not None]
        note = f" (failed: {', '.join(failed)})" if failed else ""
        print(f"explained {index + 1}/{len(inputs.images)}: {example.name} -> {example.prediction['name']}{note}")
    write_image_comparison(path, examples, inputs.model_name)
    print(f"wrote {path}")
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    r"""
    Register ``compare-images``.

    Args:
        subparsers (argparse._SubParsersAction): the subcommands of ``captum-mamba``.

    Returns:
        *argparse.ArgumentParser*: the parser of ``compare-images``.
    """
    parser = subparsers.add_parser(
        "compare-images",
        help="compare attribution methods side by side on images (a shipped task's or PNG/JPEG files): HTML report",
        description="Compare MambaLRP with Captum's attribution methods on a Vision Mamba's images.",
        epilog=USAGE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_input_options(parser, DEFAULT_SAMPLES)
    parser.add_argument(
        "--methods",
        nargs="+",
        default=None,
        help="mamba_lrp, input_x_gradient, integrated_gradients, smoothgrad, saliency or all (default: the first "
        "four); takes every word after it, so put image files before it",
    )
    parser.add_argument("--html", default=DEFAULT_HTML, metavar="PATH", help=f"the report (default {DEFAULT_HTML})")
    return parser

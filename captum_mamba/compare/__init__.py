"""Side-by-side comparison of attribution methods: a local web app or a self-contained HTML report.

Every method of :data:`captum_mamba.evaluation.METHODS` gets a row per text: the token heatmap,
the conservation delta (sum of scores minus the explained logit), the runtime and the text's
ΔA^F, with the perturbation curves of all methods in one plot.

Example::

    >>> from captum_mamba.compare import TextModel, compare_text, write_report
    >>> text_model = TextModel.default()
    >>> example = compare_text(text_model, "a gorgeous , witty film .")
    >>> write_report("compare.html", [example], ["mamba_lrp", "integrated_gradients"], text_model.name, 2048)

The shipped copying LMs (:mod:`captum_mamba.compare.copying`) explain typed copying sequences, with
the known source of the explained output marked and each method's top-1 judged against it::

    >>> text_model = copying_text_model("copying_qwen3_5")
    >>> examples = [compare_text(text_model, text) for text in copying_texts(sequences=2, length=32)]

Images have their own page (:mod:`captum_mamba.compare.image_compare`): one row per image, one
heatmap per method of :data:`~captum_mamba.images.methods.IMAGE_METHODS`::

    >>> examples = compare_images(vim, images, ["mamba_lrp", "integrated_gradients"])
    >>> write_image_comparison("images.html", examples, "my Vim")
"""

from captum_mamba.compare.copying import (
    COPYING_MODELS,
    copying_text_model,
    copying_texts,
    format_copying_sequence,
    parse_copying_sequence,
)
from captum_mamba.compare.image_compare import (
    ImageExample,
    ImageMethodRow,
    compare_images,
    render_image_comparison,
    write_image_comparison,
)
from captum_mamba.compare.page import render_page, write_report
from captum_mamba.compare.payload import DEFAULT_COMPARE_METHODS, MethodRow, check_methods, compare_text
from captum_mamba.compare.server import ComparisonServer, create_app
from captum_mamba.compare.text_model import ComparisonInputError, TextModel

__all__ = [
    "COPYING_MODELS",
    "DEFAULT_COMPARE_METHODS",
    "ComparisonInputError",
    "ComparisonServer",
    "ImageExample",
    "ImageMethodRow",
    "MethodRow",
    "TextModel",
    "check_methods",
    "compare_images",
    "compare_text",
    "copying_text_model",
    "copying_texts",
    "create_app",
    "format_copying_sequence",
    "parse_copying_sequence",
    "render_image_comparison",
    "render_page",
    "write_image_comparison",
    "write_report",
]

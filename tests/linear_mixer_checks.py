"""Checks the linear-attention and convolution hybrids get beyond the shared family suite.

Qwen3-Next, Qwen3.5, Qwen3.5-MoE, OLMo hybrid (``test_gated_delta_families.py``), Kimi Linear,
LFM2 and LFM2-MoE (``test_kimi_lfm2_families.py``) are in the shared suite (``family_checks.py``:
forward, references in both modes, conservation at every layer, biases' share, batches,
classifiers, restoration, random configurations). What only these families need, written once
here and called by the two files with each family's data: negative controls (Gradient x Input
misses the logit; switching a rule off breaks the equality with the reference, and gives the
reference's own relevances with that rule switched off), which modules receive no gradient under
the rules, prefill caches filled as the model fills them, the relevance split by layer kind, and
the package's sequence classifiers (for the families transformers ships none for) as Hugging Face
models: declared, planned, saved and loaded.
Models are the suite's (``lm_of``: the family's tiny float64 configuration); tests that run the
model's own forward take the ``float64_faithful_hf`` fixture.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn

from captum_mamba import LayerMambaLRP, MambaLRP, mamba_lrp_rules, plan_rules, relevance_split
from captum_mamba.families import FAMILIES, ModelFamily
from captum_mamba.rules import GradientRule

from family_checks import head_logits, ids_of, lm_of, rules_for
from family_references import reference_relevance


def check_negative_controls(
    family: ModelFamily, ablations: list[Mapping[type[nn.Module], Any]], switched_off: Mapping[str, Any], seed: int = 5
) -> None:
    r"""
    Gradient x Input through the model's own forward misses the logit by more than 10% (on some
    row); each ablation (a rule switched off) moves the CP-LRP relevances away from the
    reference's by more than 1e-4; and the first ablation gives the reference's relevances with
    that rule switched off there too (``switched_off``: the reference's options), to 1e-10.
    """
    model = lm_of(family, seed)
    embeds = model.get_input_embeddings()(ids_of(2, 7, seed)).detach()
    rules = rules_for(family, "cp")
    expected, logit = reference_relevance(family.name, model, embeds, target=1, mode="cp")
    leaf = embeds.clone().requires_grad_()
    (gradient,) = torch.autograd.grad(head_logits(family, model, inputs_embeds=leaf)[:, 1].sum(), leaf)
    plain = (leaf * gradient).detach()
    assert ((plain.sum((1, 2)) - logit).abs() > 0.1 * logit.abs()).any()  # Gradient x Input misses the logit
    for ablation in ablations:
        ablated = MambaLRP(model, rules={**rules, **ablation}).attribute(embeds, target=1)
        assert (ablated - expected).abs().max() > 1e-4, ablation  # dropping the rule breaks the equality
    without, _ = reference_relevance(family.name, model, embeds, target=1, mode="cp", **switched_off)
    ablated = MambaLRP(model, rules={**rules, **ablations[0]}).attribute(embeds, target=1)
    torch.testing.assert_close(ablated, without, atol=1e-10, rtol=0)


@contextmanager
def gradients_reaching(modules: Iterable[nn.Module]) -> Iterator[list[str]]:
    """The names of the types of ``modules`` whose outputs receive a gradient while the context is open."""
    reached: list[str] = []

    def record(module: nn.Module, inputs: Any, outputs: Any) -> None:
        for output in outputs if isinstance(outputs, tuple) else (outputs,):
            if isinstance(output, torch.Tensor) and output.requires_grad:
                output.register_hook(lambda gradient: reached.append(type(module).__name__))

    handles = [module.register_forward_hook(record) for module in dict.fromkeys(modules)]
    try:
        yield reached
    finally:
        for handle in handles:
            handle.remove()


def routers_of(model: nn.Module) -> list[nn.Module]:
    """The routers of the model's mixtures of experts (their outputs feed only held-constant weights and indices)."""
    return [module.gate for module in model.modules() if hasattr(module, "experts")]


def check_prefill_cache(family: ModelFamily, seed: int = 11) -> None:
    r"""
    With a cache, the forward under the rules fills it as the model's own forward does (1e-10): the
    logits, and each linear-attention or convolution layer's convolution state and (for a
    recurrence) recurrent state. Needs the ``float64_faithful_hf`` fixture.
    """
    model = lm_of(family, seed, use_cache=True)
    embeds = model.get_input_embeddings()(ids_of(2, 7, seed)).detach()
    with torch.no_grad():
        original = model(inputs_embeds=embeds, use_cache=True)
        with mamba_lrp_rules(model):
            ruled = model(inputs_embeds=embeds, use_cache=True)
    torch.testing.assert_close(ruled.logits, original.logits, atol=1e-10, rtol=0)
    caches = [getattr(output, "cache", None) or output.past_key_values for output in (original, ruled)]
    compared = 0
    for index, layer_type in enumerate(model.config.layer_types):
        reads = {"conv": ("conv",), "linear_attention": ("conv", "recurrent")}.get(layer_type, ())
        for read in reads:
            if hasattr(caches[0], f"get_{read}_state"):
                expected, got = (getattr(cache, f"get_{read}_state")(index) for cache in caches)
            else:  # before transformers 5.2x
                expected, got = (getattr(cache.layers[index], f"{read}_states")[0] for cache in caches)
            torch.testing.assert_close(got.to(expected.dtype), expected, atol=1e-10, rtol=0)
            compared += 1
    assert compared > 0


def check_relevance_split(
    family: ModelFamily, rows: list[tuple[int, str]], seed: int = 13, least: float = 1e-8
) -> None:
    r"""
    ``relevance_split`` gives one row per mixer, attention, MLP and experts module, ``(layer,
    kind)`` as ``rows`` says, each equal to ``LayerMambaLRP`` on that module alone (1e-10) and
    each carrying relevance (more than ``least`` in every example).
    """
    model = lm_of(family, seed)
    embeds = model.get_input_embeddings()(ids_of(2, 6, seed)).detach()
    rules = rules_for(family, "cp")
    split = relevance_split(MambaLRP(model, rules=rules), embeds, target=3)
    assert [(row.layer, row.kind) for row in split] == rows
    modules = dict(model.named_modules())
    for row in split:
        alone = LayerMambaLRP(model, modules[row.module], rules=rules).attribute(embeds, target=3)
        alone = alone[0] if isinstance(alone, tuple) else alone
        torch.testing.assert_close(row.relevance, alone.reshape(len(embeds), -1).sum(1), atol=1e-10, rtol=0)
        assert row.relevance.abs().min() > least, row  # every kind carries relevance


def check_package_classifier(family: ModelFamily, folder: Path) -> None:
    r"""
    The family's package classifier (:mod:`captum_mamba.heads`) belongs to the family, every module
    of it has a rule (pooling and container: LRP-0), and it saves and loads as a Hugging Face model
    (its configuration class, pooling and bias kept; the same logits).
    """
    classifier = family.classifier
    assert classifier is not None and classifier.__module__ == "captum_mamba.heads"
    assert FAMILIES.family_of(classifier) is family
    torch.manual_seed(0)
    model = family.build_classifier("last", classifier_bias=True).double().eval()
    plan = plan_rules(model)
    assert not plan.unsupported
    assert isinstance(plan.rules["pool"], GradientRule) and isinstance(plan.rules[""], GradientRule)
    model.save_pretrained(folder)
    loaded = classifier.from_pretrained(folder, dtype=torch.float64).eval()
    assert type(loaded.config) is type(model.config) and loaded.pooling == "last" and loaded.score.bias is not None
    ids = ids_of(2, 6, seed=0)
    with torch.no_grad():
        torch.testing.assert_close(loaded(input_ids=ids).logits, model(input_ids=ids).logits, atol=0, rtol=0)

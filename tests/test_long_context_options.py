"""Memory-lean mode, logits at the explained positions only, backend selection (CPU side)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from captum_mamba import LayerMambaLRP, MambaLRP, MissingDependencyError
from captum_mamba.model_calls import kept_positions
from captum_mamba.rules import block as block_rules

from conftest import embeddings_of, tiny_classifier, tiny_lm, token_ids


@pytest.mark.parametrize("family", ["mamba", "mamba2", "falcon_mamba"])
def test_memory_lean_mode_gives_the_same_relevances(family, monkeypatch):
    model = tiny_lm(seed=21, family=family, use_conv_bias=True)
    embeds = embeddings_of(model, token_ids(batch=2, length=10))
    plain, plain_delta = MambaLRP(model).attribute(embeds, target=4, return_convergence_delta=True)
    calls = []
    real_checkpoint = block_rules.checkpoint
    monkeypatch.setattr(block_rules, "checkpoint", lambda *a, **k: calls.append(1) or real_checkpoint(*a, **k))
    lean, lean_delta = MambaLRP(model, memory_lean=True).attribute(embeds, target=4, return_convergence_delta=True)
    assert len(calls) == model.config.num_hidden_layers  # every block was checkpointed
    torch.testing.assert_close(lean, plain, atol=1e-12, rtol=0)
    torch.testing.assert_close(lean_delta, plain_delta, atol=1e-12, rtol=0)


def test_recomputations_in_the_backward_pass_see_the_explanations_options(monkeypatch):
    # On CUDA, autograd runs the backward pass on a thread of its own, where the options set for the
    # explanation (a context variable) are not visible: the recomputed blocks and convolutions must
    # carry them. Here the backward pass is run on a fresh thread to the same effect.
    import threading

    from captum_mamba.options import current_options
    from captum_mamba.rules import mixer as mixer_rules

    model = tiny_lm(seed=25, family="mamba2", use_conv_bias=True)
    embeds = embeddings_of(model, token_ids(batch=1, length=8))
    expected = MambaLRP(model, backend="torch").attribute(embeds, target=2)
    real_grad, real_run, real_conv = torch.autograd.grad, block_rules.BlockRule._run, mixer_rules.causal_conv
    seen: list[tuple[str, str, bool]] = []

    def grad_on_another_thread(*args, **kwargs):
        result = {}
        worker = threading.Thread(target=lambda: result.update(value=real_grad(*args, **kwargs)))
        worker.start()
        worker.join()
        return result["value"]

    def recording_run(self, module, *args, **kwargs):
        seen.append(("block", current_options().backend, torch.is_grad_enabled()))
        return real_run(self, module, *args, **kwargs)

    def recording_conv(*args, **kwargs):
        seen.append(("conv", current_options().backend, torch.is_grad_enabled()))
        return real_conv(*args, **kwargs)

    monkeypatch.setattr(torch.autograd, "grad", grad_on_another_thread)
    monkeypatch.setattr(block_rules.BlockRule, "_run", recording_run)
    monkeypatch.setattr(mixer_rules, "causal_conv", recording_conv)
    lean = MambaLRP(model, memory_lean=True, backend="torch").attribute(embeds, target=2)
    layers = model.config.num_hidden_layers
    # each block runs twice (forward, recomputation) and each convolution three times (forward,
    # the block's recomputation, the SiLU rule's recomputation in the backward pass)
    assert [kind for kind, _, _ in seen].count("block") == 2 * layers
    assert [kind for kind, _, _ in seen].count("conv") == 3 * layers
    assert {backend for _, backend, _ in seen} == {"torch"}
    torch.testing.assert_close(lean, expected, atol=1e-12, rtol=0)


def test_only_the_explained_positions_get_logits(monkeypatch):
    model = tiny_lm(seed=22)
    ids = token_ids(batch=3, length=9)
    seen = []
    original = model.lm_head.forward
    monkeypatch.setattr(model.lm_head, "forward", lambda h: seen.append(h.shape) or original(h))
    explainer = LayerMambaLRP(model, model.backbone.embeddings)
    relevance = explainer.attribute(ids, target=[1, 2, 3], explained_position=[8, 3, 8])
    assert seen == [torch.Size([3, 2, 16])]  # two distinct positions, not all nine
    for row, (position, target) in enumerate([(8, 1), (3, 2), (8, 3)]):
        alone = explainer.attribute(ids[row : row + 1], target=target, explained_position=position)
        torch.testing.assert_close(relevance[row : row + 1], alone, atol=1e-12, rtol=0)


class LastTokensLM(torch.nn.Module):
    """A language model with mamba-ssm's ``MambaLMHeadModel`` call: token ids, logits at the last ``num_last_tokens`` only."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.backbone, self.lm_head = model.backbone, model.lm_head

    def forward(self, input_ids, position_ids=None, inference_params=None, num_last_tokens=0):
        hidden = self.backbone(input_ids=input_ids, use_cache=False).last_hidden_state
        if num_last_tokens > 0:
            hidden = hidden[:, -num_last_tokens:]
        return SimpleNamespace(logits=self.lm_head(hidden))


def test_mamba_ssm_style_models_compute_logits_at_the_last_positions_only(monkeypatch):
    model = LastTokensLM(tiny_lm(seed=26))
    ids = token_ids(batch=3, length=9)
    seen = []
    original = model.lm_head.forward
    monkeypatch.setattr(model.lm_head, "forward", lambda h: seen.append(h.shape[1]) or original(h))
    explainer = LayerMambaLRP(model, model.backbone.embeddings)
    relevance, delta = explainer.attribute(
        ids, target=[1, 2, 3], explained_position=[8, 5, 8], return_convergence_delta=True
    )
    assert seen == [4]  # positions 5 to 8, not all nine
    every_position = LayerMambaLRP(lambda i: model(i).logits, model.backbone.embeddings, model=model)
    expected, expected_delta = every_position.attribute(
        ids, target=[1, 2, 3], explained_position=[8, 5, 8], return_convergence_delta=True
    )
    assert seen[-1] == 9  # the wrapped model is called without num_last_tokens: all positions
    torch.testing.assert_close(relevance, expected, atol=1e-12, rtol=0)
    torch.testing.assert_close(delta, expected_delta, atol=1e-12, rtol=0)
    seen.clear()
    explainer.attribute(ids, target=0)  # the default: the last position
    assert seen == [1]


def test_kept_positions():
    keep, index = kept_positions(-1, 2, 7, torch.device("cpu"))
    assert keep.tolist() == [6] and index == 0
    keep, index = kept_positions([5, -1, 5], 3, 7, torch.device("cpu"))
    assert keep.tolist() == [5, 6] and index.tolist() == [0, 1, 0]
    with pytest.raises(IndexError, match="out of range"):
        kept_positions(9, 1, 7, torch.device("cpu"))


def test_classifier_is_unaffected_by_position_logic():
    model = tiny_classifier(seed=23)
    ids = token_ids()
    relevance, delta = LayerMambaLRP(model, model.backbone.embeddings).attribute(
        ids, target=1, return_convergence_delta=True
    )
    assert relevance.shape == (2, 11, 16) and delta.abs().max() < 1e-10


def test_cuda_backend_without_the_gpu_extra_names_the_package():
    try:
        import mamba_ssm  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("mamba-ssm is installed here")
    model = tiny_lm(seed=24)
    embeds = embeddings_of(model, token_ids())
    with pytest.raises(MissingDependencyError, match="causal-conv1d|mamba-ssm"):
        MambaLRP(model, backend="cuda").attribute(embeds, target=0)
    with pytest.raises(ValueError, match="backend must be one of"):
        MambaLRP(model, backend="tpu")


def test_memory_lean_takes_true_false_or_offload():
    model = tiny_lm(seed=1)
    with pytest.raises(ValueError, match="memory_lean must be False, True .* or 'offload'"):
        MambaLRP(model, memory_lean="yes")
    embeds = embeddings_of(model, token_ids(2, 7))
    plain = MambaLRP(model).attribute(embeds, target=3)
    offload = MambaLRP(model, memory_lean="offload").attribute(embeds, target=3)  # the host copy is a CPU clone here
    torch.testing.assert_close(offload, plain, atol=1e-12, rtol=0)


@pytest.mark.parametrize(
    ("memory_lean", "advice"),
    [
        (False, "memory_lean=True recomputes each block"),
        (True, "memory_lean='offload' also keeps the blocks' inputs in host memory"),
        ("offload", "even one block does not fit"),
    ],
)
def test_out_of_memory_says_which_mode_to_ask_for(memory_lean, advice):
    model = tiny_lm(seed=1)
    embeds = embeddings_of(model, token_ids(1, 5))

    def exhausted(module, args):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    handle = model.backbone.layers[1].mixer.register_forward_pre_hook(exhausted)
    try:
        with pytest.raises(torch.OutOfMemoryError, match="MambaLRP ran out of GPU memory") as raised:
            MambaLRP(model, memory_lean=memory_lean).attribute(embeds, target=3)
    finally:
        handle.remove()
    assert advice in str(raised.value) and "Tried to allocate 20.00 GiB" in str(raised.value)

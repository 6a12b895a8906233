"""The Captum surface: names, wrappers, target conventions, swapped forward functions."""

from __future__ import annotations

import torch
from captum.attr import GradientAttribution, InputXGradient, LayerGradientXActivation, NoiseTunnel

from captum_mamba import LayerMambaLRP, MambaLRP

from conftest import embeddings_of, tiny_lm


def test_class_identity_and_names():
    model = tiny_lm(seed=61)
    explainer = MambaLRP(model)
    assert isinstance(explainer, GradientAttribution) and isinstance(explainer, InputXGradient)
    assert isinstance(LayerMambaLRP(model, model.backbone.embeddings), LayerGradientXActivation)
    assert MambaLRP.get_name() == "MambaLRP" and LayerMambaLRP.get_name() == "LayerMambaLRP"
    assert explainer.has_convergence_delta() and explainer.multiplies_by_inputs
    assert hasattr(MambaLRP.attribute, "__wrapped__")


def test_noise_tunnel_wraps_mamba_lrp(ids):
    model = tiny_lm(seed=62)
    embeds = embeddings_of(model, ids)
    plain = MambaLRP(model).attribute(embeds, target=1)
    noiseless = NoiseTunnel(MambaLRP(model)).attribute(embeds, nt_type="smoothgrad", nt_samples=3, stdevs=0.0, target=1)
    torch.testing.assert_close(noiseless, plain, atol=1e-12, rtol=0)
    noisy = NoiseTunnel(MambaLRP(model)).attribute(
        embeds, nt_type="smoothgrad_sq", nt_samples=4, nt_samples_batch_size=2, stdevs=0.1, target=1
    )
    assert noisy.shape == embeds.shape and torch.isfinite(noisy).all() and not torch.allclose(noisy, plain**2)


def test_forward_func_swapped_at_call_time(ids):
    model = tiny_lm(seed=63)
    embeds = embeddings_of(model, ids)
    explainer = MambaLRP(model)
    baseline = explainer.attribute(embeds, target=4)
    explainer.forward_func = lambda e: 2.0 * model(inputs_embeds=e).logits[:, -1]
    torch.testing.assert_close(explainer.attribute(embeds, target=4), 2.0 * baseline, atol=1e-12, rtol=0)


def test_layer_on_embeddings_equals_mamba_lrp_on_embeddings(ids):
    model = tiny_lm(seed=64)
    embeds = embeddings_of(model, ids)
    layer = LayerMambaLRP(model, model.backbone.embeddings).attribute(ids, target=[3, 8])
    direct = MambaLRP(model).attribute(embeds, target=[3, 8])
    torch.testing.assert_close(layer, direct, atol=1e-12, rtol=0)


def test_target_forms_agree(ids):
    model = tiny_lm(seed=65)
    embeds = embeddings_of(model, ids)
    explainer = MambaLRP(model)
    as_int = explainer.attribute(embeds, target=6)
    for form in ([6, 6], torch.tensor(6), torch.tensor([6, 6])):
        torch.testing.assert_close(explainer.attribute(embeds, target=form), as_int, atol=0, rtol=0)


def test_sequence_output_with_tuple_targets(ids):
    model = tiny_lm(seed=66)
    embeds = embeddings_of(model, ids)
    with_tuple = MambaLRP(model, explained_position=None).attribute(embeds, target=(4, 2))
    with_position = MambaLRP(model, explained_position=4).attribute(embeds, target=2)
    torch.testing.assert_close(with_tuple, with_position, atol=0, rtol=0)


def test_attribute_to_layer_input(ids):
    model = tiny_lm(seed=67)
    block = model.backbone.layers[1]
    into_block = LayerMambaLRP(model, block).attribute(ids, target=0, attribute_to_layer_input=True)
    out_of_previous = LayerMambaLRP(model, model.backbone.layers[0]).attribute(ids, target=0)
    torch.testing.assert_close(into_block, out_of_previous, atol=1e-12, rtol=0)

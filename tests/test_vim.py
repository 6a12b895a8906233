"""Vision Mamba: the model definition (official names, loading), MambaLRP on it (forward
equivalence, conservation at the patch embeddings and every block, the loop-based reference),
the pixel rule's bias share, Captum's image tools on the output, and the error paths."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import pytest
import torch
from captum.attr import NoiseTunnel
from captum.attr import visualization as captum_viz

from captum_mamba import LayerMambaLRP, MambaLRP, mamba_lrp_rules
from captum_mamba.families import FAMILIES
from captum_mamba.models import VisionMamba, load_vim_checkpoint
from captum_mamba.models.vim import PatchProjection
from captum_mamba.rules.gamma import SignedGammaRule

from reference_vim import gamma_pixel_relevance, reference_block, reference_explanation

TINY = dict(img_size=16, patch_size=4, stride=4, embed_dim=8, depth=2, d_state=4, channels=3, num_classes=3)

#: hustvl/Vim's VisionMamba state-dict keys for depth 2, bimamba v2, RMSNorm, middle class token,
#: absolute position embedding (vim_*_patch16_224_bimambav2_final_pool_mean_abs_pos_embed_with_midclstok_div2).
OFFICIAL_KEYS = [
    "cls_token",
    "pos_embed",
    "patch_embed.proj.weight",
    "patch_embed.proj.bias",
    "head.weight",
    "head.bias",
    *[
        f"layers.{i}.{name}"
        for i in range(2)
        for name in (
            "mixer.A_log",
            "mixer.D",
            "mixer.A_b_log",
            "mixer.D_b",
            "mixer.in_proj.weight",
            "mixer.conv1d.weight",
            "mixer.conv1d.bias",
            "mixer.x_proj.weight",
            "mixer.dt_proj.weight",
            "mixer.dt_proj.bias",
            "mixer.conv1d_b.weight",
            "mixer.conv1d_b.bias",
            "mixer.x_proj_b.weight",
            "mixer.dt_proj_b.weight",
            "mixer.dt_proj_b.bias",
            "mixer.out_proj.weight",
            "norm.weight",
        )
    ],
    "norm_f.weight",
]


def randomise(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Random non-trivial parameters everywhere (norm weights, embeddings, biases) in float64."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            noise = torch.randn(parameter.shape, generator=generator, dtype=parameter.dtype)
            if name.endswith("norm.weight") or name.endswith("norm_f.weight"):
                parameter.copy_(1 + 0.3 * noise)
            elif "A_log" in name or "A_b_log" in name:
                parameter.copy_(torch.log(torch.rand(parameter.shape, generator=generator) * 2 + 0.2))
            else:
                parameter.add_(0.3 * noise)
    return model.double().eval()


def tiny_vim(seed: int = 0, bias_free: bool = False, **options) -> VisionMamba:
    torch.manual_seed(seed)
    settings = {**TINY, **options}
    if bias_free:
        settings["ssm_cfg"] = {"conv_bias": False}
    model = randomise(VisionMamba(**settings), seed)
    if bias_free:
        with torch.no_grad():
            model.patch_embed.proj.bias.zero_()
            model.head.bias.zero_()
    return model


def images_of(batch: int, seed: int, size: int = 16, channels: int = 3) -> torch.Tensor:
    return torch.randn(batch, channels, size, size, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def plain_logits(model: VisionMamba, images: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(images)


def test_vim_is_a_declared_family_with_rules_for_every_module():
    model = tiny_vim()
    assert FAMILIES.family_of(type(model)).name == "vim"
    plan = MambaLRP(model).rule_plan()
    assert not plan.unsupported
    assert isinstance(plan.rules["patch_embed.proj"], SignedGammaRule)
    assert plan.rules["patch_embed.proj"].gamma == 0.25


def test_state_dict_keys_are_the_official_ones():
    model = VisionMamba(**TINY)
    assert list(model.state_dict()) == OFFICIAL_KEYS


def test_official_checkpoint_round_trip(tmp_path):
    model = tiny_vim(seed=1)
    path = tmp_path / "vim_tiny.pth"
    torch.save({"model": {k: v.float() for k, v in model.state_dict().items()}}, path)
    loaded = load_vim_checkpoint(path, "vim-tiny", **TINY)
    for key, value in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value.float(), atol=0, rtol=0)
    images = images_of(2, 1).float()
    torch.testing.assert_close(loaded(images), model.float()(images))


def test_save_pretrained_round_trip(tmp_path):
    model = tiny_vim(seed=2).float()
    model.save_pretrained(tmp_path)
    loaded = VisionMamba.from_pretrained(tmp_path)
    images = images_of(2, 2).float()
    torch.testing.assert_close(loaded(images), model(images), atol=0, rtol=0)


def test_forward_with_rules_equals_the_model_forward():
    model = tiny_vim(seed=3)
    images = images_of(3, 3)
    original = plain_logits(model, images)
    with torch.no_grad(), mamba_lrp_rules(model):
        ruled = model(images)
    torch.testing.assert_close(ruled, original, atol=1e-10, rtol=0)


@pytest.mark.parametrize("middle", [True, False])
def test_conservation_at_the_patch_embeddings_and_every_block(middle):
    model = tiny_vim(seed=4, bias_free=True, if_abs_pos_embed=False, use_middle_cls_token=middle)
    with torch.no_grad():
        model.cls_token.zero_()  # a learned constant token would absorb its share: zero in the bias-free case
    images = images_of(2, 4)
    logit = plain_logits(model, images)[:, 2]
    relevance, delta = MambaLRP(model).attribute(images, target=2, return_convergence_delta=True)
    torch.testing.assert_close(relevance.sum((1, 2, 3)), logit, atol=1e-8, rtol=0)
    torch.testing.assert_close(delta, relevance.sum((1, 2, 3)) - logit, atol=1e-10, rtol=0)
    patches = LayerMambaLRP(model, model.patch_embed).attribute(images, target=2)
    assert patches.shape == (2, 16, 8)
    torch.testing.assert_close(patches.sum((1, 2)), logit, atol=1e-8, rtol=0)
    for block in model.layers:
        stream = LayerMambaLRP(model, block).attribute(images, target=2)  # (update, residual) leaving the block
        torch.testing.assert_close(sum(part.sum((1, 2)) for part in stream), logit, atol=1e-8, rtol=0)
        entering = LayerMambaLRP(model, block).attribute(images, target=2, attribute_to_layer_input=True)
        entering = entering if isinstance(entering, tuple) else (entering,)
        torch.testing.assert_close(sum(part.sum((1, 2)) for part in entering), logit, atol=1e-8, rtol=0)


def test_pixel_sum_is_the_patch_sum_minus_the_gamma_rules_bias_share():
    model = tiny_vim(seed=5)  # biases on, position embedding and class token on
    images = images_of(3, 5)
    proj = model.patch_embed.proj
    pixels = MambaLRP(model).attribute(images, target=0)
    patch_outputs = LayerMambaLRP(model, proj).attribute(images, target=0)  # R_k at the projection's outputs
    absorbed = SignedGammaRule(0.25).absorbed(proj, images, patch_outputs)
    assert torch.all(absorbed.abs() > 1e-6)  # the bias does take a share here
    torch.testing.assert_close(pixels.sum((1, 2, 3)), patch_outputs.sum((1, 2, 3)) - absorbed, atol=1e-10, rtol=0)
    # the same share from the contributions, computed directly in the test
    direct = gamma_pixel_relevance(proj, images, patch_outputs, 0.25)
    torch.testing.assert_close(pixels, direct, atol=1e-10, rtol=0)


def test_relevances_equal_the_loop_based_reference():
    model = tiny_vim(seed=6)
    images = images_of(2, 6)
    expected = reference_explanation(model, images, target=1)
    relevance = MambaLRP(model).attribute(images, target=1)
    torch.testing.assert_close(relevance, expected, atol=1e-10, rtol=0)


def test_bidirectional_block_equals_the_loop_based_reference():
    model = tiny_vim(seed=7)
    block = model.layers[1]
    residual = torch.randn(2, 17, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    weights = torch.randn(2, 17, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(8))
    leaf = residual.clone().requires_grad_()
    with mamba_lrp_rules(model):
        update, _ = block(leaf)
    (gradient,) = torch.autograd.grad((update * weights).sum(), leaf)
    reference_leaf = residual.clone().requires_grad_()
    expected_update = reference_block(block, reference_leaf)
    (reference_gradient,) = torch.autograd.grad((expected_update * weights).sum(), reference_leaf)
    torch.testing.assert_close(update.detach(), expected_update.detach(), atol=1e-10, rtol=0)
    torch.testing.assert_close(leaf * gradient, reference_leaf * reference_gradient, atol=1e-10, rtol=0)


def test_negative_control_gradient_x_input_differs_from_the_reference():
    model = tiny_vim(seed=6)
    images = images_of(2, 6)
    expected = reference_explanation(model, images, target=1)
    leaf = images.clone().requires_grad_()
    (gradient,) = torch.autograd.grad(model(leaf)[:, 1].sum(), leaf)
    assert (leaf * gradient - expected).abs().max() > 1e-3


def test_batch_equals_one_by_one():
    model = tiny_vim(seed=8)
    images = images_of(3, 8)
    together = MambaLRP(model).attribute(images, target=[0, 1, 2])
    for row in range(3):
        alone = MambaLRP(model).attribute(images[row : row + 1], target=row)
        torch.testing.assert_close(together[row : row + 1], alone, atol=1e-12, rtol=0)


def test_gamma_can_be_chosen_and_zero_gamma_is_gradient_x_input_at_the_pixels():
    model = tiny_vim(seed=9)
    images = images_of(2, 9)
    default = MambaLRP(model).attribute(images, target=0)
    zero = MambaLRP(model, rules={PatchProjection: SignedGammaRule(0.0)}).attribute(images, target=0)
    assert (default - zero).abs().max() > 1e-6
    patch_outputs = LayerMambaLRP(model, model.patch_embed.proj).attribute(images, target=0)
    torch.testing.assert_close(zero, gamma_pixel_relevance(model.patch_embed.proj, images, patch_outputs, 0.0))


def test_noise_tunnel_and_visualize_image_attr(tmp_path):
    model = tiny_vim(seed=10).float()
    images = images_of(1, 10).float()
    smoothed = NoiseTunnel(MambaLRP(model)).attribute(images, target=1, nt_type="smoothgrad", nt_samples=4, stdevs=0.1)
    assert smoothed.shape == images.shape and torch.isfinite(smoothed).all()
    relevance = MambaLRP(model).attribute(images, target=1)
    figure, _ = captum_viz.visualize_image_attr(
        relevance[0].permute(1, 2, 0).numpy(),
        images[0].permute(1, 2, 0).numpy(),
        method="heat_map",
        sign="all",
        show_colorbar=True,
        use_pyplot=False,
    )
    path = tmp_path / "vim_heatmap.png"
    figure.savefig(path)
    assert path.stat().st_size > 1000


def test_float32_model_explains_in_float32_and_conserves_approximately():
    model = tiny_vim(seed=11, bias_free=True, if_abs_pos_embed=False).float()
    with torch.no_grad():
        model.cls_token.zero_()
    images = images_of(2, 11).float()
    relevance, delta = MambaLRP(model).attribute(images, target=0, return_convergence_delta=True)
    assert relevance.dtype == torch.float32
    assert delta.abs().max() < 1e-4


def test_wrong_image_size_names_the_expected_size():
    model = tiny_vim()
    with pytest.raises(ValueError, match="16 x 16 images.*resize"):
        MambaLRP(model).attribute(images_of(1, 0, size=12), target=0)


@pytest.mark.parametrize(
    "option",
    [dict(if_rope=True), dict(use_double_cls_token=True), dict(if_bidirectional=True), dict(bimamba_type="v1")],
)
def test_unsupported_official_options_raise(option):
    with pytest.raises(NotImplementedError, match="does not implement|implements bimamba_type"):
        VisionMamba(**{**TINY, **option})


def test_unknown_option_and_bad_checkpoint_are_clear(tmp_path):
    with pytest.raises(TypeError, match="unknown VisionMamba options.*embed_dims"):
        VisionMamba(embed_dims=8)
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        load_vim_checkpoint(tmp_path / "missing.pth")
    path = tmp_path / "other.pth"
    torch.save({"model": VisionMamba(**TINY).state_dict()}, path)
    with pytest.raises(ValueError, match="does not match 'vim-small'.*variant"):
        load_vim_checkpoint(path, "vim-small")


def test_patch_relevance_sums_pixels_per_patch_and_matches_the_patch_embeddings():
    from captum_mamba.image_relevance import patch_relevance

    model = tiny_vim(seed=12, bias_free=True)
    images = images_of(2, 12)
    pixels = MambaLRP(model).attribute(images, target=0)
    patches = patch_relevance(pixels, model.patch_embed.patch_size)
    assert patches.shape == (2, 4, 4)
    torch.testing.assert_close(patches[:, 1, 2], pixels[:, :, 4:8, 8:12].sum((1, 2, 3)))
    embedded = LayerMambaLRP(model, model.patch_embed).attribute(images, target=0).sum(-1)  # (batch, patches)
    torch.testing.assert_close(patches.flatten(1), embedded, atol=1e-10, rtol=0)
    with pytest.raises(ValueError, match="whole number of 3 x 3 patches"):
        patch_relevance(pixels, 3)


def _box_reference(conv: torch.nn.Module, images: torch.Tensor, output_relevance: torch.Tensor, low, high):
    """z^B from the patch outputs to the pixels, patch by patch, from its formula."""
    patch = conv.kernel_size[0]
    low = torch.as_tensor(low, dtype=images.dtype).reshape(1, -1, 1, 1).expand_as(images)
    high = torch.as_tensor(high, dtype=images.dtype).reshape(1, -1, 1, 1).expand_as(images)
    relevance = torch.zeros_like(images)
    for row in range(images.shape[2] // patch):
        for col in range(images.shape[3] // patch):
            window = (
                slice(None),
                slice(None),
                slice(row * patch, (row + 1) * patch),
                slice(col * patch, (col + 1) * patch),
            )
            x, lo, hi = images[window][:, None], low[window][:, None], high[window][:, None]
            w = conv.weight[None]
            contributions = x * w - lo * w.clamp(min=0) - hi * w.clamp(max=0)  # (batch, dim, channels, p, p)
            share = output_relevance[:, :, row, col] / contributions.flatten(2).sum(-1)
            relevance[window] = (contributions * share[..., None, None, None]).sum(1)
    return relevance


def test_bounded_input_rule_at_the_pixels_conserves_and_equals_its_formula():
    from captum_mamba.rules.bounded import BoundedInputRule

    model = tiny_vim(seed=13)  # biases on: z^B gives the bias's share to the pixels, absorbing nothing
    images = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(13), dtype=torch.float64)
    mean, std = [0.5, 0.4, 0.3], [0.25, 0.2, 0.3]
    normalised = (images - torch.tensor(mean).reshape(1, 3, 1, 1)) / torch.tensor(std).reshape(1, 3, 1, 1)
    normalised[0, 0, 0, 0] = 0.0  # a pixel at exactly zero still gets the bound terms' relevance
    rule = BoundedInputRule.for_normalised_images(mean, std)
    explainer = MambaLRP(model, rules={PatchProjection: rule})
    pixels = explainer.attribute(normalised, target=1)
    patch_outputs = LayerMambaLRP(model, model.patch_embed.proj, rules={PatchProjection: rule}).attribute(
        normalised, target=1
    )
    torch.testing.assert_close(pixels.sum((1, 2, 3)), patch_outputs.sum((1, 2, 3)), atol=1e-10, rtol=0)
    expected = _box_reference(model.patch_embed.proj, normalised, patch_outputs, rule.low, rule.high)
    torch.testing.assert_close(pixels, expected, atol=1e-10, rtol=0)
    assert pixels[0, 0, 0, 0].abs() > 0
    # the same pixels through LayerMambaLRP at the projection's input
    at_input = LayerMambaLRP(model, model.patch_embed.proj, rules={PatchProjection: rule}).attribute(
        normalised, target=1, attribute_to_layer_input=True
    )
    torch.testing.assert_close(at_input, pixels, atol=1e-12, rtol=0)


def test_bounded_input_rule_errors_are_clear():
    from captum_mamba.rules.bounded import BoundedInputRule

    model = tiny_vim(seed=14)
    explainer = MambaLRP(model, rules={PatchProjection: BoundedInputRule(-1.0, 1.0)})
    with pytest.raises(ValueError, match=r"outside \[-1.0, 1.0\].*bounds"):
        explainer.attribute(images_of(1, 14) * 3, target=0)

    def doubled(images):  # the model sees a transformed tensor: its pixel relevance cannot be returned
        return model(images * 0.5)

    with pytest.raises(ValueError, match="derived from the inputs.*unchanged"):
        MambaLRP(doubled, model=model, rules={PatchProjection: BoundedInputRule(-1.0, 1.0)}).attribute(
            images_of(1, 14).clamp(-1, 1), target=0
        )

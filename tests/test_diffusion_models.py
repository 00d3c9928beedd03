"""Latte and U-ViT: paper sizes, adaLN-Zero, variants, clip lengths and the errors they give."""

from __future__ import annotations

import pytest
import torch

from videogen.errors import ConfigError
from videogen.models.diffusion import Latte, UViT, VideoDenoiser
from videogen.models.layers import Block, FactorisedSelfAttentionBlock

pytestmark = pytest.mark.usefixtures("one_intra_op_thread")

# Latte (unconditional, learned variance, 4 latent channels, patch 2): REFERENCE.md's millions.
LATTE_SIZES = {"S": 32.48, "B": 129.55, "L": 456.82, "XL": 673.68}
# U-ViT with 32x32x4 latents, patch 2, no qkv bias, no time MLP, no final conv: S/2
# unconditional, L/2 and H/2 with ImageNet's 1000 classes (+ the null class).
UVIT_SIZES = {"S": (0, 44.26), "L": (1000, 286.76), "H": (1000, 500.83)}
VARIANTS = ("interleaved", "late_fusion", "factorised_self_attention", "factorised_dot_product")


def millions(module: torch.nn.Module) -> float:
    return sum(p.numel() for p in module.parameters()) / 1e6


def tiny_latte(**options) -> Latte:
    settings = dict(
        num_frames=4,
        img_size=8,
        in_channels=3,
        patch_size=2,
        size=None,
        embed_dim=32,
        depth=4,
        num_heads=4,
        num_classes=5,
    )
    return Latte(**{**settings, **options})


def perturbed(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """The model with every parameter moved off its (partly zero) initialisation."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn(param.shape, generator=generator) * 0.05)
    return model


@pytest.mark.parametrize("size", LATTE_SIZES)
def test_latte_parameter_counts_match_the_paper(size: str) -> None:
    with torch.device("meta"):
        model = Latte(16, 32, in_channels=4, patch_size=2, size=size, learn_sigma=True)
    assert millions(model) == pytest.approx(LATTE_SIZES[size], rel=0.005)


def test_a_ucf101_label_table_adds_what_the_paper_says() -> None:
    with torch.device("meta"):
        plain = Latte(16, 32, size="XL")
        conditional = Latte(16, 32, size="XL", num_classes=101)
    assert millions(conditional) - millions(plain) == pytest.approx(0.12, abs=0.005)


@pytest.mark.parametrize("size", UVIT_SIZES)
def test_uvit_parameter_counts_match_the_paper(size: str) -> None:
    classes, expected = UVIT_SIZES[size]
    with torch.device("meta"):
        model = UViT(1, 32, in_channels=4, patch_size=2, size=size, num_classes=classes)
    assert millions(model) == pytest.approx(expected, rel=0.01)


def test_a_fresh_conditioned_block_is_the_identity() -> None:
    x, cond = torch.randn(2, 12, 32), torch.randn(2, 16)
    block = Block(32, 4, cond_dim=16)
    torch.testing.assert_close(block(x, cond=cond), x)
    factorised = FactorisedSelfAttentionBlock(32, 4, cond_dim=16)
    torch.testing.assert_close(factorised(x, (3, 4), cond), x)
    # moved off zero, the same blocks do change their input, and cond matters
    perturbed(block)
    assert (block(x, cond=cond) - x).abs().max() > 1e-3
    assert (block(x, cond=cond) - block(x, cond=cond + 1)).abs().max() > 1e-4


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("conditioning", ["adaln", "tokens"])
def test_every_latte_variant_denoises_video_of_its_shape(variant: str, conditioning: str) -> None:
    model = tiny_latte(variant=variant, conditioning=conditioning)
    assert isinstance(model, VideoDenoiser)
    x, t, labels = torch.randn(2, 4, 3, 8, 8), torch.tensor([5, 900]), torch.tensor([0, 5])
    fresh = model(x, t, labels)
    assert fresh.shape == (2, 4, 6, 8, 8)  # learned variance: 2C channels
    assert fresh.abs().max() == 0  # zero-initialised output layer
    perturbed(model)
    out = model(x, t, labels)
    assert out.abs().max() > 0
    assert (model(x, t, torch.tensor([1, 5])) - out)[0].abs().max() > 0  # the class matters
    assert (model(x, torch.tensor([6, 900]), labels) - out)[0].abs().max() > 0  # and t
    out.square().mean().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_latte_mixes_information_across_frames_and_positions() -> None:
    model = perturbed(tiny_latte())
    x, t = torch.randn(1, 4, 3, 8, 8), torch.tensor([100])
    base = model(x, t)
    changed = x.clone()
    changed[:, 0, :, :2, :2] += 1.0  # one patch of the first frame
    delta = (model(changed, t) - base).abs()
    assert delta[:, 3].max() > 0  # reaches the last frame (temporal attention)
    assert delta[:, 0, :, 6:, 6:].max() > 0  # and another place of the same frame (spatial)


def test_latte_runs_clips_of_any_length_with_its_temporal_code() -> None:
    model = perturbed(tiny_latte(num_frames=4))
    for frames in (2, 4, 12):
        assert model(torch.randn(1, frames, 3, 8, 8), torch.tensor([1])).shape[1] == frames
    rope = perturbed(tiny_latte(temporal_position="rope"))
    assert rope(torch.randn(1, 6, 3, 8, 8), torch.tensor([1])).shape == (1, 6, 6, 8, 8)


def test_the_temporal_code_makes_frame_order_matter() -> None:
    """Attention without position codes is permutation-equivariant: reversing the frames would
    reverse the outputs. With either temporal code it does not."""
    for position in ("sincos", "rope"):
        model = perturbed(tiny_latte(temporal_position=position, variant="late_fusion"))
        x, t = torch.randn(1, 4, 3, 8, 8), torch.tensor([3])
        reversed_output = model(x.flip(1), t).flip(1)
        assert (model(x, t) - reversed_output).abs().max() > 1e-4, position


def test_tubelet_patches_and_unconditional_models() -> None:
    model = perturbed(tiny_latte(tubelet_frames=2, num_classes=0, learn_sigma=False))
    assert model.null_label is None
    assert model(torch.randn(2, 4, 3, 8, 8), torch.tensor([1, 2])).shape == (2, 4, 3, 8, 8)
    assert model.patch_embed.proj.kernel_size == (2, 2, 2)


def test_latte_refuses_impossible_settings_in_one_sentence() -> None:
    with pytest.raises(ConfigError, match="depth=3 is odd"):
        tiny_latte(depth=3)
    with pytest.raises(ConfigError, match="rope is not available"):
        tiny_latte(variant="factorised_dot_product", temporal_position="rope")
    with pytest.raises(ConfigError, match="not a multiple of 2"):
        tiny_latte(img_size=9)
    with pytest.raises(ConfigError, match="not one of"):
        tiny_latte(variant="model5")
    with pytest.raises(ConfigError, match="size"):
        Latte(4, 8, size="XXL")


def test_uvit_long_skips_and_its_fixed_size() -> None:
    model = UViT(
        2,
        8,
        in_channels=3,
        patch_size=2,
        size=None,
        embed_dim=32,
        depth=5,
        num_heads=4,
        num_classes=5,
        final_conv=True,
    )
    assert len(model.in_blocks) == len(model.out_blocks) == len(model.skip_linears) == 2
    assert model.pos_embed.shape[1] == 2 + 2 * 16  # time and label tokens, 2 frames x 16 patches
    perturbed(model)
    out = model(torch.randn(2, 2, 3, 8, 8), torch.tensor([1, 500]), torch.tensor([0, 5]))
    assert out.shape == (2, 2, 3, 8, 8)
    with pytest.raises(ConfigError, match="built for"):
        model(torch.randn(2, 3, 3, 8, 8), torch.tensor([1, 2]))
    with pytest.raises(ConfigError, match="odd depth"):
        UViT(2, 8, size=None, embed_dim=32, depth=4, num_heads=4)

"""The shared layer library: conditioning, embeddings, the PatchGAN in 2D and 3D, composition,
init schemes, and the network builder that alone loads pretrained weights."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from videogen.errors import ConfigError
from videogen.models.build import build_network, restoring_from_checkpoint
from videogen.models.layers import (
    Block,
    FrameLayerNorm,
    PatchDiscriminator,
    TimestepEmbedding,
    TubeletEmbedding,
    compose_masked,
    init_weights,
    sincos_1d,
    timestep_features,
    unpatchify,
)

TINY_VIT = {
    "_target_": "videogen.models.vit.FrameViT",
    "num_classes": 3,
    "img_size": 16,
    "patch_size": 4,
    "embed_dim": 32,
    "depth": 2,
    "num_heads": 2,
}


def test_the_frame_norm_keeps_a_channels_last_layout_and_its_values() -> None:
    """Normalised in place of a copy to NCHW, a channels-last input stays channels-last (the
    convs after it are faster so) with the same values and gradients as a contiguous one."""
    torch.manual_seed(0)
    norm = FrameLayerNorm(6, (4, 5))
    with torch.no_grad():
        norm.norm.weight.normal_()
        norm.norm.bias.normal_()
    x = torch.randn(3, 6, 4, 5)
    channels_last = x.detach().to(memory_format=torch.channels_last).requires_grad_()
    contiguous = x.detach().clone().requires_grad_()
    out_last, out = norm(channels_last), norm(contiguous)
    assert out_last.is_contiguous(memory_format=torch.channels_last)
    assert not out_last.is_contiguous()
    torch.testing.assert_close(out_last, out)
    grad = torch.randn_like(out)
    (weight_last,) = torch.autograd.grad((out_last * grad).sum(), [norm.norm.weight])
    (weight_grad,) = torch.autograd.grad((out * grad).sum(), [norm.norm.weight])
    torch.testing.assert_close(weight_last, weight_grad)


def test_an_adaln_zero_block_starts_as_the_identity_and_then_depends_on_the_condition() -> None:
    torch.manual_seed(0)
    block = Block(32, 4, cond_dim=8).eval()
    x, cond = torch.randn(2, 5, 32), torch.randn(2, 8)
    torch.testing.assert_close(block(x, cond=cond), x)
    with torch.no_grad():
        block.adaLN_modulation[1].weight.normal_(std=0.1)
    other = torch.randn(2, 8)
    assert not torch.allclose(block(x, cond=cond), block(x, cond=other))
    with pytest.raises(ValueError, match="pass `cond`"):
        block(x)


def test_vit_init_keeps_the_adaln_gates_at_zero() -> None:
    block = Block(16, 2, cond_dim=4)
    init_weights(block, "vit")
    assert block.adaLN_modulation[1].weight.abs().sum() == 0
    assert block.attn.qkv.weight.std() > 0.01


def test_timestep_features_are_distinct_and_bounded_for_any_step() -> None:
    steps = torch.tensor([0, 1, 500, 999])
    features = timestep_features(steps, 64)
    assert features.shape == (4, 64) and features.abs().max() <= 1
    assert torch.cdist(features, features).fill_diagonal_(1).min() > 0.1
    assert TimestepEmbedding(32)(steps).shape == (4, 32)


def test_sincos_codes_extend_to_any_length_and_agree_on_shared_positions() -> None:
    short, long = sincos_1d(8, 16), sincos_1d(20, 16)
    torch.testing.assert_close(long[:8], short)
    torch.testing.assert_close(sincos_1d(4, 16, offset=8), long[8:12])


def test_unpatchify_inverts_tubelet_cutting() -> None:
    video = torch.randn(2, 4, 3, 8, 12)  # B, T, C, H, W
    t, h, w = 2, 4, 4
    tokens = video.unflatten(1, (2, t)).unflatten(4, (2, h)).unflatten(6, (3, w))
    # (B, T', t, C, H', h, W', w) -> (B, T'H'W', t h w C)
    tokens = tokens.permute(0, 1, 4, 6, 2, 5, 7, 3).reshape(2, 2 * 2 * 3, t * h * w * 3)
    torch.testing.assert_close(unpatchify(tokens, (t, h, w), (2, 2, 3)), video)


def test_tubelet_embedding_gives_time_major_tokens() -> None:
    embed = TubeletEmbedding(3, 8, (2, 4, 4))
    assert embed(torch.randn(1, 6, 3, 8, 8)).shape == (1, 3, 4, 8)


@pytest.mark.parametrize(("dims", "shape"), [(2, (2, 3, 32, 32)), (3, (2, 3, 16, 32, 32))])
def test_the_patchgan_judges_frames_and_clips(dims: int, shape: tuple[int, ...]) -> None:
    disc = PatchDiscriminator(3, base_channels=8, num_layers=2, norm="batch", padding=1, dims=dims)
    outputs = disc(torch.randn(*shape))
    assert len(outputs) == 4 and outputs[-1].shape[1] == 1
    assert outputs[-1].dim() == dims + 2
    with pytest.raises(ConfigError, match="must be one of"):
        PatchDiscriminator(3, norm="group")


def test_mask_composition_takes_the_foreground_where_the_mask_is_one() -> None:
    mask = torch.tensor([[1.0, 0.0, 0.25]])
    foreground, background = torch.full((1, 3), 4.0), torch.zeros(1, 3)
    torch.testing.assert_close(
        compose_masked(mask, foreground, background), torch.tensor([[4.0, 0.0, 1.0]])
    )


def test_the_builder_loads_pretrained_weights_and_restoring_reads_no_file(tmp_path) -> None:
    torch.manual_seed(0)
    source = build_network(TINY_VIT)
    path = tmp_path / "vit.pth"
    torch.save({f"net.{k}": v for k, v in source.state_dict().items()}, path)
    started = build_network({**TINY_VIT, "pretrained_path": str(path)})
    for key, value in source.state_dict().items():
        torch.testing.assert_close(started.state_dict()[key], value)
    path.unlink()  # a checkpoint being restored never opens its start-from file
    with restoring_from_checkpoint():
        assert isinstance(build_network({**TINY_VIT, "pretrained_path": str(path)}), nn.Module)
    with pytest.raises(Exception, match="does not exist"):
        build_network({**TINY_VIT, "pretrained_path": str(path)})


def test_the_builder_refuses_weights_for_a_network_that_cannot_take_them(tmp_path) -> None:
    path = tmp_path / "w.pth"
    torch.save({}, path)
    config = {"_target_": "torch.nn.Linear", "in_features": 2, "out_features": 2}
    with pytest.raises(ConfigError, match="cannot start from pretrained weights"):
        build_network({**config, "pretrained_path": str(path)})


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("length", [8, 300])
def test_attention_written_out_and_fused_agree_with_causal_and_masks(dtype, length) -> None:
    """Short sequences on the CPU (8 tokens) take the written-out path, long ones (300) the fused
    kernel; both must give what the fused kernel gives in fp32 (bf16 tolerance), with a causal
    mask, a boolean and an additive mask."""
    from videogen.models.layers.attention import scaled_dot_product

    torch.manual_seed(0)
    q, k, v = (torch.randn(3, 2, length, 16, dtype=dtype) for _ in range(3))
    allowed = torch.rand(length, length) > 0.3
    allowed[:, 0] = True  # every query keeps a key
    bias = torch.randn(length, length, dtype=dtype)
    tolerance = 2e-2 if dtype == torch.bfloat16 else 1e-5
    for options in ({}, {"causal": True}, {"mask": allowed}, {"mask": bias}):
        mask = options.get("mask")
        expected = torch.nn.functional.scaled_dot_product_attention(
            q.float(),
            k.float(),
            v.float(),
            attn_mask=mask if mask is None or mask.dtype == torch.bool else mask.float(),
            is_causal=options.get("causal", False),
        )
        got = scaled_dot_product(q, k, v, **options)
        assert got.dtype == dtype
        torch.testing.assert_close(got.float(), expected, atol=tolerance, rtol=tolerance)

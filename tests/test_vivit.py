"""ViViT: the paper's parameter counts, equivalence with ViT after initialisation, factorisation."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from timm.models.vision_transformer import VisionTransformer

from videogen.errors import ConfigError
from videogen.models.build import build_network
from videogen.models.layers import Block, FactorisedDotProductAttention
from videogen.models.vit import FrameViT
from videogen.models.vivit import VARIANTS, ViViT
from videogen.models.vivit_init import init_from_vit

SMALL = dict(embed_dim=64, depth=2, num_heads=4)

# Paper Table 2: ViViT-B, 16x2 tubelets, 32 frames, 224px, 400 classes (millions of parameters).
PAPER_PARAMS = {
    ("spatio_temporal", 4): 88.9,
    ("factorised_encoder", 4): 115.1,
    ("factorised_self_attention", 4): 117.3,
    ("factorised_dot_product", 4): 88.9,
    ("factorised_encoder", 0): 86.7,  # average-pool baseline
}


@pytest.mark.parametrize(("variant", "temporal_depth"), list(PAPER_PARAMS))
def test_vivit_b_parameter_counts_match_the_paper(variant: str, temporal_depth: int) -> None:
    model = ViViT(400, num_frames=32, img_size=224, variant=variant, temporal_depth=temporal_depth)
    millions = sum(p.numel() for p in model.parameters()) / 1e6
    assert millions == pytest.approx(PAPER_PARAMS[variant, temporal_depth], rel=0.005)


def small_vit(num_classes: int = 10) -> torch.nn.Module:
    """A timm ViT: the source whose state dict ViViT starts from."""
    torch.manual_seed(0)
    return VisionTransformer(
        img_size=32, patch_size=4, num_classes=num_classes, in_chans=3, **SMALL
    ).eval()


@pytest.mark.parametrize(
    ("variant", "temporal_depth"), [("spatio_temporal", 0), ("factorised_encoder", 0)]
)
def test_single_frame_vivit_initialised_from_vit_equals_vit(
    variant: str, temporal_depth: int
) -> None:
    vit = small_vit()
    model = ViViT(
        10, 1, 32, variant=variant, tubelet_size=(1, 4, 4), temporal_depth=temporal_depth, **SMALL
    ).eval()
    init_from_vit(model, vit.state_dict())
    frame = torch.randn(3, 3, 32, 32)
    torch.testing.assert_close(model(frame.unsqueeze(1)), vit(frame), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("tubelet_init", ["central_frame", "filter_inflation"])
def test_tubelet_model_on_identical_frames_equals_vit(tubelet_init: str) -> None:
    vit = small_vit()
    model = ViViT(10, 2, 32, variant="spatio_temporal", tubelet_size=(2, 4, 4), **SMALL).eval()
    report = init_from_vit(model, vit.state_dict(), tubelet_init=tubelet_init)
    assert any(tubelet_init in entry for entry in report.reshaped)
    frame = torch.randn(2, 3, 32, 32)
    video = frame.unsqueeze(1).repeat(1, 2, 1, 1, 1)
    torch.testing.assert_close(model(video), vit(frame), rtol=1e-5, atol=1e-5)


def test_central_frame_kernel_is_zero_outside_the_centre() -> None:
    vit = small_vit()
    model = ViViT(10, 4, 32, variant="spatio_temporal", tubelet_size=(4, 4, 4), **SMALL)
    init_from_vit(model, vit.state_dict(), tubelet_init="central_frame")
    kernel = model.patch_embed.proj.weight
    assert kernel[:, :, [0, 1, 3]].abs().max() == 0
    torch.testing.assert_close(kernel[:, :, 2], vit.state_dict()["patch_embed.proj.weight"])


@pytest.mark.parametrize("variant", ["spatio_temporal", "factorised_dot_product"])
def test_models_1_and_4_load_every_vit_weight(variant: str) -> None:
    vit = small_vit(num_classes=10)
    same = init_from_vit(
        ViViT(10, 4, 32, variant=variant, tubelet_size=(2, 4, 4), **SMALL), vit.state_dict()
    )
    assert same.new == []
    other = init_from_vit(
        ViViT(7, 4, 32, variant=variant, tubelet_size=(2, 4, 4), **SMALL), vit.state_dict()
    )
    assert other.new == ["head.bias", "head.weight"]


def test_model_3_takes_spatial_attention_from_vit_and_starts_temporal_attention_at_zero() -> None:
    vit = small_vit()
    model = ViViT(10, 4, 32, variant="factorised_self_attention", tubelet_size=(2, 4, 4), **SMALL)
    report = init_from_vit(model, vit.state_dict())
    assert all(".temporal_" in key for key in report.new)
    torch.testing.assert_close(model.blocks[1].attn.qkv.weight, vit.blocks[1].attn.qkv.weight)
    assert model.blocks[0].temporal_attn.proj.weight.abs().max() == 0
    model(torch.randn(2, 4, 3, 32, 32)).sum().backward()
    assert model.blocks[0].temporal_attn.proj.weight.grad.abs().max() > 0, (
        "the temporal MSA must be able to learn"
    )


def test_vivit_initialises_from_a_videogen_vit_checkpoint(tmp_path: Path) -> None:
    frame_vit = FrameViT(num_classes=10, img_size=32, patch_size=4, **SMALL).eval()
    path = tmp_path / "vit.ckpt"
    torch.save({"state_dict": {f"net.{k}": v for k, v in frame_vit.state_dict().items()}}, path)
    model = build_network(
        {
            "_target_": "videogen.models.vivit.ViViT",
            "num_classes": 10,
            "num_frames": 1,
            "img_size": 32,
            "variant": "spatio_temporal",
            "tubelet_size": (1, 4, 4),
            "pretrained_path": str(path),
            **SMALL,
        }
    )
    video = torch.randn(2, 1, 3, 32, 32)
    torch.testing.assert_close(model.eval()(video), frame_vit(video), rtol=1e-5, atol=1e-5)


def test_pos_embed_is_resized_for_another_grid() -> None:
    vit = VisionTransformer(img_size=16, patch_size=4, num_classes=10, **SMALL)  # 4x4 grid
    model = ViViT(
        10, 4, 32, variant="spatio_temporal", tubelet_size=(2, 4, 4), **SMALL
    )  # 8x8 grid, 2 times
    init_from_vit(model, vit.state_dict())
    assert model.pos_embed.shape == (1, 1 + 2 * 64, 64)
    torch.testing.assert_close(
        model.pos_embed[:, 1:65], model.pos_embed[:, 65:]
    )  # repeated over time
    torch.testing.assert_close(model.pos_embed[:, 0], vit.pos_embed[:, 0])  # CLS row kept


def test_factorised_dot_product_heads_attend_within_a_frame_or_a_position() -> None:
    torch.manual_seed(0)
    frames, tokens, dim = 3, 4, 16
    attention = FactorisedDotProductAttention(dim, num_heads=2).eval()
    attention.proj = torch.nn.Identity()  # look at the heads' outputs directly
    x = torch.randn(1, frames * tokens, dim)
    changed = x.clone()
    changed[0, 1 * tokens + 2] += 1.0  # frame 1, spatial position 2
    diff = (attention(changed, (frames, tokens)) - attention(x, (frames, tokens))).abs()
    diff = diff.view(frames, tokens, dim)
    spatial_half, temporal_half = diff[..., : dim // 2], diff[..., dim // 2 :]
    assert spatial_half[[0, 2]].max() == 0 and spatial_half[1].max() > 0  # only frame 1 sees it
    assert (
        temporal_half[:, [0, 1, 3]].max() == 0 and temporal_half[:, 2].max() > 0
    )  # only position 2
    with pytest.raises(ValueError, match="even"):
        FactorisedDotProductAttention(dim, num_heads=3)


@pytest.mark.parametrize("variant", VARIANTS)
def test_activation_checkpointing_gives_the_same_gradients(variant: str) -> None:
    torch.manual_seed(0)
    options = dict(
        variant=variant, tubelet_size=(2, 8, 8), temporal_depth=1, drop_path_rate=0.0, **SMALL
    )
    plain, checkpointed = (
        ViViT(5, 4, 32, **options),
        ViViT(5, 4, 32, grad_checkpointing=True, **options),
    )
    checkpointed.load_state_dict(plain.state_dict())
    video = torch.randn(2, 4, 3, 32, 32)
    for model in (plain, checkpointed):
        model.train()
        model(video).square().sum().backward()
    for (name, a), (_, b) in zip(
        plain.named_parameters(), checkpointed.named_parameters(), strict=True
    ):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.parametrize("variant", ["spatio_temporal", "factorised_encoder"])
def test_cls_only_last_block_gives_the_full_blocks_outputs_and_gradients(
    variant: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    torch.manual_seed(0)
    model = ViViT(
        5,
        4,
        32,
        variant=variant,
        tubelet_size=(2, 8, 8),
        temporal_depth=2,
        drop_path_rate=0.1,
        **SMALL,
    ).train()
    video = torch.randn(2, 4, 3, 32, 32)

    def run() -> tuple[torch.Tensor, list[torch.Tensor]]:
        torch.manual_seed(1)  # the same stochastic-depth draws in both runs
        model.zero_grad()
        out = model(video)
        out.square().sum().backward()
        return out.detach(), [p.grad.clone() for p in model.parameters()]

    fast, fast_grads = run()
    # The reference: every token through the whole last block, then the CLS row taken.
    monkeypatch.setattr(Block, "forward_first_token", lambda self, x: self.forward(x)[:, :1])
    full, full_grads = run()
    torch.testing.assert_close(fast, full, rtol=1e-5, atol=1e-6)
    for (name, _), a, b in zip(model.named_parameters(), fast_grads, full_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6, msg=name)


def test_wrong_clip_shape_is_a_clear_error() -> None:
    model = ViViT(5, 4, 32, variant="spatio_temporal", tubelet_size=(2, 8, 8), **SMALL)
    with pytest.raises(
        ConfigError, match="built for clips of 4 frames at 32x32.*data.num_frames=4"
    ):
        model(torch.randn(1, 8, 3, 32, 32))
    with pytest.raises(ConfigError, match=r"data\.num_frames=5 is not a multiple of 2"):
        ViViT(5, 5, 32, tubelet_size=(2, 8, 8), **SMALL)


def test_paper_presets_carry_the_recipe(compose_train) -> None:
    k400 = compose_train("experiment=vivit_b_k400")
    assert (k400.optimizer._target_, k400.optimizer.lr, k400.optimizer.momentum) == (
        "torch.optim.SGD",
        0.1,
        0.9,
    )
    assert (k400.lr_scheduler.warmup_epochs, k400.trainer.max_epochs) == (2.5, 30)
    assert k400.data.batch_size * k400.trainer.devices == 64
    assert (
        k400.data.num_frames,
        k400.data.frame_stride,
        k400.data.height,
        k400.data.short_side,
    ) == (32, 2, 224, 256)
    assert (k400.data.test_clips, k400.data.test_crops) == (4, 3)
    assert (k400.model.net.variant, list(k400.model.net.tubelet_size)) == (
        "factorised_encoder",
        [2, 16, 16],
    )
    ssv2 = compose_train("experiment=vivit_l_ssv2")
    assert (ssv2.optimizer.lr, ssv2.trainer.max_epochs, ssv2.model.net.drop_path_rate) == (
        0.5,
        35,
        0.3,
    )
    assert (ssv2.model.label_smoothing, ssv2.model.mixup_alpha) == (0.3, 0.3)
    assert (ssv2.model.net.embed_dim, ssv2.model.net.depth, ssv2.model.net.num_heads) == (
        1024,
        24,
        16,
    )
    assert ssv2.data.flip is False and list(ssv2.data.rand_augment) == [2, 20]

"""The per-frame ViT: shapes, frame averaging, and loading local weights."""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch
from timm.models.vision_transformer import VisionTransformer

from videogen.errors import CheckpointError
from videogen.models.build import build_network
from videogen.models.vit import FrameViT, named_vit_dims

TINY = dict(patch_size=4, embed_dim=32, depth=2, num_heads=2)
TARGET = "videogen.models.vit.FrameViT"


def test_logits_are_the_mean_of_per_frame_logits() -> None:
    torch.manual_seed(0)
    model = FrameViT(num_classes=5, img_size=16, **TINY).eval()
    video = torch.randn(2, 3, 3, 16, 16)
    logits = model(video)
    assert logits.shape == (2, 5)
    per_frame = torch.stack([model.vit(video[:, t]) for t in range(3)], dim=1)
    torch.testing.assert_close(logits, per_frame.mean(dim=1), rtol=1e-5, atol=1e-5)


def test_frame_order_does_not_matter_for_a_per_frame_model() -> None:
    model = FrameViT(num_classes=4, img_size=16, **TINY).eval()
    video = torch.randn(1, 4, 3, 16, 16)
    torch.testing.assert_close(model(video), model(video.flip(1)), rtol=1e-5, atol=1e-5)


def test_timm_name_builds_the_named_architecture() -> None:
    assert named_vit_dims("vit_tiny_patch16_224")["embed_dim"] == 192
    vit = FrameViT(num_classes=10, img_size=32, model_name="vit_tiny_patch16_224").vit
    assert vit.patch_embed.proj.out_channels == 192 and len(vit.blocks) == 12
    assert vit.grid_size == (2, 2)
    # The same architecture as timm's model of that name: every key, every shape.
    named = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=10, img_size=32)
    assert {k: v.shape for k, v in vit.state_dict().items()} == {
        k: v.shape for k, v in named.state_dict().items()
    }
    with pytest.raises(ValueError, match="missing"):
        FrameViT(num_classes=10, img_size=32, patch_size=4, embed_dim=32)


def test_pretrained_timm_weights_load_with_resized_grid_and_new_head(tmp_path: Path) -> None:
    source = VisionTransformer(img_size=16, num_classes=7, in_chans=3, **TINY)
    path = tmp_path / "vit.pth"
    torch.save(source.state_dict(), path)
    model = build_network(
        {"_target_": TARGET, "num_classes": 3, "img_size": 32, "pretrained_path": str(path), **TINY}
    )
    target = model.vit.state_dict()
    torch.testing.assert_close(
        target["blocks.1.attn.qkv.weight"], source.state_dict()["blocks.1.attn.qkv.weight"]
    )
    torch.testing.assert_close(target["cls_token"], source.state_dict()["cls_token"])
    assert target["pos_embed"].shape == (1, 1 + 8 * 8, 32)  # resampled from a 4x4 grid
    assert target["head.weight"].shape == (3, 32)  # new head for 3 classes


def test_pretrained_from_a_videogen_checkpoint_state_dict(tmp_path: Path) -> None:
    source = FrameViT(num_classes=4, img_size=16, **TINY)
    path = tmp_path / "task.ckpt"
    torch.save({"state_dict": {f"net.{k}": v for k, v in source.state_dict().items()}}, path)
    model = build_network(
        {"_target_": TARGET, "num_classes": 4, "img_size": 16, "pretrained_path": str(path), **TINY}
    )
    video = torch.randn(1, 2, 3, 16, 16)
    torch.testing.assert_close(model.eval()(video), source.eval()(video))


def test_missing_weight_file_is_one_clear_error(tmp_path: Path) -> None:
    missing = str(tmp_path / "none.pth")
    with pytest.raises(CheckpointError, match="does not exist"):
        build_network(
            {
                "_target_": TARGET,
                "num_classes": 4,
                "img_size": 16,
                "pretrained_path": missing,
                **TINY,
            }
        )

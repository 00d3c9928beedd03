"""ViT applied frame by frame: a timm VisionTransformer whose logits are averaged over time.

A per-frame model sees no motion, which makes it the natural "does the task need time?"
baseline for the video models.
"""

from __future__ import annotations

import logging

import torch
from einops import rearrange
from timm.layers import resample_abs_pos_embed
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from videogen.errors import ConfigError
from videogen.models.checkpoint_io import load_state_dict

log = logging.getLogger(__name__)


def build_vit(
    num_classes: int,
    img_size: int,
    in_chans: int = 3,
    model_name: str | None = None,
    patch_size: int | None = None,
    embed_dim: int | None = None,
    depth: int | None = None,
    num_heads: int | None = None,
    mlp_ratio: float | None = None,
    drop_path_rate: float = 0.0,
) -> VisionTransformer:
    """A timm VisionTransformer from a timm model name, explicit dims, or a name with some dims overridden.

    Dims left as None come from the named model (or are required when no name is given).
    """
    dims = {
        "patch_size": patch_size,
        "embed_dim": embed_dim,
        "depth": depth,
        "num_heads": num_heads,
        "mlp_ratio": mlp_ratio,
    }
    dims = {k: v for k, v in dims.items() if v is not None}
    common = dict(
        num_classes=num_classes, img_size=img_size, in_chans=in_chans, drop_path_rate=drop_path_rate
    )
    if model_name:
        import timm

        model = timm.create_model(model_name, pretrained=False, **common, **dims)
        if not isinstance(model, VisionTransformer):
            raise ConfigError(
                f"model.net.model_name={model_name!r} is not a timm VisionTransformer: name a "
                "ViT (e.g. vit_small_patch16_224)."
            )
        return model
    missing = sorted({"patch_size", "embed_dim", "depth", "num_heads"} - dims.keys())
    if missing:
        raise ConfigError(
            "set model.net.model_name or every explicit ViT dim; missing: "
            + ", ".join(f"model.net.{key}" for key in missing)
            + "."
        )
    return VisionTransformer(**common, **dims)


def adapt_vit_state_dict(
    state: dict[str, torch.Tensor], model: VisionTransformer
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Make a ViT state dict fit `model`: resize the position grid, drop a head of another size.

    Returns the adapted dict and the keys that were reshaped or dropped (for the load report).
    """
    target = model.state_dict()
    adapted, changed = {}, []
    for key, value in state.items():
        if key not in target:
            continue
        if key == "pos_embed" and value.shape != target[key].shape:
            prefix = 0 if model.no_embed_class else model.num_prefix_tokens
            value = resample_abs_pos_embed(
                value, new_size=model.patch_embed.grid_size, num_prefix_tokens=prefix
            )
            changed.append(f"{key} (resized)")
        elif value.shape != target[key].shape:
            changed.append(f"{key} (dropped: {tuple(value.shape)} vs {tuple(target[key].shape)})")
            continue
        adapted[key] = value
    return adapted, changed


class FrameViT(nn.Module):
    """Classify a clip (B, T, C, H, W) by running a ViT on every frame and averaging the logits.

    `grad_checkpointing` turns on timm's activation checkpointing of the ViT's blocks: their
    activations are recomputed in the backward pass instead of kept (less memory, same gradients).
    """

    def __init__(
        self,
        num_classes: int,
        img_size: int,
        in_chans: int = 3,
        model_name: str | None = None,
        patch_size: int | None = None,
        embed_dim: int | None = None,
        depth: int | None = None,
        num_heads: int | None = None,
        mlp_ratio: float | None = None,
        drop_path_rate: float = 0.0,
        pretrained_path: str | None = None,
        grad_checkpointing: bool = False,
    ) -> None:
        super().__init__()
        self.vit = build_vit(
            num_classes,
            img_size,
            in_chans,
            model_name,
            patch_size,
            embed_dim,
            depth,
            num_heads,
            mlp_ratio,
            drop_path_rate,
        )
        self.vit.set_grad_checkpointing(grad_checkpointing)
        if pretrained_path:
            self.load_pretrained(pretrained_path)

    def load_pretrained(self, path: str) -> None:
        """Initialise from a local timm ViT state dict or a videogen FrameViT checkpoint."""
        state = load_state_dict(path, prefix="net.")
        state = {k.removeprefix("vit."): v for k, v in state.items()}
        state, changed = adapt_vit_state_dict(state, self.vit)
        result = self.vit.load_state_dict(state, strict=False)
        log.info(
            "Loaded %d tensors from %s; reshaped/dropped: %s; left new: %s",
            len(state),
            path,
            changed or "none",
            result.missing_keys or "none",
        )

    def forward_features(self, video: torch.Tensor) -> torch.Tensor:
        """(B, T, C, H, W) -> pooled per-frame features (B, T, D)."""
        batch = video.shape[0]
        frames = rearrange(video, "b t c h w -> (b t) c h w")
        features = self.vit.forward_head(self.vit.forward_features(frames), pre_logits=True)
        return rearrange(features, "(b t) d -> b t d", b=batch)

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        """(B, T, C, H, W) -> logits (B, num_classes), the mean of the per-frame logits."""
        return self.vit.head(self.forward_features(video)).mean(dim=1)

"""ViT applied frame by frame: an image ViT whose logits are averaged over time.

A per-frame model sees no motion, which makes it the natural "does the task need time?"
baseline for the video models. The ViT is built from the shared layers with timm's parameter
names (`cls_token`, `pos_embed`, `patch_embed.proj`, `blocks.N.*`, `norm`, `head`), so timm ViT
state dicts load into it key for key.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence

import torch
from einops import rearrange
from timm.layers import resample_abs_pos_embed
from torch import nn

from videogen.errors import ConfigError
from videogen.models.layers import Block, PatchEmbedding, init_weights, run_blocks

log = logging.getLogger(__name__)

# (embed_dim, depth, num_heads) of the ViT sizes of Dosovitskiy et al. and DeiT, by timm name part.
VIT_SIZES = {
    "tiny": (192, 12, 3),
    "small": (384, 12, 6),
    "base": (768, 12, 12),
    "large": (1024, 24, 16),
    "huge": (1280, 32, 16),
}
VIT_NAME = re.compile(r"^vit_(?P<size>[a-z]+)_patch(?P<patch>\d+)_\d+")


def named_vit_dims(model_name: str) -> dict[str, int | float]:
    """The dims of a timm ViT name such as `vit_base_patch16_224`."""
    match = VIT_NAME.match(model_name)
    if not match or match["size"] not in VIT_SIZES:
        raise ConfigError(
            f"model.net.model_name={model_name!r} is not a ViT name this project knows: use "
            f"vit_<{'|'.join(VIT_SIZES)}>_patch<p>_<size> (e.g. vit_base_patch16_224) or set "
            "the dims explicitly."
        )
    embed_dim, depth, num_heads = VIT_SIZES[match["size"]]
    return dict(
        patch_size=int(match["patch"]),
        embed_dim=embed_dim,
        depth=depth,
        num_heads=num_heads,
        mlp_ratio=4.0,
    )


class ViT(nn.Module):
    """An image ViT (CLS token, learned positions, pre-norm blocks): images -> logits."""

    def __init__(
        self,
        num_classes: int,
        img_size: int | Sequence[int],
        in_channels: int,
        patch_size: int,
        embed_dim: int,
        depth: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__()
        height, width = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
        if height % patch_size or width % patch_size:
            raise ConfigError(
                f"frames of {height}x{width} do not divide into patches of "
                f"model.net.patch_size={patch_size}: change data.height / data.width or the patch size."
            )
        self.grid_size = (height // patch_size, width // patch_size)
        self.num_prefix_tokens = 1
        self.patch_embed = PatchEmbedding(in_channels, embed_dim, patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(
            torch.zeros(1, self.grid_size[0] * self.grid_size[1] + 1, embed_dim)
        )
        rates = torch.linspace(0, drop_path_rate, depth).tolist()
        self.blocks = nn.ModuleList(
            Block(embed_dim, num_heads, mlp_ratio, drop_path_rate=rate) for rate in rates
        )
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.head = nn.Linear(embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        init_weights(self, "vit")
        self.grad_checkpointing = False

    def no_weight_decay(self) -> set[str]:
        """Parameters that take no weight decay (timm convention)."""
        return {"pos_embed", "cls_token"}

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> the normed CLS feature (N, D).

        The last block computes the CLS token's output only (the others would be thrown away).
        """
        x = self.patch_embed(images)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        checkpointing = self.grad_checkpointing and self.training
        x = run_blocks(self.blocks[:-1], x, checkpointing=checkpointing)
        return self.norm(self.blocks[-1].forward_first_token(x)[:, 0])

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(images))


def adapt_vit_state_dict(
    state: dict[str, torch.Tensor], model: ViT
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
            value = resample_abs_pos_embed(
                value, new_size=list(model.grid_size), num_prefix_tokens=model.num_prefix_tokens
            )
            changed.append(f"{key} (resized)")
        elif value.shape != target[key].shape:
            changed.append(f"{key} (dropped: {tuple(value.shape)} vs {tuple(target[key].shape)})")
            continue
        adapted[key] = value
    return adapted, changed


class FrameViT(nn.Module):
    """Classify a clip (B, T, C, H, W) by running a ViT on every frame and averaging the logits.

    Dims come from `model_name` (a timm ViT name) with any explicit dim winning, or from the
    explicit dims alone. `grad_checkpointing` recomputes the blocks' activations in the backward
    pass instead of keeping them (less memory, same gradients).
    """

    def __init__(
        self,
        num_classes: int,
        img_size: int | Sequence[int],
        in_channels: int = 3,
        model_name: str | None = None,
        patch_size: int | None = None,
        embed_dim: int | None = None,
        depth: int | None = None,
        num_heads: int | None = None,
        mlp_ratio: float | None = None,
        drop_path_rate: float = 0.0,
        grad_checkpointing: bool = False,
    ) -> None:
        super().__init__()
        explicit = dict(
            patch_size=patch_size,
            embed_dim=embed_dim,
            depth=depth,
            num_heads=num_heads,
            mlp_ratio=mlp_ratio,
        )
        dims = named_vit_dims(model_name) if model_name else {"mlp_ratio": 4.0}
        dims.update({k: v for k, v in explicit.items() if v is not None})
        missing = sorted({"patch_size", "embed_dim", "depth", "num_heads"} - dims.keys())
        if missing:
            raise ConfigError(
                "set model.net.model_name or every explicit ViT dim; missing: "
                + ", ".join(f"model.net.{key}" for key in missing)
                + "."
            )
        self.vit = ViT(num_classes, img_size, in_channels, drop_path_rate=drop_path_rate, **dims)
        self.vit.grad_checkpointing = grad_checkpointing

    def no_weight_decay(self) -> set[str]:
        """Parameters that take no weight decay (timm convention)."""
        return {f"vit.{name}" for name in self.vit.no_weight_decay()}

    def load_pretrained_state(self, state: dict[str, torch.Tensor]) -> None:
        """Start from a timm ViT state dict or a videogen FrameViT's weights."""
        state = {k.removeprefix("vit."): v for k, v in state.items()}
        state, changed = adapt_vit_state_dict(state, self.vit)
        result = self.vit.load_state_dict(state, strict=False)
        log.info(
            "Loaded %d ViT tensors; reshaped/dropped: %s; left new: %s",
            len(state),
            changed or "none",
            result.missing_keys or "none",
        )

    def forward_features(self, video: torch.Tensor) -> torch.Tensor:
        """(B, T, C, H, W) -> pooled per-frame features (B, T, D)."""
        batch = video.shape[0]
        features = self.vit.forward_features(rearrange(video, "b t c h w -> (b t) c h w"))
        return rearrange(features, "(b t) d -> b t d", b=batch)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        """Per-frame features (B, T, D) -> logits (B, num_classes), the mean of the frames'."""
        return self.vit.head(features).mean(dim=1)

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        """(B, T, C, H, W) -> logits (B, num_classes), the mean of the per-frame logits."""
        return self.forward_head(self.forward_features(video))

"""ViViT: a video vision transformer (Arnab et al., ICCV 2021), all four variants in one module.

    spatio_temporal            Model 1: CLS + all T*S tokens through one encoder.
    factorised_encoder         Model 2: a spatial ViT per frame (own CLS), then a temporal
                               transformer over the frame tokens (own CLS); temporal_depth=0
                               is the average-pool baseline.
    factorised_self_attention  Model 3: blocks of temporal MSA, spatial MSA, MLP; no CLS (GAP).
    factorised_dot_product     Model 4: standard blocks whose heads are split between time and
                               space; no CLS (GAP).

Video enters as (B, T, C, H, W). `tubelet_size=(1, p, p)` is uniform frame sampling (2D patches
of every frame); `(t, p, p)` is tubelet embedding. Tokens are time-major. Every ViT-shaped part
keeps timm's parameter names (`patch_embed.proj`, `cls_token`, `pos_embed`, `blocks.N.*`, `norm`,
`head`), which is what makes initialisation from a ViT a matter of reshaping a few tensors
(see `videogen.models.vivit_init`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from einops import rearrange
from torch import nn

from videogen.errors import ConfigError
from videogen.models.layers import (
    Block,
    FactorisedDotProductAttention,
    FactorisedSelfAttentionBlock,
    Grid,
    TubeletEmbedding,
    check_patch_grid,
    init_weights,
    run_blocks,
)
from videogen.models.vivit_init import init_from_vit

VARIANTS = (
    "spatio_temporal",
    "factorised_encoder",
    "factorised_self_attention",
    "factorised_dot_product",
)


class ViViT(nn.Module):
    """Video vision transformer; `variant` picks one of the paper's four models (see module doc)."""

    # Options of `load_pretrained_state`, given beside `pretrained_path` in the net config.
    pretrained_options = ("tubelet_init",)

    def __init__(
        self,
        num_classes: int,
        num_frames: int,
        img_size: int | Sequence[int],
        in_channels: int = 3,
        variant: str = "factorised_encoder",
        tubelet_size: Sequence[int] = (2, 16, 16),
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        temporal_depth: int = 4,
        qkv_bias: bool = True,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        temporal_first: bool = True,
        grad_checkpointing: bool = False,
    ) -> None:
        super().__init__()
        if variant not in VARIANTS:
            raise ConfigError(
                f"model.net.variant={variant!r} is not a ViViT variant: choose one of "
                f"{', '.join(VARIANTS)}."
            )
        height, width = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
        if len(tubelet_size) != 3 or min(tubelet_size) < 1:
            raise ConfigError(
                f"model.net.tubelet_size must be three positive sizes [frames, height, width], "
                f"got {list(tubelet_size)}."
            )
        t, h, w = (int(s) for s in tubelet_size)
        check_patch_grid(
            num_frames, height, width, (t, h, w), f"model.net.tubelet_size=[{t}, {h}, {w}]"
        )
        self.variant = variant
        self.num_classes = num_classes
        self.embed_dim = embed_dim
        self.grid: Grid = (num_frames // t, (height // h) * (width // w))
        self.grid_size = (height // h, width // w)
        self.grad_checkpointing = grad_checkpointing
        frames, tokens = self.grid

        self.patch_embed = TubeletEmbedding(in_channels, embed_dim, tubelet_size)
        uses_cls = variant in ("spatio_temporal", "factorised_encoder")
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim)) if uses_cls else None
        # Model 2's spatial encoder sees one frame at a time; the others see every token at once.
        pos_tokens = tokens if variant == "factorised_encoder" else frames * tokens
        self.pos_embed = nn.Parameter(torch.zeros(1, pos_tokens + int(uses_cls), embed_dim))
        self.pos_drop = nn.Dropout(drop_rate)

        block_options = dict(
            mlp_ratio=mlp_ratio,
            qkv_bias=qkv_bias,
            drop_rate=drop_rate,
            attn_drop_rate=attn_drop_rate,
        )
        rates = torch.linspace(0, drop_path_rate, depth).tolist()
        if variant == "factorised_self_attention":
            self.blocks = nn.ModuleList(
                FactorisedSelfAttentionBlock(
                    embed_dim, num_heads, temporal_first, drop_path_rate=r, **block_options
                )
                for r in rates
            )
        else:
            attention = (
                FactorisedDotProductAttention if variant == "factorised_dot_product" else None
            )
            extra = {"attention": attention} if attention else {}
            self.blocks = nn.ModuleList(
                Block(embed_dim, num_heads, drop_path_rate=r, **block_options, **extra)
                for r in rates
            )
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)

        self.temporal_depth = temporal_depth if variant == "factorised_encoder" else 0
        if self.temporal_depth:
            self.temporal_cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
            self.temporal_pos_embed = nn.Parameter(torch.zeros(1, frames + 1, embed_dim))
            temporal_rates = torch.linspace(0, drop_path_rate, self.temporal_depth).tolist()
            self.temporal_blocks = nn.ModuleList(
                Block(embed_dim, num_heads, drop_path_rate=r, **block_options)
                for r in temporal_rates
            )
            self.temporal_norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        self.init_weights()

    def init_weights(self) -> None:
        """timm's ViT initialisation; Model 3's temporal attention starts as the identity."""
        init_weights(self, "vit")
        for block in self.blocks:
            if isinstance(block, FactorisedSelfAttentionBlock):
                # A zero output projection makes the new temporal MSA add nothing at first, so a
                # ViT-initialised Model 3 starts as the image model; its gradient is not zero.
                nn.init.zeros_(block.temporal_attn.proj.weight)

    def no_weight_decay(self) -> set[str]:
        """Parameters that take no weight decay (timm convention): tokens and positions."""
        names = {"pos_embed", "cls_token", "temporal_pos_embed", "temporal_cls_token"}
        return {name for name, _ in self.named_parameters() if name in names}

    def load_pretrained_state(
        self, state: dict[str, torch.Tensor], tubelet_init: str = "central_frame"
    ) -> None:
        """Start from a ViT's weights (see `vivit_init`)."""
        init_from_vit(self, state, tubelet_init=tubelet_init)

    def apply_blocks(
        self, blocks: nn.ModuleList, x: torch.Tensor, grid: Grid | None = None
    ) -> torch.Tensor:
        """Apply `blocks` in turn, activation-checkpointed in training if `grad_checkpointing`."""
        return run_blocks(blocks, x, grid, checkpointing=self.grad_checkpointing and self.training)

    def cls_output(
        self, blocks: nn.ModuleList, x: torch.Tensor, grid: Grid | None = None
    ) -> torch.Tensor:
        """Apply `blocks` to tokens whose first is a CLS token and return the CLS output (B, D).

        The last block computes the CLS token's output only (the others would be thrown
        away): about 1/depth of the encoder's work saved, with the same result and gradients.
        """
        x = self.apply_blocks(blocks[:-1], x, grid)
        return blocks[-1].forward_first_token(x)[:, 0]

    def check_input(self, video: torch.Tensor) -> None:
        t, h, w = self.patch_embed.tubelet_size
        expected = (self.grid[0] * t, self.grid_size[0] * h, self.grid_size[1] * w)
        if video.ndim != 5:
            raise ValueError(f"ViViT takes (B, T, C, H, W) clips, got shape {tuple(video.shape)}")
        if tuple(video.shape[1:2]) + tuple(video.shape[3:]) != expected:
            raise ConfigError(
                f"this ViViT was built for clips of {expected[0]} frames at "
                f"{expected[1]}x{expected[2]} but the data gives {video.shape[1]} frames at "
                f"{video.shape[3]}x{video.shape[4]}: set data.num_frames={expected[0]}, "
                f"data.height={expected[1]} and data.width={expected[2]}."
            )

    def forward_features(self, video: torch.Tensor) -> torch.Tensor:
        """(B, T, C, H, W) -> pooled clip features (B, D)."""
        self.check_input(video)
        x = self.patch_embed(video)  # B, T', S, D
        batch, frames, tokens, _ = x.shape
        if self.variant == "factorised_encoder":
            return self.temporal_features(self.frame_features(x))
        x = rearrange(x, "b t s d -> b (t s) d")
        if self.cls_token is not None:
            x = torch.cat([self.cls_token.expand(batch, -1, -1), x], dim=1)
        x = self.pos_drop(x + self.pos_embed)
        if self.cls_token is not None:
            return self.norm(self.cls_output(self.blocks, x, (frames, tokens)))
        return self.norm(self.apply_blocks(self.blocks, x, (frames, tokens))).mean(dim=1)

    def frame_features(self, x: torch.Tensor) -> torch.Tensor:
        """Model 2's spatial encoder: tokens (B, T', S, D) -> one CLS feature per frame (B, T', D)."""
        batch = x.shape[0]
        x = rearrange(x, "b t s d -> (b t) s d")
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        x = self.norm(self.cls_output(self.blocks, self.pos_drop(x + self.pos_embed)))
        return rearrange(x, "(b t) d -> b t d", b=batch)

    def temporal_features(self, frames: torch.Tensor) -> torch.Tensor:
        """Model 2's temporal encoder over frame features (B, T', D) -> (B, D); GAP when it has no layers."""
        if not self.temporal_depth:
            return frames.mean(dim=1)
        x = torch.cat([self.temporal_cls_token.expand(frames.shape[0], -1, -1), frames], dim=1)
        return self.temporal_norm(
            self.cls_output(self.temporal_blocks, x + self.temporal_pos_embed)
        )

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(self.head_drop(features))

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        """(B, T, C, H, W) -> logits (B, num_classes)."""
        return self.forward_head(self.forward_features(video))

"""U-ViT (Bao et al., CVPR 2023): a diffusion ViT where everything is a token.

The timestep and the class label are tokens in front of the patch tokens of every frame (one
frame: an image model; several: space-time tokens, one sequence), all with a learned position
embedding. The blocks form a U: `depth // 2` "in" blocks, one middle block and `depth // 2`
"out" blocks, each out block first merging the output of its mirrored in block (last in, first
out) through a linear layer on their concatenation. A final LayerNorm and linear layer give the
patches back, optionally smoothed by a 3x3 convolution.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from einops import rearrange
from torch import nn

from videogen.errors import ConfigError
from videogen.models.diffusion.latte import named_dims, pair
from videogen.models.layers import (
    Block,
    LabelEmbedding,
    TubeletEmbedding,
    check_patch_grid,
    init_weights,
    run_blocks,
    timestep_features,
    unpatchify,
)

# depth (in + mid + out blocks), width, heads: the paper's U-ViT-S, -M, -L and -H.
SIZES = {"S": (13, 512, 8), "M": (17, 768, 12), "L": (21, 1024, 16), "H": (29, 1152, 16)}


class UViT(nn.Module):
    """U-ViT: (x_t (B, T, C, H, W), t (B,), labels (B,) or None) -> (B, T, C or 2C, H, W).

    `num_classes` 0 is unconditional; otherwise the label table has a null class more (for
    classifier-free guidance). The position embedding is learned for `num_frames` frames at
    `img_size`, so the clip size is fixed once built.
    """

    def __init__(
        self,
        num_frames: int,
        img_size: int | Sequence[int],
        in_channels: int = 4,
        patch_size: int = 2,
        size: str | None = "L",
        embed_dim: int | None = None,
        depth: int | None = None,
        num_heads: int | None = None,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = False,
        num_classes: int = 0,
        learn_sigma: bool = False,
        mlp_time_embed: bool = False,
        final_conv: bool = False,
        grad_checkpointing: bool = False,
    ) -> None:
        super().__init__()
        depth, embed_dim, num_heads = named_dims(SIZES, size, depth, embed_dim, num_heads)
        if depth % 2 == 0:
            raise ConfigError(
                f"model.net.depth={depth} is even: U-ViT has depth // 2 in blocks, one middle "
                "block and as many out blocks, so give an odd depth."
            )
        height, width = pair(img_size)
        check_patch_grid(
            num_frames, height, width, (1, patch_size, patch_size), "model.net.patch_size"
        )
        self.num_frames = num_frames
        self.img_size = (height, width)
        self.in_channels = in_channels
        self.out_channels = in_channels * (2 if learn_sigma else 1)
        self.learn_sigma = learn_sigma
        self.num_classes = num_classes
        self.patch_size = patch_size
        self.grad_checkpointing = grad_checkpointing
        self.grid = (num_frames, height // patch_size, width // patch_size)

        self.patch_embed = TubeletEmbedding(in_channels, embed_dim, (1, patch_size, patch_size))
        self.time_embed = (
            nn.Sequential(
                nn.Linear(embed_dim, 4 * embed_dim), nn.SiLU(), nn.Linear(4 * embed_dim, embed_dim)
            )
            if mlp_time_embed
            else nn.Identity()
        )
        self.label_emb = LabelEmbedding(num_classes, embed_dim) if num_classes > 0 else None
        self.extras = 1 + int(num_classes > 0)
        tokens = num_frames * self.grid[1] * self.grid[2]
        self.pos_embed = nn.Parameter(torch.zeros(1, self.extras + tokens, embed_dim))
        options = dict(mlp_ratio=mlp_ratio, qkv_bias=qkv_bias)
        half = depth // 2
        self.in_blocks = nn.ModuleList(Block(embed_dim, num_heads, **options) for _ in range(half))
        self.mid_block = Block(embed_dim, num_heads, **options)
        self.out_blocks = nn.ModuleList(Block(embed_dim, num_heads, **options) for _ in range(half))
        self.skip_linears = nn.ModuleList(nn.Linear(2 * embed_dim, embed_dim) for _ in range(half))
        self.norm = nn.LayerNorm(embed_dim)
        self.decoder_pred = nn.Linear(embed_dim, patch_size * patch_size * self.out_channels)
        self.final_conv = (
            nn.Conv2d(self.out_channels, self.out_channels, 3, padding=1) if final_conv else None
        )
        init_weights(self, "vit")

    def no_weight_decay(self) -> set[str]:
        return {"pos_embed"}

    @property
    def null_label(self) -> int | None:
        """The class index that means "no class" (classifier-free guidance), or None."""
        return None if self.label_emb is None else self.label_emb.null_label

    def check_input(self, x: torch.Tensor) -> None:
        frames, rows, cols = self.grid
        expected = (frames, self.in_channels, rows * self.patch_size, cols * self.patch_size)
        if x.ndim != 5 or tuple(x.shape[1:]) != expected:
            raise ConfigError(
                f"this U-ViT was built for (B, {', '.join(map(str, expected))}) inputs (its "
                f"position embedding is learned for that size), got {tuple(x.shape)}: sample or "
                "train at the size it was built for."
            )

    def forward(
        self, x: torch.Tensor, timesteps: torch.Tensor, labels: torch.Tensor | None = None
    ) -> torch.Tensor:
        self.check_input(x)
        tokens = rearrange(self.patch_embed(x), "b t s d -> b (t s) d")
        dim = tokens.shape[-1]
        extras = [self.time_embed(timestep_features(timesteps, dim).to(tokens.dtype))]
        if self.label_emb is not None:
            if labels is None:
                labels = torch.full_like(timesteps, self.label_emb.null_label, dtype=torch.long)
            extras.append(self.label_emb(labels))
        x = torch.cat([torch.stack(extras, dim=1), tokens], dim=1) + self.pos_embed
        checkpointing = self.grad_checkpointing and self.training
        skips = []
        for block in self.in_blocks:
            x = run_blocks([block], x, checkpointing=checkpointing)
            skips.append(x)
        x = run_blocks([self.mid_block], x, checkpointing=checkpointing)
        for block, merge in zip(self.out_blocks, self.skip_linears, strict=True):
            x = merge(torch.cat([x, skips.pop()], dim=-1))
            x = run_blocks([block], x, checkpointing=checkpointing)
        patches = self.decoder_pred(self.norm(x))[:, self.extras :]
        video = unpatchify(patches, (1, self.patch_size, self.patch_size), self.grid)
        if self.final_conv is not None:
            video = self.final_conv(video.flatten(0, 1)).unflatten(0, video.shape[:2])
        return video

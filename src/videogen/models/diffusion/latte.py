"""Latte: a latent diffusion transformer for video (Ma et al. 2024), the paper's four variants.

Video latents (B, T, C, H, W) are cut into per-frame patches (or tubelets), every token gets a
fixed 2D sine-cosine code of its place in the frame, and the blocks alternate attention within
each frame (spatial) and across frames at each place (temporal). They are DiT blocks: the
conditioning vector c = embed(timestep) + embed(class) sets each block's shifts, scales and gates
(adaLN-Zero, so a new block is the identity). The variants are ViViT's Models 1-4 with that
conditioning:

    interleaved                V1: spatial and temporal blocks alternate (the paper's choice).
    late_fusion                V2: all spatial blocks, then all temporal blocks.
    factorised_self_attention  V3: each block does spatial MSA, temporal MSA, then its MLP.
    factorised_dot_product     V4: half of each block's heads attend over space, half over time.

`depth` counts blocks (V1 and V2: spatial plus temporal, so it must be even). The temporal
position code is computed for the clip's actual frame count (sine-cosine, added before the first
temporal attention) or given by rotary codes inside the temporal attention (`temporal_position:
rope`). With `conditioning: tokens` the timestep and class are instead extra tokens of every
frame (U-ViT style) and the blocks are unconditioned. `learn_sigma` doubles the output channels
(the second half: the variance interpolation of Improved DDPM).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from einops import rearrange
from torch import nn

from videogen.errors import ConfigError
from videogen.models.layers import (
    Block,
    ConditionedOutput,
    FactorisedDotProductAttention,
    FactorisedSelfAttentionBlock,
    LabelEmbedding,
    TimestepEmbedding,
    TubeletEmbedding,
    check_patch_grid,
    init_weights,
    run_blocks,
    sincos_1d,
    sincos_2d,
    unpatchify,
)

VARIANTS = ("interleaved", "late_fusion", "factorised_self_attention", "factorised_dot_product")
CONDITIONINGS = ("adaln", "tokens")
TEMPORAL_POSITIONS = ("sincos", "rope")
# depth (spatial + temporal blocks), width, heads (Latte's table, after DiT's).
SIZES = {"S": (12, 384, 6), "B": (12, 768, 12), "L": (24, 1024, 16), "XL": (28, 1152, 16)}


def pair(size: int | Sequence[int]) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def named_dims(
    table: dict[str, tuple[int, int, int]],
    size: str | None,
    depth: int | None,
    embed_dim: int | None,
    num_heads: int | None,
) -> tuple[int, int, int]:
    """(depth, width, heads) of the named `size` in `table`, each replaced by an explicit value
    given; with no size, all three must be given."""
    if size is not None and size not in table:
        raise ConfigError(f"model.net.size={size!r} is not one of {', '.join(table)}.")
    named = table[size] if size is not None else (None, None, None)
    dims = [
        given if given is not None else default
        for given, default in zip((depth, embed_dim, num_heads), named, strict=True)
    ]
    if None in dims:
        raise ConfigError(
            "model.net.size is null, so give model.net.depth, embed_dim and num_heads "
            f"(or a size: {', '.join(table)})."
        )
    return int(dims[0]), int(dims[1]), int(dims[2])


class Latte(nn.Module):
    """Latte video diffusion transformer: (x_t (B, T, C, H, W), t (B,), labels (B,) or None)
    -> the noise prediction (B, T, C or 2C, H, W). See the module doc for the options."""

    def __init__(
        self,
        num_frames: int,
        img_size: int | Sequence[int],
        in_channels: int = 4,
        patch_size: int = 2,
        tubelet_frames: int = 1,
        size: str | None = "XL",
        embed_dim: int | None = None,
        depth: int | None = None,
        num_heads: int | None = None,
        mlp_ratio: float = 4.0,
        variant: str = "interleaved",
        num_classes: int = 0,
        learn_sigma: bool = True,
        conditioning: str = "adaln",
        temporal_position: str = "sincos",
        qkv_bias: bool = True,
        grad_checkpointing: bool = False,
    ) -> None:
        super().__init__()
        depth, embed_dim, num_heads = named_dims(SIZES, size, depth, embed_dim, num_heads)
        for key, value, choices in (
            ("variant", variant, VARIANTS),
            ("conditioning", conditioning, CONDITIONINGS),
            ("temporal_position", temporal_position, TEMPORAL_POSITIONS),
        ):
            if value not in choices:
                raise ConfigError(f"model.net.{key}={value!r} is not one of {', '.join(choices)}.")
        if variant in ("interleaved", "late_fusion") and depth % 2:
            raise ConfigError(
                f"model.net.depth={depth} is odd: the {variant} variant pairs each spatial block "
                "with a temporal one, so give an even depth."
            )
        if variant == "factorised_dot_product" and temporal_position == "rope":
            raise ConfigError(
                "temporal_position=rope is not available with variant=factorised_dot_product "
                "(its heads mix space and time in one attention): use sincos."
            )
        height, width = pair(img_size)
        check_patch_grid(
            num_frames,
            height,
            width,
            (tubelet_frames, patch_size, patch_size),
            "model.net.tubelet_frames / patch_size",
        )
        self.num_frames = num_frames
        self.img_size = (height, width)
        self.in_channels = in_channels
        self.out_channels = in_channels * (2 if learn_sigma else 1)
        self.learn_sigma = learn_sigma
        self.num_classes = num_classes
        self.variant = variant
        self.conditioning = conditioning
        self.temporal_position = temporal_position
        self.patch = (tubelet_frames, patch_size, patch_size)
        self.grad_checkpointing = grad_checkpointing

        self.patch_embed = TubeletEmbedding(in_channels, embed_dim, self.patch)
        self.t_embedder = TimestepEmbedding(embed_dim)
        self.y_embedder = LabelEmbedding(num_classes, embed_dim) if num_classes > 0 else None

        cond_dim = embed_dim if conditioning == "adaln" else None
        options = dict(mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, cond_dim=cond_dim)
        rope = temporal_position == "rope"
        if variant == "factorised_self_attention":
            blocks = [
                FactorisedSelfAttentionBlock(
                    embed_dim, num_heads, temporal_first=False, rope=rope, **options
                )
                for _ in range(depth)
            ]
            kinds = ["factorised"] * depth
        elif variant == "factorised_dot_product":
            blocks = [
                Block(embed_dim, num_heads, attention=FactorisedDotProductAttention, **options)
                for _ in range(depth)
            ]
            kinds = ["factorised"] * depth
        else:
            half = depth // 2
            kinds = (
                ["spatial", "temporal"] * half
                if variant == "interleaved"
                else ["spatial"] * half + ["temporal"] * half
            )
            blocks = [
                Block(embed_dim, num_heads, rope=rope and kind == "temporal", **options)
                for kind in kinds
            ]
        self.blocks = nn.ModuleList(blocks)
        self.block_kinds = kinds
        out_dim = tubelet_frames * patch_size * patch_size * self.out_channels
        if conditioning == "adaln":
            self.final_layer = ConditionedOutput(embed_dim, out_dim, embed_dim)
        else:
            self.final_layer = nn.Sequential(
                nn.LayerNorm(embed_dim, eps=1e-6), nn.Linear(embed_dim, out_dim)
            )
        self.init_weights()

    def init_weights(self) -> None:
        """DiT's initialisation (models/layers/init.py `dit`); the token-conditioned output
        layer starts at zero like the adaLN one."""
        init_weights(self, "dit")
        if isinstance(self.final_layer, nn.Sequential):
            nn.init.zeros_(self.final_layer[1].weight)
            nn.init.zeros_(self.final_layer[1].bias)

    @property
    def null_label(self) -> int | None:
        """The class index that means "no class" (classifier-free guidance), or None."""
        return None if self.y_embedder is None else self.y_embedder.null_label

    def condition(self, timesteps: torch.Tensor, labels: torch.Tensor | None) -> list[torch.Tensor]:
        """The conditioning embeddings (B, D): the timestep's, then the class's if any (a
        class-conditional model given no labels samples the null class)."""
        parts = [self.t_embedder(timesteps)]
        if self.y_embedder is not None:
            if labels is None:
                labels = torch.full_like(timesteps, self.y_embedder.null_label, dtype=torch.long)
            parts.append(self.y_embedder(labels))
        return parts

    def check_input(self, x: torch.Tensor) -> None:
        t, p, _ = self.patch
        if x.ndim != 5 or x.shape[2] != self.in_channels:
            raise ValueError(
                f"Latte takes (B, T, {self.in_channels}, H, W) inputs, got {tuple(x.shape)}"
            )
        if x.shape[1] % t or x.shape[3] % p or x.shape[4] % p:
            raise ConfigError(
                f"a clip of {x.shape[1]} frames at {x.shape[3]}x{x.shape[4]} does not divide "
                f"into {t}x{p}x{p} patches: change the clip size or the patch size."
            )

    def forward(
        self, x: torch.Tensor, timesteps: torch.Tensor, labels: torch.Tensor | None = None
    ) -> torch.Tensor:
        self.check_input(x)
        frames = x.shape[1] // self.patch[0]
        rows, cols = x.shape[3] // self.patch[1], x.shape[4] // self.patch[2]
        tokens = self.patch_embed(x)  # B, T', S, D
        dim = tokens.shape[-1]
        tokens = tokens + sincos_2d(rows, cols, dim).to(tokens).flatten(0, 1)
        parts = self.condition(timesteps, labels)
        extra = 0
        if self.conditioning == "adaln":
            cond = sum(parts[1:], parts[0])
        else:
            # The timestep and class are tokens in every frame, in front of its patches.
            cond = None
            extra = len(parts)
            extras = torch.stack(parts, dim=1).unsqueeze(1).expand(-1, frames, -1, -1)
            tokens = torch.cat([extras.to(tokens.dtype), tokens], dim=2)
        grid = (frames, extra + rows * cols)
        x = rearrange(tokens, "b t s d -> b (t s) d")
        temporal_code = (
            sincos_1d(frames, dim).to(x)[:, None].expand(-1, grid[1], -1).flatten(0, 1)
            if self.temporal_position == "sincos"
            else None
        )
        if temporal_code is not None and self.block_kinds[0] == "factorised":
            x = x + temporal_code
            temporal_code = None
        for block, kind in zip(self.blocks, self.block_kinds, strict=True):
            if kind == "temporal" and temporal_code is not None:
                x = x + temporal_code  # before the first temporal attention only
                temporal_code = None
            x = self.run_block(block, kind, x, grid, cond)
        if extra:
            x = rearrange(x, "b (t s) d -> b t s d", t=frames)[:, :, extra:].flatten(1, 2)
        out = self.final_layer(x, cond) if cond is not None else self.final_layer(x)
        return unpatchify(out, self.patch, (frames, rows, cols))

    def run_block(
        self,
        block: nn.Module,
        kind: str,
        x: torch.Tensor,
        grid: tuple[int, int],
        cond: torch.Tensor | None,
    ) -> torch.Tensor:
        """One block on the time-major tokens (B, T*S, D): within frames, across frames, or
        (factorised) both; the conditioning vector follows the tokens it belongs to."""
        frames, places = grid
        checkpointing = self.grad_checkpointing and self.training
        if kind == "factorised":
            return run_blocks([block], x, grid, cond, checkpointing=checkpointing)
        if kind == "spatial":
            y = rearrange(x, "b (t s) d -> (b t) s d", t=frames)
            c = None if cond is None else cond.repeat_interleave(frames, dim=0)
            y = run_blocks([block], y, None, c, checkpointing=checkpointing)
            return rearrange(y, "(b t) s d -> b (t s) d", t=frames)
        y = rearrange(x, "b (t s) d -> (b s) t d", t=frames)
        c = None if cond is None else cond.repeat_interleave(places, dim=0)
        y = run_blocks([block], y, None, c, checkpointing=checkpointing)
        return rearrange(y, "(b s) t d -> b (t s) d", s=places)

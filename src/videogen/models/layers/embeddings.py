"""Embeddings: frames or clips to tokens and back, sine-cosine position codes computed for any
size, and diffusion timestep embeddings."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from einops import rearrange
from torch import nn

from videogen.errors import ConfigError


def check_patch_grid(
    num_frames: int, height: int, width: int, patch: Sequence[int], patch_key: str
) -> None:
    """Refuse clips that do not divide into (t, h, w) patches, naming the data keys that do not
    fit and `patch_key`, the model setting of the patch size."""
    t, h, w = (int(s) for s in patch)
    misfits = [
        f"data.{key}={size} is not a multiple of {step}"
        for key, size, step in (
            ("num_frames", num_frames, t),
            ("height", height, h),
            ("width", width, w),
        )
        if size % step
    ]
    if misfits:
        raise ConfigError(
            f"clips do not divide into {t}x{h}x{w} patches ({patch_key}) "
            f"({', '.join(misfits)}): change those data sizes or the patch size."
        )


class PatchEmbedding(nn.Module):
    """Non-overlapping p x p patches of images (N, C, H, W) -> tokens (N, H/p * W/p, D)."""

    def __init__(self, in_channels: int, embed_dim: int, patch_size: int) -> None:
        super().__init__()
        self.patch_size = int(patch_size)
        self.proj = nn.Conv2d(in_channels, embed_dim, self.patch_size, stride=self.patch_size)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        # Contiguous: elementwise ops keep their first input's layout, so a transposed view here
        # would carry through the residual stream and make every LayerNorm copy its input.
        return self.proj(images).flatten(2).transpose(1, 2).contiguous()


class TubeletEmbedding(nn.Module):
    """Non-overlapping (t, h, w) tubelets -> tokens (B, T/t, H/h * W/w, D) with a Conv3d."""

    def __init__(self, in_channels: int, embed_dim: int, tubelet_size: Sequence[int]) -> None:
        super().__init__()
        self.tubelet_size = tuple(int(s) for s in tubelet_size)
        self.proj = nn.Conv3d(
            in_channels, embed_dim, kernel_size=self.tubelet_size, stride=self.tubelet_size
        )

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        x = self.proj(video.transpose(1, 2))  # B, D, T', H', W'
        # Contiguous for the reason given in PatchEmbedding.forward.
        return rearrange(x, "b d t h w -> b t (h w) d").contiguous()


def unpatchify(
    tokens: torch.Tensor, patch_size: Sequence[int], grid: Sequence[int]
) -> torch.Tensor:
    """Tokens (B, T'*H'*W', t*h*w*C) back to a video (B, T'*t, C, H'*h, W'*w).

    The inverse of cutting a video into (t, h, w) tubelets on a (T', H', W') grid, each token
    holding its tubelet's values in (t, h, w, C) order.
    """
    t, h, w = (int(s) for s in patch_size)
    frames, rows, cols = (int(s) for s in grid)
    return rearrange(
        tokens,
        "b (gt gh gw) (t h w c) -> b (gt t) c (gh h) (gw w)",
        gt=frames,
        gh=rows,
        gw=cols,
        t=t,
        h=h,
        w=w,
    )


def sincos_1d(length: int, dim: int, offset: int = 0) -> torch.Tensor:
    """Transformer sine/cosine code of positions offset..offset+length-1 -> (length, dim).

    Even channels hold the sines, odd channels the cosines (Vaswani et al.). Computed for any
    length, so a model is not tied to the clip length it was built for.
    """
    position = torch.arange(offset, offset + length, dtype=torch.float32).unsqueeze(1)
    frequency = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    code = torch.zeros(length, dim)
    code[:, 0::2] = torch.sin(position * frequency)
    code[:, 1::2] = torch.cos(position * frequency[: dim // 2])
    return code


def sincos_2d(height: int, width: int, dim: int) -> torch.Tensor:
    """2D code: the first half of the channels encode the row, the second half the column
    -> (height, width, dim)."""
    rows = sincos_1d(height, dim // 2)[:, None, :].expand(height, width, dim // 2)
    cols = sincos_1d(width, dim - dim // 2)[None, :, :].expand(height, width, -1)
    return torch.cat([rows, cols], dim=-1)


def timestep_features(
    timesteps: torch.Tensor, dim: int, max_period: float = 10000.0
) -> torch.Tensor:
    """Sinusoidal features (B, dim) of (possibly fractional) diffusion timesteps (B,).

    [cos(t * f_i), sin(t * f_i)] with frequencies f_i = max_period^(-i / (dim / 2)), as DiT and
    Latte compute them; computed in float32 whatever the model's precision.
    """
    half = dim // 2
    frequencies = torch.exp(
        -math.log(max_period)
        * torch.arange(half, dtype=torch.float32, device=timesteps.device)
        / half
    )
    angles = timesteps.float().unsqueeze(1) * frequencies.unsqueeze(0)
    features = torch.cat([torch.cos(angles), torch.sin(angles)], dim=1)
    if dim % 2:
        features = torch.cat([features, torch.zeros_like(features[:, :1])], dim=1)
    return features


class TimestepEmbedding(nn.Module):
    """Diffusion timesteps (B,) -> conditioning vectors (B, dim): sinusoidal features, then an MLP."""

    def __init__(self, dim: int, frequency_dim: int = 256) -> None:
        super().__init__()
        self.frequency_dim = frequency_dim
        self.mlp = nn.Sequential(nn.Linear(frequency_dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, timesteps: torch.Tensor) -> torch.Tensor:
        features = timestep_features(timesteps, self.frequency_dim)
        return self.mlp(features.to(self.mlp[0].weight.dtype))


class LabelEmbedding(nn.Module):
    """Class labels (B,) -> vectors (B, dim), with one more row for the "null" class (index
    `num_classes`) that classifier-free guidance trains on and samples against."""

    def __init__(self, num_classes: int, dim: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.embedding_table = nn.Embedding(num_classes + 1, dim)

    @property
    def null_label(self) -> int:
        return self.num_classes

    def forward(self, labels: torch.Tensor) -> torch.Tensor:
        return self.embedding_table(labels)

"""VidHRFormer: the transformer blocks VPTR runs on autoencoder features (B, T, H, W, D).

Each block attends locally in space (non-overlapping windows of the feature map, with a 2D
sine position code or a learned relative-position bias), mixes neighbouring windows with a
depth-wise conv FFN, then attends along time per feature-map position (1D sine position code,
optionally causal) and ends with an MLP. All attention goes through
`F.scaled_dot_product_attention`. Tensors are channels-last: (B, T, H, W, D).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.layers import DropPath
from torch import nn

from videogen.models.layers import CrossAttention, FrameLayerNorm, KeyValueCache, Mlp, sincos_2d

# The width every attention here splits into heads is the autoencoder's feature size.
WIDTH_KEY = "the autoencoder's feature_dim"


class WindowAttention(nn.Module):
    """Self-attention inside non-overlapping `window_size` x `window_size` windows of each frame.

    Position: a fixed 2D sine code added to queries and keys, or (`relative_position=True`)
    a learned bias per head and relative offset, as in Swin / HRFormer.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window_size: int,
        drop_rate: float = 0.0,
        relative_position: bool = False,
    ) -> None:
        super().__init__()
        self.window_size = window_size
        self.attention = CrossAttention(dim, num_heads, drop_rate, width_key=WIDTH_KEY)
        self.relative_position = relative_position
        if relative_position:
            span = 2 * window_size - 1
            self.relative_bias = nn.Parameter(torch.zeros(span * span, num_heads))
            nn.init.trunc_normal_(self.relative_bias, std=0.02)
            coords = torch.stack(
                torch.meshgrid(torch.arange(window_size), torch.arange(window_size), indexing="ij")
            ).flatten(1)
            offsets = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + window_size - 1
            self.register_buffer(
                "relative_index", offsets[..., 0] * span + offsets[..., 1], persistent=False
            )
        else:
            self.register_buffer(
                "position",
                sincos_2d(window_size, window_size, dim).flatten(0, 1),
                persistent=False,
            )

    def no_weight_decay(self) -> set[str]:
        """Parameters that take no weight decay (timm convention): the relative-position bias."""
        return {"relative_bias"} if self.relative_position else set()

    def partition(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, ...]]:
        """(N, H, W, D) -> windows (N * nh * nw, w * w, D), zero-padding H and W up to the window."""
        n, h, w, d = x.shape
        size = self.window_size
        pad_h, pad_w = -h % size, -w % size
        if pad_h or pad_w:
            x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
        nh, nw = (h + pad_h) // size, (w + pad_w) // size
        windows = x.view(n, nh, size, nw, size, d).transpose(2, 3).reshape(-1, size * size, d)
        return windows, (n, h, w, nh, nw)

    def merge(self, windows: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
        n, h, w, nh, nw = shape
        size = self.window_size
        x = (
            windows.view(n, nh, nw, size, size, -1)
            .transpose(2, 3)
            .reshape(n, nh * size, nw * size, -1)
        )
        return x[:, :h, :w]

    def forward(
        self,
        x: torch.Tensor,
        query_position: torch.Tensor | None = None,
        value: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """x (B, T, H, W, D) -> (B, T, H, W, D).

        `query_position` (T, H, W, D) is added to queries and keys (NAR's learned queries);
        `value` defaults to `x`.
        """
        batch, frames = x.shape[:2]
        value = x if value is None else value
        keys = x if query_position is None else x + query_position
        windows, shape = self.partition(keys.flatten(0, 1))
        value_windows, _ = self.partition(value.flatten(0, 1))
        bias = None
        if self.relative_position:
            bias = self.relative_bias[self.relative_index].permute(2, 0, 1).unsqueeze(0)
            bias = bias.to(windows.dtype)
        else:
            windows = windows + self.position.to(windows.dtype)
        out = self.attention(windows, windows, value_windows, bias=bias)
        return self.merge(out, shape).unflatten(0, (batch, frames))


class ConvFFN(nn.Module):
    """HRFormer's conv feed-forward: 1x1 up, 3x3 depth-wise, 1x1 down, each normed and GELU.

    `norm="batch"` (NAR encoder) uses BatchNorm; `norm="frame"` (FAR, NAR decoder) a per-frame LayerNorm over
    (C, H, W), because BatchNorm's batch statistics would let future frames leak into the past.
    """

    def __init__(
        self,
        dim: int,
        hidden_dim: int,
        feature_size: tuple[int, int],
        norm: str = "batch",
        drop_rate: float = 0.0,
    ) -> None:
        super().__init__()
        if norm not in ("batch", "frame"):
            raise ValueError(f"ConvFFN norm must be 'batch' or 'frame', got {norm!r}.")

        def make_norm(channels: int) -> nn.Module:
            if norm == "batch":
                return nn.BatchNorm2d(channels)
            return FrameLayerNorm(channels, feature_size)

        self.layers = nn.Sequential(
            nn.Conv2d(dim, hidden_dim, 1),
            make_norm(hidden_dim),
            nn.GELU(),
            nn.Conv2d(hidden_dim, hidden_dim, 3, padding=1, groups=hidden_dim),
            make_norm(hidden_dim),
            nn.GELU(),
            nn.Dropout(drop_rate),
            nn.Conv2d(hidden_dim, dim, 1),
            make_norm(dim),
            nn.GELU(),
            nn.Dropout(drop_rate),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch = x.shape[0]
        frames = x.flatten(0, 1).permute(0, 3, 1, 2)
        out = self.layers(frames).permute(0, 2, 3, 1)
        return out.unflatten(0, (batch, -1))


def per_position(x: torch.Tensor) -> torch.Tensor:
    """(B, T, H, W, D) -> (B * H * W, T, D): one temporal sequence per feature-map position."""
    return x.permute(0, 2, 3, 1, 4).flatten(0, 2)


def per_frame(x: torch.Tensor, batch: int, height: int, width: int) -> torch.Tensor:
    """Inverse of `per_position`."""
    return x.unflatten(0, (batch, height, width)).permute(0, 3, 1, 2, 4)


class VidHRFormerBlock(nn.Module):
    """Encoder block: window attention, conv FFN, temporal attention (optionally causal), MLP.

    Pre-norm residuals throughout; `temporal_position` (T, D) is added to temporal queries/keys.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        feature_size: tuple[int, int],
        window_size: int = 4,
        mlp_ratio: float = 4.0,
        drop_rate: float = 0.1,
        drop_path_rate: float = 0.1,
        relative_position: bool = False,
        causal: bool = False,
    ) -> None:
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.causal = causal
        self.norm1 = nn.LayerNorm(dim)
        self.spatial_attention = WindowAttention(
            dim, num_heads, window_size, drop_rate, relative_position
        )
        self.norm2 = nn.LayerNorm(dim)
        self.conv_ffn = ConvFFN(
            dim, hidden, feature_size, "frame" if causal else "batch", drop_rate
        )
        self.norm3 = nn.LayerNorm(dim)
        self.temporal_attention = CrossAttention(dim, num_heads, drop_rate, width_key=WIDTH_KEY)
        self.norm4 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, hidden, drop_rate, output_dropout=False)
        self.drop_path = DropPath(drop_path_rate) if drop_path_rate > 0 else nn.Identity()

    def forward(
        self,
        x: torch.Tensor,
        temporal_position: torch.Tensor,
        cache: KeyValueCache | None = None,
    ) -> torch.Tensor:
        """x (B, T, H, W, D), `temporal_position` (T, D) -> (B, T, H, W, D).

        With a `cache` (causal blocks only) x holds the frames after those already cached, and
        their temporal attention also sees the cached frames: everything else in the block is
        per frame, so the output equals that of the whole sequence at these frames.
        """
        batch, _, height, width, _ = x.shape
        x = x + self.drop_path(self.spatial_attention(self.norm1(x)))
        x = x + self.drop_path(self.conv_ffn(self.norm2(x)))
        y = per_position(self.norm3(x))
        keys = y + temporal_position
        y = self.temporal_attention(keys, keys, y, causal=self.causal, cache=cache)
        x = x + self.drop_path(per_frame(y, batch, height, width))
        return x + self.drop_path(self.mlp(self.norm4(x)))


class VidHRFormerDecoderBlock(nn.Module):
    """NAR decoder block: the encoder block's four steps on the future queries, then temporal
    encoder-decoder attention to the encoded past and a second conv FFN."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        feature_size: tuple[int, int],
        window_size: int = 4,
        mlp_ratio: float = 4.0,
        drop_rate: float = 0.1,
        drop_path_rate: float = 0.1,
        relative_position: bool = False,
    ) -> None:
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.norm1 = nn.LayerNorm(dim)
        self.spatial_attention = WindowAttention(
            dim, num_heads, window_size, drop_rate, relative_position
        )
        self.norm2 = nn.LayerNorm(dim)
        # VPTR's decoder normalises its conv FFNs per frame, as FAR does (and unlike its encoder).
        self.conv_ffn = ConvFFN(dim, hidden, feature_size, "frame", drop_rate)
        self.norm3 = nn.LayerNorm(dim)
        self.temporal_attention = CrossAttention(dim, num_heads, drop_rate, width_key=WIDTH_KEY)
        self.norm4 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, hidden, drop_rate, output_dropout=False)
        self.norm5 = nn.LayerNorm(dim)
        self.cross_attention = CrossAttention(dim, num_heads, drop_rate, width_key=WIDTH_KEY)
        self.norm6 = nn.LayerNorm(dim)
        self.cross_conv_ffn = ConvFFN(dim, hidden, feature_size, "frame", drop_rate)
        self.drop_path = DropPath(drop_path_rate) if drop_path_rate > 0 else nn.Identity()

    def forward(
        self,
        target: torch.Tensor,
        queries: torch.Tensor,
        memory: torch.Tensor,
        future_position: torch.Tensor,
        past_position: torch.Tensor,
    ) -> torch.Tensor:
        """target (B, Tf, H, W, D), queries (Tf, H, W, D), memory (B, Tp, H, W, D)."""
        batch, _, height, width, _ = target.shape
        normed = self.norm1(target)
        target = target + self.drop_path(
            self.spatial_attention(normed, query_position=queries, value=normed)
        )
        target = target + self.drop_path(self.conv_ffn(self.norm2(target)))
        y = per_position(self.norm3(target))
        keys = y + future_position
        y = self.temporal_attention(keys, keys, y)
        target = target + self.drop_path(per_frame(y, batch, height, width))
        target = target + self.drop_path(self.mlp(self.norm4(target)))

        query = per_position(self.norm5(target) + queries) + future_position
        past = per_position(memory)
        y = self.cross_attention(query, past + past_position, past)
        target = target + self.drop_path(per_frame(y, batch, height, width))
        return target + self.drop_path(self.cross_conv_ffn(self.norm6(target)))

"""Transformer building blocks shared by the video models.

Parameter names follow timm's VisionTransformer (`norm1`, `attn.qkv`, `attn.proj`, `norm2`,
`mlp.fc1`, `mlp.fc2`) so that ViT checkpoints load into them key for key. Attention always
goes through `F.scaled_dot_product_attention` (flash / memory-efficient kernels on GPU).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from timm.layers import DropPath
from torch import nn

# (number of frames or temporal tokens, number of spatial tokens per frame)
Grid = tuple[int, int]


class Attention(nn.Module):
    """Multi-head self-attention over a token sequence (B, N, D)."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"embed dim {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.attn_drop = attn_drop
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def split_heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(B, N, D) -> q, k, v each (B, heads, N, head_dim); qkv rows are stacked [q; k; v]."""
        qkv = rearrange(self.qkv(x), "b n (three h d) -> three b h n d", three=3, h=self.num_heads)
        return qkv[0], qkv[1], qkv[2]

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return F.scaled_dot_product_attention(
            q, k, v, dropout_p=self.attn_drop if self.training else 0.0
        )

    def forward(self, x: torch.Tensor, grid: Grid | None = None) -> torch.Tensor:
        q, k, v = self.split_heads(x)
        out = rearrange(self.attend(q, k, v), "b h n d -> b n (h d)")
        return self.proj_drop(self.proj(out))


class FactorisedDotProductAttention(Attention):
    """ViViT Model 4: half of the heads attend within each frame, the other half across time.

    Same parameters as `Attention`, so ViT weights load directly. Tokens are time-major:
    (B, T*S, D) with the S spatial tokens of frame t at positions t*S .. t*S + S - 1.
    """

    def __init__(self, dim: int, num_heads: int, **kwargs) -> None:
        if num_heads % 2:
            raise ValueError(
                f"factorised dot-product attention needs an even head count, got {num_heads}"
            )
        super().__init__(dim, num_heads, **kwargs)

    def forward(self, x: torch.Tensor, grid: Grid | None = None) -> torch.Tensor:
        if grid is None:
            raise ValueError("factorised dot-product attention needs the (time, space) token grid")
        frames, tokens = grid
        q, k, v = self.split_heads(x)
        half = self.num_heads // 2

        def spatial(t: torch.Tensor) -> torch.Tensor:
            return rearrange(t[:, :half], "b h (t s) d -> (b t) h s d", t=frames)

        def temporal(t: torch.Tensor) -> torch.Tensor:
            return rearrange(t[:, half:], "b h (t s) d -> (b s) h t d", t=frames)

        out_s = rearrange(
            self.attend(spatial(q), spatial(k), spatial(v)), "(b t) h s d -> b h (t s) d", t=frames
        )
        out_t = rearrange(
            self.attend(temporal(q), temporal(k), temporal(v)),
            "(b s) h t d -> b h (t s) d",
            s=tokens,
        )
        out = rearrange(torch.cat([out_s, out_t], dim=1), "b h n d -> b n (h d)")
        return self.proj_drop(self.proj(out))


class Mlp(nn.Module):
    """Two-layer feed-forward network with GELU."""

    def __init__(self, dim: int, hidden_dim: int, drop: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.drop1 = nn.Dropout(drop)
        self.fc2 = nn.Linear(hidden_dim, dim)
        self.drop2 = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop2(self.fc2(self.drop1(self.act(self.fc1(x)))))


class Block(nn.Module):
    """Pre-norm transformer block: x + MSA(LN(x)), then x + MLP(LN(x)), with stochastic depth."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
        attention: type[Attention] = Attention,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = attention(
            dim, num_heads, qkv_bias=qkv_bias, attn_drop=attn_drop, proj_drop=drop
        )
        self.drop_path1 = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=drop)
        self.drop_path2 = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, grid: Grid | None = None) -> torch.Tensor:
        x = x + self.drop_path1(self.attn(self.norm1(x), grid))
        return x + self.drop_path2(self.mlp(self.norm2(x)))


class FactorisedSelfAttentionBlock(Block):
    """ViViT Model 3: temporal MSA, spatial MSA and MLP, each pre-norm with a residual.

    The spatial half keeps ViT's names (`norm1`, `attn`), so ViT weights load into it; the
    temporal MSA (`temporal_norm`, `temporal_attn`) is new. `temporal_first` sets the order.
    """

    def __init__(self, dim: int, num_heads: int, temporal_first: bool = True, **kwargs) -> None:
        super().__init__(dim, num_heads, **kwargs)
        self.temporal_first = temporal_first
        self.temporal_norm = nn.LayerNorm(dim, eps=1e-6)
        self.temporal_attn = Attention(
            dim,
            num_heads,
            qkv_bias=kwargs.get("qkv_bias", True),
            attn_drop=kwargs.get("attn_drop", 0.0),
            proj_drop=kwargs.get("drop", 0.0),
        )

    def temporal(self, x: torch.Tensor, grid: Grid) -> torch.Tensor:
        frames, tokens = grid
        y = rearrange(self.temporal_norm(x), "b (t s) d -> (b s) t d", t=frames)
        y = rearrange(self.temporal_attn(y), "(b s) t d -> b (t s) d", s=tokens)
        return x + self.drop_path1(y)

    def spatial(self, x: torch.Tensor, grid: Grid) -> torch.Tensor:
        frames, _ = grid
        y = rearrange(self.norm1(x), "b (t s) d -> (b t) s d", t=frames)
        y = rearrange(self.attn(y), "(b t) s d -> b (t s) d", t=frames)
        return x + self.drop_path1(y)

    def forward(self, x: torch.Tensor, grid: Grid | None = None) -> torch.Tensor:
        if grid is None:
            raise ValueError("factorised self-attention needs the (time, space) token grid")
        first, second = (
            (self.temporal, self.spatial) if self.temporal_first else (self.spatial, self.temporal)
        )
        x = second(first(x, grid), grid)
        return x + self.drop_path2(self.mlp(self.norm2(x)))

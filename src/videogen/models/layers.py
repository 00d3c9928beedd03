"""Transformer building blocks shared by the video models.

Parameter names follow timm's VisionTransformer (`norm1`, `attn.qkv`, `attn.proj`, `norm2`,
`mlp.fc1`, `mlp.fc2`) so that ViT checkpoints load into them key for key. Attention always
goes through `F.scaled_dot_product_attention` (flash / memory-efficient kernels on GPU).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

import torch
import torch.nn.functional as F
from einops import rearrange
from timm.layers import DropPath
from torch import nn
from torch.utils.checkpoint import checkpoint

from videogen.errors import ConfigError

# (number of frames or temporal tokens, number of spatial tokens per frame)
Grid = tuple[int, int]


def batchnorms(module: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """The BatchNorm layers of `module` that keep running statistics."""
    return [
        m
        for m in module.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats
    ]


@contextmanager
def kept_batchnorm_statistics(module: nn.Module) -> Iterator[None]:
    """Undo, on exit, any change to the running statistics of `module`'s BatchNorm layers."""
    buffers = [
        buffer
        for norm in batchnorms(module)
        for buffer in (norm.running_mean, norm.running_var, norm.num_batches_tracked)
    ]
    saved = [buffer.clone() for buffer in buffers]
    try:
        yield
    finally:
        for buffer, value in zip(buffers, saved, strict=True):
            buffer.copy_(value)


def recompute_options(block: nn.Module) -> dict[str, Any]:
    """`checkpoint` options for `block`: its BatchNorm running statistics are put back after the
    backward pass's recompute, so that they are updated once per step, as without checkpointing.

    Compiled, the recompute is part of a functional backward graph that updates no statistics
    (and dynamo cannot trace a `context_fn`), so nothing is needed.
    """
    if not batchnorms(block) or torch.compiler.is_compiling():
        return {}
    return {"context_fn": lambda: (nullcontext(), kept_batchnorm_statistics(block))}


def run_blocks(
    blocks: Iterable[nn.Module], x: torch.Tensor, *args: Any, checkpointing: bool = False
) -> torch.Tensor:
    """`x = block(x, *args)` for each block in turn.

    With `checkpointing` (and gradients enabled), each block's activations are not kept for the
    backward pass but recomputed there: less memory for about one more forward pass. Gradients
    are those of the plain run, dropout included (its random state is replayed), and so are
    BatchNorm running statistics.
    """
    for block in blocks:
        if checkpointing and torch.is_grad_enabled():
            x = checkpoint(block, x, *args, use_reentrant=False, **recompute_options(block))
        else:
            x = block(x, *args)
    return x


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
            raise ConfigError(
                f"model.net.embed_dim={dim} is not divisible by model.net.num_heads={num_heads}: "
                "pick a head count that divides the width."
            )
        self.num_heads = num_heads
        self.attn_drop = attn_drop
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def split_heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(B, N, D) -> q, k, v each (B, heads, N, head_dim); qkv rows are stacked [q; k; v]."""
        qkv = rearrange(self.qkv(x), "b n (three h d) -> three b h n d", three=3, h=self.num_heads)
        # unbind, not qkv[0], qkv[1], qkv[2]: its backward stacks the three gradients in one
        # copy, where indexing would zero-fill and add three full-size buffers.
        q, k, v = qkv.unbind(0)
        return q, k, v

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return F.scaled_dot_product_attention(
            q, k, v, dropout_p=self.attn_drop if self.training else 0.0
        )

    def forward(self, x: torch.Tensor, grid: Grid | None = None) -> torch.Tensor:
        q, k, v = self.split_heads(x)
        out = rearrange(self.attend(q, k, v), "b h n d -> b n (h d)")
        return self.proj_drop(self.proj(out))

    def forward_query(self, query: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """The outputs (B, M, D) of the `query` tokens only, attending over all of `context`
        (B, N, D), with the same weights: the queries of the other tokens are not computed."""
        dim = self.proj.in_features
        weight, bias = self.qkv.weight, self.qkv.bias
        q = F.linear(query, weight[:dim], None if bias is None else bias[:dim])
        kv = F.linear(context, weight[dim:], None if bias is None else bias[dim:])
        q = rearrange(q, "b m (h d) -> b h m d", h=self.num_heads)
        k, v = rearrange(kv, "b n (two h d) -> two b h n d", two=2, h=self.num_heads).unbind(0)
        out = rearrange(self.attend(q, k, v), "b h m d -> b m (h d)")
        return self.proj_drop(self.proj(out))


class FactorisedDotProductAttention(Attention):
    """ViViT Model 4: half of the heads attend within each frame, the other half across time.

    Same parameters as `Attention`, so ViT weights load directly. Tokens are time-major:
    (B, T*S, D) with the S spatial tokens of frame t at positions t*S .. t*S + S - 1.
    """

    def __init__(self, dim: int, num_heads: int, **kwargs) -> None:
        if num_heads % 2:
            raise ConfigError(
                f"factorised dot-product attention splits the heads between space and time, so "
                f"model.net.num_heads must be even, got {num_heads}."
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

    def forward_first_token(self, x: torch.Tensor) -> torch.Tensor:
        """`forward(x)[:, :1]`, computing nothing else: the last block of an encoder read out
        at its CLS token needs keys and values of every token but the rest only for the CLS.
        Only for full self-attention (`Attention`), where tokens do not see a grid."""
        normed = self.norm1(x)
        first = x[:, :1] + self.drop_path1(self.attn.forward_query(normed[:, :1], normed))
        return first + self.drop_path2(self.mlp(self.norm2(first)))


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

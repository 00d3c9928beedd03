"""Attention: fused-qkv self-attention, ViViT's factorised dot-product attention, and attention
with separate query / key / value inputs (cross-attention, optionally causal or biased).

Every variant goes through `scaled_dot_product`: PyTorch's fused kernels (flash / memory-efficient
on a GPU), except for short sequences in half precision on the CPU. Token tensors are (B, N, D); a
video's tokens are time-major, (B, T*S, D).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from videogen.errors import ConfigError

# (number of frames or temporal tokens, number of spatial tokens per frame)
Grid = tuple[int, int]


# On the CPU, PyTorch's fused attention is slow on short sequences, where softmax(q k^T) v
# written out is faster. Measured with torch 2.14 on an AMD EPYC (2 threads), forward + backward:
# in bf16, 40.8 ms fused against 12.5 ms written out at 8 tokens and 100 against 17.5 ms at 64,
# the fused kernel ahead from 512 tokens; in fp32 (6 heads of 64, ~1M values per tensor), 22.7
# against 7.6 ms at 8 tokens, 13.2 against 8.9 at 32, 16.9 against 14.4 at 64, even at 128 and
# behind from 160. Factorised video attention (across frames, or over one frame's patches) is
# this short case. The fused kernel never holds the N x N scores, so it stays the default.
SHORT_SEQUENCE = {torch.bfloat16: 256, torch.float16: 256, torch.float32: 64}


def scaled_dot_product(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None = None,
    dropout_p: float = 0.0,
    causal: bool = False,
) -> torch.Tensor:
    """softmax(q k^T / sqrt(d) + mask) v over (..., N, d) tensors, as
    `F.scaled_dot_product_attention` (a boolean `mask` marks the keys that may be attended);
    written out where the fused kernel is slow (see SHORT_SEQUENCE)."""
    written_out = (
        q.device.type == "cpu"
        and k.shape[-2] <= SHORT_SEQUENCE.get(q.dtype, 0)
        and dropout_p == 0.0
    )
    if not written_out:
        return F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=dropout_p, is_causal=causal
        )
    scores = (q @ k.transpose(-2, -1)).float() * q.shape[-1] ** -0.5
    if causal:
        future = torch.ones(scores.shape[-2:], dtype=torch.bool, device=q.device).triu(1)
        scores = scores.masked_fill(future, float("-inf"))
    if mask is not None:
        scores = (
            scores.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else scores + mask
        )
    return scores.softmax(dim=-1).to(v.dtype) @ v


def check_heads(dim: int, num_heads: int, width_key: str) -> None:
    """Refuse a width that the heads do not divide, naming the config key of the width."""
    if num_heads < 1 or dim % num_heads:
        raise ConfigError(
            f"{width_key}={dim} is not divisible by model.net.num_heads={num_heads}: pick a head "
            "count that divides the width."
        )


def rotate_positions(x: torch.Tensor, base: float = 10000.0) -> torch.Tensor:
    """Rotary position embedding (RoPE, Su et al. 2021) of queries or keys (B, H, N, d): the
    channel pairs (i, i + d/2) of the token at position n turn by n * base^(-2i/d), so that
    q . k depends on the positions only through their difference. Computed for any N."""
    length, dim = x.shape[-2], x.shape[-1]
    half = dim // 2
    frequencies = base ** (-torch.arange(half, dtype=torch.float32, device=x.device) / half)
    angles = torch.arange(length, dtype=torch.float32, device=x.device)[:, None] * frequencies
    cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
    first, second = x[..., :half], x[..., half : 2 * half]
    rotated = torch.cat([first * cos - second * sin, first * sin + second * cos], dim=-1)
    return torch.cat([rotated, x[..., 2 * half :]], dim=-1)


class Attention(nn.Module):
    """Multi-head self-attention over a token sequence (B, N, D), one fused qkv projection.

    `rope`: queries and keys carry rotary codes of their position in the sequence (for
    attention over time, where the sequence is the frames).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        qkv_bias: bool = True,
        attn_drop_rate: float = 0.0,
        drop_rate: float = 0.0,
        width_key: str = "model.net.embed_dim",
        rope: bool = False,
    ) -> None:
        super().__init__()
        check_heads(dim, num_heads, width_key)
        self.num_heads = num_heads
        self.attn_drop_rate = attn_drop_rate
        self.rope = rope
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(drop_rate)

    def split_heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(B, N, D) -> q, k, v each (B, heads, N, head_dim); qkv rows are stacked [q; k; v]."""
        qkv = rearrange(self.qkv(x), "b n (three h d) -> three b h n d", three=3, h=self.num_heads)
        # unbind, not qkv[0], qkv[1], qkv[2]: its backward stacks the three gradients in one
        # copy, where indexing would zero-fill and add three full-size buffers.
        q, k, v = qkv.unbind(0)
        return q, k, v

    def attend(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = False
    ) -> torch.Tensor:
        dropout = self.attn_drop_rate if self.training else 0.0
        return scaled_dot_product(q, k, v, dropout_p=dropout, causal=causal)

    def forward(
        self, x: torch.Tensor, grid: Grid | None = None, causal: bool = False
    ) -> torch.Tensor:
        q, k, v = self.split_heads(x)
        if self.rope:
            q, k = rotate_positions(q), rotate_positions(k)
        out = rearrange(self.attend(q, k, v, causal), "b h n d -> b n (h d)")
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

    def forward(
        self, x: torch.Tensor, grid: Grid | None = None, causal: bool = False
    ) -> torch.Tensor:
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
            self.attend(temporal(q), temporal(k), temporal(v), causal),
            "(b s) h t d -> b h (t s) d",
            s=tokens,
        )
        out = rearrange(torch.cat([out_s, out_t], dim=1), "b h n d -> b n (h d)")
        return self.proj_drop(self.proj(out))


class CrossAttention(nn.Module):
    """Multi-head attention with separate query, key and value inputs and projections.

    For attention whose keys are not its values (VPTR adds position codes to queries and keys
    only) and for attending from one sequence to another; `bias` (added to the logits) and
    `causal` (each query sees keys up to its own position) are optional.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        attn_drop_rate: float = 0.0,
        width_key: str = "model.net.embed_dim",
    ) -> None:
        super().__init__()
        check_heads(dim, num_heads, width_key)
        self.num_heads = num_heads
        self.attn_drop_rate = attn_drop_rate
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)

    def split_heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.unflatten(-1, (self.num_heads, -1)).transpose(1, 2)

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        bias: torch.Tensor | None = None,
        causal: bool = False,
        cache: KeyValueCache | None = None,
    ) -> torch.Tensor:
        """(N, Lq, D), (N, Lk, D), (N, Lk, D) -> (N, Lq, D).

        With a `cache` (causal self-attention over a growing sequence, one entry per call), the
        projected keys and values are appended to those of the earlier calls and the queries
        attend to all of them, each up to its own position: the same outputs as one causal pass
        over the whole sequence, for the cost of the new positions only.
        """
        q = self.split_heads(self.q_proj(query))
        k = self.split_heads(self.k_proj(key))
        v = self.split_heads(self.v_proj(value))
        if cache is not None:
            seen = cache.length
            k, v = cache.append(k, v)
            # Query i sits at position seen + i and sees keys 0 .. seen + i.
            bias = torch.ones(q.shape[-2], k.shape[-2], dtype=torch.bool, device=q.device)
            bias = bias.tril(diagonal=seen)
            causal = False
        dropout = self.attn_drop_rate if self.training else 0.0
        out = scaled_dot_product(q, k, v, mask=bias, dropout_p=dropout, causal=causal)
        return self.out_proj(out.transpose(1, 2).flatten(2))


class KeyValueCache:
    """The projected keys and values one causal attention layer has seen so far, (N, h, L, d).

    Incremental decoding: each call of the layer appends its new positions' keys and values, so
    earlier positions are never recomputed. `clear()` starts a new sequence.
    """

    def __init__(self) -> None:
        self.keys: torch.Tensor | None = None
        self.values: torch.Tensor | None = None

    @property
    def length(self) -> int:
        """How many positions are cached."""
        return 0 if self.keys is None else self.keys.shape[-2]

    def append(self, keys: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Add new positions' keys and values; return all cached keys and values."""
        if self.keys is not None:
            keys = torch.cat([self.keys, keys], dim=-2)
            values = torch.cat([self.values, values], dim=-2)
        self.keys, self.values = keys, values
        return keys, values

    def clear(self) -> None:
        """Forget every cached position."""
        self.keys = self.values = None

"""Pre-norm transformer blocks: the standard block (optionally conditioned by adaLN-Zero) and
ViViT's factorised self-attention block.

Names follow timm's `Block` (`norm1`, `attn`, `norm2`, `mlp`), so ViT weights load into them.
"""

from __future__ import annotations

import torch
from einops import rearrange
from timm.layers import DropPath
from torch import nn

from videogen.models.layers.attention import Attention, Grid
from videogen.models.layers.mlp import Mlp


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN: `x * (1 + scale) + shift`, with (B, D) shift and scale broadcast over the tokens."""
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


class Block(nn.Module):
    """Pre-norm transformer block: x + MSA(LN(x)), then x + MLP(LN(x)), with stochastic depth.

    With `cond_dim`, the block is conditioned DiT-style (adaLN-Zero): a conditioning vector
    (B, cond_dim) gives each branch a shift and scale after its (affine-free) norm and a gate on
    its output. The gates start at zero, so a new conditioned block is the identity.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        attention: type[Attention] = Attention,
        cond_dim: int | None = None,
        rope: bool = False,
    ) -> None:
        super().__init__()
        affine = cond_dim is None  # adaLN supplies the scale and shift instead
        self.norm1 = nn.LayerNorm(dim, eps=1e-6, elementwise_affine=affine)
        self.attn = attention(
            dim,
            num_heads,
            qkv_bias=qkv_bias,
            attn_drop_rate=attn_drop_rate,
            drop_rate=drop_rate,
            **({"rope": True} if rope else {}),
        )
        self.drop_path1 = DropPath(drop_path_rate) if drop_path_rate > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=1e-6, elementwise_affine=affine)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop_rate=drop_rate)
        self.drop_path2 = DropPath(drop_path_rate) if drop_path_rate > 0 else nn.Identity()
        self.adaLN_modulation: nn.Sequential | None = None
        if cond_dim is not None:
            self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(cond_dim, 6 * dim))
            nn.init.zeros_(self.adaLN_modulation[1].weight)
            nn.init.zeros_(self.adaLN_modulation[1].bias)

    def forward(
        self, x: torch.Tensor, grid: Grid | None = None, cond: torch.Tensor | None = None
    ) -> torch.Tensor:
        if self.adaLN_modulation is None:
            x = x + self.drop_path1(self.attn(self.norm1(x), grid))
            return x + self.drop_path2(self.mlp(self.norm2(x)))
        if cond is None:
            raise ValueError("this block is conditioned (cond_dim is set): pass `cond`.")
        shift1, scale1, gate1, shift2, scale2, gate2 = self.adaLN_modulation(cond).chunk(6, dim=1)
        y = self.attn(modulate(self.norm1(x), shift1, scale1), grid)
        x = x + self.drop_path1(gate1.unsqueeze(1) * y)
        y = self.mlp(modulate(self.norm2(x), shift2, scale2))
        return x + self.drop_path2(gate2.unsqueeze(1) * y)

    def forward_first_token(self, x: torch.Tensor) -> torch.Tensor:
        """`forward(x)[:, :1]`, computing nothing else: the last block of an encoder read out
        at its CLS token needs keys and values of every token but the rest only for the CLS.
        Only for full self-attention (`Attention`) without conditioning."""
        normed = self.norm1(x)
        first = x[:, :1] + self.drop_path1(self.attn.forward_query(normed[:, :1], normed))
        return first + self.drop_path2(self.mlp(self.norm2(first)))


class FactorisedSelfAttentionBlock(Block):
    """ViViT Model 3 (and Latte's variant 3): temporal MSA, spatial MSA and MLP, each pre-norm
    with a residual.

    The spatial half keeps ViT's names (`norm1`, `attn`), so ViT weights load into it; the
    temporal MSA (`temporal_norm`, `temporal_attn`) is new. `temporal_first` sets the order.
    With `cond_dim`, each of the three branches is conditioned by adaLN-Zero (the temporal one
    through its own `temporal_modulation`), so a new block is the identity. `rope`: the temporal
    attention carries rotary codes of the frame index.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        temporal_first: bool = True,
        qkv_bias: bool = True,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        cond_dim: int | None = None,
        rope: bool = False,
        **kwargs,
    ) -> None:
        options = dict(qkv_bias=qkv_bias, drop_rate=drop_rate, attn_drop_rate=attn_drop_rate)
        super().__init__(dim, num_heads, **options, cond_dim=cond_dim, **kwargs)
        self.temporal_first = temporal_first
        self.temporal_norm = nn.LayerNorm(dim, eps=1e-6, elementwise_affine=cond_dim is None)
        self.temporal_attn = Attention(dim, num_heads, rope=rope, **options)
        self.temporal_modulation: nn.Sequential | None = None
        if cond_dim is not None:
            self.temporal_modulation = nn.Sequential(nn.SiLU(), nn.Linear(cond_dim, 3 * dim))
            nn.init.zeros_(self.temporal_modulation[1].weight)
            nn.init.zeros_(self.temporal_modulation[1].bias)

    def temporal(self, x: torch.Tensor, grid: Grid, cond: torch.Tensor | None) -> torch.Tensor:
        frames, tokens = grid
        y = self.temporal_norm(x)
        if self.temporal_modulation is not None:
            shift, scale, gate = self.temporal_modulation(cond).chunk(3, dim=1)
            y = modulate(y, shift, scale)
        y = rearrange(y, "b (t s) d -> (b s) t d", t=frames)
        y = rearrange(self.temporal_attn(y), "(b s) t d -> b (t s) d", s=tokens)
        if self.temporal_modulation is not None:
            y = gate.unsqueeze(1) * y
        return x + self.drop_path1(y)

    def spatial(
        self, x: torch.Tensor, grid: Grid, shift: torch.Tensor | None, scale: torch.Tensor | None
    ) -> torch.Tensor:
        frames, _ = grid
        y = self.norm1(x)
        if shift is not None:
            y = modulate(y, shift, scale)
        y = rearrange(y, "b (t s) d -> (b t) s d", t=frames)
        return rearrange(self.attn(y), "(b t) s d -> b (t s) d", t=frames)

    def forward(
        self, x: torch.Tensor, grid: Grid | None = None, cond: torch.Tensor | None = None
    ) -> torch.Tensor:
        if grid is None:
            raise ValueError("factorised self-attention needs the (time, space) token grid")
        if (cond is None) != (self.adaLN_modulation is None):
            raise ValueError(
                "pass `cond` to a conditioned factorised block (cond_dim set), and only to one."
            )
        shift1 = scale1 = gate1 = shift2 = scale2 = gate2 = None
        if self.adaLN_modulation is not None:
            shift1, scale1, gate1, shift2, scale2, gate2 = self.adaLN_modulation(cond).chunk(6, 1)

        def spatial(x: torch.Tensor) -> torch.Tensor:
            y = self.spatial(x, grid, shift1, scale1)
            return x + self.drop_path1(y if gate1 is None else gate1.unsqueeze(1) * y)

        if self.temporal_first:
            x = spatial(self.temporal(x, grid, cond))
        else:
            x = self.temporal(spatial(x), grid, cond)
        y = self.norm2(x)
        if shift2 is None:
            return x + self.drop_path2(self.mlp(y))
        y = self.mlp(modulate(y, shift2, scale2))
        return x + self.drop_path2(gate2.unsqueeze(1) * y)


class ConditionedOutput(nn.Module):
    """DiT's final layer: an affine-free LayerNorm modulated (adaLN) by the conditioning vector,
    then a linear map to `out_dim` values per token. Zero-initialised: a new model outputs 0."""

    def __init__(self, dim: int, out_dim: int, cond_dim: int) -> None:
        super().__init__()
        self.norm_final = nn.LayerNorm(dim, eps=1e-6, elementwise_affine=False)
        self.linear = nn.Linear(dim, out_dim)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(cond_dim, 2 * dim))
        for layer in (self.linear, self.adaLN_modulation[1]):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        shift, scale = self.adaLN_modulation(cond).chunk(2, dim=1)
        return self.linear(modulate(self.norm_final(x), shift, scale))

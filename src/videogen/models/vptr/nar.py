"""VPTR-NAR: encode the past once, then decode every future frame at once from learned queries.

The encoder is a stack of (non-causal) VidHRFormer blocks over the context features. The
decoder starts from zeros at the future positions; its learned queries (one per future frame
and feature-map position) act as position codes, and temporal encoder-decoder attention reads
the encoded past. Horizons longer than the number of queries are predicted block by block,
each block conditioned on the most recent frames.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from videogen.models.layers import run_blocks
from videogen.models.vptr.far import Refine
from videogen.models.vptr.vidhrformer import (
    VidHRFormerBlock,
    VidHRFormerDecoderBlock,
    init_transformer_weights,
    sine_position_1d,
)


class VPTRNAR(nn.Module):
    """Non-autoregressive transformer: context features (B, Tp, D, h, w) -> (B, Tf, D, h, w).

    `grad_checkpointing` recomputes each block's activations in the backward pass instead of
    keeping them (training only): less memory, the same gradients and BatchNorm statistics.
    """

    def __init__(
        self,
        feature_dim: int = 528,
        feature_size: tuple[int, int] | list[int] = (8, 8),
        encoder_depth: int = 4,
        decoder_depth: int = 8,
        num_heads: int = 8,
        window_size: int = 4,
        mlp_ratio: float = 4.0,
        dropout: float = 0.1,
        drop_path: float = 0.1,
        relative_position: bool = False,
        context_frames: int = 10,
        future_frames: int = 10,
        grad_checkpointing: bool = False,
    ) -> None:
        super().__init__()
        height, width = int(feature_size[0]), int(feature_size[1])
        self.feature_dim = feature_dim
        self.context_frames = context_frames
        self.future_frames = future_frames
        self.grad_checkpointing = grad_checkpointing
        options = dict(
            dim=feature_dim,
            num_heads=num_heads,
            feature_size=(height, width),
            window_size=window_size,
            mlp_ratio=mlp_ratio,
            dropout=dropout,
            drop_path=drop_path,
            relative_position=relative_position,
        )
        self.encoder = nn.ModuleList(VidHRFormerBlock(**options) for _ in range(encoder_depth))
        self.encoder_norm = nn.LayerNorm(feature_dim)
        self.decoder = nn.ModuleList(
            VidHRFormerDecoderBlock(**options) for _ in range(decoder_depth)
        )
        self.decoder_norm = nn.LayerNorm(feature_dim)
        init_transformer_weights(self)
        self.queries = nn.Parameter(torch.randn(future_frames, height, width, feature_dim))

    def forward(self, context: torch.Tensor, horizon: int | None = None) -> torch.Tensor:
        """Predict the next `horizon` (at most `future_frames`, the default) frames in one pass."""
        horizon = self.future_frames if horizon is None else horizon
        if not 0 < horizon <= self.future_frames:
            raise ValueError(
                f"one NAR pass predicts 1..{self.future_frames} frames, asked for {horizon}; "
                "use predict() for longer horizons."
            )
        memory = context.permute(0, 1, 3, 4, 2)
        past = context.shape[1]
        past_position = sine_position_1d(past, self.feature_dim).to(memory)
        future_position = sine_position_1d(horizon, self.feature_dim, offset=past).to(memory)
        checkpointing = self.grad_checkpointing and self.training
        memory = run_blocks(self.encoder, memory, past_position, checkpointing=checkpointing)
        memory = self.encoder_norm(memory)

        queries = self.queries[:horizon].to(memory)
        target = torch.zeros(
            memory.shape[0], *queries.shape, dtype=memory.dtype, device=memory.device
        )
        target = run_blocks(
            self.decoder,
            target,
            queries,
            memory,
            future_position,
            past_position,
            checkpointing=checkpointing,
        )
        return F.relu(self.decoder_norm(target)).permute(0, 1, 4, 2, 3)

    @torch.no_grad()
    def predict(
        self, context: torch.Tensor, horizon: int, refine: Refine | None = None
    ) -> torch.Tensor:
        """Predict `horizon` frames: one pass if the queries suffice, else block by block."""
        # Every pass sees at most the context length it was trained with.
        inputs = context[:, -self.context_frames :]
        predictions: list[torch.Tensor] = []
        remaining = horizon
        while remaining > 0:
            block = self(inputs, min(remaining, self.future_frames))
            predictions.append(block)
            remaining -= block.shape[1]
            if remaining > 0:
                fed_back = refine(block) if refine else block
                inputs = torch.cat([inputs, fed_back], dim=1)[:, -self.context_frames :]
        return torch.cat(predictions, dim=1)

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

from videogen.models.layers import init_weights, run_blocks, sincos_1d
from videogen.models.vptr.far import Refine
from videogen.models.vptr.vidhrformer import VidHRFormerBlock, VidHRFormerDecoderBlock


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
        drop_rate: float = 0.1,
        drop_path_rate: float = 0.1,
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
            drop_rate=drop_rate,
            drop_path_rate=drop_path_rate,
            relative_position=relative_position,
        )
        self.encoder = nn.ModuleList(VidHRFormerBlock(**options) for _ in range(encoder_depth))
        self.encoder_norm = nn.LayerNorm(feature_dim)
        self.decoder = nn.ModuleList(
            VidHRFormerDecoderBlock(**options) for _ in range(decoder_depth)
        )
        self.decoder_norm = nn.LayerNorm(feature_dim)
        init_weights(self, "xavier")
        self.queries = nn.Parameter(torch.randn(future_frames, height, width, feature_dim))

    def no_weight_decay(self) -> set[str]:
        """Parameters that take no weight decay: the learned queries (position codes of the
        future frames) and the windows' relative-position biases."""
        return {
            name
            for name, _ in self.named_parameters()
            if name == "queries" or name.endswith("relative_bias")
        }

    def teacher_forced(
        self,
        features: torch.Tensor,
        context: int,
        refine: Refine | None = None,
        feedback_passes: int = 0,
    ) -> tuple[torch.Tensor, int]:
        """Training outputs for a clip's features (B, T, D, h, w) and the index of the first
        frame they predict: the T - context future frames from the context, in one pass.

        NAR never feeds its predictions back, so `refine` and `feedback_passes` change nothing.
        """
        return self(features[:, :context], features.shape[1] - context), context

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
        past_position = sincos_1d(past, self.feature_dim).to(memory)
        future_position = sincos_1d(horizon, self.feature_dim, offset=past).to(memory)
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

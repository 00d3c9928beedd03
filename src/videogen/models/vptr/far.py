"""VPTR-FAR: a causal VidHRFormer that predicts the next frame's features, one frame at a time.

Training is teacher-forced in one pass: the input is the features of frames 0..T-2 and output t
is the prediction for frame t+1; the causal temporal mask (and per-frame norms) keep every
output blind to later inputs. Inference decodes and re-encodes each predicted frame before it
becomes input, and slides a window for horizons longer than those trained.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from videogen.models.layers import KeyValueCache, init_weights, run_blocks, sincos_1d
from videogen.models.vptr.vidhrformer import VidHRFormerBlock

Refine = Callable[[torch.Tensor], torch.Tensor]


class VPTRFAR(nn.Module):
    """Autoregressive transformer on features (B, T, D, h, w) -> next-frame features, same shape.

    `trained_frames` is the clip length it is trained on (context + future); at inference the
    input window never exceeds the trained input length, `trained_frames - 1`.
    `grad_checkpointing` recomputes each block's activations in the backward pass instead of
    keeping them (training only): less memory, the same gradients.
    """

    def __init__(
        self,
        feature_dim: int = 528,
        feature_size: tuple[int, int] | list[int] = (8, 8),
        depth: int = 12,
        num_heads: int = 8,
        window_size: int = 4,
        mlp_ratio: float = 4.0,
        drop_rate: float = 0.1,
        drop_path_rate: float = 0.1,
        relative_position: bool = False,
        trained_frames: int = 20,
        grad_checkpointing: bool = False,
    ) -> None:
        super().__init__()
        feature_size = (int(feature_size[0]), int(feature_size[1]))
        self.feature_dim = feature_dim
        self.max_input_frames = max(1, trained_frames - 1)
        self.grad_checkpointing = grad_checkpointing
        self.blocks = nn.ModuleList(
            VidHRFormerBlock(
                feature_dim,
                num_heads,
                feature_size,
                window_size,
                mlp_ratio,
                drop_rate,
                drop_path_rate,
                relative_position,
                causal=True,
            )
            for _ in range(depth)
        )
        self.norm = nn.LayerNorm(feature_dim)
        init_weights(self, "xavier")

    def forward(
        self, features: torch.Tensor, caches: list[KeyValueCache] | None = None
    ) -> torch.Tensor:
        """Output t is the predicted features of frame t + 1, computed from inputs 0..t only.

        With `caches` (one per block, from `new_caches`) `features` are the frames after those
        already cached and are added to the caches: each call costs its own frames only.
        """
        x = features.permute(0, 1, 3, 4, 2)
        if caches is not None:
            seen = caches[0].length
            position = sincos_1d(seen + x.shape[1], self.feature_dim)[seen:].to(x)
            for block, cache in zip(self.blocks, caches, strict=True):
                x = block(x, position, cache)
        else:
            position = sincos_1d(x.shape[1], self.feature_dim).to(x)
            x = run_blocks(
                self.blocks, x, position, checkpointing=self.grad_checkpointing and self.training
            )
        # Encoder features are post-ReLU, so predictions are kept in the same range.
        return F.relu(self.norm(x)).permute(0, 1, 4, 2, 3)

    def no_weight_decay(self) -> set[str]:
        """Parameters that take no weight decay: the windows' relative-position biases."""
        return {name for name, _ in self.named_parameters() if name.endswith("relative_bias")}

    def teacher_forced(
        self,
        features: torch.Tensor,
        context: int,
        refine: Refine | None = None,
        feedback_passes: int = 0,
    ) -> tuple[torch.Tensor, int]:
        """Training outputs for a clip's features (B, T, D, h, w) and the index of the first
        frame they predict: every output predicts the frame after its input, so (T - 1 outputs, 1).

        With `feedback_passes` p > 0 the clip is re-run p times with the future inputs replaced
        by the previous pass's refined predictions: after p passes the first p + 1 future frames
        see exactly the inputs they see at inference (their own decoded and re-encoded
        predictions), which closes the gap between teacher-forced training and autoregressive
        testing. Only the last pass is differentiated: earlier passes just produce inputs.
        """
        inputs = features[:, :-1]
        passes = min(feedback_passes, inputs.shape[1] - context) if refine else 0
        for _ in range(passes):
            with torch.no_grad():
                # Output t predicts frame t + 1: frames context.. come from outputs context-1...
                fed_back = refine(self(inputs)[:, context - 1 : -1])
            inputs = torch.cat([features[:, :context], fed_back], dim=1)
        return self(inputs), 1

    def new_caches(self) -> list[KeyValueCache]:
        """One empty key / value cache per block, for incremental `forward` calls."""
        return [KeyValueCache() for _ in self.blocks]

    @torch.no_grad()
    def predict(
        self,
        context: torch.Tensor,
        horizon: int,
        refine: Refine | None = None,
        cached: bool = True,
    ) -> torch.Tensor:
        """Predict `horizon` future frames' features from `context` (B, Tp, D, h, w).

        Each prediction is passed through `refine` (decode then re-encode, in VPTR) before it
        is fed back, so inference sees features like those of real frames.

        `cached` keeps every block's temporal keys and values of the frames already run, so a
        fed-back frame costs one frame of compute (the attention is causal: earlier frames'
        activations do not change when a frame is appended). Once the window is full, it slides
        and is recomputed whole (the position codes of its frames change). `cached=False`
        recomputes the window for every frame; the outputs are the same up to float rounding.
        """
        inputs = context
        caches = self.new_caches() if cached else None
        window = inputs[:, -self.max_input_frames :]
        output = self(window, caches)
        predictions = []
        for step in range(horizon):
            prediction = output[:, -1:]
            predictions.append(prediction)
            if step + 1 == horizon:  # the last prediction is never fed back
                break
            fed_back = refine(prediction) if refine else prediction
            inputs = torch.cat([inputs, fed_back], dim=1)
            if caches is not None and caches[0].length < self.max_input_frames:
                output = self(fed_back, caches)
            else:
                caches = self.new_caches() if cached else None
                output = self(inputs[:, -self.max_input_frames :], caches)
        return torch.cat(predictions, dim=1)

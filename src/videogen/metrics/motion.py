"""Where a generated clip moves: the frame-to-frame change inside and outside a mask.

For a layered generator (VGAN's m * f + (1 - m) * b over a static background) the motion should
be where the mask is: a model whose mask collapses to 0 moves nothing, one whose foreground
leaks through a weak mask moves outside it.
"""

from __future__ import annotations

import torch


def frame_change(video: torch.Tensor) -> torch.Tensor:
    """|x_{t+1} - x_t| summed over channels: (B, T, C, H, W) -> (B, T - 1, H, W)."""
    return (video[:, 1:] - video[:, :-1]).abs().sum(dim=2)


def mask_coverage(mask: torch.Tensor) -> torch.Tensor:
    """The mask of either frame of each step, max(m_t, m_{t+1}): (B, T, 1, H, W) ->
    (B, T - 1, H, W). A moving object leaves one place and enters another."""
    return torch.maximum(mask[:, 1:], mask[:, :-1]).squeeze(2)


def motion_inside_mask(
    video: torch.Tensor, mask: torch.Tensor, threshold: float = 0.5
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per clip, (the frame-to-frame change where the mask is above `threshold`, all of it).

    `video` (B, T, C, H, W) and `mask` (B, T, 1, H, W). The change between frames t and t + 1
    (`frame_change`) counts as inside where the mask of either frame is above the threshold
    (`mask_coverage`). Returns two (B,) float64 tensors; their ratio (summed over clips) is the
    share of motion in the mask.
    """
    change = frame_change(video.double())
    covered = mask_coverage(mask) > threshold
    inside = (change * covered).flatten(1).sum(dim=1)
    return inside, change.flatten(1).sum(dim=1)


def motion_outside_mask(video: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The mean over pixels and frame steps of the change weighted by how open the mask is
    not, `frame_change * (1 - mask_coverage)`: a differentiable measure of motion that the
    mask does not cover (0 when every change is under a fully open mask)."""
    return (frame_change(video) * (1 - mask_coverage(mask))).mean()


def motion_share(inside: torch.Tensor, moving: torch.Tensor) -> torch.Tensor:
    """The share of all the clips' motion that is inside the mask, from the per-clip sums of
    `motion_inside_mask` (0 when nothing moves)."""
    total = moving.sum()
    return torch.where(total > 0, inside.sum() / total.clamp_min(1e-12), torch.zeros_like(total))

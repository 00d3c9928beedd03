"""Tensor operations without parameters: backward warping by a flow, mask composition."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def pixel_grid(height: int, width: int, device: torch.device) -> torch.Tensor:
    """(1, 2, H, W) float32 pixel coordinates: channel 0 is x (column), channel 1 is y (row)."""
    ys = torch.arange(height, device=device, dtype=torch.float32)
    xs = torch.arange(width, device=device, dtype=torch.float32)
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack((grid_x, grid_y)).unsqueeze(0)


def warp(image: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Backward-warp (B, C, H, W) `image` by a (B, 2, H, W) pixel flow: out(p) = image(p + flow(p)).

    Channel 0 of the flow is the displacement along x (width), channel 1 along y (height).
    Bilinear, with border padding so that pixels flowing out of the frame repeat the edge rather
    than fading to black. Differentiable with respect to both the image and the flow.
    """
    height, width = image.shape[-2:]
    # Coordinates are built in float32 whatever the image dtype: in bfloat16 a pixel position
    # above 256 cannot even be represented exactly, let alone a sub-pixel offset.
    position = pixel_grid(height, width, image.device) + flow.float()
    # With align_corners=True, -1 and +1 are the centres of the first and last pixels.
    scale_x = 2.0 / max(width - 1, 1)
    scale_y = 2.0 / max(height - 1, 1)
    grid = torch.stack((position[:, 0] * scale_x - 1.0, position[:, 1] * scale_y - 1.0), dim=-1)
    warped = F.grid_sample(
        image.float(), grid, mode="bilinear", padding_mode="border", align_corners=True
    )
    return warped.to(image.dtype)


def compose_masked(
    mask: torch.Tensor, foreground: torch.Tensor, background: torch.Tensor
) -> torch.Tensor:
    """`mask * foreground + (1 - mask) * background`: where the mask is 1 the foreground shows.

    vid2vid composes its hallucinated frame over the warped previous one with it, and VGAN its
    moving foreground over the static background.
    """
    return mask * foreground + (1 - mask) * background

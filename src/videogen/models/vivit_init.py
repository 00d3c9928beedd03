"""Initialising ViViT from ViT weights (a timm state dict or a videogen ViT's weights, read by
the network builder, `models/build.py`).

ViViT keeps ViT's parameter names, so most tensors copy over unchanged. What needs work:
- `patch_embed.proj.weight` (D, C, p, p) -> tubelet kernel (D, C, t, p, p): "central_frame"
  puts the 2D kernel at time t // 2 and zeros elsewhere (the paper's best), "filter_inflation"
  repeats it t times divided by t, "random" keeps the fresh initialisation;
- `pos_embed`: the spatial grid is resized bilinearly when the patch grid differs, then
  repeated for each temporal index (CLS row kept once, or dropped for the GAP variants);
- a head of another class count stays new. Model 3's temporal attention is always new.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from timm.layers import resample_abs_pos_embed, resample_patch_embed

from videogen.errors import ConfigError

if TYPE_CHECKING:  # only for annotations: vivit.py imports this module
    from videogen.models.vivit import ViViT

log = logging.getLogger(__name__)

TUBELET_INITS = ("central_frame", "filter_inflation", "random")


@dataclass
class InitReport:
    """Which ViViT parameters came from the ViT as they were, reshaped, or were left new."""

    loaded: list[str] = field(default_factory=list)
    reshaped: list[str] = field(default_factory=list)
    new: list[str] = field(default_factory=list)
    unused: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (
            f"{len(self.loaded)} loaded, {len(self.reshaped)} reshaped ({', '.join(self.reshaped) or '-'}), "
            f"{len(self.new)} new ({', '.join(self.new) or '-'}), {len(self.unused)} unused ViT tensors "
            f"({', '.join(self.unused) or '-'})"
        )


def vit_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A timm-named ViT state dict from a timm one or a videogen `FrameViT`'s (`vit.` prefix)."""
    return {key.removeprefix("vit."): value for key, value in state.items()}


def inflate_patch_kernel(kernel: torch.Tensor, target_shape: torch.Size, mode: str) -> torch.Tensor:
    """2D patch kernel (D, C, p, p) -> 3D tubelet kernel of `target_shape` (D, C, t, h, w)."""
    time, height, width = target_shape[2:]
    if kernel.shape[-2:] != (height, width):
        kernel = resample_patch_embed(kernel, [height, width])
    if mode == "central_frame":
        tubelet = torch.zeros(*kernel.shape[:2], time, height, width, dtype=kernel.dtype)
        tubelet[:, :, time // 2] = kernel
        return tubelet
    if mode == "filter_inflation":
        return kernel.unsqueeze(2).repeat(1, 1, time, 1, 1) / time
    raise ConfigError(
        f"model.net.tubelet_init={mode!r} is unknown: choose one of {', '.join(TUBELET_INITS)}."
    )


def video_pos_embed(vit_pos: torch.Tensor, model: ViViT, vit_has_cls: bool = True) -> torch.Tensor:
    """ViT position embedding (1, [1 +] S0, D) -> the shape of `model.pos_embed`."""
    prefix = 1 if vit_has_cls else 0
    spatial = resample_abs_pos_embed(
        vit_pos, new_size=list(model.grid_size), num_prefix_tokens=prefix
    )
    cls_row, grid = spatial[:, :prefix], spatial[:, prefix:]
    frames = 1 if model.variant == "factorised_encoder" else model.grid[0]
    grid = grid.repeat(1, frames, 1)  # time-major: frame 0's grid, then frame 1's, ...
    return torch.cat([cls_row, grid], dim=1) if model.cls_token is not None else grid


def init_from_vit(
    model: ViViT, state: dict[str, torch.Tensor], tubelet_init: str = "central_frame"
) -> InitReport:
    """Copy ViT weights into `model` (reshaping where needed) and report what was done."""
    vit = vit_state_dict(state)
    target = model.state_dict()
    adapted: dict[str, torch.Tensor] = {}
    report = InitReport()
    for key, value in vit.items():
        if key not in target:
            report.unused.append(key)
            continue
        wanted = target[key].shape
        if key == "patch_embed.proj.weight" and value.ndim == 4:
            if tubelet_init == "random":
                continue
            value = inflate_patch_kernel(value, wanted, tubelet_init)
            report.reshaped.append(f"{key} ({tubelet_init})")
        elif key == "pos_embed" and value.shape != wanted:
            value = video_pos_embed(value, model, vit_has_cls="cls_token" in vit)
            report.reshaped.append(f"{key} (repeated over time / resized)")
        elif value.shape != wanted:
            continue  # e.g. a head for another number of classes: left new
        if value.shape != wanted:
            raise ValueError(
                f"{key}: cannot fit ViT tensor of shape {tuple(value.shape)} into {tuple(wanted)}"
            )
        adapted[key] = value
    report.loaded = sorted(
        k for k in adapted if not any(r.startswith(k + " ") for r in report.reshaped)
    )
    report.new = sorted(set(target) - set(adapted))
    model.load_state_dict(adapted, strict=False)
    log.info("ViViT initialised from ViT: %s", report.summary())
    return report

"""Whole-clip transforms on uint8 tensors: one random draw per clip, the same for every frame.

A clip is a dict with `video` uint8 (T, C, H, W) and optionally `segmentation` / `instance`
int64 (T, H, W). Geometric ops move the maps with the frames (nearest-neighbour resampling);
photometric ops touch the video only. Everything stays uint8 until the device.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

Clip = dict[str, Any]
MAP_KEYS = ("segmentation", "instance")


def resize(clip: Clip, height: int, width: int) -> Clip:
    """Resize frames bilinearly (antialiased) and maps with nearest neighbours."""
    video = clip["video"]
    if tuple(video.shape[-2:]) != (height, width):
        resized = F.interpolate(
            video.float(),
            size=(height, width),
            mode="bilinear",
            antialias=True,
            align_corners=False,
        )
        clip["video"] = resized.round_().clamp_(0, 255).to(torch.uint8)
        for key in MAP_KEYS:
            if key in clip:
                maps = clip[key].unsqueeze(1).float()
                clip[key] = (
                    F.interpolate(maps, size=(height, width), mode="nearest")
                    .squeeze(1)
                    .to(clip[key].dtype)
                )
    return clip


def resize_short_side(clip: Clip, short_side: int) -> Clip:
    height, width = clip["video"].shape[-2:]
    scale = short_side / min(height, width)
    return resize(clip, max(round(height * scale), 1), max(round(width * scale), 1))


def crop(clip: Clip, top: int, left: int, height: int, width: int) -> Clip:
    for key in ("video", *MAP_KEYS):
        if key in clip:
            clip[key] = clip[key][..., top : top + height, left : left + width]
    return clip


def centre_crop(clip: Clip, height: int, width: int) -> Clip:
    full_height, full_width = clip["video"].shape[-2:]
    return crop(
        clip, max((full_height - height) // 2, 0), max((full_width - width) // 2, 0), height, width
    )


def spatial_crops(clip: Clip, size: int, num_crops: int) -> list[Clip]:
    """`num_crops` square crops spread along the long side (3 = left/centre/right, as in ViViT's test)."""
    height, width = clip["video"].shape[-2:]
    crops = []
    for i in range(num_crops):
        fraction = 0.5 if num_crops == 1 else i / (num_crops - 1)
        top = round((height - size) * fraction) if height > width else (height - size) // 2
        left = round((width - size) * fraction) if width >= height else (width - size) // 2
        view = {k: v for k, v in clip.items()}
        crops.append(crop(view, top, left, size, size))
    return crops


def random_resized_crop(
    clip: Clip,
    size: tuple[int, int],
    rng: np.random.Generator,
    scale: Sequence[float] = (0.25, 1.0),
    ratio: Sequence[float] = (3 / 4, 4 / 3),
) -> Clip:
    """Crop a random area fraction `scale` and aspect `ratio` (one draw per clip), resize to `size`."""
    height, width = clip["video"].shape[-2:]
    area = height * width
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1])))
        crop_w, crop_h = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
        if 0 < crop_w <= width and 0 < crop_h <= height:
            top, left = (
                int(rng.integers(0, height - crop_h + 1)),
                int(rng.integers(0, width - crop_w + 1)),
            )
            return resize(crop(clip, top, left, crop_h, crop_w), *size)
    side = min(height, width)
    return resize(centre_crop(clip, side, side), *size)


def scale_jitter_crop(
    clip: Clip,
    crop_size: int,
    rng: np.random.Generator,
    short_side: int,
    jitter: Sequence[float] = (0.9, 1.33),
) -> Clip:
    """ViViT's train augmentation: resize the short side to short_side * U(jitter), random square crop."""
    clip = resize_short_side(clip, max(round(short_side * rng.uniform(*jitter)), crop_size))
    height, width = clip["video"].shape[-2:]
    top, left = (
        int(rng.integers(0, height - crop_size + 1)),
        int(rng.integers(0, width - crop_size + 1)),
    )
    return crop(clip, top, left, crop_size, crop_size)


def horizontal_flip(clip: Clip, rng: np.random.Generator, probability: float = 0.5) -> Clip:
    if rng.uniform() < probability:
        for key in ("video", *MAP_KEYS):
            if key in clip:
                clip[key] = clip[key].flip(-1)
    return clip


def colour_jitter(
    clip: Clip,
    rng: np.random.Generator,
    brightness: float = 0.0,
    contrast: float = 0.0,
    saturation: float = 0.0,
) -> Clip:
    """Random brightness / contrast / saturation factors in [1 - x, 1 + x], one draw per clip."""
    if not (brightness or contrast or saturation):
        return clip
    video = clip["video"].float()
    if brightness:
        video = video * rng.uniform(1 - brightness, 1 + brightness)
    if contrast:
        mean = video.mean(dim=(-3, -2, -1), keepdim=True)
        video = mean + (video - mean) * rng.uniform(1 - contrast, 1 + contrast)
    if saturation:
        grey = (video * torch.tensor([0.299, 0.587, 0.114]).view(3, 1, 1)).sum(dim=-3, keepdim=True)
        video = grey + (video - grey) * rng.uniform(1 - saturation, 1 + saturation)
    clip["video"] = video.round_().clamp_(0, 255).to(torch.uint8)
    return clip


def rand_augment(clip: Clip, num_ops: int, magnitude: int) -> Clip:
    """RandAugment (Cubuk et al.) with the same ops and magnitudes for every frame of the clip.

    torchvision treats the leading frame dimension as a batch and draws once for all of it.
    """
    from torchvision.transforms import v2

    clip["video"] = v2.RandAugment(num_ops=num_ops, magnitude=magnitude)(clip["video"])
    return clip

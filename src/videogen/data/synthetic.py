"""Built-in synthetic video: textured background, 1-3 shapes bouncing off the walls.

Every clip is rendered on the fly from (seed, split, index), so the data is deterministic, needs
no files, and the test split is identical from one run to the next. The label is the direction of
motion of the main object, the largest shape (8 compass directions): a single frame cannot tell it, so a model
must use time to classify it.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
from torch.utils.data import Dataset

from videogen.config import require_positive_int, require_range
from videogen.data.base import SIZED_SPLITS, VideoDataModule
from videogen.errors import ConfigError

SPLIT_IDS = {"train": 0, "val": 1, "test": 2}
# Semantic classes of the segmentation maps: 0 is the background.
SHAPE_CLASSES = {"circle": 1, "square": 2, "triangle": 3}
NUM_DIRECTIONS = 8
# "texture": sinusoids and pixel noise (a classifier must find the shape in clutter);
# "plain": one colour per clip (a small generative model spends no capacity on texture).
BACKGROUNDS = ("texture", "plain")


class SyntheticVideoDataset(Dataset):
    """Deterministic procedurally rendered clips of bouncing shapes.

    Item keys: `video` uint8 (T, C, H, W), `label` (direction of the main object, 0..7 counter-
    clockwise from "right"), `segmentation` and `instance` int64 (T, H, W), `video_index`,
    `view_index`. `background`: "texture" or "plain" (BACKGROUNDS).
    """

    def __init__(
        self,
        size: int,
        num_frames: int,
        height: int,
        width: int,
        channels: int = 3,
        min_objects: int = 1,
        max_objects: int = 3,
        speed: float = 2.0,
        seed: int = 0,
        split: str = "train",
        views: int = 1,
        view_stride: int | None = None,
        background: str = "texture",
    ) -> None:
        self.size = size
        self.background_kind = background
        self.num_frames = num_frames
        # Multi-view testing: `views` overlapping temporal clips of one longer rendered video.
        self.views = views
        self.view_stride = view_stride or max(num_frames // 2, 1)
        self.total_frames = num_frames + (views - 1) * self.view_stride
        self.height = height
        self.width = width
        self.channels = channels
        self.min_objects = min_objects
        self.max_objects = max_objects
        self.speed = speed
        self.seed = seed
        self.split_id = SPLIT_IDS[split]
        self.last_render: tuple[int | None, Any] = (None, None)
        # Pixel grid shared by every render, shaped to broadcast over frames.
        self.ys, self.xs = np.mgrid[0:height, 0:width].astype(np.float32)

    def __len__(self) -> int:
        return self.size * self.views

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for a dataset of {len(self)} clips")
        video_index, view = divmod(index, self.views)
        video, segmentation, instance, label = self.rendered(video_index)
        clip = slice(view * self.view_stride, view * self.view_stride + self.num_frames)
        return {
            "video": torch.from_numpy(np.ascontiguousarray(video[clip])),
            "label": torch.tensor(label, dtype=torch.int64),
            "segmentation": torch.from_numpy(segmentation[clip]),
            "instance": torch.from_numpy(instance[clip]),
            "video_index": torch.tensor(video_index, dtype=torch.int64),
            "view_index": torch.tensor(view, dtype=torch.int64),
        }

    def rendered(self, video_index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
        """The whole rendered video; the views of one test video (consecutive items) share one render."""
        if self.last_render[0] != video_index:
            rng = np.random.default_rng([self.seed, self.split_id, video_index])
            self.last_render = (video_index, self.render(rng))
        return self.last_render[1]

    def background(self, rng: np.random.Generator) -> np.ndarray:
        """A static texture of a few random sinusoids per channel, float (H, W, C) in [0, 255];
        a plain background is each channel's base colour (the same random draws are made, so the
        shapes and labels do not depend on the background kind)."""
        texture = np.zeros((self.height, self.width, self.channels), np.float32)
        base = np.zeros(self.channels, np.float32)
        for c in range(self.channels):
            freq = rng.uniform(0.1, 0.6, size=(3, 2)).astype(np.float32)
            phase = rng.uniform(0, 2 * np.pi, size=3).astype(np.float32)
            waves = sum(
                np.sin(fy * self.ys + fx * self.xs + p)
                for (fy, fx), p in zip(freq, phase, strict=True)
            )
            base[c] = rng.uniform(60, 140)
            texture[..., c] = base[c] + 25 * waves
        texture += rng.normal(0, 8, size=texture.shape).astype(np.float32)
        if self.background_kind == "plain":
            texture[:] = base
        return texture

    def shape_mask(self, kind: str, cy: np.ndarray, cx: np.ndarray, radius: float) -> np.ndarray:
        """Boolean (T, H, W) masks of one shape centred at (cy[t], cx[t])."""
        dy = self.ys[None] - cy[:, None, None]
        dx = self.xs[None] - cx[:, None, None]
        if kind == "circle":
            return dy**2 + dx**2 <= radius**2
        if kind == "square":
            return (np.abs(dy) <= radius) & (np.abs(dx) <= radius)
        # Upward triangle: below the apex, inside the two slanted edges.
        return (dy <= radius) & (dy >= -radius) & (np.abs(dx) <= (dy + radius) / 2)

    def trajectory(
        self, start: np.ndarray, velocity: np.ndarray, radius: float
    ) -> tuple[np.ndarray, np.ndarray]:
        """Centres (T,) y and x of an object bouncing elastically off the frame borders."""
        t = np.arange(self.total_frames, dtype=np.float32)[:, None]
        low = np.array([radius, radius], np.float32)
        span = np.array([self.height - 1, self.width - 1], np.float32) - 2 * radius
        span = np.maximum(span, 1e-3)
        # Reflecting walk: fold the free path into [0, span] with period 2 * span.
        free = (start - low) + velocity * t
        folded = np.abs(np.mod(free, 2 * span))
        folded = np.where(folded > span, 2 * span - folded, folded)
        centres = low + folded
        return centres[:, 0], centres[:, 1]

    def render(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
        """Render one whole video: video (T, C, H, W) uint8, segmentation and instance (T, H, W), label."""
        backdrop = self.background(rng)
        backdrop_mean = backdrop.mean(axis=(0, 1))
        frames = np.repeat(backdrop[None], self.total_frames, axis=0)  # T, H, W, C
        segmentation = np.zeros((self.total_frames, self.height, self.width), np.int64)
        instance = np.zeros_like(segmentation)
        num_objects = int(rng.integers(self.min_objects, self.max_objects + 1))
        label = int(rng.integers(NUM_DIRECTIONS))
        radius_max = max(1.5, min(self.height, self.width) / 8)
        # Distractors first, the main object last so that it is drawn on top and always visible.
        for obj in range(num_objects - 1, -1, -1):
            is_main = obj == 0
            # The main object is the largest shape: that is how a model can tell it from the others.
            radius = radius_max if is_main else float(rng.uniform(0.3, 0.5) * radius_max)
            kind = str(rng.choice(list(SHAPE_CLASSES)))
            if is_main:
                angle = 2 * np.pi * label / NUM_DIRECTIONS
                speed = self.speed
                start = self.start_without_bounce(rng, angle, radius)
            else:
                angle = rng.uniform(0, 2 * np.pi)
                speed = float(rng.uniform(0.5, 1.5) * self.speed)
                start = rng.uniform([radius, radius], [self.height - radius, self.width - radius])
            # Image y grows downwards, so "up" (angle pi/2) is a negative dy.
            velocity = np.array([-np.sin(angle), np.cos(angle)], np.float32) * speed
            cy, cx = self.trajectory(start.astype(np.float32), velocity, radius)
            mask = self.shape_mask(kind, cy, cx, radius)
            # Shapes contrast with the background (half the range away from its mean colour),
            # so that they can be found in every frame whatever the texture.
            colour = np.mod(backdrop_mean + rng.uniform(96, 160, size=self.channels), 256).astype(
                np.float32
            )
            shade = 0.75 + 0.25 * np.sin(self.xs / max(radius, 1.0))[None, ..., None]  # own texture
            frames = np.where(mask[..., None], colour * shade, frames)
            segmentation[mask] = SHAPE_CLASSES[kind]
            instance[mask] = obj + 1
        video = np.clip(frames, 0, 255).astype(np.uint8).transpose(0, 3, 1, 2)
        return np.ascontiguousarray(video), segmentation, instance, label

    def start_without_bounce(
        self, rng: np.random.Generator, angle: float, radius: float
    ) -> np.ndarray:
        """A start centre from which the main object crosses no wall during the clip, if one exists.

        Keeping the main object away from walls keeps its direction (the label) constant.
        """
        travel = self.speed * (self.total_frames - 1)
        dy, dx = -np.sin(angle) * travel, np.cos(angle) * travel
        start = []
        for extent, delta in ((self.height, dy), (self.width, dx)):
            low = radius - min(delta, 0.0)
            high = extent - 1 - radius - max(delta, 0.0)
            start.append(rng.uniform(low, high) if low <= high else (extent - 1) / 2 - delta / 2)
        return np.array(start, np.float32)


class SyntheticVideoDataModule(VideoDataModule):
    """`data=synthetic`: bouncing-shape clips rendered on the fly; provides every batch key."""

    provides: ClassVar[frozenset[str]] = frozenset(
        {"video", "label", "segmentation", "instance", "video_index", "view_index"}
    )
    split_size_keys: ClassVar[dict[str, str]] = SIZED_SPLITS
    num_segmentation_classes = len(SHAPE_CLASSES) + 1
    # Label colours: dark grey background, red circles, green squares, blue triangles.
    palette = ((48, 48, 48), (230, 25, 75), (60, 180, 75), (0, 130, 200))

    def __init__(
        self,
        num_frames: int = 8,
        height: int = 32,
        width: int = 32,
        channels: int = 3,
        num_classes: int = NUM_DIRECTIONS,
        min_objects: int = 1,
        max_objects: int = 3,
        speed: float = 2.0,
        train_size: int = 2048,
        val_size: int = 256,
        test_size: int = 512,
        seed: int = 0,
        test_views: int = 1,
        background: str = "texture",
        num_segmentation_classes: int = len(SHAPE_CLASSES) + 1,
        **loader_options: Any,
    ) -> None:
        super().__init__(num_frames, height, width, channels, num_classes, **loader_options)
        if num_segmentation_classes != len(SHAPE_CLASSES) + 1:
            raise ConfigError(
                f"data.num_segmentation_classes must be {len(SHAPE_CLASSES) + 1} for synthetic "
                f"data (background and {len(SHAPE_CLASSES)} shapes), got {num_segmentation_classes}."
            )
        if num_classes != NUM_DIRECTIONS:
            raise ConfigError(
                f"data.num_classes must be {NUM_DIRECTIONS} for synthetic data (the directions of "
                f"motion), got {num_classes}."
            )
        if min(height, width) < 8:
            raise ConfigError(
                f"data.height and data.width must be at least 8 pixels, got {height}x{width}."
            )
        require_positive_int("data.min_objects", min_objects)
        require_positive_int("data.max_objects", max_objects)
        require_range("data.min_objects/data.max_objects", min_objects, max_objects)
        if speed <= 0:
            raise ConfigError(f"data.speed must be positive, got {speed}.")
        if background not in BACKGROUNDS:
            raise ConfigError(
                f"data.background={background!r} is not one of {', '.join(BACKGROUNDS)}."
            )
        self.sizes = {
            "train": require_positive_int("data.train_size", train_size),
            "val": require_positive_int("data.val_size", val_size),
            "test": require_positive_int("data.test_size", test_size),
        }
        self.test_views = require_positive_int("data.test_views", test_views)
        self.render_options = dict(
            num_frames=num_frames,
            height=height,
            width=width,
            channels=channels,
            min_objects=min_objects,
            max_objects=max_objects,
            speed=speed,
            seed=seed,
            background=background,
        )

    def source_settings(self) -> dict[str, Any]:
        return {**self.render_options, "train_size": self.sizes["train"]}

    def make_dataset(self, split: str) -> SyntheticVideoDataset:
        views = self.test_views if split == "test" else 1
        return SyntheticVideoDataset(
            self.sizes[split], split=split, views=views, **self.render_options
        )

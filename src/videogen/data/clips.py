"""Clip datasets over video files, shared by the file-based datamodules (Kinetics, SSv2, UCF-101,
video folders).

A dataset is a list of `VideoSample(path, label)`; a sample of unlabelled data has `NO_LABEL`
and its items carry no `label`. Each item decodes one clip (random in
training, centre in validation, `test_clips x test_crops` views in test), transforms it as a
whole and returns uint8 video. An unreadable video never breaks an epoch: the item comes back
as a marker, the collate function drops it from the batch (nothing else in the batch is lost),
and the datamodule counts it and logs its path once.
"""

from __future__ import annotations

import abc
import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch.utils.data import Dataset, default_collate

from videogen.config import require_positive_int
from videogen.data import sampling, transforms
from videogen.data.base import VideoDataModule
from videogen.data.decode import VideoDecodeError, check_decoder, open_video
from videogen.data.index_cache import cached_index, file_stamps
from videogen.errors import ConfigError

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
BAD_KEY = "bad_video"
NO_LABEL = -1
TRAIN_CROPS = ("random", "centre")


@dataclass(frozen=True)
class VideoSample:
    """One video of a dataset index: its path and class index (`NO_LABEL` if it has none)."""

    path: str
    label: int


@dataclass
class ClipOptions:
    """How a clip is sampled and transformed (one set per datamodule)."""

    num_frames: int
    crop_size: int
    short_side: int
    train_crop: str = "random"
    frame_stride: int = 2
    target_fps: float | None = None
    short_video: str = "loop"
    decode_short_side: int | None = None
    decoder: str = "auto"
    scale_jitter: tuple[float, float] = (0.9, 1.33)
    flip: bool = True
    colour_jitter: tuple[float, float, float] = (0.0, 0.0, 0.0)
    rand_augment: tuple[int, int] | None = None
    test_clips: int = 1
    test_crops: int = 1


class VideoClipDataset(Dataset):
    """Clips of the videos in `samples` for one split; see the module docstring."""

    def __init__(self, samples: Sequence[VideoSample], split: str, options: ClipOptions) -> None:
        self.samples = list(samples)
        self.split = split
        self.options = options
        self.views = options.test_clips * options.test_crops if split == "test" else 1
        self.last_clip: tuple[tuple[str, int] | None, torch.Tensor | None] = (None, None)

    def __len__(self) -> int:
        return len(self.samples) * self.views

    def __getitem__(self, index: int) -> dict[str, Any]:
        video_index, view = divmod(index, self.views)
        sample = self.samples[video_index]
        try:
            clip = self.load(sample.path, view)
        except VideoDecodeError as error:
            return {BAD_KEY: sample.path, "reason": error.reason}
        item = {
            "video": clip["video"],
            "video_index": torch.tensor(video_index, dtype=torch.int64),
            "view_index": torch.tensor(view, dtype=torch.int64),
        }
        if sample.label != NO_LABEL:
            item["label"] = torch.tensor(sample.label, dtype=torch.int64)
        return item

    def frame_indices(
        self, num_video_frames: int, fps: float, view: int, rng: np.random.Generator | None
    ) -> np.ndarray:
        o = self.options
        step = sampling.frame_step(o.frame_stride, fps, o.target_fps)
        if self.split == "train":
            return sampling.random_clip(num_video_frames, o.num_frames, step, rng, o.short_video)
        if self.split == "test" and o.test_clips > 1:
            clips = sampling.multi_view_clips(
                num_video_frames, o.num_frames, step, o.test_clips, o.short_video
            )
            return clips[view // o.test_crops]
        return sampling.centre_clip(num_video_frames, o.num_frames, step, o.short_video)

    def load(self, path: str, view: int) -> dict[str, Any]:
        o = self.options
        if self.split == "train":
            rng = np.random.default_rng(
                int(torch.randint(0, 2**31 - 1, (1,)))
            )  # seeded per worker by Lightning
            clip = {"video": self.decode(path, view, rng)}
            if o.train_crop == "centre":  # generation: the framing that FVD's real clips have
                clip = transforms.resize_short_side(clip, o.short_side)
                clip = transforms.centre_crop(clip, o.crop_size, o.crop_size)
            else:
                clip = transforms.scale_jitter_crop(
                    clip, o.crop_size, rng, o.short_side, o.scale_jitter
                )
            if o.flip:
                clip = transforms.horizontal_flip(clip, rng)
            clip = transforms.colour_jitter(clip, rng, *o.colour_jitter)
            return transforms.rand_augment(clip, *o.rand_augment) if o.rand_augment else clip
        clip = {"video": self.resized_clip(path, view)}
        if self.split == "test" and o.test_crops > 1:
            return transforms.spatial_crops(clip, o.crop_size, o.test_crops)[view % o.test_crops]
        return transforms.centre_crop(clip, o.crop_size, o.crop_size)

    def decode(self, path: str, view: int, rng: np.random.Generator | None = None) -> torch.Tensor:
        """The frames of the view's clip as uint8 (T, C, H, W)."""
        with open_video(path, self.options.decode_short_side, self.options.decoder) as reader:
            indices = self.frame_indices(reader.num_frames, reader.fps, view, rng)
            frames = reader.read(indices.tolist())
        return torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)

    def resized_clip(self, path: str, view: int) -> torch.Tensor:
        """The view's clip resized to the short side; the M crops of one clip share one decode.

        Views of a video are consecutive items (clip-major), so remembering the last clip is enough.
        """
        key = (path, view // self.options.test_crops)
        if self.last_clip[0] != key:
            resized = transforms.resize_short_side(
                {"video": self.decode(path, view)}, self.options.short_side
            )
            self.last_clip = (key, resized["video"])
        return self.last_clip[1]


def collate_skipping_bad(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Collate the readable items; report the unreadable ones as `bad_videos` (path, reason)."""
    good = [item for item in items if BAD_KEY not in item]
    bad = [(item[BAD_KEY], item["reason"]) for item in items if BAD_KEY in item]
    batch = default_collate(good) if good else {}
    batch["bad_videos"] = bad
    batch["num_attempted"] = len(items)
    return batch


class VideoFileDataModule(VideoDataModule):
    """Base of the datamodules that read labelled video files; subclasses build the sample lists."""

    provides: ClassVar[frozenset[str]] = frozenset({"video", "label", "video_index", "view_index"})
    splits = ("train", "val", "test")

    def __init__(
        self,
        root: str,
        num_classes: int,
        num_frames: int = 8,
        height: int = 224,
        width: int = 224,
        channels: int = 3,
        short_side: int = 256,
        train_crop: str = "random",
        frame_stride: int = 2,
        target_fps: float | None = None,
        short_video: str = "loop",
        decode_short_side: int | None = None,
        decoder: str = "auto",
        scale_jitter: Sequence[float] = (0.9, 1.33),
        flip: bool = True,
        colour_jitter: Sequence[float] = (0.0, 0.0, 0.0),
        rand_augment: Sequence[int] | None = None,
        test_clips: int = 1,
        test_crops: int = 1,
        max_bad_fraction: float = 0.01,
        index_cache_dir: str | None = None,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        **loader_options: Any,
    ) -> None:
        super().__init__(
            num_frames,
            height,
            width,
            channels,
            num_classes,
            mean=mean,
            std=std,
            max_bad_fraction=max_bad_fraction,
            **loader_options,
        )
        if channels != 3:
            raise ConfigError(f"data.channels must be 3 for RGB video files, got {channels}.")
        if height != width:
            raise ConfigError(
                f"data.height and data.width must be equal (square crops), got {height}x{width}."
            )
        if train_crop not in TRAIN_CROPS:
            raise ConfigError(f"data.train_crop must be one of {TRAIN_CROPS}, got {train_crop!r}.")
        if short_video not in sampling.SHORT_VIDEO_MODES:
            raise ConfigError(
                f"data.short_video must be one of {sampling.SHORT_VIDEO_MODES}, got {short_video!r}."
            )
        self.root = Path(root)
        self.index_cache_dir = (
            Path(index_cache_dir) if index_cache_dir else self.root / ".videogen_index"
        )
        self.options = ClipOptions(
            num_frames=num_frames,
            crop_size=height,
            short_side=require_positive_int("data.short_side", short_side),
            train_crop=train_crop,
            frame_stride=require_positive_int("data.frame_stride", frame_stride),
            target_fps=target_fps,
            short_video=short_video,
            decode_short_side=decode_short_side,
            decoder=check_decoder(decoder),
            scale_jitter=tuple(scale_jitter),
            flip=flip,
            colour_jitter=tuple(colour_jitter),
            rand_augment=tuple(rand_augment) if rand_augment else None,
            test_clips=require_positive_int("data.test_clips", test_clips),
            test_crops=require_positive_int("data.test_crops", test_crops),
        )
        if short_side < height:
            raise ConfigError(
                f"data.short_side ({short_side}) must be at least the crop size data.height ({height})."
            )

    @abc.abstractmethod
    def build_samples(self, split: str) -> list[VideoSample]:
        """The split's samples, listed from its annotations (or folders)."""

    def samples(self, split: str) -> list[VideoSample]:
        """The split's index, from the cache while the annotations and index settings are unchanged."""
        sources = self.annotation_files(split)
        if not sources:  # a layout without annotation files (class folders) is always listed afresh
            return self.build_samples(split)
        cache = (
            self.index_cache_dir / f"{type(self).__name__}_{split}_{self.settings_digest()}.json"
        )
        key = {"sources": file_stamps(sources)}
        return cached_index(cache, key, lambda: self.build_samples(split), VideoSample)

    def settings_digest(self) -> str:
        """A short digest of `index_settings`, so that other settings get their own cache file."""
        settings = json.dumps(self.index_settings(), sort_keys=True, default=str)
        return hashlib.sha1(settings.encode()).hexdigest()[:12]

    def annotation_files(self, split: str) -> list[Path]:
        """The files whose change invalidates the cached index of `split` (empty: never cache)."""
        return []

    def index_settings(self) -> dict[str, Any]:
        """The settings that decide which files and labels the index holds."""
        return {"root": str(self.root)}

    def make_dataset(self, split: str) -> VideoClipDataset:
        samples = self.samples(split)
        if not samples:
            raise ConfigError(
                f"data.root={self.root}: the {split} split has no videos; check the layout."
            )
        largest = max(sample.label for sample in samples)
        if largest >= self.num_classes:
            source = ", ".join(str(p) for p in self.annotation_files(split)) or str(self.root)
            raise ConfigError(
                f"{source} has labels up to {largest} but data.num_classes={self.num_classes} "
                f"(labels must be 0..{self.num_classes - 1}): set data.num_classes="
                f"{largest + 1} or fix the labels."
            )
        return VideoClipDataset(samples, split, self.options)

    def collate_fn(self) -> Callable[[list[dict[str, Any]]], dict[str, Any]]:
        return collate_skipping_bad

    def cache_source(self) -> VideoClipDataset:
        """Each training video's centre clip and centre crop (what evaluation reads)."""
        return VideoClipDataset(self.samples("train"), "val", self.options)

    def cache_flips(self) -> bool:
        return self.options.flip

    def source_settings(self) -> dict[str, Any]:
        o = self.options
        return {
            **self.index_settings(),
            "frame_stride": o.frame_stride,
            "target_fps": o.target_fps,
            "short_side": o.short_side,
            "short_video": o.short_video,
            "decode_short_side": o.decode_short_side,
        }

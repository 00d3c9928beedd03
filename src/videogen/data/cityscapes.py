"""Cityscapes video snippets with per-frame semantic and instance maps (for vid2vid-style work).

Layout under `root` (Cityscapes' own names):

    leftImg8bit_sequence/{split}/{city}/{city}_{seq:06d}_{frame:06d}_leftImg8bit.png
    {label_dir}/{split}/{city}/{city}_{seq:06d}_{frame:06d}_gtFine_labelIds.png
    {label_dir}/{split}/{city}/{city}_{seq:06d}_{frame:06d}_gtFine_instanceIds.png  (optional)

Cityscapes annotates only the 20th frame of each 30-frame snippet, so the per-frame maps usually
come from a segmentation network, written in a folder that mirrors the frames. A snippet is a run
of consecutive frame numbers of one (city, seq). Training uses every clip of every snippet; val
and test use the centre clip of each. Cityscapes' test split has no labels, so `test` reads the
`val` folder unless `test_split_dir` says otherwise.

Scanning a split walks thousands of files, so its result is cached as JSON (in `root`, or in
`index_cache`); the cache is rebuilt when a folder of the split changes. A clip with a missing
or corrupt PNG (frame or map) is skipped and counted like an unreadable video.
"""

from __future__ import annotations

import logging
import os
import re
import zlib
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import Dataset

from videogen.config import require_positive_int
from videogen.data import transforms
from videogen.data.base import VideoDataModule
from videogen.data.clips import BAD_KEY, collate_skipping_bad
from videogen.data.index_cache import cached_index
from videogen.errors import ConfigError

log = logging.getLogger(__name__)

FRAME_DIR = "leftImg8bit_sequence"
FRAME_SUFFIX = "_leftImg8bit.png"
LABEL_SUFFIX = "_gtFine_labelIds.png"
INSTANCE_SUFFIX = "_gtFine_instanceIds.png"
LAYOUT = f"{{root}}/{FRAME_DIR}/{{split}}/{{city}}/*{FRAME_SUFFIX}"
INDEX_VERSION = 1

# The label ids that Cityscapes evaluates, in train-id order (road, sidewalk, building, wall,
# fence, pole, traffic light, traffic sign, vegetation, terrain, sky, person, rider, car, truck,
# bus, train, motorcycle, bicycle); every other id is ignored.
EVALUATED_LABEL_IDS = (7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33)
NUM_TRAIN_IDS = len(EVALUATED_LABEL_IDS)
IGNORE_ID = 255
LABEL_TO_TRAIN_ID = np.full(256, IGNORE_ID, dtype=np.int64)
LABEL_TO_TRAIN_ID[list(EVALUATED_LABEL_IDS)] = np.arange(NUM_TRAIN_IDS)
# instanceIds maps store class * 1000 + k for things and the bare class id for everything else.
FIRST_INSTANCE_ID = 1000
# Cityscapes' official colours of the 19 train ids (cityscapesScripts' labels.py); 255 = ignore.
TRAIN_ID_COLOURS = (
    (128, 64, 128),  # road
    (244, 35, 232),  # sidewalk
    (70, 70, 70),  # building
    (102, 102, 156),  # wall
    (190, 153, 153),  # fence
    (153, 153, 153),  # pole
    (250, 170, 30),  # traffic light
    (220, 220, 0),  # traffic sign
    (107, 142, 35),  # vegetation
    (152, 251, 152),  # terrain
    (70, 130, 180),  # sky
    (220, 20, 60),  # person
    (255, 0, 0),  # rider
    (0, 0, 142),  # car
    (0, 0, 70),  # truck
    (0, 60, 100),  # bus
    (0, 80, 100),  # train
    (0, 0, 230),  # motorcycle
    (119, 11, 32),  # bicycle
)
# What reading a missing, truncated or corrupt PNG raises (PIL reports broken chunks as SyntaxError).
UNREADABLE_PNG_ERRORS = (OSError, ValueError, SyntaxError, zlib.error)


@dataclass(frozen=True)
class Snippet:
    """A run of consecutive frames of one (city, seq), and which of them have label/instance maps."""

    city: str
    seq: int
    frames: list[int]
    labelled: list[bool]
    instances: list[bool]

    def stem(self, position: int) -> str:
        """File-name stem of the frame at `position`, e.g. aachen_000000_000019."""
        return f"{self.city}_{self.seq:06d}_{self.frames[position]:06d}"


def consecutive_runs(frames: list[int]) -> list[list[int]]:
    """Split sorted frame numbers into runs without gaps."""
    runs: list[list[int]] = []
    for frame in frames:
        if runs and frame == runs[-1][-1] + 1:
            runs[-1].append(frame)
        else:
            runs.append([frame])
    return runs


def scan_split(root: Path, split_dir: str, label_dir: str) -> list[Snippet]:
    """Walk the frame folders of one split once and return its snippets, sorted."""
    frame_root = root / FRAME_DIR / split_dir
    if not frame_root.is_dir():
        return []
    snippets = []
    for city_dir in sorted(p for p in frame_root.iterdir() if p.is_dir()):
        city = city_dir.name
        pattern = re.compile(rf"{re.escape(city)}_(\d{{6}})_(\d{{6}}){re.escape(FRAME_SUFFIX)}")
        frames_by_seq: dict[int, list[int]] = defaultdict(list)
        for name in os.listdir(city_dir):
            match = pattern.fullmatch(name)
            if match:
                frames_by_seq[int(match[1])].append(int(match[2]))
        # One listing per city instead of a stat per frame: label folders hold thousands of files.
        map_dir = root / label_dir / split_dir / city
        map_names = set(os.listdir(map_dir)) if map_dir.is_dir() else set()
        for seq in sorted(frames_by_seq):
            for run in consecutive_runs(sorted(frames_by_seq[seq])):
                stems = [f"{city}_{seq:06d}_{frame:06d}" for frame in run]
                snippets.append(
                    Snippet(
                        city=city,
                        seq=seq,
                        frames=run,
                        labelled=[stem + LABEL_SUFFIX in map_names for stem in stems],
                        instances=[stem + INSTANCE_SUFFIX in map_names for stem in stems],
                    )
                )
    return snippets


def folder_stamp(root: Path, split_dir: str, label_dir: str) -> list[list[Any]]:
    """Modification times of the split's folders: adding or removing a file changes one of them."""
    stamp = []
    for top in (root / FRAME_DIR / split_dir, root / label_dir / split_dir):
        if top.is_dir():
            for folder in [top, *sorted(p for p in top.iterdir() if p.is_dir())]:
                stamp.append([str(folder.relative_to(root)), folder.stat().st_mtime_ns])
    return stamp


def load_index(root: Path, split_dir: str, label_dir: str, cache_path: Path) -> list[Snippet]:
    """The snippets of a split, from the JSON cache when it matches the folders, else scanned."""
    key = {
        "version": INDEX_VERSION,
        "root": str(root.resolve()),
        "split_dir": split_dir,
        "label_dir": label_dir,
        "stamp": folder_stamp(root, split_dir, label_dir),
    }
    return cached_index(cache_path, key, lambda: scan_split(root, split_dir, label_dir), Snippet)


@dataclass
class ClipIndex:
    """Clips as (snippet, first position) pairs, with counts of the clips left out and why."""

    clips: list[tuple[int, int]]
    unlabelled: int = 0
    too_short: int = 0


def build_clips(snippets: list[Snippet], span: int, stride: int, every_start: bool) -> ClipIndex:
    """Every clip of `span` source frames (train) or the centre one (val/test) of each snippet.

    A clip with a frame that has no label map is left out and counted.
    """
    index = ClipIndex(clips=[])
    for number, snippet in enumerate(snippets):
        length = len(snippet.frames)
        if length < span:
            index.too_short += 1
            continue
        starts = range(length - span + 1) if every_start else [(length - span) // 2]
        for start in starts:
            if all(snippet.labelled[start : start + span : stride]):
                index.clips.append((number, start))
            else:
                index.unlabelled += 1
    return index


def read_map(path: Path) -> np.ndarray:
    """A single-channel label or 16-bit instance PNG as int64 (H, W)."""
    with Image.open(path) as image:
        values = np.array(image)
    if values.ndim != 2:
        raise ConfigError(f"{path} is not a single-channel map (it has shape {values.shape}).")
    return values.astype(np.int64)


def resize_maps(maps: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Nearest-neighbour resize of int64 (T, H, W) maps (ids stay exact: they are below 2**24)."""
    if tuple(maps.shape[-2:]) == (height, width):
        return maps
    resized = F.interpolate(maps.unsqueeze(1).float(), size=(height, width), mode="nearest")
    return resized.squeeze(1).to(torch.int64)


class CityscapesSequenceDataset(Dataset):
    """Clips of consecutive Cityscapes frames with their train-id and instance maps.

    Item keys: `video` uint8 (T, 3, H, W), `segmentation` int64 (T, H, W) train ids (255 =
    ignore), `instance` int64 (T, H, W) raw Cityscapes instance ids (0 = no instance),
    `video_index` (the snippet) and `view_index` (the clip's first position in the snippet).
    """

    def __init__(
        self,
        root: Path,
        split_dir: str,
        label_dir: str,
        snippets: list[Snippet],
        clips: list[tuple[int, int]],
        num_frames: int,
        frame_stride: int,
        height: int,
        width: int,
        flip_probability: float = 0.0,
    ) -> None:
        self.frame_root = root / FRAME_DIR / split_dir
        self.map_root = root / label_dir / split_dir
        self.snippets = snippets
        self.clips = clips
        self.num_frames = num_frames
        self.frame_stride = frame_stride
        self.height = height
        self.width = width
        self.flip_probability = flip_probability

    def __len__(self) -> int:
        return len(self.clips)

    def read_pngs(
        self, snippet: Snippet, start: int, reading: Callable[[Path], None]
    ) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
        """Frames, train-id maps and instance maps of the clip starting at `start`; `reading` is
        told each file before it is opened."""
        positions = range(start, start + self.num_frames * self.frame_stride, self.frame_stride)
        frames, labels, instances = [], [], []
        frame_dir, map_dir = self.frame_root / snippet.city, self.map_root / snippet.city
        for position in positions:
            stem = snippet.stem(position)
            reading(frame_dir / (stem + FRAME_SUFFIX))
            with Image.open(frame_dir / (stem + FRAME_SUFFIX)) as image:
                frames.append(np.array(image.convert("RGB")))
            if frames[-1].shape != frames[0].shape:
                raise ValueError(f"a frame of {frames[-1].shape[:2]}, not {frames[0].shape[:2]}")
            reading(map_dir / (stem + LABEL_SUFFIX))
            labels.append(LABEL_TO_TRAIN_ID[read_map(map_dir / (stem + LABEL_SUFFIX))])
            if snippet.instances[position]:
                reading(map_dir / (stem + INSTANCE_SUFFIX))
                instance = read_map(map_dir / (stem + INSTANCE_SUFFIX))
                instances.append(np.where(instance >= FIRST_INSTANCE_ID, instance, 0))
            else:
                instances.append(np.zeros(labels[-1].shape, np.int64))
        return frames, labels, instances

    def __getitem__(self, index: int) -> dict[str, Any]:
        """The clip at `index`, or, when one of its PNGs cannot be read, a marker naming that
        file (the collate function drops it from the batch and the datamodule counts it)."""
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for a dataset of {len(self)} clips")
        snippet_number, start = self.clips[index]
        snippet = self.snippets[snippet_number]
        reading: list[Path] = []  # the file being read, for the report if it fails
        try:
            frames, labels, instances = self.read_pngs(snippet, start, reading.append)
        except UNREADABLE_PNG_ERRORS as error:
            return {BAD_KEY: str(reading[-1]), "reason": f"{type(error).__name__}: {error}"}
        video = torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2)
        # Maps from a segmentation network may be smaller than the frames: align them first.
        frame_size = video.shape[-2:]
        clip = {
            "video": video,
            "segmentation": resize_maps(torch.from_numpy(np.stack(labels)), *frame_size),
            "instance": resize_maps(torch.from_numpy(np.stack(instances)), *frame_size),
        }
        clip = transforms.resize(clip, self.height, self.width)
        if self.flip_probability > 0:
            # Seeded from torch so that seed_everything and per-worker seeding apply.
            rng = np.random.default_rng(int(torch.randint(2**62, (1,)).item()))
            clip = transforms.horizontal_flip(clip, rng, self.flip_probability)
        return {
            "video": clip["video"].contiguous(),
            "segmentation": clip["segmentation"].contiguous(),
            "instance": clip["instance"].contiguous(),
            "video_index": torch.tensor(snippet_number, dtype=torch.int64),
            "view_index": torch.tensor(start, dtype=torch.int64),
        }


class CityscapesSequenceDataModule(VideoDataModule):
    """`data=cityscapes`: clips of Cityscapes sequences with per-frame semantic/instance maps.

    No class labels: `num_classes` is 0, and `num_segmentation_classes` (19) counts train ids.
    """

    provides: ClassVar[frozenset[str]] = frozenset(
        {"video", "segmentation", "instance", "video_index", "view_index"}
    )
    palette = TRAIN_ID_COLOURS

    def __init__(
        self,
        root: str,
        label_dir: str = "gtFine_sequence",
        test_split_dir: str = "val",
        index_cache: str | None = None,
        num_frames: int = 8,
        frame_stride: int = 1,
        height: int = 128,
        width: int = 256,
        channels: int = 3,
        num_classes: int = 0,
        num_segmentation_classes: int = NUM_TRAIN_IDS,
        flip: bool = True,
        max_bad_fraction: float = 0.01,
        mean: Any = (0.5, 0.5, 0.5),
        std: Any = (0.5, 0.5, 0.5),
        **loader_options: Any,
    ) -> None:
        if channels != 3 or num_classes != 0 or num_segmentation_classes != NUM_TRAIN_IDS:
            raise ConfigError(
                f"Cityscapes has RGB frames, no class labels and {NUM_TRAIN_IDS} train ids: "
                f"data.channels must be 3, data.num_classes 0 and data.num_segmentation_classes "
                f"{NUM_TRAIN_IDS}, got {channels}, {num_classes} and {num_segmentation_classes}."
            )
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
        self.root = Path(root)
        if not (self.root / FRAME_DIR).is_dir():
            raise ConfigError(
                f"Cityscapes sequences not found in {root}: expected frames at {LAYOUT}; set "
                f"data.root=/path/to/cityscapes (the folder containing {FRAME_DIR})."
            )
        self.label_dir = label_dir
        self.split_dirs = {"train": "train", "val": "val", "test": test_split_dir}
        self.index_cache = Path(index_cache) if index_cache else None
        self.frame_stride = require_positive_int("data.frame_stride", frame_stride)
        self.num_segmentation_classes = num_segmentation_classes
        self.flip = flip
        self.warned_no_instances = False

    def cache_path(self, split_dir: str) -> Path:
        """Where the index of the frame folder `split_dir` is cached."""
        if self.index_cache is None:
            return self.root / f".videogen_index_{split_dir}.json"
        return self.index_cache / f"videogen_index_{split_dir}.json"

    def make_dataset(self, split: str) -> CityscapesSequenceDataset:
        split_dir = self.split_dirs[split]
        snippets = load_index(self.root, split_dir, self.label_dir, self.cache_path(split_dir))
        if not snippets:
            raise ConfigError(
                f"no Cityscapes frames found for the {split} split in "
                f"{self.root / FRAME_DIR / split_dir}: expected {LAYOUT} with split={split_dir}; "
                f"check data.root."
            )
        span = (self.num_frames - 1) * self.frame_stride + 1
        index = build_clips(snippets, span, self.frame_stride, every_start=split == "train")
        if index.unlabelled or index.too_short:
            log.warning(
                "Cityscapes %s: left out %d clips with a frame missing its label map in %s and "
                "%d snippets shorter than %d frames.",
                split,
                index.unlabelled,
                self.root / self.label_dir / split_dir,
                index.too_short,
                span,
            )
        if not index.clips:
            raise ConfigError(
                f"no usable Cityscapes clips for the {split} split: every clip of {span} frames "
                f"lacks a label map in {self.root / self.label_dir / split_dir} or is longer than "
                f"its snippet; check data.label_dir, data.num_frames and data.frame_stride."
            )
        if not self.warned_no_instances and not any(any(s.instances) for s in snippets):
            log.warning(
                "Cityscapes %s: no %s maps in %s; the instance maps are all zeros.",
                split,
                INSTANCE_SUFFIX,
                self.root / self.label_dir / split_dir,
            )
            self.warned_no_instances = True
        return CityscapesSequenceDataset(
            self.root,
            split_dir,
            self.label_dir,
            snippets,
            index.clips,
            self.num_frames,
            self.frame_stride,
            self.height,
            self.width,
            flip_probability=0.5 if self.flip and split == "train" else 0.0,
        )

    def collate_fn(self) -> Callable[[list[dict[str, Any]]], dict[str, Any]]:
        return collate_skipping_bad

"""Any collection of videos on disk (`data=video_folder`), and the generation datasets stored
that way (`data=sky_timelapse`, `data=taichi`, `data=faceforensics`).

Each split reads a folder (`split_dirs.<split>` under `root`; null: `root` itself) recursively,
in sorted order, or a list file of paths relative to `root` (`train_list`; validation and test
read `test_list`). A video is
- a video file (.mp4, .webm, .mkv, .avi, .mov), or
- a folder of frames: one that holds PNG/JPG files (read in the order of the last number in
  their names, so `..._frames_00000046.jpg` by 46 and `10.png` after `9.png`), or any folder
  whose name ends like a video file (Taichi-HD's png mode keeps `<id>.mp4/0000001.png`).
A folder that is neither is searched further, so SkyTimelapse's two levels
(`sky_train/<video>/<video>_<k>/*.jpg`) give one video per `<video>_<k>` folder.

Unlabelled by default (batches carry no `label`); with `class_folders`, a video's class is the
first-level folder it is in (under the split folder, or the first folder of a listed path), and
class indices follow the sorted class names of the training split.

Videos shorter than a clip loop or pad (`short_video`), like everywhere else, or, with
`short_video=drop`, are left out of the index with a count in the log: frame folders are counted
while listing, video files are opened once and their counts cached under `index_cache_dir`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from videogen.data import sampling
from videogen.data.clips import NO_LABEL, VideoFileDataModule, VideoSample
from videogen.data.decode import (
    IMAGE_SUFFIXES,
    VIDEO_SUFFIXES,
    VideoDecodeError,
    frame_files,
    open_video,
)
from videogen.data.index_cache import cached_index, file_stamps
from videogen.errors import ConfigError

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
SHORT_VIDEO_MODES = (*sampling.SHORT_VIDEO_MODES, "drop")


@dataclass(frozen=True)
class FoundVideo:
    """A video found on disk: its path and frame count (None: not counted, or unreadable)."""

    path: str
    frames: int | None = None


def is_hidden(path: Path) -> bool:
    return path.name.startswith(".")  # .videogen_index, .DS_Store, editors' files


def is_frame_folder(folder: Path) -> bool:
    """A folder named like a video file, or one that holds frame images."""
    if folder.suffix.lower() in VIDEO_SUFFIXES:
        return True
    return any(
        entry.is_file() and Path(entry.name).suffix.lower() in IMAGE_SUFFIXES
        for entry in os.scandir(folder)
    )


def find_videos(folder: Path) -> list[FoundVideo]:
    """The videos under `folder` (itself included), depth first in sorted order; frame folders
    come with their frame count."""
    if is_frame_folder(folder):
        return [FoundVideo(str(folder), len(frame_files(folder)))]
    found = []
    for entry in sorted(p for p in folder.iterdir() if not is_hidden(p)):
        if entry.is_dir():
            found += find_videos(entry)
        elif entry.suffix.lower() in VIDEO_SUFFIXES:
            found.append(FoundVideo(str(entry)))
    return found


def count_frames(path: str) -> int | None:
    """The frame count of a video file or frame folder; None if it cannot be read (it is then
    skipped and counted when a clip of it is read, like any unreadable video)."""
    if Path(path).is_dir():
        return len(frame_files(Path(path)))
    try:
        with open_video(path) as reader:
            return reader.num_frames
    except VideoDecodeError:
        return None


class VideoFolderDataModule(VideoFileDataModule):
    """`data=video_folder`: video files and frame folders found recursively, unlabelled or
    labelled by class folder; see the module docstring."""

    def __init__(
        self,
        root: str,
        num_classes: int = 0,
        class_folders: bool = False,
        split_dirs: Mapping[str, str | None] | None = None,
        train_list: str | None = None,
        test_list: str | None = None,
        short_video: str = "loop",
        **options: Any,
    ) -> None:
        if short_video not in SHORT_VIDEO_MODES:
            raise ConfigError(
                f"data.short_video must be one of {SHORT_VIDEO_MODES}, got {short_video!r}."
            )
        # Dropped videos never reach the sampler; loop is only its formal setting.
        super().__init__(
            root,
            num_classes,
            short_video="loop" if short_video == "drop" else short_video,
            **options,
        )
        if not class_folders and num_classes:
            raise ConfigError(
                f"data.num_classes={num_classes} but data.class_folders is false, so the videos "
                "have no labels: set data.class_folders=true or data.num_classes=0."
            )
        self.class_folders = bool(class_folders)
        self.split_dirs = {split: None for split in SPLITS} | dict(split_dirs or {})
        self.lists = {"train": train_list, "val": test_list, "test": test_list}
        self.drop_short = short_video == "drop"
        # Labels only with class folders; setup refuses a task that reads them otherwise.
        self.provides = type(self).provides - (set() if self.class_folders else {"label"})
        self._classes: list[str] | None = None
        self._listed: dict[str, list[tuple[FoundVideo, str | None]]] = {}

    def setup(self, stage: str | None = None) -> None:
        task = self.trainer.lightning_module if self.trainer is not None else None
        missing = sorted(getattr(task, "requires", frozenset()) - self.provides)
        if missing:
            raise ConfigError(
                f"the model needs the batch keys {missing}, which these video folders do not "
                "provide without labels: set data.class_folders=true (one folder per class)."
            )
        super().setup(stage)

    def split_dir(self, split: str) -> Path:
        """The split's folder, or a ConfigError listing the folders that do exist."""
        if not self.root.is_dir():
            raise ConfigError(
                f"video folder root {self.root} does not exist: set data.root=/path/to/videos."
            )
        name = self.split_dirs.get(split)
        folder = self.root / name if name else self.root
        if not folder.is_dir():
            existing = sorted(
                p.name for p in self.root.iterdir() if p.is_dir() and not is_hidden(p)
            )
            raise ConfigError(
                f"no {split} folder {folder}: the folders in data.root={self.root} are "
                f"{', '.join(existing) or 'none'}; set data.split_dirs.{split}=<folder> "
                "(null: data.root itself)."
            )
        return folder

    def list_file(self, split: str) -> Path | None:
        name = self.lists[split]
        if name is None:
            return None
        path = self.root / name
        if not path.is_file():
            key = "train_list" if split == "train" else "test_list"
            raise ConfigError(
                f"list file {path} (data.{key}) does not exist: give a file of paths relative "
                f"to data.root={self.root}, or set data.{key}=null to read the folders."
            )
        return path

    def list_entries(self, path: Path) -> list[tuple[str, str | None]]:
        """(absolute path, class folder) of each line; a trailing label index (UCF-101 style)
        is ignored, as classes come from the folders."""
        entries = []
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            text = line.strip()
            head, _, tail = text.rpartition(" ")
            if head and tail.isdigit():
                text = head.strip()
            if not text:
                continue
            relative = text.replace("\\", "/")
            folder = relative.split("/")[0] if "/" in relative else None
            if self.class_folders and folder is None:
                raise ConfigError(
                    f"{path}:{number}: {relative!r} is not in a class folder, but "
                    "data.class_folders is true: list paths as <class>/<video>."
                )
            entries.append((str(self.root / relative), folder))
        return entries

    def listed(self, split: str) -> list[tuple[FoundVideo, str | None]]:
        """(video, class folder name or None) of the split, from its list file or its folder
        (listed once: the training split is also where the class names come from)."""
        if split not in self._listed:
            self._listed[split] = self.list_videos(split)
        return self._listed[split]

    def list_videos(self, split: str) -> list[tuple[FoundVideo, str | None]]:
        list_path = self.list_file(split)
        if list_path is not None:
            return [(FoundVideo(p), folder) for p, folder in self.list_entries(list_path)]
        folder = self.split_dir(split)
        if not self.class_folders:
            return [(video, None) for video in find_videos(folder)]
        videos = []
        for entry in sorted(p for p in folder.iterdir() if not is_hidden(p)):
            if not entry.is_dir():
                if entry.suffix.lower() in VIDEO_SUFFIXES:
                    raise ConfigError(
                        f"{entry} is not in a class folder, but data.class_folders is true: "
                        f"move it into {folder}/<class>/ or set data.class_folders=false."
                    )
                continue
            videos += [(video, entry.name) for video in find_videos(entry)]
        return videos

    def classes(self) -> list[str]:
        """Sorted class folder names of the training split (empty without class folders)."""
        if self._classes is None:
            names = {folder for _, folder in self.listed("train")} if self.class_folders else set()
            self._classes = sorted(names - {None})
            if len(self._classes) != self.num_classes:
                raise ConfigError(
                    f"the training videos of data.root={self.root} are in {len(self._classes)} "
                    f"class folders but data.num_classes is {self.num_classes}: set "
                    f"data.num_classes={len(self._classes)}."
                )
        return self._classes

    def index_settings(self) -> dict[str, Any]:
        return {
            "root": str(self.root),
            "split_dirs": self.split_dirs,
            "lists": self.lists,
            "class_folders": self.class_folders,
            "drop_short": self.drop_short,
        }

    def build_samples(self, split: str) -> list[VideoSample]:
        index = {name: i for i, name in enumerate(self.classes())}
        videos = self.listed(split)
        if not videos:
            source = self.list_file(split) or self.split_dir(split)
            raise ConfigError(
                f"found no videos in {source}: expected video files or folders of PNG/JPG "
                "frames (searched recursively); set data.root or data.split_dirs."
            )
        if self.drop_short:
            videos = self.drop_short_videos(split, videos)
        samples = []
        for video, folder in videos:
            if folder is None:
                samples.append(VideoSample(video.path, NO_LABEL))
                continue
            if folder not in index:
                raise ConfigError(
                    f"{video.path}: its class folder {folder!r} has no training videos; "
                    "add some or remove it from the split."
                )
            samples.append(VideoSample(video.path, index[folder]))
        return samples

    def drop_short_videos(
        self, split: str, videos: list[tuple[FoundVideo, str | None]]
    ) -> list[tuple[FoundVideo, str | None]]:
        """The videos at least one clip long; logs how many were dropped."""
        span = sampling.clip_span(self.options.num_frames, self.options.frame_stride)
        counts = self.frame_counts([video for video, _ in videos])
        kept = [(v, c) for v, c in videos if counts[v.path] is None or counts[v.path] >= span]
        dropped = len(videos) - len(kept)
        if not kept:
            raise ConfigError(
                f"all {len(videos)} {split} videos under data.root={self.root} are shorter than "
                f"a clip ({self.options.num_frames} frames every {self.options.frame_stride}: "
                f"{span} frames): lower data.num_frames or data.frame_stride, or set "
                "data.short_video=loop."
            )
        if dropped:
            log.info(
                "Dropped %d of %d %s videos shorter than a clip of %d frames (data.short_video=drop).",
                dropped,
                len(videos),
                split,
                span,
            )
        return kept

    def frame_counts(self, videos: list[FoundVideo]) -> dict[str, int | None]:
        """Frame count of each video: known for frame folders found by the scan; video files
        (and listed paths) are opened once, and their counts cached while the files are unchanged."""
        counts = {v.path: v.frames for v in videos if v.frames is not None}
        unknown = sorted({v.path for v in videos if v.frames is None})
        if not unknown:
            return counts
        existing = [Path(p) for p in unknown if Path(p).exists()]
        digest = hashlib.sha1(json.dumps(unknown).encode()).hexdigest()[:12]
        cache = self.index_cache_dir / f"{type(self).__name__}_frames_{digest}.json"
        found = cached_index(
            cache,
            {"stamps": file_stamps(existing)},
            lambda: [FoundVideo(p, count_frames(p)) for p in unknown],
            FoundVideo,
        )
        counts.update({v.path: v.frames for v in found})
        return counts

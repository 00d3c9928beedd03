"""Kinetics-400/600/700 as users have it on disk (`data=kinetics`).

Three layouts, tried in this order for each split:
1. official CSV `{root}/{annotations.<split>}` with rows `label,youtube_id,time_start,time_end,split`,
   videos `{youtube_id}_{start:06d}_{end:06d}.mp4` flat in `{root}/{split_dirs.<split>}/` or in
   its class folders `{label}/`;
2. a list file (mmaction2 style) `{root}/{lists.<split>}` with lines `relative/path.mp4 label_index`;
3. class folders only: `{root}/{split_dirs.<split>}/{class name}/*.mp4`.
Class indices follow the sorted class names of the training annotations (names may contain
spaces and parentheses). A row whose video is missing stays in the index: it is skipped and
counted when read, like any unreadable file. A split folder is found under its usual names
(the official CSV says `validate` where most copies have `val/`), so either works.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from videogen.data.clips import VideoFileDataModule, VideoSample
from videogen.data.decode import VIDEO_SUFFIXES
from videogen.errors import ConfigError

LAYOUT_HELP = (
    "expected {root}/annotations/{train,validate}.csv with videos in {root}/{train,val}/[<class>/]"
    "<youtube_id>_<start:06d>_<end:06d>.mp4, or list files {root}/{train,val}_list.txt ('path label'), "
    "or class folders {root}/{train,val}/<class name>/*.mp4; set data.root=/path/to/kinetics"
)


# The names one split's video folder goes by; the configured name is tried first.
SPLIT_DIR_NAMES = (("train", "training"), ("val", "validate", "valid", "validation"))


def split_dir_candidates(configured: str) -> list[str]:
    """`configured` and the other usual names of the same split's folder."""
    for names in SPLIT_DIR_NAMES:
        if configured in names:
            return [configured, *(name for name in names if name != configured)]
    return [configured]


def clip_file_name(youtube_id: str, start: float, end: float, suffix: str = ".mp4") -> str:
    """The official clip file name, e.g. abc_000010_000020.mp4."""
    return f"{youtube_id}_{int(float(start)):06d}_{int(float(end)):06d}{suffix}"


class KineticsDataModule(VideoFileDataModule):
    """`data=kinetics`: labelled clips of Kinetics-400/600/700 in any of the documented layouts."""

    def __init__(
        self,
        root: str,
        num_classes: int = 400,
        annotations: Mapping[str, str] | None = None,
        lists: Mapping[str, str] | None = None,
        split_dirs: Mapping[str, str] | None = None,
        **options: Any,
    ) -> None:
        super().__init__(root, num_classes, **options)
        self.annotations = dict(
            annotations
            or {
                "train": "annotations/train.csv",
                "val": "annotations/validate.csv",
                "test": "annotations/validate.csv",
            }
        )
        self.lists = dict(
            lists or {"train": "train_list.txt", "val": "val_list.txt", "test": "val_list.txt"}
        )
        self.split_dirs = dict(split_dirs or {"train": "train", "val": "val", "test": "val"})
        self._classes: list[str] | None = None

    def annotation_files(self, split: str) -> list[Path]:
        return [
            p
            for p in (self.root / self.annotations[split], self.root / self.lists[split])
            if p.is_file()
        ]

    def index_settings(self) -> dict[str, Any]:
        # The folders found: renaming val/ to validate/ must not reuse paths into the old one.
        found = {split: self.find_video_dir(split) for split in self.split_dirs}
        return {
            "root": str(self.root),
            "annotations": self.annotations,
            "lists": self.lists,
            "split_dirs": {split: str(folder) for split, folder in found.items()},
        }

    def find_video_dir(self, split: str) -> Path | None:
        """The split's video folder under `root`, by its configured or another usual name."""
        for name in split_dir_candidates(self.split_dirs[split]):
            if (self.root / name).is_dir():
                return self.root / name
        return None

    def video_dir(self, split: str) -> Path:
        """The split's video folder, or a ConfigError listing the folders that do exist."""
        folder = self.find_video_dir(split)
        if folder is not None:
            return folder
        names = split_dir_candidates(self.split_dirs[split])
        existing = sorted(p.name for p in self.root.iterdir() if p.is_dir() and p.name[0] != ".")
        raise ConfigError(
            f"no Kinetics {split} video folder in data.root={self.root}: looked for "
            f"{', '.join(names)}, and the folders there are {', '.join(existing) or 'none'}; "
            f"set data.split_dirs.{split}=<folder> or point data.root at the dataset."
        )

    def check_root(self) -> None:
        if not self.root.is_dir():
            raise ConfigError(f"Kinetics root {self.root} does not exist: {LAYOUT_HELP}.")

    def classes(self) -> list[str]:
        """Sorted class names from the training CSV, else the training class folders."""
        if self._classes is None:
            self.check_root()
            train_csv = self.root / self.annotations["train"]
            if train_csv.is_file():
                self._classes = sorted({row["label"] for row in read_csv(train_csv)})
            else:
                folder = self.find_video_dir("train")
                self._classes = (
                    sorted(p.name for p in folder.iterdir() if p.is_dir()) if folder else []
                )
            if self._classes and len(self._classes) != self.num_classes:
                raise ConfigError(
                    f"the Kinetics annotations name {len(self._classes)} classes but data.num_classes is "
                    f"{self.num_classes}: set data.num_classes={len(self._classes)}."
                )
        return self._classes

    def build_samples(self, split: str) -> list[VideoSample]:
        self.check_root()
        csv_path, list_path = self.root / self.annotations[split], self.root / self.lists[split]
        if csv_path.is_file():
            return self.from_csv(csv_path, self.video_dir(split))
        if list_path.is_file():
            return self.from_list(list_path, lambda: self.video_dir(split))
        video_dir = self.find_video_dir(split)
        if video_dir is not None and any(p.is_dir() for p in video_dir.iterdir()):
            return self.from_folders(video_dir)
        raise ConfigError(
            f"no Kinetics {split} annotations found under {self.root}: {LAYOUT_HELP}."
        )

    def from_csv(self, csv_path: Path, video_dir: Path) -> list[VideoSample]:
        index = {name: i for i, name in enumerate(self.classes())}
        samples = []
        for row in read_csv(csv_path):
            if row["label"] not in index:
                raise ConfigError(
                    f"{csv_path}: class {row['label']!r} is not among the training classes."
                )
            name = clip_file_name(row["youtube_id"], row["time_start"], row["time_end"])
            flat, in_class = video_dir / name, video_dir / row["label"] / name
            path = (
                in_class
                if in_class.exists() or not flat.exists() and (video_dir / row["label"]).is_dir()
                else flat
            )
            samples.append(VideoSample(str(path), index[row["label"]]))
        return samples

    def from_list(self, list_path: Path, video_dir: Callable[[], Path]) -> list[VideoSample]:
        """Lines `path label`; relative paths are under the split's video folder (looked for
        only when one is relative)."""
        samples = []
        for number, line in enumerate(list_path.read_text().splitlines(), start=1):
            if not line.strip():
                continue
            path, _, label = line.strip().rpartition(" ")
            if not path or not label.isdigit():
                raise ConfigError(
                    f"{list_path}:{number}: expected 'relative/path.mp4 label_index', got {line!r}."
                )
            full = Path(path) if Path(path).is_absolute() else video_dir() / path
            samples.append(VideoSample(str(full), int(label)))
        return samples

    def from_folders(self, video_dir: Path) -> list[VideoSample]:
        index = {name: i for i, name in enumerate(self.classes())}
        samples = []
        for class_dir in sorted(p for p in video_dir.iterdir() if p.is_dir()):
            if class_dir.name not in index:
                raise ConfigError(
                    f"{class_dir}: class folder {class_dir.name!r} is not among the training classes."
                )
            for video in sorted(class_dir.iterdir()):
                if video.suffix.lower() in VIDEO_SUFFIXES:
                    samples.append(VideoSample(str(video), index[class_dir.name]))
        return samples


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    required = {"label", "youtube_id", "time_start", "time_end"}
    if rows and not required <= rows[0].keys():
        raise ConfigError(
            f"{path}: expected the columns label,youtube_id,time_start,time_end,split."
        )
    return rows

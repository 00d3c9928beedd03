"""UCF-101 as distributed (`data=ucf101`).

Videos `{root}/<ClassName>/v_<Class>_gXX_cYY.avi` (101 classes, 13,320 avi, 320x240, 25 fps) and
the official split lists in `ucfTrainTestlist/` (`UCF101TrainTestSplits-RecognitionTask.zip`),
found inside `root` or beside it:

    classInd.txt            "1 ApplyEyeMakeup"                       (1-based class indices)
    trainlist0{1,2,3}.txt   "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1"
    testlist0{1,2,3}.txt    "ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi" (no label)

`fold` picks the lists. A label is always the class folder's index in classInd.txt, made 0-based,
so the test lists (which have none) and the train lists agree. `root` may also be the folder
that holds `UCF-101/`. Validation and test read the fold's test list; training reads its train
list, or both lists with `train_on=all` (all 13,320 videos, as the video generation papers that
report FVD on UCF-101 train).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from videogen.data.clips import VideoFileDataModule, VideoSample
from videogen.errors import ConfigError

LIST_DIR = "ucfTrainTestlist"
VIDEO_DIR = "UCF-101"
FOLDS = (1, 2, 3)
TRAIN_ON = ("train", "all")
GET_LISTS = (
    f"unpack UCF101TrainTestSplits-RecognitionTask.zip beside the {VIDEO_DIR}/ folder, "
    "or set data.list_dir=<folder holding classInd.txt>"
)


class UCF101DataModule(VideoFileDataModule):
    """`data=ucf101`: the 101 action classes of UCF-101, one of the three official folds."""

    def __init__(
        self,
        root: str,
        num_classes: int = 101,
        fold: int = 1,
        list_dir: str | None = None,
        train_on: str = "train",
        **options: Any,
    ) -> None:
        super().__init__(root, num_classes, **options)
        if fold not in FOLDS:
            raise ConfigError(
                f"data.fold must be 1, 2 or 3 (the official UCF-101 splits), got {fold!r}."
            )
        if train_on not in TRAIN_ON:
            raise ConfigError(
                f"data.train_on must be 'train' (the fold's train list) or 'all' (its train and "
                f"test lists), got {train_on!r}."
            )
        self.fold = fold
        self.list_dir = list_dir
        self.train_on = train_on

    def video_root(self) -> Path:
        """The folder of class folders: `root`, or `root/UCF-101` when root is the folder above."""
        nested = self.root / VIDEO_DIR
        return nested if nested.is_dir() else self.root

    def list_dir_candidates(self) -> list[Path]:
        if self.list_dir is not None:
            return [self.root / self.list_dir]  # an absolute list_dir stays as it is
        videos = self.video_root()
        return list(
            dict.fromkeys([videos / LIST_DIR, self.root / LIST_DIR, videos.parent / LIST_DIR])
        )

    def find_list_dir(self) -> Path:
        """The split-list folder, or a ConfigError naming where it was looked for."""
        if not self.root.is_dir():
            raise ConfigError(
                f"UCF-101 root {self.root} does not exist: set data.root=/path/to/{VIDEO_DIR} "
                "(the folder of the 101 class folders)."
            )
        candidates = self.list_dir_candidates()
        for folder in candidates:
            if folder.is_dir():
                return folder
        raise ConfigError(
            f"no UCF-101 split lists: looked for {' and '.join(str(p) for p in candidates)}; "
            f"{GET_LISTS}."
        )

    def list_files(self, split: str) -> list[Path]:
        """The fold's list files that make `split`."""
        folder = self.find_list_dir()
        test = folder / f"testlist0{self.fold}.txt"
        if split != "train":
            return [test]
        train = folder / f"trainlist0{self.fold}.txt"
        return [train, test] if self.train_on == "all" else [train]

    def annotation_files(self, split: str) -> list[Path]:
        folder = self.find_list_dir()
        files = [folder / "classInd.txt", *self.list_files(split)]
        return [p for p in files if p.is_file()]

    def index_settings(self) -> dict[str, Any]:
        return {
            "videos": str(self.video_root()),
            "lists": str(self.find_list_dir()),
            "fold": self.fold,
            "train_on": self.train_on,
        }

    def classes(self) -> dict[str, int]:
        """Class folder name -> 0-based index, from classInd.txt."""
        path = self.find_list_dir() / "classInd.txt"
        if not path.is_file():
            raise ConfigError(f"UCF-101 class list {path} is missing: {GET_LISTS}.")
        classes = {}
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            if not line.strip():
                continue
            index, _, name = line.strip().partition(" ")
            if not index.isdigit() or not name.strip():
                raise ConfigError(
                    f"{path}:{number}: expected '<1-based index> <ClassName>', got {line!r}; "
                    "restore the official file."
                )
            classes[name.strip()] = int(index) - 1
        if len(classes) != self.num_classes:
            raise ConfigError(
                f"{path} names {len(classes)} classes but data.num_classes is {self.num_classes}: "
                f"set data.num_classes={len(classes)}."
            )
        return classes

    def build_samples(self, split: str) -> list[VideoSample]:
        classes = self.classes()
        # The official lists spell a few names with other capitals than classInd.txt does
        # (HandStandPushups / HandstandPushups), so the class is looked up ignoring case.
        by_lower = {name.lower(): index for name, index in classes.items()}
        videos = self.video_root()
        samples = []
        for path in self.list_files(split):
            if not path.is_file():
                raise ConfigError(
                    f"UCF-101 split list {path} is missing (data.fold={self.fold}): {GET_LISTS}."
                )
            for number, line in enumerate(path.read_text().splitlines(), start=1):
                # Train lists add a label after the path: classInd.txt decides it either way.
                entry = line.strip().split(" ")[0].replace("\\", "/")
                if not entry:
                    continue
                folder = entry.split("/")[0]
                if "/" not in entry or folder.lower() not in by_lower:
                    raise ConfigError(
                        f"{path}:{number}: {entry!r} is not in a class folder named in "
                        f"classInd.txt; fix the line or use the official {LIST_DIR} files."
                    )
                samples.append(VideoSample(str(videos / entry), by_lower[folder.lower()]))
        return samples

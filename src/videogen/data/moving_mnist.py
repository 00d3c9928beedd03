"""Moving MNIST from the standard `mnist_test_seq.npy`: two digits bouncing in 64x64 frames.

The file holds uint8 of shape (T, N, H, W) = (20, 10000, 64, 64). It is memory-mapped, never
read whole. Splits are fixed runs of sequence indices taken in order: the first `train_size`
sequences train, the next `val_size` validate, the next `test_size` test (8000 / 1000 / 1000 by
default, so the test set is the last 1000 sequences). A clip is the first `context_frames +
future_frames` frames of a sequence; the split into context and future is the predictor's job.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch.utils.data import Dataset

from videogen.config import require_positive_int
from videogen.data import transforms
from videogen.data.base import SIZED_SPLITS, VideoDataModule
from videogen.errors import ConfigError

DEFAULT_FILE_NAME = "mnist_test_seq.npy"


def open_sequences(path: Path) -> np.ndarray:
    """Memory-map a Moving MNIST file, or raise a ConfigError saying what was expected of it."""
    if not path.is_file():
        raise ConfigError(
            f"Moving MNIST file {path} not found: set data.root=/path/to/folder containing "
            f"{path.name} (data.file_name names the file)."
        )
    try:
        sequences = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as err:
        raise ConfigError(
            f"{path} is not a .npy array file: expected uint8 of shape (T, N, H, W) such as "
            f"(20, 10000, 64, 64)."
        ) from err
    if sequences.ndim != 4 or sequences.dtype != np.uint8:
        raise ConfigError(
            f"{path} holds {sequences.dtype} of shape {tuple(sequences.shape)}: expected uint8 of "
            f"shape (T, N, H, W) such as (20, 10000, 64, 64)."
        )
    return sequences


class MovingMNISTDataset(Dataset):
    """The sequences `indices` of a Moving MNIST file, as clips of the first `num_frames` frames.

    Item keys: `video` uint8 (T, 1, H, W), `video_index` (the sequence's index in the file) and
    `view_index` (always 0).
    """

    def __init__(
        self, path: Path, indices: range, num_frames: int, height: int, width: int
    ) -> None:
        self.path = path
        self.indices = indices
        self.num_frames = num_frames
        self.height = height
        self.width = width
        self.sequences: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.indices)

    def __getstate__(self) -> dict[str, Any]:
        # Pickling a memory map copies the whole array; each worker maps the file itself instead.
        return {**self.__dict__, "sequences": None}

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for a dataset of {len(self)} clips")
        if self.sequences is None:
            self.sequences = open_sequences(self.path)
        sequence = self.indices[index]
        frames = np.array(self.sequences[: self.num_frames, sequence])  # T, H, W
        clip = {"video": torch.from_numpy(frames).unsqueeze(1)}
        clip = transforms.resize(clip, self.height, self.width)
        return {
            "video": clip["video"].contiguous(),
            "video_index": torch.tensor(sequence, dtype=torch.int64),
            "view_index": torch.tensor(0, dtype=torch.int64),
        }


class MovingMNISTDataModule(VideoDataModule):
    """`data=moving_mnist`: 10 context + 10 future frames of the standard Moving MNIST test file.

    There are no labels: the data serves video prediction, not classification.
    """

    provides: ClassVar[frozenset[str]] = frozenset({"video", "video_index", "view_index"})
    split_size_keys: ClassVar[dict[str, str]] = SIZED_SPLITS

    def __init__(
        self,
        root: str,
        file_name: str = DEFAULT_FILE_NAME,
        context_frames: int = 10,
        future_frames: int = 10,
        num_frames: int | None = None,
        height: int = 64,
        width: int = 64,
        channels: int = 1,
        num_classes: int = 0,
        train_size: int = 8000,
        val_size: int = 1000,
        test_size: int = 1000,
        mean: Any = (0.0,),
        std: Any = (1.0,),
        **loader_options: Any,
    ) -> None:
        context_frames = require_positive_int("data.context_frames", context_frames)
        future_frames = require_positive_int("data.future_frames", future_frames)
        clip_frames = context_frames + future_frames
        if num_frames is not None and num_frames != clip_frames:
            raise ConfigError(
                f"data.num_frames ({num_frames}) must equal data.context_frames + "
                f"data.future_frames ({context_frames} + {future_frames} = {clip_frames}): "
                f"set data.num_frames={clip_frames}."
            )
        if channels != 1 or num_classes != 0:
            raise ConfigError(
                f"Moving MNIST is greyscale and unlabelled: data.channels must be 1 and "
                f"data.num_classes 0, got {channels} and {num_classes}."
            )
        super().__init__(
            clip_frames,
            height,
            width,
            channels,
            num_classes,
            mean=mean,
            std=std,
            context_frames=context_frames,
            future_frames=future_frames,
            **loader_options,
        )
        self.path = Path(root) / file_name
        if not Path(root).is_dir():
            raise ConfigError(
                f"Moving MNIST folder {root} does not exist: set data.root=/path/to/folder "
                f"containing {file_name}."
            )
        # Opened here only to check the file before any work; datasets map it again lazily.
        sequences = open_sequences(self.path)
        total_frames, count = sequences.shape[:2]
        if total_frames < clip_frames:
            raise ConfigError(
                f"{self.path} has {total_frames} frames per sequence, fewer than data.context_frames "
                f"+ data.future_frames = {clip_frames}."
            )
        sizes = {
            "train": require_positive_int("data.train_size", train_size),
            "val": require_positive_int("data.val_size", val_size),
            "test": require_positive_int("data.test_size", test_size),
        }
        if sum(sizes.values()) > count:
            raise ConfigError(
                f"data.train_size + data.val_size + data.test_size = {sum(sizes.values())} is more "
                f"than the {count} sequences in {self.path}: make them smaller."
            )
        self.splits: dict[str, range] = {}
        start = 0
        for split, size in sizes.items():
            self.splits[split] = range(start, start + size)
            start += size

    def make_dataset(self, split: str) -> MovingMNISTDataset:
        return MovingMNISTDataset(
            self.path, self.splits[split], self.num_frames, self.height, self.width
        )

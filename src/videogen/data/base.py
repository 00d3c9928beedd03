"""The shared base of every datamodule: loaders, collate and device-side normalisation.

A batch is a dict. `video` leaves the loader as uint8 (B, T, C, H, W) and is turned into
normalised float only once it is on the device: 4x less host memory and transfer than float32.
"""

from __future__ import annotations

import abc
import json
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any, ClassVar

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities.rank_zero import rank_zero_info
from torch.utils.data import DataLoader, Dataset, default_collate
from torch.utils.data.distributed import DistributedSampler

from videogen.config import require_non_negative_int, require_positive_int
from videogen.data.latent_cache import LatentCacheDataset, read_manifest, refuse_mismatch
from videogen.errors import ConfigError, DataError

log = logging.getLogger(__name__)

# Every key a datamodule may put in a batch, with its meaning (the batch contract).
BATCH_KEYS: dict[str, str] = {
    "video": "uint8 (B, T, C, H, W) from the loader; float and normalised on the device",
    "label": "int64 (B,) class index",
    "segmentation": "int64 (B, T, H, W) semantic class ids",
    "instance": "int64 (B, T, H, W) instance ids",
    "video_index": "int64 (B,) index of the source video",
    "view_index": "int64 (B,) index of the view (clip x crop) of that video",
}


# `split_size_keys` of the datamodules whose split sizes are config keys.
SIZED_SPLITS: dict[str, str] = {split: f"data.{split}_size" for split in ("train", "val", "test")}


class BadVideoLog:
    """Counts the videos skipped as unreadable, per split; stops the run past `max_fraction`.

    The limit is on the count over all processes: under DDP each rank reads its share of the
    data, and `record` is given a `total` that sums the ranks' counts, so every rank sees the
    same number and stops at the same batch with the same sentence (a rank that stopped alone
    would leave the others waiting in their next all-reduce).
    """

    def __init__(self, max_fraction: float) -> None:
        self.max_fraction = max_fraction
        self.counts: dict[str, int] = {}
        self.attempted: dict[str, int] = {}
        self.logged: set[str] = set()

    def record(
        self,
        split: str,
        bad: list[tuple[str, str]],
        attempted: int,
        dataset_size: int,
        total: Callable[[int], int] | None = None,
    ) -> None:
        """Count a batch's unreadable videos; `total` turns this process's count of `split`
        into the count over all processes (None: this process is the whole run)."""
        self.counts[split] = self.counts.get(split, 0) + len(bad)
        self.attempted[split] = self.attempted.get(split, 0) + attempted
        for path, reason in bad:
            if path not in self.logged:  # once per file, however many epochs
                self.logged.add(path)
                log.warning("Skipped an unreadable video: %s (%s)", path, reason)
        skipped = total(self.counts[split]) if total else self.counts[split]
        if skipped > self.max_fraction * dataset_size:
            raise DataError(
                f"{skipped} of {dataset_size} {split} videos could not be read (more than "
                f"data.max_bad_fraction={self.max_fraction}); fix or remove them, or raise that limit."
            )

    def take_epoch(self, split: str) -> tuple[int, int]:
        """(skipped, attempted) since the last call for `split`, and reset them."""
        return self.counts.pop(split, 0), self.attempted.pop(split, 0)


def per_channel(values: Sequence[float]) -> torch.Tensor:
    """Per-channel statistics as a (1, 1, C, 1, 1) tensor that broadcasts over (B, T, C, H, W)."""
    return torch.tensor(list(values), dtype=torch.float32).view(1, 1, -1, 1, 1)


def split_clip(
    num_frames: int, context_frames: int | None, future_frames: int | None
) -> tuple[int, int]:
    """(context, future) frames of a clip for video prediction; unset halves default to the rest.

    With neither given, the first half of the clip (rounded down, at least 1 frame) is context.
    """
    if context_frames is None and future_frames is None:
        context_frames = max(1, num_frames // 2)
    if context_frames is None:
        context_frames = num_frames - require_positive_int("data.future_frames", future_frames)
    if future_frames is None:
        future_frames = num_frames - require_positive_int("data.context_frames", context_frames)
    if num_frames == 1:  # a single frame has nothing to predict; only prediction tasks care
        return 1, 0
    require_positive_int("data.context_frames", context_frames)
    require_positive_int("data.future_frames", future_frames)
    if context_frames + future_frames != num_frames:
        raise ConfigError(
            f"data.context_frames + data.future_frames ({context_frames} + {future_frames}) must "
            f"equal data.num_frames ({num_frames}): set data.num_frames="
            f"{context_frames + future_frames}."
        )
    return context_frames, future_frames


# Loader workers `data.num_workers=auto` asks for at most: enough to keep one training process
# fed from compressed video, few enough that their memory stays small.
AUTO_WORKERS_CAP = 8


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask: what SLURM or taskset grant)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def check_num_workers(value: Any) -> int | str:
    """`data.num_workers` as given: "auto" or an integer >= 0."""
    if value == "auto":
        return value
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(
            f"data.num_workers must be 'auto' or an integer >= 0, got {value!r}: set "
            "data.num_workers=auto (one fewer than the cores per process) or a count."
        )
    return value


def choose_num_workers(requested: int | str, processes: int = 1, cores: int | None = None) -> int:
    """Loader workers per training process for `data.num_workers`.

    Each process's workers share the cores with the processes themselves, so "auto" leaves one
    core per process for its training loop: cores // processes - 1, at most AUTO_WORKERS_CAP.
    A count is kept unless it exceeds the cores a process has (more workers than cores only
    adds switching and memory), in which case it is lowered to that.
    """
    cores = available_cores() if cores is None else cores
    per_process = max(1, cores // max(1, processes))
    if requested == "auto":
        return max(0, min(AUTO_WORKERS_CAP, per_process - 1))
    return min(int(requested), per_process)


def use_pin_memory(option: bool | None, device: torch.device | None = None) -> bool:
    """Whether loaders pin their batches in page-locked memory (faster, asynchronous copies to
    the GPU): `option` if given; if None, when `device` (the run's) is a CUDA device, or, with
    no device known, when CUDA is available."""
    if option is not None:
        return bool(option)
    if device is not None:
        return torch.device(device).type == "cuda"
    return torch.cuda.is_available()


def batches_done_in_epoch(trainer: pl.Trainer) -> int:
    """Batches of the current epoch already trained on: non-zero only in a run restored from a
    mid-epoch checkpoint (read when the epoch's iteration starts, once the loop is restored)."""
    epoch_loop = trainer.fit_loop.epoch_loop
    return epoch_loop.batch_progress.current.completed if epoch_loop.restarting else 0


class ResumableSampler(DistributedSampler):
    """A DistributedSampler that, in a run resumed mid-epoch, starts after the batches done.

    `batches_done` (given by the datamodule) is asked at the start of each pass; the indices of
    those batches are skipped, so no clip is decoded twice and none is missed.
    """

    def __init__(
        self,
        dataset: Dataset,
        batch_size: int,
        batches_done: Callable[[], int] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(dataset, **kwargs)
        self.batch_size = batch_size
        self.batches_done = batches_done

    def __iter__(self) -> Iterator[int]:
        indices = list(super().__iter__())
        done = self.batches_done() if self.batches_done else 0
        if done:
            log.info("Resuming the epoch at batch %d.", done)
        return iter(indices[done * self.batch_size :])


# The ranges a task may ask `video` in (its `pixel_range`): the data's mean / std
# standardisation (classifiers), [0, 1] (prediction) or [-1, 1] (tanh generators).
PIXEL_RANGES = ("standardized", "unit", "signed")


def scale_uint8(video: torch.Tensor, pixel_range: str) -> torch.Tensor:
    """uint8 video -> float in "unit" ([0, 1]) or "signed" ([-1, 1]) range."""
    if pixel_range == "unit":
        return video.float().div_(255.0)
    if pixel_range == "signed":
        return video.float().div_(127.5).sub_(1.0)
    raise ValueError(f"unknown pixel range {pixel_range!r}: choose one of {PIXEL_RANGES}.")


class VideoDataModule(pl.LightningDataModule, abc.ABC):
    """Base datamodule: builds loaders from `make_dataset(split)` and normalises video on the device.

    Subclasses set `provides` (the batch keys they deliver) and implement `make_dataset`.
    """

    provides: ClassVar[frozenset[str]] = frozenset()
    # The config key that sets the size of a split, where one does (SIZED_SPLITS: synthetic,
    # Moving MNIST).
    split_size_keys: ClassVar[dict[str, str]] = {}
    # Colours (RGB, 0-255) of the segmentation class ids, for label panels; None: no classes.
    palette: ClassVar[tuple[tuple[int, int, int], ...] | None] = None

    def __init__(
        self,
        num_frames: int,
        height: int,
        width: int,
        channels: int = 3,
        num_classes: int = 0,
        batch_size: int = 8,
        num_workers: int | str = 0,
        pin_memory: bool | None = None,
        mean: Sequence[float] = (0.5, 0.5, 0.5),
        std: Sequence[float] = (0.5, 0.5, 0.5),
        context_frames: int | None = None,
        future_frames: int | None = None,
        max_bad_fraction: float = 1.0,
        latents: str | None = None,
    ) -> None:
        super().__init__()
        # A latent cache (videogen/data/latent_cache.py) that replaces the training videos.
        self.latents = latents
        self.num_frames = require_positive_int("data.num_frames", num_frames)
        self.height = require_positive_int("data.height", height)
        self.width = require_positive_int("data.width", width)
        self.channels = require_positive_int("data.channels", channels)
        self.num_classes = require_non_negative_int("data.num_classes", num_classes)
        self.batch_size = require_positive_int("data.batch_size", batch_size)
        # "auto" or a count, resolved against the machine when the first loader is built.
        self.requested_workers = check_num_workers(num_workers)
        self.chosen_workers: int | None = None
        self.pin_memory = pin_memory  # None: decided per run by `use_pin_memory`
        for key, stats in (("data.mean", mean), ("data.std", std)):
            if len(stats) != channels:
                raise ConfigError(
                    f"{key} has {len(stats)} values but data.channels is {channels}: give one per channel."
                )
        if min(std) <= 0:
            raise ConfigError(f"data.std must be positive, got {list(std)}.")
        self.mean = per_channel(mean)
        self.std = per_channel(std)
        self.context_frames, self.future_frames = split_clip(
            self.num_frames, context_frames, future_frames
        )
        self.datasets: dict[str, Dataset] = {}
        if not 0 <= max_bad_fraction <= 1:
            raise ConfigError(
                f"data.max_bad_fraction must be between 0 and 1, got {max_bad_fraction}."
            )
        # Datasets read from files set a limit (data.max_bad_fraction); rendered ones have none.
        self.bad_videos = BadVideoLog(max_fraction=max_bad_fraction)

    @abc.abstractmethod
    def make_dataset(self, split: str) -> Dataset:
        """Return the dataset of one split ("train", "val" or "test")."""

    def dataset(self, split: str) -> Dataset:
        """The dataset of `split`, built on first use: the latent cache for training when
        `latents` is set (validation and test still read videos)."""
        if split not in self.datasets:
            if split == "train" and self.latents:
                self.datasets[split] = self.cached_latents()
            else:
                self.datasets[split] = self.make_dataset(split)
        return self.datasets[split]

    # -- latent cache -------------------------------------------------------------------------

    def cache_source(self) -> Dataset:
        """The clips a latent cache holds: the training split's (deterministic for rendered
        data; file datasets take each video's centre clip)."""
        return self.make_dataset("train")

    def cache_flips(self) -> bool:
        """Whether a latent cache also holds each clip's mirror image (training flips)."""
        return False

    def cache_record(self) -> dict[str, Any]:
        """The data settings a latent cache was made from (a later run must match them)."""
        record = {
            "datamodule": f"{type(self).__module__}.{type(self).__qualname__}",
            "num_frames": self.num_frames,
            "height": self.height,
            "width": self.width,
            "num_classes": self.num_classes,
            **self.source_settings(),
        }
        return json.loads(json.dumps(record, default=str))  # as the manifest stores it

    def source_settings(self) -> dict[str, Any]:
        """What else decides the cached clips (where the data is, how clips are drawn)."""
        return {}

    def cached_latents(self) -> Dataset:
        """The latent cache `latents`, refused with one sentence if made from other data."""
        manifest = read_manifest(self.latents)
        wanted = {"data": self.cache_record(), "flips": self.cache_flips()}
        refuse_mismatch(
            self.latents, manifest, wanted, keys=tuple(wanted)
        )  # the task checks the VAE
        rank_zero_info(
            "Training from the latent cache %s (%s clips): no VAE runs in the training step.",
            self.latents,
            manifest.get("source_clips"),
        )
        return LatentCacheDataset(self.latents)

    def setup(self, stage: str | None = None) -> None:
        splits = {
            "fit": ("train", "val"),
            "validate": ("val",),
            "test": ("test",),
            "predict": ("test",),
        }
        for split in splits.get(stage, ("train", "val", "test")):
            self.dataset(split)
        if stage == "fit":
            self.check_full_training_batch()

    def check_full_training_batch(self) -> None:
        """Refuse, before any work, a training split too small for one full batch per process.

        Training drops the last partial batch, so such a run would take no step, write no
        checkpoint and still end as if it had trained.
        """
        trainer = self.trainer
        if trainer is not None and not trainer.limit_train_batches:
            return  # no training asked for (limit_train_batches=0)
        processes = trainer.world_size if trainer is not None else 1
        clips = len(self.dataset("train"))
        if clips // processes >= self.batch_size:
            return
        key = self.split_size_keys.get("train")
        size = f"{key}={clips} clips" if key else f"the train split's {clips} clips"
        batch = f"data.batch_size={self.batch_size}"
        if processes > 1:
            batch += f" per process x {processes} processes"
        raise ConfigError(
            f"{size} make no full batch of {batch} (training drops the last partial batch): "
            "lower data.batch_size or use more data."
        )

    def shuffling_sampler(self, dataset: Dataset) -> ResumableSampler:
        """The training order: a permutation drawn from (seed, epoch) only, dealt across ranks.

        Rank r takes every world_size-th index of the one permutation, so the clips of one step
        over all ranks are the same whatever the number of processes (2 processes x batch B see
        what 1 process x batch 2B sees). Lightning keeps a sampler that is already distributed
        and sets its epoch. A run resumed mid-epoch starts at the first batch it had not trained
        on (the restored loop knows how many it had).
        """
        trainer = self.trainer
        sampler = ResumableSampler(
            dataset,
            batch_size=self.batch_size,
            batches_done=(lambda: batches_done_in_epoch(trainer)) if trainer else None,
            num_replicas=trainer.world_size if trainer else 1,
            rank=trainer.global_rank if trainer else 0,
            shuffle=True,
            seed=int(os.environ.get("PL_GLOBAL_SEED", 0)),  # set by seed_everything
            drop_last=True,
        )
        if trainer is not None:
            sampler.set_epoch(trainer.current_epoch)
        return sampler

    @property
    def num_workers(self) -> int:
        """Loader workers per process: `data.num_workers` fitted to the cores (said once)."""
        if self.chosen_workers is None:
            processes = 1
            if self.trainer is not None:
                processes = max(1, self.trainer.world_size // max(1, self.trainer.num_nodes))
            cores = available_cores()
            self.chosen_workers = choose_num_workers(self.requested_workers, processes, cores)
            rank_zero_info(
                f"Data loading: {self.chosen_workers} worker(s) per process "
                f"(data.num_workers={self.requested_workers}, {cores} cores available, "
                f"{processes} process(es) on this machine)."
            )
        return self.chosen_workers

    def loader(self, split: str, shuffle: bool) -> DataLoader:
        """A DataLoader over `split`; Lightning adds a distributed sampler to unshuffled ones."""
        dataset = self.dataset(split)
        device = self.trainer.strategy.root_device if self.trainer is not None else None
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=self.shuffling_sampler(dataset) if shuffle else None,
            num_workers=self.num_workers,
            pin_memory=use_pin_memory(self.pin_memory, device),
            persistent_workers=self.num_workers > 0,
            drop_last=shuffle,
            collate_fn=self.collate_fn(),
        )

    def collate_fn(self) -> Callable[[list[Any]], Any]:
        """How items become a batch (datasets that can skip bad files override this)."""
        return default_collate

    def train_dataloader(self) -> DataLoader:
        return self.loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self.loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self.loader("test", shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        """The test split, in order (what `videogen.generate` draws its examples from)."""
        return self.loader("test", shuffle=False)

    def normalize(self, video: torch.Tensor) -> torch.Tensor:
        """uint8 (B, T, C, H, W) in [0, 255] -> float (x / 255 - mean) / std on video's device."""
        mean = self.mean.to(video.device)
        std = self.std.to(video.device)
        return (video.float().div_(255.0) - mean) / std

    def denormalize(self, video: torch.Tensor) -> torch.Tensor:
        """Inverse of `normalize`, back to float in [0, 1]."""
        return (video * self.std.to(video.device) + self.mean.to(video.device)).clamp_(0.0, 1.0)

    def to_pixel_range(self, video: torch.Tensor, pixel_range: str) -> torch.Tensor:
        """uint8 video -> float in `pixel_range` (one of PIXEL_RANGES), on video's device."""
        if pixel_range == "standardized":
            return self.normalize(video)
        return scale_uint8(video, pixel_range)

    def to_unit_range(self, video: torch.Tensor, pixel_range: str) -> torch.Tensor:
        """Video delivered in `pixel_range` back to float in [0, 1] (for showing it)."""
        if pixel_range == "standardized":
            return self.denormalize(video)
        if pixel_range == "signed":
            return ((video + 1) / 2).clamp(0.0, 1.0)
        return video.clamp(0.0, 1.0)

    def wanted_pixel_range(self) -> str:
        """The range the task being run asks for (`pixel_range`; standardized without one)."""
        trainer = self.trainer  # a LightningDataModule's trainer (it has no `_trainer`)
        task = trainer.lightning_module if trainer is not None else None
        return getattr(task, "pixel_range", "standardized")

    def current_split(self) -> str:
        trainer = self.trainer
        if trainer is None or trainer.training:
            return "train"
        return "test" if trainer.testing else "val"

    def summed_over_ranks(self, count: int) -> int:
        """`count` summed over all processes of the run: one small all-reduce per batch of a
        file dataset, which every rank makes at the same batch (their loaders are equally long).
        Prediction loaders are not (their last batches are not padded), so there, and in a
        one-process run, this process's count is returned as it is."""
        trainer = self.trainer
        if trainer is None or trainer.world_size == 1 or trainer.predicting:
            return count
        strategy = trainer.strategy
        summed = strategy.reduce(
            torch.tensor(float(count), device=strategy.root_device), reduce_op="sum"
        )
        return int(summed.item())

    def on_after_batch_transfer(self, batch: dict[str, Any], dataloader_idx: int) -> dict[str, Any]:
        if "num_attempted" in batch:
            split = self.current_split()
            self.bad_videos.record(
                split,
                batch.pop("bad_videos"),
                batch.pop("num_attempted"),
                len(self.dataset(split)),
                total=self.summed_over_ranks,
            )
        if "video" in batch and batch["video"].dtype == torch.uint8:
            # Delivered in the range the task declares: it never undoes a normalisation.
            batch["video"] = self.to_pixel_range(batch["video"], self.wanted_pixel_range())
        return batch

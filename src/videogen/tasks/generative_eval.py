"""The offline test of a model that makes clips from noise (diffusion, GANs), written once.

`GenerativeEvaluation` is a mixin for a `VideoTask` that implements `sample_clips`. Its test
stage keeps features of the real test clips, then samples `samples_per_class` clips of every
class (each rank its share, every chunk from its own seed), and logs

- `test/judge_acc` (class-conditional models) and `test/judge_fd`: the accuracy of a trained
  videogen classifier (`judge_ckpt`) on the class each clip was made for, and the Fréchet
  distance between its pre-logit features of generated and of real clips;
- `test/fvd` (with `fvd_network_path`), under the written-down protocol of `metrics/fvd.py`;
- whatever per-clip statistics the task adds (`draw_test_clips` / `sample_metrics`), e.g.
  VGAN's share of motion inside its mask.

Messages go to the logger of the task's own module, so they read as the task's.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, replace
from typing import Any, ClassVar

import torch
from pytorch_lightning.utilities.rank_zero import rank_zero_only

from videogen.errors import ConfigError
from videogen.metrics.fvd import (
    FVDDetector,
    FVDProtocol,
    balanced_subset,
    draw_real_clips,
    write_fvd_record,
)
from videogen.metrics.synthesis import frechet_distance
from videogen.tasks.judge import Judge
from videogen.tasks.protocols import GeneratesFromNoise, SamplingOptions

# Test settings a trained model may change (evaluate / generate: model.<name>=...).
GENERATIVE_EVAL_OPTIONS = (
    "samples_per_class",
    "sample_batch_size",
    "judge_ckpt",
    "fvd_network_path",
    "fvd",
    "sample_seed",
)


def signed_to_unit(video: torch.Tensor) -> torch.Tensor:
    """Video in [-1, 1] (a task's signed pixel range, a tanh or VAE output) -> float in [0, 1]."""
    return ((video.float() + 1) / 2).clamp(0, 1)


class GenerativeEvaluation(GeneratesFromNoise):
    """Test stage of a generative task (judge accuracy, judge Fréchet distance, FVD) and the
    label handling every such task shares.

    List it before `VideoTask` (its test hooks must come first) and call
    `init_generative_evaluation` in `__init__`. The task's video is in the signed range
    ([-1, 1]), and `net.num_frames` is the length of the clips it makes.
    """

    # Whether `sample_metrics` reports anything: then the test samples even with no judge and
    # no FVD detector.
    has_sample_metrics: ClassVar[bool] = False
    samples_per_class: int
    sample_batch_size: int
    judge_ckpt: str | None
    fvd_network_path: str | None
    fvd: dict[str, Any]
    sample_seed: int

    def init_generative_evaluation(
        self,
        samples_per_class: int = 16,
        sample_batch_size: int = 16,
        judge_ckpt: str | None = None,
        fvd_network_path: str | None = None,
        fvd: dict[str, Any] | None = None,
        sample_seed: int = 0,
    ) -> None:
        """Keep the test settings and refuse a bad FVD protocol now, not after training."""
        self.samples_per_class = samples_per_class
        self.sample_batch_size = sample_batch_size
        self.judge_ckpt, self.fvd_network_path = judge_ckpt, fvd_network_path
        self.fvd = dict(fvd or {})
        self.sample_seed = sample_seed
        self.fvd_protocol()
        self.judge: Judge | None = None
        self.fvd_detector: FVDDetector | None = None
        self.real_features: list[torch.Tensor] = []
        self.real_fvd_features: list[torch.Tensor] = []
        self.real_fvd_labels: list[torch.Tensor] = []

    @property
    def eval_log(self) -> logging.Logger:
        """The logger of the task's module (`videogen.tasks.diffusion`, `videogen.tasks.vgan`)."""
        return logging.getLogger(type(self).__module__)

    def generated_frames(self) -> int:
        """The length of the clips the model makes."""
        return int(self.net.num_frames)

    def sampling_record(self) -> dict[str, Any]:
        """How the clips were drawn, for the FVD record (a diffusion model's sampler settings)."""
        return asdict(self.sampling_options())

    # -- labels --------------------------------------------------------------------------------

    def labels_of(self, batch: dict[str, torch.Tensor]) -> torch.Tensor | None:
        """The batch's labels for a class-conditional network (None for an unconditional one)."""
        if self.num_classes == 0:
            return None
        if "label" not in batch:
            raise ConfigError(
                f"the network is class-conditional (model.net.num_classes={self.num_classes}) "
                "but the data gives no labels: use labelled data or set model.net.num_classes=0."
            )
        return batch["label"]

    def sampling_labels(self, labels: torch.Tensor | None) -> torch.Tensor | None:
        """Labels asked of `sample_clips`, on the task's device; refused in one sentence when
        they do not fit the model (labels for an unconditional one, unknown classes)."""
        if labels is None:
            return None
        if self.num_classes == 0:
            raise ConfigError("this model is unconditional: sample it without labels.")
        labels = labels.to(self.device).long()
        if labels.numel() and (labels.min() < 0 or labels.max() >= self.num_classes):
            raise ConfigError(
                f"labels must be class indices in [0, {self.num_classes - 1}], got "
                f"{labels.tolist()}."
            )
        return labels

    # -- per-task additions --------------------------------------------------------------------

    def draw_test_clips(
        self,
        labels: torch.Tensor | None,
        count: int,
        options: SamplingOptions,
        generator: torch.Generator,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """`count` test clips in [0, 1] and per-clip statistics (name -> (count,) tensor) for
        `sample_metrics`; here the clips of `sample_clips` and no statistics."""
        return self.sample_clips(labels, count, options, generator), {}

    def sample_metrics(self, statistics: dict[str, torch.Tensor]) -> dict[str, float]:
        """Test metrics (name -> value) from the per-clip statistics of every generated test
        clip, gathered from all ranks; none here."""
        return {}

    # -- the test loop -------------------------------------------------------------------------

    def on_test_epoch_start(self) -> None:
        self.judge = Judge(self.judge_ckpt) if self.judge_ckpt else None
        if self.judge is None:
            rank_zero_only(self.eval_log.warning)(
                "No judge: test/judge_acc and test/judge_fd are not reported; set "
                "model.judge_ckpt to a videogen classifier checkpoint trained on this data."
            )
        self.fvd_detector = self.load_fvd_detector()
        self.real_features = []
        self.real_fvd_features = []
        self.real_fvd_labels = []

    def collect_real_clips(self, batch: dict[str, torch.Tensor]) -> None:
        """Keep the judge's and the FVD detector's features of a batch of real test clips."""
        real = signed_to_unit(self.batch_video(batch))
        if self.judge is not None:
            self.real_features.append(self.judge(real)[1].cpu())
        if self.fvd_detector is not None:
            self.real_fvd_features.append(self.fvd_detector.features(real))
            if "label" in batch:
                self.real_fvd_labels.append(batch["label"].cpu())

    def test_labels(self) -> torch.Tensor | None:
        """The classes of the clips the test samples: `samples_per_class` of each class, or
        that many unconditional clips."""
        if self.samples_per_class < 2:
            raise ConfigError(
                f"model.samples_per_class must be at least 2 (a Fréchet distance needs two "
                f"clips), got {self.samples_per_class}."
            )
        if self.num_classes == 0:
            return None
        return torch.arange(self.num_classes).repeat_interleave(self.samples_per_class)

    def on_test_epoch_end(self) -> None:
        """Sample the test clips (each rank its share), judge them, and log the figures."""
        if self.judge is None and self.fvd_detector is None and not self.has_sample_metrics:
            return
        labels = self.test_labels()
        total = self.samples_per_class if labels is None else labels.numel()
        # Said now, before the sampling: how many generated clips the FVD scores.
        fvd_count = self.fvd_generated_count(total) if self.fvd_detector is not None else 0
        trainer = self.trainer
        world, rank = trainer.world_size, self.global_rank
        share = math.ceil(total / world)
        # The last rank's share is padded with repeats of the last clip (every rank must take
        # part in each gather); `valid` drops them afterwards.
        indices = torch.arange(rank * share, (rank + 1) * share).clamp_max(total - 1)
        valid = torch.arange(rank * share, (rank + 1) * share) < total
        logits, features, fvd_features = [], [], []
        statistics: dict[str, list[torch.Tensor]] = {}
        options = self.sampling_options()
        for chunk in indices.split(self.sample_batch_size):
            generator = torch.Generator().manual_seed(self.sample_seed * 100003 + int(chunk[0]))
            chunk_labels = None if labels is None else labels[chunk]
            # At the trainer's precision, like the test steps (bf16 autocast halves the
            # sampling time on a CPU with bf16 matmuls).
            with trainer.precision_plugin.forward_context():
                clips, chunk_statistics = self.draw_test_clips(
                    chunk_labels, chunk.numel(), options, generator
                )
            for name, values in chunk_statistics.items():
                statistics.setdefault(name, []).append(values.detach().float().cpu())
            if self.judge is not None:
                chunk_logits, chunk_features = self.judge(clips)
                logits.append(chunk_logits.cpu())
                features.append(chunk_features.cpu())
            if self.fvd_detector is not None:
                fvd_features.append(self.fvd_detector.features(clips))
        gathered = self.gather_rows
        if self.judge is not None:
            generated_features = gathered(torch.cat(features), valid)
            real_features = gathered(torch.cat(self.real_features), None)
            self.log(
                "test/judge_fd",
                frechet_distance(real_features, generated_features),
                rank_zero_only=True,
            )
            if labels is not None:
                predicted = gathered(torch.cat(logits), valid).argmax(1)
                accuracy = (predicted == labels[: predicted.shape[0]]).float().mean()
                self.log("test/judge_acc", accuracy, rank_zero_only=True)
        if self.fvd_detector is not None:
            generated = gathered(torch.cat(fvd_features).float(), valid)
            self.log_fvd(generated, labels, total, fvd_count)
        if statistics:
            every_clip = {name: gathered(torch.cat(v), valid) for name, v in statistics.items()}
            for name, value in self.sample_metrics(every_clip).items():
                self.log(name, float(value), rank_zero_only=True)
        self.log("test/generated_clips", float(total), rank_zero_only=True)

    # -- FVD under a written-down protocol -----------------------------------------------------

    def fvd_protocol(self) -> FVDProtocol:
        """The configured FVD protocol: `model.fvd` with the detector `model.fvd_network_path`."""
        return FVDProtocol.from_dict({**self.fvd, "detector_path": self.fvd_network_path})

    def load_fvd_detector(self) -> FVDDetector | None:
        """The protocol's detector, loaded and hashed (None, with a warning, when no file is
        set); "auto" real-clip sampling resolved: per class for a class-conditional model."""
        if self.fvd_network_path is None:
            rank_zero_only(self.eval_log.warning)(
                "No FVD detector: test/fvd is not reported; set model.fvd_network_path to a "
                "TorchScript video network such as StyleGAN-V's i3d_torchscript.pt (none ships "
                "with videogen)."
            )
            return None
        protocol = self.fvd_protocol()
        if protocol.real_sampling == "auto":
            sampling = "per_class" if self.num_classes > 0 else "uniform"
            protocol = replace(protocol, real_sampling=sampling)
        frames = self.generated_frames()
        if frames < protocol.frames:
            raise ConfigError(
                f"model.fvd.frames={protocol.frames}, but this model makes {frames}-frame clips: "
                f"set model.fvd.frames={frames} (a different protocol from the 16-frame one)."
            )
        detector = FVDDetector(protocol)
        rank_zero_only(self.eval_log.info)(
            "FVD detector %s sha256 %s", self.fvd_network_path, detector.sha256
        )
        rank_zero_only(self.eval_log.info)("%s", detector.protocol.describe())
        return detector

    def fvd_generated_count(self, total: int) -> int:
        """How many of the `total` test samples the FVD scores: the protocol's count, or all
        of them when they are fewer (said in the log)."""
        assert self.fvd_detector is not None
        wanted = self.fvd_detector.protocol.generated_clips
        if total >= wanted:
            rank_zero_only(self.eval_log.info)(
                "FVD: %d generated clips, the protocol's count (of the %d the test samples).",
                wanted,
                total,
            )
            return wanted
        per_class = math.ceil(wanted / max(self.num_classes, 1))
        rank_zero_only(self.eval_log.warning)(
            "FVD: %d generated clips, all the test samples (model.samples_per_class=%d), fewer "
            "than the protocol's %d: set model.samples_per_class=%d for the protocol's count.",
            total,
            self.samples_per_class,
            wanted,
            per_class,
        )
        return total

    def log_fvd(
        self, generated: torch.Tensor, labels: torch.Tensor | None, total: int, count: int
    ) -> None:
        """Log test/fvd over `count` of the `total` generated clips and the clip counts, and
        write the protocol record (rank zero)."""
        assert self.fvd_detector is not None
        protocol = self.fvd_detector.protocol
        # A class-balanced subset of the class-ordered samples when not all of them count.
        generated = generated[balanced_subset(labels, total, count)]
        real = self.gather_rows(torch.cat(self.real_fvd_features).float(), None)
        real_labels = None
        if protocol.real_sampling == "per_class" and self.real_fvd_labels:
            real_labels = self.gather_rows(torch.cat(self.real_fvd_labels), None)
        elif protocol.real_sampling == "per_class":
            rank_zero_only(self.eval_log.warning)(
                "model.fvd.real_sampling=per_class, but the test data has no labels: the real "
                "clips are drawn uniformly (and recorded so)."
            )
            protocol = replace(protocol, real_sampling="uniform")
            self.fvd_detector.protocol = protocol
        test_clips = real.shape[0]
        real = real[
            draw_real_clips(
                real_labels,
                test_clips,
                protocol.real_clips,
                protocol.real_sampling,
                self.sample_seed,
            )
        ]
        value = frechet_distance(real, generated)
        self.log("test/fvd", value, rank_zero_only=True)
        self.log("test/fvd_generated_clips", float(generated.shape[0]), rank_zero_only=True)
        self.log("test/fvd_real_clips", float(real.shape[0]), rank_zero_only=True)
        trainer = self.trainer
        if not trainer.is_global_zero:
            return
        record = self.fvd_detector.record(
            generated.shape[0],
            real.shape[0],
            value,
            test_clips=test_clips,
            samples=total,
            sample_seed=self.sample_seed,
            sampling=self.sampling_record(),
        )
        path = write_fvd_record(record, trainer.default_root_dir)
        for logger in self.loggers:
            logger.log_hyperparams({"fvd_protocol": record})
        self.eval_log.info(
            "test/fvd %.4g on %d generated and %d real clips; protocol record: %s",
            value,
            generated.shape[0],
            real.shape[0],
            path,
        )

    def gather_rows(self, rows: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
        """Rows of every rank, in rank order (only the `valid` ones where given)."""
        trainer = self.trainer
        if trainer.world_size == 1:
            return rows if valid is None else rows[valid]
        device = self.device
        gathered = self.all_gather(rows.to(device)).flatten(0, 1).cpu()
        if valid is None:
            return gathered
        mask = self.all_gather(valid.to(device)).flatten(0, 1).cpu()
        return gathered[mask]

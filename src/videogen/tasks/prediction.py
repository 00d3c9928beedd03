"""VPTR video prediction in two stages.

Stage 1, `AutoencoderTask` (`model=vptr_ae`): a frame autoencoder trained with MSE + gradient
difference loss + a small PatchGAN loss, generator and discriminator updated alternately.
Stage 2, `PredictionTask` (`model=vptr_far` / `model=vptr_nar`): a transformer predicts future
frames in the frozen autoencoder's feature space, trained with MSE + GDL on decoded frames.

Both work in [0, 1] pixels (`pixel_range = "unit"`: the datamodule delivers video in that
range), so any dataset (Moving MNIST, synthetic, Kinetics, ...) works unchanged. How many frames are context
and how many are predicted comes from the datamodule (`data.context_frames`,
`data.future_frames`) at every step, so test horizons may differ from training ones.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar, Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import nn

from videogen.errors import ConfigError
from videogen.metrics.frames import (
    LPIPS,
    TimestepCurves,
    frame_mse,
    frame_psnr,
    frame_ssim,
)
from videogen.models.build import build_network, is_restoring
from videogen.models.losses import discriminator_loss, gan_loss, gradient_difference_loss
from videogen.models.vptr import PatchDiscriminator, VPTRAutoencoder
from videogen.tasks.adversarial import AdversarialTask
from videogen.tasks.base import VideoTask, read_task_network
from videogen.tasks.frozen_autoencoder import FrozenAutoencoder
from videogen.tasks.protocols import ExampleVideos, Panels

log = logging.getLogger(__name__)


@runtime_checkable
class VideoPredictor(Protocol):
    """What the prediction task asks of its network (VPTR-FAR and VPTR-NAR have it)."""

    def teacher_forced(
        self, features: torch.Tensor, context: int, refine: Any, feedback_passes: int
    ) -> tuple[torch.Tensor, int]: ...

    def predict(self, context: torch.Tensor, horizon: int, refine: Any) -> torch.Tensor: ...


class PixelSpaceTask(ExampleVideos, VideoTask):
    """Shared by both stages: video in [0, 1], context/future split, frame metrics."""

    requires: ClassVar[frozenset[str]] = frozenset({"video"})
    pixel_range: ClassVar[str] = "unit"

    def pixels(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The batch's video in [0, 1] (see `batch_video`)."""
        return self.batch_video(batch)

    def clip_split(self, frames: int) -> tuple[int, int]:
        """(context, future) frame counts of a clip of `frames` frames, as the data defines them."""
        datamodule = self.attached_datamodule
        context = getattr(datamodule, "context_frames", None) or max(1, frames // 2)
        future = frames - context
        if future < 1:
            raise ConfigError(
                f"clips have {frames} frames and data.context_frames is {context}: prediction "
                "needs at least one future frame; raise data.num_frames or lower the context."
            )
        return context, future

    def log_quality(
        self, split: str, prediction: torch.Tensor, target: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """Log the mean per-frame MSE, PSNR and SSIM of `prediction`; returns the (B, T) values."""
        values = {
            "mse": frame_mse(prediction, target),
            "psnr": frame_psnr(prediction, target),
            "ssim": frame_ssim(prediction, target),
        }
        for name, value in values.items():
            self.log(
                f"{split}/{name}",
                value.mean(),
                on_epoch=True,
                prog_bar=name == "mse",
                batch_size=value.shape[0],
                sync_dist=True,
            )
        return values


class AutoencoderTask(AdversarialTask, PixelSpaceTask):
    """Stage 1: train the frame autoencoder (MSE + GDL + `gan_weight` x PatchGAN).

    Manual optimisation: each step updates the autoencoder, then the discriminator on the same
    frames (see tasks/adversarial.py). `gan_weight=0` trains without a discriminator.
    `channels_last` (None: on when running on CUDA) stores the conv weights channels-last.
    """

    runtime_options: ClassVar[tuple[str, ...]] = ("channels_last",)
    network_type: ClassVar[type | None] = VPTRAutoencoder

    def __init__(
        self,
        net: dict[str, Any],
        discriminator: dict[str, Any] | None = None,
        optimizer: dict[str, Any] | None = None,
        lr_scheduler: dict[str, Any] | None = None,
        gdl_weight: float = 1.0,
        gan_weight: float = 0.01,
        channels_last: bool | None = None,
    ) -> None:
        super().__init__(net, optimizer, lr_scheduler)
        self.save_hyperparameters(logger=False)
        self.channels_last = channels_last
        self.discriminator: PatchDiscriminator | None = (
            build_network(discriminator) if discriminator and gan_weight > 0 else None
        )
        self.gdl_weight = gdl_weight
        self.gan_weight = gan_weight
        # Without a discriminator every step updates the whole autoencoder with one backward pass.
        self.find_unused_parameters = self.discriminator is not None
        self.automatic_optimization = False

    def optimizer_parameter_sets(self) -> list[list[tuple[str, nn.Parameter]]]:
        """The autoencoder, and the discriminator when there is one: one optimiser each."""
        players = {"net": self.net, "discriminator": self.discriminator}
        return [
            list(module.named_parameters(prefix=name))
            for name, module in players.items()
            if module is not None
        ]

    def reconstruct(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(reconstruction, target), both in the decoder's output range."""
        target = self.net.to_output_range(pixels)
        return self.net(target), target

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        # Every clip of a batch unreadable: all ranks skip it together (see AdversarialTask).
        if self.any_rank("video" not in batch):
            return None
        optimizers = self.optimizers()
        optimizers = optimizers if isinstance(optimizers, list) else [optimizers]
        pixels = self.pixels(batch)
        batch_size = pixels.shape[0]
        with self.player(optimizers[0]):
            reconstruction, target = self.reconstruct(pixels)
            mse = F.mse_loss(reconstruction, target)
            loss = mse + self.gdl_weight * gradient_difference_loss(reconstruction, target)
            fake_frames = reconstruction.flatten(0, 1)
            if self.discriminator is not None:
                # The discriminator judges the reconstruction; its weights are frozen meanwhile.
                loss = loss + self.gan_weight * gan_loss(
                    self.discriminator(fake_frames), real=True, for_discriminator=False
                )
            self.step(optimizers[0], loss)
        self.log("train/loss", loss, prog_bar=True, batch_size=batch_size)
        self.log("train/mse", mse, batch_size=batch_size)

        if self.discriminator is not None:
            with self.player(optimizers[1]):
                loss_d = discriminator_loss(
                    self.discriminator(fake_frames.detach()),
                    self.discriminator(target.flatten(0, 1)),
                )
                self.step(optimizers[1], loss_d)
            self.log("train/loss_d", loss_d, batch_size=batch_size)
        self.log("train/skipped_steps", float(self.skipped_steps), batch_size=batch_size)
        self.step_schedulers()

    def evaluation_step(self, batch: dict[str, torch.Tensor], split: str) -> None:
        if "video" not in batch:  # every clip of this batch was unreadable and skipped
            return None
        pixels = self.pixels(batch)
        reconstruction, _ = self.reconstruct(pixels)
        self.log_quality(split, self.net.to_unit_range(reconstruction).clamp(0, 1), pixels)

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self.evaluation_step(batch, "val")

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self.evaluation_step(batch, "test")

    @torch.no_grad()
    def generation_panels(self, batch: dict[str, torch.Tensor]) -> Panels:
        """Videos in [0, 1] to show side by side (truth, reconstruction); all frames are made."""
        pixels = self.pixels(batch)
        reconstruction, _ = self.reconstruct(pixels)
        return Panels({"truth": pixels, "reconstruction": self.net.to_unit_range(reconstruction)})


def load_autoencoder(path: str | None) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The network config and weights of a stage-1 checkpoint, or a one-sentence error."""
    hparams, weights = read_task_network(
        path,
        AutoencoderTask,
        "model.autoencoder_ckpt",
        "train the autoencoder first (python -m videogen model=vptr_ae ...) and give its "
        "checkpoints/best.ckpt",
    )
    return hparams["net"], weights


class PredictionTask(PixelSpaceTask):
    """Stage 2: VPTR-FAR or VPTR-NAR (`model.net`) on a frozen stage-1 autoencoder.

    The autoencoder's config is kept in the hyper-parameters and its weights in the state dict,
    so a stage-2 checkpoint loads without the stage-1 file. The transformer's feature size and
    dimension are taken from the autoencoder, so the two cannot disagree. `channels_last`
    (None: on when running on CUDA) stores the conv weights (autoencoder, conv FFNs)
    channels-last.
    """

    runtime_options: ClassVar[tuple[str, ...]] = ("lpips_path", "channels_last")
    network_type: ClassVar[type | None] = VideoPredictor

    def __init__(
        self,
        net: dict[str, Any],
        autoencoder_ckpt: str | None = None,
        optimizer: dict[str, Any] | None = None,
        lr_scheduler: dict[str, Any] | None = None,
        gdl_weight: float = 1.0,
        grad_clip_norm: float | None = 1.0,
        lpips_path: str | None = None,
        feedback_passes: int = 0,
        channels_last: bool | None = None,
        autoencoder: dict[str, Any] | None = None,
    ) -> None:
        weights = None
        if autoencoder is None:  # a new run; a reloaded one has the config and the weights
            autoencoder, weights = load_autoencoder(autoencoder_ckpt)
        elif not is_restoring() and autoencoder_ckpt:
            raise ConfigError(
                "set model.autoencoder_ckpt or model.autoencoder, not both: the checkpoint "
                "already holds the autoencoder's config."
            )
        frozen = FrozenAutoencoder(autoencoder, weights)
        feature_dim, feature_size = frozen.feature_shape
        net = {**net, "feature_dim": feature_dim, "feature_size": list(feature_size)}
        super().__init__(net, optimizer, lr_scheduler)
        self.save_hyperparameters(logger=False)
        self.hparams["net"] = net
        self.hparams["autoencoder"] = autoencoder
        self.autoencoder = frozen
        self.gdl_weight = gdl_weight
        self.grad_clip_norm = grad_clip_norm
        self.lpips_path = lpips_path
        if feedback_passes < 0:
            raise ConfigError(f"model.feedback_passes must be >= 0, got {feedback_passes}.")
        self.feedback_passes = feedback_passes
        self.channels_last = channels_last
        self.lpips: LPIPS | None = None
        self.curves = TimestepCurves()

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor | None:
        if "video" not in batch:  # every clip of this batch was unreadable and skipped
            return self.empty_batch_loss()
        pixels = self.pixels(batch)
        self.autoencoder.check_frames(pixels)
        context, _ = self.clip_split(pixels.shape[1])
        predicted, first = self.net.teacher_forced(
            self.autoencoder.encode(pixels),
            context,
            refine=self.autoencoder.refine,
            feedback_passes=self.feedback_passes,
        )
        frames = self.autoencoder.decode(predicted)
        target = self.autoencoder.to_output_range(pixels[:, first:])
        mse = F.mse_loss(frames, target)
        loss = mse + self.gdl_weight * gradient_difference_loss(frames, target)
        self.log("train/loss", loss, prog_bar=True, batch_size=pixels.shape[0])
        self.log("train/mse", mse, batch_size=pixels.shape[0])
        return loss

    def configure_gradient_clipping(
        self,
        optimizer: torch.optim.Optimizer,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str | None = None,
    ) -> None:
        # The paper clips the transformer's gradient norm at 1; the trainer's setting wins if given.
        value = gradient_clip_val if gradient_clip_val is not None else self.grad_clip_norm
        if value:
            self.clip_gradients(optimizer, value, gradient_clip_algorithm or "norm")

    @torch.no_grad()
    def predict_future(self, pixels: torch.Tensor, context: int, future: int) -> torch.Tensor:
        """Frames (B, future, C, H, W) in [0, 1] predicted from the first `context` frames."""
        context_features = self.autoencoder.encode(pixels[:, :context])
        features = self.net.predict(context_features, future, refine=self.autoencoder.refine)
        return self.autoencoder.decode_pixels(features).clamp(0, 1)

    def evaluation_step(self, batch: dict[str, torch.Tensor], split: str) -> None:
        if "video" not in batch:  # every clip of this batch was unreadable and skipped
            return None
        pixels = self.pixels(batch)
        self.autoencoder.check_frames(pixels)
        context, future = self.clip_split(pixels.shape[1])
        predicted = self.predict_future(pixels, context, future)
        truth = pixels[:, context:]
        values = self.log_quality(split, predicted, truth)
        copy_last = pixels[:, context - 1 : context].expand_as(truth)
        values["mse_copy_last"] = frame_mse(copy_last, truth)
        self.log(
            f"{split}/mse_copy_last",
            values["mse_copy_last"].mean(),
            batch_size=pixels.shape[0],
            sync_dist=True,
        )
        if split == "test":
            if self.lpips is not None and self.lpips.available:
                values["lpips"] = self.lpips(predicted, truth)
                self.log(
                    "test/lpips", values["lpips"].mean(), batch_size=pixels.shape[0], sync_dist=True
                )
            self.curves.update(values)

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self.evaluation_step(batch, "val")

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self.evaluation_step(batch, "test")

    def on_test_epoch_start(self) -> None:
        self.curves = TimestepCurves()
        if self.lpips is None:
            self.lpips = LPIPS(self.lpips_path)

    def on_test_epoch_end(self) -> None:
        """Save the per-future-frame curves (csv and png) next to the run's other outputs."""
        if not self.curves.sums:
            return
        strategy = self.trainer.strategy
        count = strategy.reduce(
            torch.tensor(float(self.curves.count), device=self.device), reduce_op="sum"
        )
        means = {
            name: strategy.reduce(total.to(self.device), reduce_op="sum").cpu() / count.cpu()
            for name, total in self.curves.sums.items()
        }
        if self.trainer.is_global_zero:
            path = self.curves.write(self.trainer.default_root_dir, means)
            log.info("Per-timestep prediction metrics: %s", path)

    @torch.no_grad()
    def generation_panels(self, batch: dict[str, torch.Tensor]) -> Panels:
        """Videos in [0, 1] to show side by side (truth, context + prediction), and the index
        of the first predicted frame."""
        pixels = self.pixels(batch)
        self.autoencoder.check_frames(pixels)
        context, future = self.clip_split(pixels.shape[1])
        predicted = self.predict_future(pixels, context, future)
        prediction = torch.cat([pixels[:, :context], predicted], dim=1)
        return Panels({"truth": pixels, "prediction": prediction}, context)

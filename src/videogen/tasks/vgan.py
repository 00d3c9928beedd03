"""VGAN (`model=vgan`): a two-stream generator against a 3D-convolutional discriminator.

Trained as in the paper: Adam 2e-4 with beta1 0.5 for both players (conf/model/vgan.yaml), the
discriminator's 2-way softmax cross-entropy (real clips are class 1, generated ones class 0),
the generator's cross-entropy of its clips against "real" (the non-saturating loss) plus
`mask_weight` (0.1) times the mean of the mask, its L1 norm (the mask is a sigmoid, >= 0), which
keeps the foreground to where the motion is. The generator steps first on each batch, then the
discriminator on the same generated clips, detached (`AdversarialTask`).

Clips are in [-1, 1] inside the task (the generator's tanh range; `pixel_range = "signed"`) and
[0, 1] for panels and metrics. Unconditional when `model.net.num_classes=0` (the paper), else
class-conditional: the label is embedded into z and into the discriminator's input. The test
(tasks/generative_eval.py, shared with diffusion) samples clips per class for
`test/judge_acc`, `test/judge_fd` and `test/fvd`, and reports how much of their motion falls
inside the mask (`test/motion_in_mask`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import torch
from torch import nn
from torch.nn import functional as F

from videogen.errors import ConfigError
from videogen.metrics.motion import (
    frame_change,
    mask_coverage,
    motion_inside_mask,
    motion_outside_mask,
    motion_share,
)
from videogen.models.build import build_network
from videogen.models.layers import compose_masked
from videogen.models.vgan import (
    FAKE,
    REAL,
    ClipDiscriminator,
    TwoStreamGenerator,
    TwoStreamOutput,
)
from videogen.tasks.adversarial import AdversarialTask
from videogen.tasks.generative_eval import (
    GENERATIVE_EVAL_OPTIONS,
    GenerativeEvaluation,
    signed_to_unit,
)
from videogen.tasks.protocols import ExampleVideos, Panels, SamplingOptions


def softmax_gan_loss(logits: torch.Tensor, target: int) -> torch.Tensor:
    """The paper's loss: cross-entropy of the 2-way (fake, real) logits towards `target`."""
    targets = torch.full((logits.shape[0],), target, dtype=torch.long, device=logits.device)
    return F.cross_entropy(logits.float(), targets)


def real_probability(logits: torch.Tensor) -> torch.Tensor:
    """D's mean probability of "real" over a batch of 2-way logits (0.5: a stand-off)."""
    return logits.detach().float().softmax(1)[:, REAL].mean()


def stream_statistics(output: TwoStreamOutput) -> dict[str, torch.Tensor]:
    """Mean and standard deviation of each stream, and the mask's mean: what shows a stream
    collapsing (a constant foreground, a mask stuck at 0 or 1)."""
    background = output.background[:, 0]  # the same image in every frame
    return {
        "mask_mean": output.mask.mean(),
        "background_mean": background.mean(),
        "background_std": background.std(),
        "foreground_mean": output.foreground.mean(),
        "foreground_std": output.foreground.std(),
    }


def motion_loss(output: TwoStreamOutput) -> torch.Tensor:
    """`motion_outside_mask` of G's clip, with its gradient split so that each stream is asked
    only for its own part: the mask to open where the clip changes, the foreground to keep still
    where the mask is closed.

    Taken whole, the change of m * f + (1 - m) * b outside the mask, m (1 - m) |f_{t+1} - f_t|
    for a still m, is as small for m -> 0 as for m -> 1: its gradient would close a half-open
    mask over a moving shape as readily as open it. Here the mask's part holds the clip's
    change fixed, and the streams' part holds the mask fixed; both parts have the value of the
    whole term, and the loss is their mean.
    """
    mask = output.mask.float()
    still_mask = mask.detach()
    opening = (frame_change(output.video.float()).detach() * (1 - mask_coverage(mask))).mean()
    composed = compose_masked(still_mask, output.foreground.float(), output.background.float())
    keeping_still = motion_outside_mask(composed, still_mask)
    return (opening + keeping_still) / 2


class VganTask(ExampleVideos, GenerativeEvaluation, AdversarialTask):
    """VGAN: `net` is the `TwoStreamGenerator`; the `discriminator` config is completed here
    with the generator's clip size, channels and classes, so the two always fit each other.

    `mask_weight`: the weight of the mask's L1 penalty in the generator's loss (the paper's
    lambda, 0.1). `motion_weight`: the weight of `motion_loss`, a term (not in the paper) that
    asks the mask to cover what moves and the rest of the clip to keep still, as the two-stream
    model assumes (0: the paper's loss). `grad_clip_norm`: clip each player's gradients at this
    norm (None: the paper does not). The test settings (`samples_per_class`, `judge_ckpt`,
    `fvd_network_path`, `fvd`, ...) are those of `GenerativeEvaluation` and may be changed on a
    trained model.
    """

    one_pass: ClassVar[bool] = True  # G draws a clip in one forward pass
    pixel_range: ClassVar[str] = "signed"
    network_type: ClassVar[type | None] = TwoStreamGenerator
    runtime_options: ClassVar[tuple[str, ...]] = GENERATIVE_EVAL_OPTIONS
    has_sample_metrics: ClassVar[bool] = True

    def __init__(
        self,
        net: dict[str, Any],
        discriminator: dict[str, Any],
        optimizer: dict[str, Any] | None = None,
        lr_scheduler: dict[str, Any] | None = None,
        mask_weight: float = 0.1,
        motion_weight: float = 0.0,
        grad_clip_norm: float | None = None,
        samples_per_class: int = 16,
        sample_batch_size: int = 16,
        judge_ckpt: str | None = None,
        fvd_network_path: str | None = None,
        fvd: dict[str, Any] | None = None,
        sample_seed: int = 0,
    ) -> None:
        super().__init__(net, optimizer, lr_scheduler)
        self.save_hyperparameters(logger=False)
        generator: TwoStreamGenerator = self.net
        self.discriminator: ClipDiscriminator = build_network(
            {
                **discriminator,
                "num_frames": generator.num_frames,
                "img_size": list(generator.img_size),
                "in_channels": generator.out_channels,
                "num_classes": generator.num_classes,
            }
        )
        for key, weight in (("mask_weight", mask_weight), ("motion_weight", motion_weight)):
            if weight < 0:
                raise ConfigError(f"model.{key} must be at least 0, got {weight}: set it so.")
        self.mask_weight = mask_weight
        self.motion_weight = motion_weight
        self.grad_clip_norm = grad_clip_norm
        self.automatic_optimization = False
        self.init_generative_evaluation(
            samples_per_class, sample_batch_size, judge_ckpt, fvd_network_path, fvd, sample_seed
        )

    @property
    def num_classes(self) -> int:  # type: ignore[override]
        return int(self.net.num_classes)

    def optimizer_parameter_sets(self) -> list[list[tuple[str, nn.Parameter]]]:
        """G and D: one optimiser each (the paper's Adam for both)."""
        return [
            list(self.net.named_parameters(prefix="net")),
            list(self.discriminator.named_parameters(prefix="discriminator")),
        ]

    # ----- losses -----------------------------------------------------------------------------
    def generator_losses(
        self, fake_logits: torch.Tensor, output: TwoStreamOutput
    ) -> dict[str, torch.Tensor]:
        """G's loss (`g_loss`): its clips judged real, plus `mask_weight` x the mask's L1 norm
        (its mean absolute value) and, when `motion_weight` > 0, that weight x the motion
        outside the mask, with the terms unweighted beside it."""
        adversarial = softmax_gan_loss(fake_logits, REAL)
        mask_l1 = output.mask.float().abs().mean()
        losses = {
            "g_loss": adversarial + self.mask_weight * mask_l1,
            "g_adversarial": adversarial,
            "mask_l1": mask_l1,
        }
        if self.motion_weight > 0:  # the paper's loss computes nothing for it
            motion_outside = motion_loss(output)
            losses["g_loss"] = losses["g_loss"] + self.motion_weight * motion_outside
            losses["motion_outside_mask"] = motion_outside
        return losses

    @staticmethod
    def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
        """D's loss: real clips as class "real" plus generated ones as "fake" (summed, as the
        paper's two criteria are)."""
        return softmax_gan_loss(real_logits, REAL) + softmax_gan_loss(fake_logits, FAKE)

    # ----- training ---------------------------------------------------------------------------
    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        # Every clip of a batch unreadable: all ranks skip it together (see AdversarialTask).
        if self.any_rank("video" not in batch):
            return None
        opt_g, opt_d = self.optimizers()
        real = self.batch_video(batch)
        labels = self.labels_of(batch)
        batch_size = real.shape[0]
        z = torch.randn(batch_size, self.net.latent_dim, device=real.device)

        with self.player(opt_g):  # D judges G's clips with its weights frozen
            output = self.net(z, labels)
            losses = self.generator_losses(self.discriminator(output.video, labels), output)
            updated = self.step(opt_g, losses["g_loss"])
        logged = {**losses, **stream_statistics(output)}
        if updated:  # skipped on every rank alike, so the discriminator waits too
            with self.player(opt_d):
                real_logits = self.discriminator(real, labels)
                fake_logits = self.discriminator(output.video.detach(), labels)
                d_loss = self.discriminator_loss(real_logits, fake_logits)
                self.step(opt_d, d_loss)
            logged["d_loss"] = d_loss
            # D's probability of "real" for real and generated clips: 0.5 / 0.5 is a stand-off.
            logged["d_real"] = real_probability(real_logits)
            logged["d_fake"] = real_probability(fake_logits)
        logged["skipped_steps"] = torch.tensor(float(self.skipped_steps))
        self.log(
            "train/g_loss", logged.pop("g_loss").detach(), prog_bar=True, batch_size=batch_size
        )
        self.log_dict(
            {f"train/{name}": value.detach() for name, value in logged.items()},
            batch_size=batch_size,
        )
        self.step_schedulers()

    # ----- drawing clips ----------------------------------------------------------------------
    @torch.no_grad()
    def draw(
        self, labels: torch.Tensor | None, count: int, generator: torch.Generator | None = None
    ) -> TwoStreamOutput:
        """`count` clips and their streams (the generator's ranges) from z ~ N(0, I) drawn with
        `generator` (on the CPU, so a seed gives the same clips on any device), in eval mode
        (BatchNorm with its running statistics)."""
        labels = self.sampling_labels(labels)
        z = torch.randn(count, self.net.latent_dim, generator=generator).to(self.device)
        was_training = self.net.training
        self.net.eval()
        try:
            return self.net(z, labels)
        finally:
            self.net.train(was_training)

    def sample_clips(
        self,
        labels: torch.Tensor | None,
        count: int,
        options: SamplingOptions | None = None,
        generator: torch.Generator | None = None,
        progress: Callable[[Iterator], Iterator] | None = None,
    ) -> torch.Tensor:
        """One pass of the generator; the sampler `options` and `progress` do not apply."""
        return signed_to_unit(self.draw(labels, count, generator).video)

    @staticmethod
    def stream_panels(output: TwoStreamOutput) -> dict[str, torch.Tensor]:
        """The clip and its streams as panels in [0, 1]: generated | background | foreground | mask."""
        return {
            "generated": signed_to_unit(output.video),
            "background": signed_to_unit(output.background),
            "foreground": signed_to_unit(output.foreground),
            "mask": output.mask.float(),
        }

    def sample_panels(
        self,
        labels: torch.Tensor | None,
        count: int,
        options: SamplingOptions | None = None,
        generator: torch.Generator | None = None,
        progress: Callable[[Iterator], Iterator] | None = None,
    ) -> Panels:
        """`generate`'s panels: each clip beside its background, foreground and mask."""
        return Panels(self.stream_panels(self.draw(labels, count, generator)))

    def generation_panels(self, batch: dict[str, torch.Tensor]) -> Panels:
        """Real clips of the batch beside clips drawn for their labels (fixed seed) and the
        streams those are made of."""
        real = signed_to_unit(self.batch_video(batch))
        generator = torch.Generator().manual_seed(self.sample_seed)
        output = self.draw(self.labels_of(batch), real.shape[0], generator)
        return Panels({"real": real, **self.stream_panels(output)})

    # ----- validation and test ----------------------------------------------------------------
    def evaluation_step(self, batch: dict[str, torch.Tensor], batch_idx: int, split: str) -> None:
        """D's view of real clips and of as many drawn ones (a seed per batch index), and the
        drawn clips' mask and motion."""
        if "video" not in batch:
            return
        real = self.batch_video(batch)
        labels = self.labels_of(batch)
        generator = torch.Generator().manual_seed(self.sample_seed * 100003 + batch_idx)
        output = self.draw(labels, real.shape[0], generator)
        inside, moving = motion_inside_mask(signed_to_unit(output.video), output.mask)
        values = {
            "d_real": real_probability(self.discriminator(real, labels)),
            "d_fake": real_probability(self.discriminator(output.video, labels)),
            "mask_mean": output.mask.float().mean(),
            "motion_in_mask": motion_share(inside, moving),
        }
        for name, value in values.items():
            self.log(f"{split}/{name}", value, batch_size=real.shape[0], sync_dist=True)

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self.evaluation_step(batch, batch_idx, "val")

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        if "video" not in batch:
            return
        real = self.batch_video(batch)
        logits = self.discriminator(real, self.labels_of(batch))
        self.log("test/d_real", real_probability(logits), batch_size=real.shape[0], sync_dist=True)
        self.collect_real_clips(batch)

    def sampling_record(self) -> dict[str, Any]:
        return {"generator": "one forward pass, z ~ N(0, I)", "latent_dim": self.net.latent_dim}

    def draw_test_clips(
        self,
        labels: torch.Tensor | None,
        count: int,
        options: SamplingOptions,
        generator: torch.Generator,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The test's clips, and per clip: the motion inside the mask, all the motion, the
        mask's mean."""
        output = self.draw(labels, count, generator)
        clips = signed_to_unit(output.video)
        inside, moving = motion_inside_mask(clips, output.mask)
        mask_mean = output.mask.float().flatten(1).mean(1)
        return clips, {"motion_inside": inside, "motion": moving, "mask_mean": mask_mean}

    def sample_metrics(self, statistics: dict[str, torch.Tensor]) -> dict[str, float]:
        """test/motion_in_mask: the share of the frame-to-frame change of the generated clips
        that falls where the mask is above 0.5 (0 when nothing moves); test/motion: that change
        per pixel and frame step; test/mask_mean."""
        moving = statistics["motion"]
        steps = max(self.net.num_frames - 1, 1) * self.net.img_size[0] * self.net.img_size[1]
        return {
            "test/motion_in_mask": float(motion_share(statistics["motion_inside"], moving)),
            "test/motion": float(moving.sum()) / (moving.numel() * steps),
            "test/mask_mean": float(statistics["mask_mean"].mean()),
        }

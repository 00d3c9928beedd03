"""vid2vid: semantic-map video -> photorealistic video with a flow-warped sequential GAN.

`SynthesisTask` (`model=vid2vid`) trains the sequential generator G, the multi-scale image
discriminator D_I and the video discriminator D_V with manual optimisation. Each training
sequence is generated in chunks of `frames_per_step` frames (truncated back-propagation through
time): after every chunk G, D_I and D_V take one step each, and the chunk's outputs are detached
before they become the next chunk's previous frames. The sequence grows from `num_frames_start`
frames, doubling every `grow_every_epochs` epochs, up to `num_frames_total`.

Losses (paper weights as defaults): LSGAN (or hinge) for D_I and D_V, feature matching (10), VGG
perceptual (10, only with local VGG19 weights), flow L1 against a reference flow computed on the
real frames (10) and warp loss (10), both on pixels where that flow is confident, and an
occlusion-mask loss that prefers warping where the flow is confident.

Frames are in [-1, 1] inside the task (the generator's tanh range; `pixel_range = "signed"`, so
the datamodule delivers them so) and [0, 1] for metrics.
"""

from __future__ import annotations

import logging
import random
from typing import Any, ClassVar

import torch
from torch import nn

from videogen.errors import ConfigError
from videogen.metrics.frames import frame_psnr, frame_ssim
from videogen.metrics.synthesis import FrechetDistance, load_feature_network, temporal_warping_error
from videogen.models.build import build_network, is_restoring
from videogen.models.layers import warp
from videogen.models.losses import (
    GAN_MODES,
    VGGPerceptualLoss,
    discriminator_loss,
    feature_matching_loss,
    gan_loss,
    masked_l1,
)
from videogen.models.vid2vid import (
    ClassFeatureMixture,
    GeneratedFrame,
    InstanceFeatureEncoder,
    MultiscaleDiscriminator,
    SequentialGenerator,
    VideoDiscriminator,
    build_flow_estimator,
    clip_start_indices,
    flow_confidence,
    instance_features,
    reference_flows,
    temporal_stride,
)
from videogen.tasks.adversarial import AdversarialTask
from videogen.tasks.base import read_task_network
from videogen.tasks.protocols import ExampleVideos, Panels

log = logging.getLogger(__name__)

# Instance features kept (at most) to fit the per-class style mixture.
MAX_STYLE_SAMPLES = 20_000
# Label-panel colours (RGB, 0-255) for data that names none of its own, repeated over the classes.
FALLBACK_COLOURS = (
    (0, 0, 0), (230, 77, 77), (77, 204, 77), (77, 102, 230), (230, 204, 51),
    (204, 77, 204), (51, 204, 204), (153, 153, 153), (230, 128, 26), (128, 51, 153),
)  # fmt: skip


def label_palette(colours: Any, num_classes: int) -> torch.Tensor:
    """(K, 3) float colours in [0, 1] of the class ids: the data's own `colours` (RGB 0-255),
    or, without them, the fallback colours repeated over `num_classes` ids."""
    if colours is None:
        colours = [FALLBACK_COLOURS[k % len(FALLBACK_COLOURS)] for k in range(max(1, num_classes))]
    return torch.tensor([list(c) for c in colours], dtype=torch.float32) / 255


def colour_labels(segmentation: torch.Tensor, palette: torch.Tensor) -> torch.Tensor:
    """Class-id maps (B, T, H, W) -> colour video (B, T, 3, H, W) in [0, 1]: id k gets
    palette[k]; ids outside the palette (255 = ignore) are black."""
    palette = palette.to(segmentation.device)
    known = (segmentation >= 0) & (segmentation < len(palette))
    colours = palette[segmentation.clamp(0, len(palette) - 1)] * known.unsqueeze(-1)
    return colours.permute(0, 1, 4, 2, 3)


class SequenceBuffers:
    """A real video in [-1, 1] with its reference flows and confidence, each computed once."""

    def __init__(self, real: torch.Tensor, estimator: Any) -> None:
        self.real = real
        self.estimator = estimator
        self.flows: dict[int, torch.Tensor] = {}
        self.confidence_map: torch.Tensor | None = None

    def flow(self, stride: int) -> torch.Tensor:
        """Reference flows (B, T - stride, 2, H, W) from frame t to t + stride of the real video."""
        if stride not in self.flows:
            with torch.no_grad():
                unit = (self.real.float() + 1) / 2
                self.flows[stride] = reference_flows(unit, self.estimator, stride).to(self.real)
        return self.flows[stride]

    def confidence(self) -> torch.Tensor:
        """(B, T - 1, 1, H, W): 1 where warping real frame t - 1 by the reference flow gives t."""
        if self.confidence_map is None:
            flows = self.flow(1)
            warped = warp(self.real[:, :-1].flatten(0, 1), flows.flatten(0, 1))
            conf = flow_confidence(self.real[:, 1:].flatten(0, 1), warped)
            self.confidence_map = conf.view(*flows.shape[:2], 1, *flows.shape[-2:])
        return self.confidence_map


class SynthesisTask(ExampleVideos, AdversarialTask):
    """vid2vid (`model=vid2vid`): sequential generator + image and video discriminators.

    `net` is the SequentialGenerator (its `num_previous_frames=0` is the per-frame image-to-
    image baseline, trained without D_V). The discriminators are built here because their input
    widths follow from the generator's classes and the data's channels. `channels_last` (None:
    on when running on CUDA) stores every conv weight channels-last.
    """

    requires: ClassVar[frozenset[str]] = frozenset({"video", "segmentation"})
    pixel_range: ClassVar[str] = "signed"
    network_type: ClassVar[type | None] = SequentialGenerator
    # Options that may be changed on a trained model (evaluate / generate overrides).
    runtime_options: ClassVar[tuple[str, ...]] = (
        "sample_style",
        "fid_network_path",
        "fvd_network_path",
        "flow_estimator",
        "flow_weights_path",
        "channels_last",
    )

    def __init__(
        self,
        net: dict[str, Any],
        image_discriminator: dict[str, Any],
        video_discriminator: dict[str, Any] | None = None,
        feature_encoder: dict[str, Any] | None = None,
        optimizer: dict[str, Any] | None = None,
        lr_scheduler: dict[str, Any] | None = None,
        gan_mode: str = "lsgan",
        feature_matching_weight: float = 10.0,
        perceptual_weight: float = 10.0,
        flow_weight: float = 10.0,
        warp_weight: float = 10.0,
        mask_weight: float = 1.0,
        vgg_weights_path: str | None = None,
        flow_estimator: str = "dis",
        flow_weights_path: str | None = None,
        frames_per_step: int = 4,
        num_frames_start: int = 4,
        num_frames_total: int = 8,
        grow_every_epochs: int = 1,
        grad_clip_norm: float | None = 10.0,
        coarse_ckpt: str | None = None,
        style_components: int = 4,
        sample_style: bool = False,
        fid_network_path: str | None = None,
        fvd_network_path: str | None = None,
        channels_last: bool | None = None,
        palette: list[list[int]] | None = None,
    ) -> None:
        super().__init__(net, optimizer, lr_scheduler)
        self.save_hyperparameters(logger=False)
        self.channels_last = channels_last
        if gan_mode not in GAN_MODES:
            raise ConfigError(f"model.gan_mode must be one of {list(GAN_MODES)}, got {gan_mode!r}.")
        if min(frames_per_step, num_frames_start, num_frames_total) < 1:
            raise ConfigError(
                "model.frames_per_step, model.num_frames_start and model.num_frames_total must be "
                f">= 1, got {frames_per_step}, {num_frames_start} and {num_frames_total}."
            )
        generator: SequentialGenerator = self.net
        condition_channels = generator.num_classes + int(generator.instance_edges)
        self.image_discriminator: MultiscaleDiscriminator = build_network(
            {**image_discriminator, "in_channels": condition_channels + generator.frame_channels}
        )
        # The per-frame baseline has no flow to show a video discriminator.
        self.video_discriminator: VideoDiscriminator | None = (
            build_network({**video_discriminator, "frame_channels": generator.frame_channels})
            if video_discriminator and generator.num_previous_frames > 0
            else None
        )
        self.feature_encoder: InstanceFeatureEncoder | None = None
        self.style_mixture: ClassFeatureMixture | None = None
        if generator.feature_channels:
            if not feature_encoder:
                raise ConfigError(
                    "model.net.feature_channels > 0 needs model.feature_encoder (the instance "
                    "feature encoder E); set it or set feature_channels to 0."
                )
            self.feature_encoder = build_network(
                {
                    **feature_encoder,
                    "in_channels": generator.frame_channels,
                    "feature_channels": generator.feature_channels,
                }
            )
            self.style_mixture = ClassFeatureMixture(
                generator.num_classes, generator.feature_channels, style_components
            )
        self.gan_mode = gan_mode
        self.weights = {
            "feature_matching": feature_matching_weight,
            "perceptual": perceptual_weight,
            "flow": flow_weight,
            "warp": warp_weight,
            "mask": mask_weight,
        }
        # Kept out of the module tree (object.__setattr__): the frozen VGG19 would otherwise add
        # 80 MB of fixed weights to every checkpoint. It follows the batch's device when used.
        object.__setattr__(
            self,
            "perceptual",
            VGGPerceptualLoss.from_path(vgg_weights_path) if perceptual_weight else None,
        )
        self.flow_estimator = flow_estimator
        self.flow_weights_path = flow_weights_path
        self.built_estimator: tuple[tuple[str, str | None], Any] | None = None
        self.estimator  # noqa: B018  (a bad estimator name fails here, not at the first batch)
        self.frames_per_step = frames_per_step
        self.num_frames_start = num_frames_start
        self.num_frames_total = num_frames_total
        self.grow_every_epochs = max(1, grow_every_epochs)
        self.grad_clip_norm = grad_clip_norm
        self.sample_style = sample_style
        self.fid_network_path = fid_network_path
        self.fvd_network_path = fvd_network_path
        self.frechet: dict[str, FrechetDistance] = {}
        self.style_samples: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.skipped_steps = 0
        self.automatic_optimization = False
        # The label panel's colours: the training data's (kept in the hyper-parameters, so a
        # checkpoint draws its labels alone), else fallback colours.
        self.palette = label_palette(palette, generator.num_classes)
        if coarse_ckpt and not is_restoring():  # a restored checkpoint holds every weight
            self.load_coarser_generator(coarse_ckpt)

    # ----- setup ------------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        """Take the data's class colours when training, or when the checkpoint has none."""
        super().setup(stage)
        colours = getattr(self.attached_datamodule, "palette", None)
        if colours is not None and (stage == "fit" or self.hparams.get("palette") is None):
            self.hparams["palette"] = [[int(v) for v in colour] for colour in colours]
            self.palette = label_palette(self.hparams["palette"], self.net.num_classes)

    def load_coarser_generator(self, path: str) -> None:
        """Progressive training: start G's global level (and enhancers) from a coarser run."""
        hparams, weights = read_task_network(
            path,
            SynthesisTask,
            "model.coarse_ckpt",
            "give a checkpoint trained with model=vid2vid at fewer spatial scales",
        )
        coarse_scales = hparams["net"].get("num_spatial_scales", 1)
        if coarse_scales >= self.net.num_spatial_scales:
            raise ConfigError(
                f"model.coarse_ckpt={path} has {coarse_scales} spatial scales and this model "
                f"{self.net.num_spatial_scales}: the coarser run must have fewer."
            )
        copied = self.net.load_coarser(weights)
        log.info(
            "Started the generator from %s (%d tensors of %d levels)",
            path,
            len(copied),
            coarse_scales,
        )

    def optimizer_parameter_sets(self) -> list[list[tuple[str, nn.Parameter]]]:
        """G (with E), D_I and, for temporal models, D_V: one optimiser each."""
        generator = list(self.net.named_parameters(prefix="net"))
        if self.feature_encoder is not None:
            generator += list(self.feature_encoder.named_parameters(prefix="feature_encoder"))
        parameter_sets = [
            generator,
            list(self.image_discriminator.named_parameters(prefix="image_discriminator")),
        ]
        if self.video_discriminator is not None:
            parameter_sets.append(
                list(self.video_discriminator.named_parameters(prefix="video_discriminator"))
            )
        return parameter_sets

    @property
    def estimator(self) -> Any:
        """The reference flow estimator of `flow_estimator` / `flow_weights_path`, rebuilt when
        either changes (both may be overridden at evaluation)."""
        key = (self.flow_estimator, self.flow_weights_path)
        if self.built_estimator is None or self.built_estimator[0] != key:
            self.built_estimator = (key, build_flow_estimator(*key))
        return self.built_estimator[1]

    # ----- inputs -----------------------------------------------------------------------------
    def sequence_length(self, frames: int, epoch: int) -> int:
        """Training sequence length at `epoch` (doubling schedule, capped by the clip's `frames`)."""
        length = self.num_frames_start * 2 ** (epoch // self.grow_every_epochs)
        return max(1, min(length, self.num_frames_total, frames))

    def conditions(
        self, batch: dict[str, torch.Tensor], real: torch.Tensor | None, sample: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Generator inputs (B, T, label_channels, H, W) and foreground masks of a batch.

        Style features come from the feature encoder on the real frames, or, with `sample`,
        from the fitted per-class mixture (multimodal synthesis without a real video).
        """
        segmentation = batch["segmentation"]
        instance = batch.get("instance")
        ids = instance if instance is not None else segmentation
        features = None
        if self.feature_encoder is not None:
            if sample or real is None:
                assert self.style_mixture is not None
                features = torch.stack(
                    [
                        self.style_mixture.sample(segmentation[:, t], ids[:, t])
                        for t in range(segmentation.shape[1])
                    ],
                    dim=1,
                ).to(self.device)
            else:
                encoded = self.feature_encoder(real.flatten(0, 1), ids.flatten(0, 1))
                features = encoded.view(*real.shape[:2], *encoded.shape[1:])
        labels = self.net.semantic_input(segmentation, instance, features)
        return labels, self.net.foreground_mask(segmentation)

    def condition_only(self, labels: torch.Tensor) -> torch.Tensor:
        """The semantic part of generator inputs (classes and edges, no style features)."""
        return labels[..., : self.net.num_classes + int(self.net.instance_edges), :, :]

    # ----- losses -----------------------------------------------------------------------------
    def image_scores(self, labels: torch.Tensor, frames: torch.Tensor) -> list[list[torch.Tensor]]:
        """D_I on (semantic map, frame) pairs; labels and frames (B, T, ., H, W)."""
        pairs = torch.cat([self.condition_only(labels), frames], dim=2)
        return self.image_discriminator(pairs.flatten(0, 1))

    def video_windows(self, length: int, first_new: int) -> list[tuple[int, int, list[int]]]:
        """(temporal scale, stride, start indices) of the D_V clips that include a new frame."""
        assert self.video_discriminator is not None
        k = self.video_discriminator.frames_per_clip
        windows = []
        for scale in range(self.video_discriminator.num_temporal_scales):
            stride = temporal_stride(scale)
            starts = [
                s
                for s in clip_start_indices(length, k, stride)
                if s + (k - 1) * stride >= first_new
            ]
            if starts:
                windows.append((scale, stride, starts))
        return windows

    def video_scores(
        self,
        frames: torch.Tensor,
        buffers: SequenceBuffers,
        scale: int,
        stride: int,
        starts: list[int],
    ) -> list[list[torch.Tensor]]:
        """D_V on the clips starting at `starts`, with the real video's flows at `stride`.

        Real and fake clips get the same reference flows, so D_V judges the frames' motion
        against the true motion rather than the flows themselves.
        """
        assert self.video_discriminator is not None
        k = self.video_discriminator.frames_per_clip
        flows = buffers.flow(stride)
        clips = torch.cat([frames[:, s : s + (k - 1) * stride + 1 : stride] for s in starts], dim=0)
        clip_flows = torch.cat(
            [flows[:, s : s + (k - 2) * stride + 1 : stride] for s in starts], dim=0
        )
        return self.video_discriminator(clips, clip_flows, scale)

    def generator_losses(
        self,
        outputs: list[GeneratedFrame],
        start: int,
        labels: torch.Tensor,
        all_fake: torch.Tensor,
        buffers: SequenceBuffers,
    ) -> dict[str, torch.Tensor]:
        """Every generator loss for the frames start.. of the sequence (unweighted)."""
        end = start + len(outputs)
        fake = all_fake[:, start:end]
        real = buffers.real[:, start:end]
        chunk_labels = labels[:, start:end]
        losses: dict[str, torch.Tensor] = {}

        fake_scores = self.image_scores(chunk_labels, fake)
        real_scores = self.image_scores(chunk_labels, real)
        losses["gan_image"] = gan_loss(fake_scores, True, self.gan_mode, for_discriminator=False)
        losses["feature_matching"] = feature_matching_loss(fake_scores, real_scores)

        if self.video_discriminator is not None:
            gan_video = fake.new_zeros(())
            matching = fake.new_zeros(())
            windows = self.video_windows(end, start)
            for scale, stride, starts in windows:
                fake_v = self.video_scores(all_fake, buffers, scale, stride, starts)
                real_v = self.video_scores(buffers.real, buffers, scale, stride, starts)
                gan_video = gan_video + gan_loss(fake_v, True, self.gan_mode, False)
                matching = matching + feature_matching_loss(fake_v, real_v)
            losses["gan_video"] = gan_video
            losses["feature_matching"] = losses["feature_matching"] + matching

        if self.perceptual is not None:
            self.perceptual.to(fake.device)
            losses["perceptual"] = self.perceptual(fake.flatten(0, 1), real.flatten(0, 1))

        # Flow terms for frames that were warped from a previous one (not single-image frames).
        temporal = [(start + i, out) for i, out in enumerate(outputs) if start + i > 0]
        if self.net.num_previous_frames and temporal:
            flows, confidence = buffers.flow(1), buffers.confidence()
            flow_l1 = warp_l1 = mask_l1 = fake.new_zeros(())
            for t, out in temporal:
                conf = confidence[:, t - 1]
                flow_l1 = flow_l1 + masked_l1(out.flow, flows[:, t - 1], conf)
                warped_real = warp(buffers.real[:, t - 1], out.flow)
                warp_l1 = warp_l1 + masked_l1(warped_real, buffers.real[:, t], conf)
                # Where the true flow explains the frame, warping (m = 0) is the right choice.
                mask_l1 = mask_l1 + masked_l1(out.mask, torch.zeros_like(out.mask), conf)
            losses["flow"] = flow_l1 / len(temporal)
            losses["warp"] = warp_l1 / len(temporal)
            losses["mask"] = mask_l1 / len(temporal)
        return losses

    # ----- training ---------------------------------------------------------------------------
    # Each player's update is `step` (tasks/adversarial.py): backward, clip at grad_clip_norm,
    # step, or skip on every rank when the loss is non-finite on any.
    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        # Every clip of a batch unreadable: all ranks skip it together (see AdversarialTask).
        if self.any_rank("video" not in batch):
            return None
        optimizers = self.optimizers()
        optimizers = optimizers if isinstance(optimizers, list) else [optimizers]
        opt_g, opt_di = optimizers[0], optimizers[1]
        opt_dv = optimizers[2] if len(optimizers) > 2 else None

        real_full = self.signed_pixels(batch)
        length = self.sequence_length(real_full.shape[1], self.current_epoch)
        offset = random.randint(0, real_full.shape[1] - length)
        window = slice(offset, offset + length)
        real = real_full[:, window]
        clip = {k: v[:, window] for k, v in batch.items() if k in ("segmentation", "instance")}
        buffers = SequenceBuffers(real, self.estimator)
        labels, foreground = self.conditions(clip, real, sample=False)
        self.remember_styles(clip, labels)

        generated: list[torch.Tensor] = []  # detached outputs: the next chunks' history
        batch_size = real.shape[0]
        totals: dict[str, torch.Tensor] = {}
        for start in range(0, length, self.frames_per_step):
            end = min(start + self.frames_per_step, length)
            history = min(start, self.net.num_previous_frames)
            previous = torch.stack(generated[start - history : start], 1) if history else None
            with self.player(opt_g):  # D_I and D_V judge G's frames with frozen weights
                # E's style features are recomputed per chunk: its graph is freed with each
                # chunk's.
                fresh = start > 0 and self.feature_encoder is not None
                chunk_labels = self.conditions(clip, real, False)[0] if fresh else labels
                outputs = self.net.rollout(
                    chunk_labels[:, start - history : end],
                    None if foreground is None else foreground[:, start - history : end],
                    previous,
                )
                fake_new = torch.stack([out.frame for out in outputs], 1)
                # The whole sequence so far, earlier chunks detached: D_V clips may span chunks.
                all_fake = (
                    torch.cat([torch.stack(generated, 1), fake_new], 1) if generated else fake_new
                )

                losses = self.generator_losses(outputs, start, chunk_labels, all_fake, buffers)
                loss_g = sum(
                    (self.weights.get(name, 1.0) * value for name, value in losses.items()),
                    start=real.new_zeros(()),
                )
                updated = self.step(opt_g, loss_g)
            if not updated:  # skipped on every rank alike, so the discriminators wait too
                generated.extend(fake_new.detach().unbind(1))
                continue

            fake_detached = all_fake.detach()
            with self.player(opt_di):
                d_image = discriminator_loss(
                    self.image_scores(labels[:, start:end].detach(), fake_detached[:, start:end]),
                    self.image_scores(labels[:, start:end].detach(), real[:, start:end]),
                    self.gan_mode,
                )
                self.step(opt_di, d_image)
            losses["d_image"] = d_image
            # D_V steps once the sequence holds a whole clip (K frames) that has a new frame.
            windows = self.video_windows(end, start) if opt_dv is not None else []
            if windows:
                with self.player(opt_dv):
                    d_video = sum(
                        discriminator_loss(
                            self.video_scores(fake_detached, buffers, scale, stride, starts),
                            self.video_scores(real, buffers, scale, stride, starts),
                            self.gan_mode,
                        )
                        for scale, stride, starts in windows
                    )
                    self.step(opt_dv, d_video)
                losses["d_video"] = d_video
            losses["loss_g"] = loss_g
            for name, value in losses.items():
                # Summed on the device: a float() per loss and chunk would sync every time.
                totals[name] = totals.get(name, 0.0) + value.detach()
            generated.extend(fake_new.detach().unbind(1))

        chunks = -(-length // self.frames_per_step)
        for name, value in totals.items():
            self.log(
                f"train/{name}", value / chunks, batch_size=batch_size, prog_bar=name == "loss_g"
            )
        self.log("train/sequence_length", float(length), batch_size=batch_size)
        self.log("train/skipped_steps", float(self.skipped_steps), batch_size=batch_size)
        self.step_schedulers()

    # ----- styles (multimodal synthesis) -----------------------------------------------------
    def remember_styles(self, clip: dict[str, torch.Tensor], labels: torch.Tensor) -> None:
        """Keep encoded per-instance features of training frames to fit the style mixture."""
        if (
            self.feature_encoder is None
            or sum(len(f) for f, _ in self.style_samples) > MAX_STYLE_SAMPLES
        ):
            return
        seg = clip["segmentation"][:, 0]
        ids = clip.get("instance", clip["segmentation"])[:, 0]
        start = self.net.num_classes + int(self.net.instance_edges)
        feature_map = labels[:, 0, start : start + self.net.feature_channels].detach()
        features, classes = instance_features(feature_map, seg, ids)
        self.style_samples.append((features.cpu(), classes.cpu()))

    def on_validation_epoch_start(self) -> None:
        # Fit before validation so that the checkpoint saved after it holds the mixture.
        if self.style_mixture is not None and self.style_samples:
            features = torch.cat([f for f, _ in self.style_samples])
            classes = torch.cat([c for _, c in self.style_samples])
            self.style_mixture.fit(features.to(self.style_mixture.means), classes.to(self.device))

    def on_train_epoch_start(self) -> None:
        self.style_samples = []

    # ----- evaluation -------------------------------------------------------------------------
    def signed_pixels(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The batch's video in [-1, 1] (see `batch_video`)."""
        return self.batch_video(batch)

    @torch.no_grad()
    def synthesize(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(generated, real) videos (B, T, C, H, W) in [0, 1]; the whole clip, frame by frame."""
        real = self.signed_pixels(batch)
        labels, foreground = self.conditions(batch, real, sample=self.sample_style)
        outputs = self.net.rollout(labels, foreground)
        fake = torch.stack([out.frame for out in outputs], 1)
        return ((fake + 1) / 2).clamp(0, 1), ((real + 1) / 2).clamp(0, 1)

    def evaluation_step(self, batch: dict[str, torch.Tensor], split: str) -> None:
        if "video" not in batch:  # every clip of this batch was unreadable and skipped
            return None
        fake, real = self.synthesize(batch)
        batch_size = real.shape[0]
        values = {"psnr": frame_psnr(fake, real), "ssim": frame_ssim(fake, real)}
        if real.shape[1] > 1:
            buffers = SequenceBuffers(self.signed_pixels(batch), self.estimator)
            flows, confidence = buffers.flow(1), buffers.confidence()
            values["warp_error"] = temporal_warping_error(fake, flows, confidence)
            # The same measure on the real video: the floor a perfect model would reach.
            values["warp_error_real"] = temporal_warping_error(real, flows, confidence)
        for name, value in values.items():
            self.log(
                f"{split}/{name}",
                value.mean(),
                prog_bar=name == "psnr",
                batch_size=batch_size,
                sync_dist=True,
            )
        if split == "test":
            for metric in self.frechet.values():
                metric.update(real, fake)

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self.evaluation_step(batch, "val")

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self.evaluation_step(batch, "test")

    def on_test_epoch_start(self) -> None:
        self.frechet = {}
        for name, path, mode in (
            ("fid", self.fid_network_path, "frames"),
            ("fvd", self.fvd_network_path, "clips"),
        ):
            network = load_feature_network(
                path, f"{name.upper()}-style", f"model.{name}_network_path"
            )
            if network is not None:
                self.frechet[name] = FrechetDistance(network.to(self.device), mode=mode)

    def on_test_epoch_end(self) -> None:
        for name, metric in self.frechet.items():
            self.log(f"test/{name}", metric.compute(), sync_dist=False)

    @torch.no_grad()
    def generation_panels(self, batch: dict[str, torch.Tensor]) -> Panels:
        """Videos in [0, 1] side by side: labels | output | truth."""
        fake, real = self.synthesize(batch)
        labels = colour_labels(batch["segmentation"], self.palette).to(fake)
        return Panels({"labels": labels, "output": fake, "truth": real})

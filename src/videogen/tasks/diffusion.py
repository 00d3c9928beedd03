"""Video diffusion: a denoising network (Latte, U-ViT) trained with the DDPM objective, in a
frozen VAE's latent space or in pixels, sampled with DDPM or DDIM and classifier-free guidance.

The process (noise schedule, loss, samplers) is `models.diffusion.GaussianDiffusion`; this task
adds the data side (pixels to latents), label dropout for guidance, validation samples and the
offline test (tasks/generative_eval.py, shared with the GAN task): clips sampled per class,
judged by a trained videogen classifier (`test/judge_acc`, `test/judge_fd`) and, with a local
feature network file, a Fréchet video distance. Exponential moving-average weights come from Lightning's `EMAWeightAveraging` callback
(conf/model/latte.yaml adds it): they are what validation samples with and what checkpoints hold
as `state_dict`, so evaluate and generate use them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import torch
from pytorch_lightning.utilities.rank_zero import rank_zero_only

from videogen.data.latent_cache import read_manifest
from videogen.errors import ConfigError
from videogen.models.build import is_restoring
from videogen.models.diffusion import SAMPLERS, SPACINGS, GaussianDiffusion, VideoDenoiser
from videogen.tasks.base import VideoTask
from videogen.tasks.frozen_vae import FrozenVAE, vae_config_from_folder
from videogen.tasks.generative_eval import (
    GENERATIVE_EVAL_OPTIONS,
    GenerativeEvaluation,
    signed_to_unit,
)
from videogen.tasks.protocols import ExampleVideos, Panels, SamplingOptions

log = logging.getLogger(__name__)


class DiffusionTask(ExampleVideos, GenerativeEvaluation, VideoTask):
    """Train `net(x_t, t, labels)` to denoise video (or its VAE latents); sample clips from it.

    `diffusion` configures the process (models/diffusion/process.py; `learn_sigma` follows the
    network). `vae_path`: a folder holding a diffusers AutoencoderKL (`save_pretrained`); null
    trains in pixel space. `class_dropout`: the probability that a training label is replaced by
    the null class (classifier-free guidance). The sampling settings (`sampler`, `sample_steps`,
    `eta`, `guidance`, `spacing`) and the test's (`samples_per_class`, `judge_ckpt`,
    `fvd_network_path`, `fvd`, `sample_seed`) may be changed on a trained model.
    `fvd_network_path`: the FVD detector (a TorchScript file); `fvd`: the fields of the
    `FVDProtocol` it is used with (defaults: StyleGAN-V's fvd2048_16f).
    """

    pixel_range: ClassVar[str] = "signed"
    network_type: ClassVar[type | None] = VideoDenoiser
    runtime_options: ClassVar[tuple[str, ...]] = (
        "sampler",
        "sample_steps",
        "eta",
        "guidance",
        "spacing",
        *GENERATIVE_EVAL_OPTIONS,
    )

    def __init__(
        self,
        net: dict[str, Any],
        optimizer: dict[str, Any] | None = None,
        lr_scheduler: dict[str, Any] | None = None,
        diffusion: dict[str, Any] | None = None,
        vae_path: str | None = None,
        vae_chunk_size: int = 16,
        vae_config: dict[str, Any] | None = None,
        class_dropout: float = 0.1,
        sampler: str = "ddim",
        sample_steps: int = 50,
        eta: float = 0.0,
        guidance: float = 1.0,
        spacing: str = "linspace",
        samples_per_class: int = 16,
        sample_batch_size: int = 16,
        judge_ckpt: str | None = None,
        fvd_network_path: str | None = None,
        sample_seed: int = 0,
        fvd: dict[str, Any] | None = None,
    ) -> None:
        vae = None
        restoring = is_restoring()
        if vae_path and not restoring:
            vae_config = vae_config_from_folder(vae_path)
        if vae_config is not None:
            # A restored run rebuilds the VAE from its stored config; its weights are in the
            # checkpoint. A new one reads them from the folder, and the network denoises latents.
            vae = FrozenVAE(vae_config, None if restoring else vae_path, vae_chunk_size)
            if not restoring:
                size = net["img_size"]
                height, width = (size, size) if isinstance(size, int) else size
                net = {
                    **net,
                    "in_channels": vae.latent_channels,
                    "img_size": list(vae.latent_size(height, width)),
                }
        super().__init__(net, optimizer, lr_scheduler)
        self.save_hyperparameters(logger=False)
        self.hparams["net"] = net
        self.hparams["vae_config"] = vae_config
        self.vae = vae
        if not 0.0 <= class_dropout < 1.0:
            raise ConfigError(f"model.class_dropout must be in [0, 1), got {class_dropout}.")
        self.class_dropout = class_dropout
        self.diffusion = GaussianDiffusion(
            **{**(diffusion or {}), "learn_sigma": bool(self.net.learn_sigma), "channel_dim": 2}
        )
        self.sampler, self.sample_steps, self.eta = sampler, sample_steps, eta
        self.guidance, self.spacing = guidance, spacing
        self.sampling_options()  # refuse bad settings now, not after training
        self.init_generative_evaluation(
            samples_per_class, sample_batch_size, judge_ckpt, fvd_network_path, fvd, sample_seed
        )

    # -- sizes and spaces ---------------------------------------------------------------------

    @property
    def num_classes(self) -> int:  # type: ignore[override]
        return int(self.net.num_classes)

    def model_space(self, video: torch.Tensor) -> torch.Tensor:
        """Video in [-1, 1] -> what the network denoises: VAE latents, or the pixels."""
        return video.float() if self.vae is None else self.vae.encode(video)

    def clean_sample(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """x_0 of a batch: latents drawn from cached VAE moments (`data.latents`), else the
        batch's video in the model's space."""
        if "latents" not in batch:
            return self.model_space(self.batch_video(batch))
        if self.vae is None:
            raise ConfigError(
                "the training data is a latent cache (data.latents) but this model works in "
                "pixels (model.vae_path=null): set model.vae_path to the VAE the cache was made with."
            )
        return self.vae.sample(batch["latents"])

    def on_fit_start(self) -> None:
        """Refuse a latent cache made with another VAE than this model's, before any step."""
        super().on_fit_start()
        datamodule = getattr(self.trainer, "datamodule", None)
        folder = getattr(datamodule, "latents", None)
        if not folder or self.vae is None:
            return
        cached = read_manifest(folder).get("vae", {}).get("fingerprint")
        if cached != self.vae.fingerprint():
            raise ConfigError(
                f"the latent cache data.latents={folder} was made with another VAE (or other "
                "weights) than model.vae_path: give the VAE it was made with, or make a new cache."
            )

    def to_unit_video(self, x: torch.Tensor) -> torch.Tensor:
        """A sample in the model's space -> video in [0, 1]."""
        return signed_to_unit(x if self.vae is None else self.vae.decode(x))

    def sample_shape(self, count: int) -> tuple[int, ...]:
        height, width = self.net.img_size
        return (count, self.net.num_frames, self.net.in_channels, height, width)

    # -- training -----------------------------------------------------------------------------

    def diffusion_loss(
        self,
        batch: dict[str, torch.Tensor],
        generator: torch.Generator | None = None,
        drop_labels: bool = False,
    ) -> dict[str, torch.Tensor]:
        """Per-example losses of one noising of the batch (timesteps and noise from
        `generator` when given, so that validation measures the same draws every epoch)."""
        x0 = self.clean_sample(batch)
        labels = self.labels_of(batch)
        if labels is not None and drop_labels and self.class_dropout > 0:
            dropped = torch.rand(labels.shape, device=labels.device) < self.class_dropout
            labels = torch.where(dropped, torch.full_like(labels, self.net.null_label), labels)
        t = self.diffusion.sample_timesteps(x0.shape[0], x0.device, generator)
        if generator is None:  # contiguous whatever x0's strides (the same draw for any layout)
            noise = torch.randn(x0.shape, device=x0.device)
        else:
            noise = torch.randn(x0.shape, generator=generator).to(x0.device)
        x_t = self.diffusion.add_noise(x0, noise, t)
        output = self.net(x_t, t, labels)
        return self.diffusion.training_loss(output, x0, noise, t, x_t)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor | None:
        if "video" not in batch and "latents" not in batch:  # every clip was unreadable
            return self.empty_batch_loss()
        losses = self.diffusion_loss(batch, drop_labels=True)
        loss = losses["loss"].mean()
        size = losses["loss"].shape[0]
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=size)
        if "vlb" in losses:
            self.log("train/mse", losses["mse"].mean(), on_step=True, batch_size=size)
            self.log("train/vlb", losses["vlb"].mean(), on_step=True, batch_size=size)
        if not self.finite_on_every_rank(loss):
            rank_zero_only(log.warning)(
                "Non-finite loss at step %d: update skipped.", self.global_step
            )
            return self.empty_batch_loss()
        return loss

    def evaluation_loss(self, batch: dict[str, torch.Tensor], batch_idx: int, split: str) -> None:
        """The denoising loss at timesteps and noise fixed per batch index, so that the figure
        moves only with the weights."""
        if "video" not in batch:
            return
        generator = torch.Generator().manual_seed(self.sample_seed * 100003 + batch_idx)
        losses = self.diffusion_loss(batch, generator)
        self.log(
            f"{split}/loss",
            losses["loss"].mean(),
            on_epoch=True,
            prog_bar=True,
            batch_size=losses["loss"].shape[0],
            sync_dist=True,
        )

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self.evaluation_loss(batch, batch_idx, "val")

    # -- sampling -----------------------------------------------------------------------------

    def sampling_options(self) -> SamplingOptions:
        """The configured sampler settings, checked."""
        if self.sampler not in SAMPLERS:
            raise ConfigError(
                f"model.sampler={self.sampler!r} is not one of {', '.join(SAMPLERS)}."
            )
        if self.spacing not in SPACINGS:
            raise ConfigError(
                f"model.spacing={self.spacing!r} is not one of {', '.join(SPACINGS)}."
            )
        return SamplingOptions(
            self.sampler,
            int(self.sample_steps),
            float(self.eta),
            float(self.guidance),
            self.spacing,
        )

    @torch.no_grad()
    def sample_clips(
        self,
        labels: torch.Tensor | None,
        count: int,
        options: SamplingOptions | None = None,
        generator: torch.Generator | None = None,
        progress: Callable[[Iterator], Iterator] | None = None,
    ) -> torch.Tensor:
        options = options or self.sampling_options()
        labels = self.sampling_labels(labels)
        was_training = self.net.training
        self.net.eval()
        try:
            x = self.diffusion.sample(
                self.net,
                self.sample_shape(count),
                labels=labels,
                sampler=options.sampler,
                steps=options.steps,
                eta=options.eta,
                guidance=options.guidance,
                null_label=self.net.null_label,
                generator=generator,
                device=self.device,
                spacing=options.spacing,
                progress=progress,
            )
        finally:
            self.net.train(was_training)
        return self.to_unit_video(x)

    def generation_panels(self, batch: dict[str, torch.Tensor]) -> Panels:
        """Real clips of the batch beside clips sampled for their labels (fixed seed)."""
        real = signed_to_unit(self.batch_video(batch))
        labels = self.labels_of(batch)
        generator = torch.Generator().manual_seed(self.sample_seed)
        generated = self.sample_clips(labels, real.shape[0], generator=generator)
        return Panels({"real": real, "generated": generated})

    # -- test: judge, Fréchet distances and FVD (tasks/generative_eval.py) ----------------------

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self.evaluation_loss(batch, batch_idx, "test")
        if "video" in batch:
            self.collect_real_clips(batch)

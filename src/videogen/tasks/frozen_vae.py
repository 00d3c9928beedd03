"""A frozen diffusers `AutoencoderKL` (the Stable Diffusion VAE as users have it on disk) that
turns video into the latents a latent diffusion model works in, and back."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import torch
from torch import nn

from videogen.errors import ConfigError


def autoencoder_kl_class() -> type:
    """diffusers' AutoencoderKL, or one sentence saying how to install diffusers."""
    try:
        from diffusers import AutoencoderKL
    except ImportError as err:
        raise ConfigError(
            "model.vae_path is set but diffusers is not installed: pip install diffusers "
            "(or set model.vae_path=null to train in pixel space)."
        ) from err
    return AutoencoderKL


def vae_config_from_folder(path: str | Path) -> dict[str, Any]:
    """The config of the AutoencoderKL saved (`save_pretrained`) in the folder `path`."""
    folder = Path(path)
    if not (folder / "config.json").is_file():
        raise ConfigError(
            f"model.vae_path={path} is not a diffusers model folder (no config.json there): give "
            "the folder an AutoencoderKL was saved to with save_pretrained (e.g. sd-vae-ft-ema)."
        )
    return dict(autoencoder_kl_class().load_config(folder))


class FrozenVAE(nn.Module):
    """Frozen AutoencoderKL: video (B, T, 3, H, W) in [-1, 1] <-> latents (B, T, c, h, w) times
    the VAE's scaling factor (from its config: 0.18215 for Stable Diffusion's). Frames go through
    it `chunk_size` at a time, to bound the memory of its convolutions. No gradients reach its
    weights and it stays in eval mode.

    Built from a folder (a new run: weights read from it) or from its stored config alone (a
    restored run: the weights come from the checkpoint's state dict).
    """

    def __init__(
        self, config: dict[str, Any], path: str | None = None, chunk_size: int = 16
    ) -> None:
        super().__init__()
        autoencoder_kl = autoencoder_kl_class()
        self.vae = (
            autoencoder_kl.from_pretrained(path) if path else autoencoder_kl.from_config(config)
        )
        self.vae.requires_grad_(False)
        self.vae.eval()
        self.chunk_size = max(1, int(chunk_size))
        self.scaling_factor = float(self.vae.config.get("scaling_factor", 0.18215))
        self.latent_channels = int(self.vae.config["latent_channels"])
        self.downsampling = 2 ** (len(self.vae.config["block_out_channels"]) - 1)

    def train(self, mode: bool = True) -> FrozenVAE:
        """Stay in eval mode whatever the owner asks."""
        return super().train(False)

    def latent_size(self, height: int, width: int) -> tuple[int, int]:
        """The latent frame size of (height, width) frames; refuses sizes it does not divide."""
        factor = self.downsampling
        if height % factor or width % factor:
            raise ConfigError(
                f"frames of {height}x{width} do not divide by the VAE's downsampling factor "
                f"{factor}: set data.height and data.width to multiples of {factor}."
            )
        return height // factor, width // factor

    @torch.no_grad()
    def moments(self, video: torch.Tensor) -> torch.Tensor:
        """(B, T, 3, H, W) in [-1, 1] -> the encoder's Gaussian per frame (B, T, 2c, h, w): its
        mean, then its log-variance, unscaled (what the latent cache stores)."""
        frames = video.flatten(0, 1)
        parts = [
            self.vae.encode(chunk).latent_dist.parameters for chunk in frames.split(self.chunk_size)
        ]
        return torch.cat(parts).unflatten(0, video.shape[:2])

    def sample(
        self, moments: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Scaled latents (B, T, c, h, w) drawn from `moments` (B, T, 2c, h, w), as Latte and DiT
        train. Fresh and cached moments take this same draw, so a run from the cache sees what
        a run from videos sees (same seed). The log-variance is clamped like diffusers does."""
        mean, log_variance = moments.float().chunk(2, dim=2)
        std = (0.5 * log_variance.clamp(-30.0, 20.0)).exp()
        # A fresh contiguous draw, not randn_like: the encoder's output may have other strides
        # than cached moments, and the draw must not depend on the layout.
        if generator is None:
            noise = torch.randn(mean.shape, device=mean.device)
        else:
            noise = torch.randn(mean.shape, generator=generator).to(mean.device)
        return ((mean + std * noise) * self.scaling_factor).contiguous()

    def encode(self, video: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """(B, T, 3, H, W) in [-1, 1] -> scaled latents (B, T, c, h, w), a sample of the
        encoder's Gaussian."""
        return self.sample(self.moments(video), generator)

    def fingerprint(self) -> str:
        """A hash of the weights and scaling factor: a latent cache made with another VAE (or
        other weights under the same name) is refused by it."""
        digest = hashlib.sha256(repr(self.scaling_factor).encode())
        for name, tensor in sorted(self.vae.state_dict().items()):
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
        return digest.hexdigest()

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Scaled latents (B, T, c, h, w) -> video (B, T, 3, H, W), about [-1, 1]."""
        frames = latents.flatten(0, 1) / self.scaling_factor
        decoded = [self.vae.decode(chunk).sample for chunk in frames.split(self.chunk_size)]
        return torch.cat(decoded).unflatten(0, latents.shape[:2])

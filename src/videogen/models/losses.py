"""Training losses shared by the families: adversarial (LSGAN, hinge, non-saturating), pix2pixHD
feature matching, gradient difference, masked L1 and the VGG19 perceptual loss.

Weights are the caller's business: every function here returns an unweighted mean.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
import torchvision
from torch import nn
from torch.nn import functional as F

from videogen.errors import CheckpointError, ConfigError
from videogen.models.checkpoint_io import load_plain

log = logging.getLogger(__name__)

GAN_MODES = ("lsgan", "hinge", "non_saturating")

# pix2pixHD's perceptual loss: relu1_1, relu2_1, relu3_1, relu4_1, relu5_1 of VGG19, deeper
# layers weighted more because their activations are smaller. Each slice ends after that ReLU.
VGG_SLICE_ENDS = (2, 7, 12, 21, 30)
VGG_LAYER_WEIGHTS = (1 / 32, 1 / 16, 1 / 8, 1 / 4, 1.0)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# What a discriminator returns: a logits tensor, one list of block outputs (the logits last),
# or one such list per scale (multi-scale discriminators).
DiscriminatorOutput = torch.Tensor | list[torch.Tensor] | list[list[torch.Tensor]]


def per_scale_logits(outputs: DiscriminatorOutput) -> list[torch.Tensor]:
    """The logits of each scale of a discriminator's output, in any of its three forms."""
    if isinstance(outputs, torch.Tensor):
        return [outputs]
    if not outputs:
        raise ValueError("the discriminator returned no scales: there is nothing to score.")
    if isinstance(outputs[0], torch.Tensor):
        return [outputs[-1]]
    return [scale[-1] for scale in outputs]


def gan_loss(
    outputs: DiscriminatorOutput,
    real: bool,
    mode: str = "lsgan",
    for_discriminator: bool = True,
) -> torch.Tensor:
    """Adversarial loss of a discriminator's outputs, averaged over its scales.

    Only the logits (the last tensor of each scale) are used.
    - "lsgan": the MSE to 1 (real) or 0 (fake), for both players.
    - "hinge": mean(relu(1 - x)) / mean(relu(1 + x)) for the discriminator on real / fake,
      and -mean(x) for the generator, which asks for `real=True, for_discriminator=False`.
    - "non_saturating": binary cross-entropy with logits towards 1 (real) or 0 (fake); the
      generator asks for `real=True` (Goodfellow et al.'s -log D(G(z))).
    """
    if mode not in GAN_MODES:
        raise ValueError(f"GAN loss mode must be one of {list(GAN_MODES)}, got {mode!r}.")
    if mode == "hinge" and not for_discriminator and not real:
        raise ValueError(
            "the hinge generator loss pushes fakes towards real: call it with real=True."
        )
    losses = []
    for logits in per_scale_logits(outputs):
        if mode == "lsgan":
            target = torch.ones_like(logits) if real else torch.zeros_like(logits)
            losses.append(F.mse_loss(logits, target))
        elif mode == "non_saturating":
            target = torch.ones_like(logits) if real else torch.zeros_like(logits)
            losses.append(F.binary_cross_entropy_with_logits(logits, target))
        elif not for_discriminator:
            losses.append(-logits.mean())
        elif real:
            losses.append(F.relu(1 - logits).mean())
        else:
            losses.append(F.relu(1 + logits).mean())
    return torch.stack(losses).mean()


def discriminator_loss(
    fake_outputs: DiscriminatorOutput, real_outputs: DiscriminatorOutput, mode: str = "lsgan"
) -> torch.Tensor:
    """The discriminator's loss: the mean of its losses on real and on fake inputs."""
    return 0.5 * (
        gan_loss(real_outputs, True, mode, for_discriminator=True)
        + gan_loss(fake_outputs, False, mode, for_discriminator=True)
    )


def feature_matching_loss(
    fake_outputs: list[list[torch.Tensor]], real_outputs: list[list[torch.Tensor]]
) -> torch.Tensor:
    """pix2pixHD feature matching: L1 between the discriminator's intermediate features on
    fake and real inputs, averaged over layers (all but the logits) and then over scales.

    The real features are detached: this loss trains the generator, never the discriminator.
    """
    if len(fake_outputs) != len(real_outputs) or not fake_outputs:
        raise ValueError(
            f"fake and real outputs must have the same, non-zero number of scales, got "
            f"{len(fake_outputs)} and {len(real_outputs)}."
        )
    per_scale = []
    for fake_scale, real_scale in zip(fake_outputs, real_outputs, strict=True):
        if len(fake_scale) != len(real_scale) or len(fake_scale) < 2:
            raise ValueError(
                f"each scale needs the same number (at least 2) of fake and real outputs, got "
                f"{len(fake_scale)} and {len(real_scale)}."
            )
        layers = [
            F.l1_loss(fake, real.detach())
            for fake, real in zip(fake_scale[:-1], real_scale[:-1], strict=True)
        ]
        per_scale.append(torch.stack(layers).mean())
    return torch.stack(per_scale).mean()


def gradient_difference_loss(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """GDL (Mathieu et al.): L1 distance between the absolute image gradients of two videos."""
    loss = prediction.new_zeros(())
    for dim in (-1, -2):
        grad_pred = prediction.diff(dim=dim).abs()
        grad_true = target.diff(dim=dim).abs()
        loss = loss + (grad_pred - grad_true).abs().mean()
    return loss


def masked_l1(prediction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of |prediction - target| * mask over all elements.

    `mask` has a singleton channel dimension (or none, then one is added before the last two
    dimensions) and is broadcast over channels. The sum is divided by the number of elements,
    not by the mask's sum: masked-out pixels count as zero error, so a small mask gives a small
    loss instead of letting a handful of pixels weigh as much as a whole frame.
    """
    if mask.dim() == prediction.dim() - 1:
        mask = mask.unsqueeze(-3)
    difference = (prediction - target).abs() * mask.to(prediction.dtype)
    return difference.sum() / difference.numel()


def read_vgg_features_state(path: str | Path) -> dict[str, torch.Tensor]:
    """The `features.*` weights of a VGG19 state dict file, keyed like `vgg19().features`.

    Accepts a full torchvision vgg19 state dict, one holding only `features.*` keys, or the
    state dict of the `features` module itself (keys "0.weight", ...).
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(
            f"model.vgg_weights_path={path} does not exist: give a local VGG19 state dict file "
            "or leave the key unset to train without the perceptual loss."
        )
    try:
        state = load_plain(path)
    except CheckpointError:
        raise
    except Exception as error:  # any unpickling failure means the same thing to the user
        raise ConfigError(
            f"model.vgg_weights_path={path} is not a readable PyTorch state dict ({error})."
        ) from error
    if not isinstance(state, dict):
        raise ConfigError(
            f"model.vgg_weights_path={path} holds a {type(state).__name__}, not a state dict."
        )
    features = {
        k.removeprefix("features."): v for k, v in state.items() if k.startswith("features.")
    }
    if features:
        return features
    return {k: v for k, v in state.items() if k.split(".", 1)[0].isdigit()}


class VGGPerceptualLoss(nn.Module):
    """Weighted L1 between frozen VGG19 features of fake and real images in [-1, 1].

    The weights come from a local file (`from_path`) because nothing is downloaded during
    training; no `features_state` leaves the network randomly initialised (tests only).
    One-channel images are repeated to three. The network stays frozen and in eval mode.
    """

    def __init__(
        self, features_state: dict[str, torch.Tensor] | None = None, source: str = "the state dict"
    ) -> None:
        super().__init__()
        features = torchvision.models.vgg19(weights=None).features
        if features_state is not None:
            try:
                features.load_state_dict(features_state)
            except RuntimeError as error:
                raise ConfigError(
                    f"model.vgg_weights_path={source} is not a VGG19 state dict: "
                    f"{str(error).splitlines()[0]}"
                ) from error
        # Layers after relu5_1 never influence the loss; dropping them saves their compute.
        self.slices = nn.ModuleList(
            features[start:end]
            for start, end in zip((0, *VGG_SLICE_ENDS[:-1]), VGG_SLICE_ENDS, strict=True)
        )
        self.weights = VGG_LAYER_WEIGHTS
        # Not persistent: they are constants, and checkpoints should only carry the weights.
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    @classmethod
    def from_path(cls, path: str | Path | None) -> VGGPerceptualLoss | None:
        """The loss with the VGG19 weights of the local file `path` (read with the one weight
        reader), or None (with one warning) when no path is set."""
        if path is None:
            log.warning(
                "model.vgg_weights_path is not set: training without the VGG perceptual loss; "
                "set it to a local VGG19 state dict file to enable it."
            )
            return None
        return cls(read_vgg_features_state(path), source=str(path))

    def train(self, mode: bool = True) -> VGGPerceptualLoss:
        """Stay in eval mode whatever the owner asks: this network is a fixed measuring device."""
        return super().train(False)

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1] (1 or 3 channels) -> ImageNet-normalised 3-channel input."""
        if images.shape[1] == 1:
            images = images.expand(-1, 3, -1, -1)
        return ((images + 1) / 2 - self.mean) / self.std

    def features(self, images: torch.Tensor) -> list[torch.Tensor]:
        """The relu1_1 ... relu5_1 activations of `images`."""
        x = self.normalise(images)
        outputs = []
        for block in self.slices:
            x = block(x)
            outputs.append(x)
        return outputs

    def forward(self, fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        """sum_l w_l * L1(VGG_l(fake), VGG_l(real)); gradients flow into `fake` only."""
        with torch.no_grad():
            real_features = self.features(real)
        fake_features = self.features(fake)
        loss = fake.new_zeros(())
        for weight, fake_l, real_l in zip(self.weights, fake_features, real_features, strict=True):
            loss = loss + weight * F.l1_loss(fake_l, real_l)
        return loss

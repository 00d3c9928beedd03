"""Metrics for synthesised video (vid2vid): temporal consistency and Fréchet distances.

The temporal warping error needs only flows, which the weight-free estimators of
`videogen.models.vid2vid.flow` provide. Fréchet distances need a feature network, which is never
downloaded: it is a local TorchScript file, and without one the distance is skipped with a
warning. Because that network is whatever the user gives (the vid2vid paper used I3D and
ResNeXt video classifiers), the numbers are reported as "FID-style" / "FVD-style": they are only
comparable between runs that used the same feature file.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import torch

from videogen.errors import ConfigError
from videogen.models.layers import warp

log = logging.getLogger(__name__)

FRECHET_MODES = ("frames", "clips")


def temporal_warping_error(
    outputs: torch.Tensor, flows: torch.Tensor, confidence: torch.Tensor
) -> torch.Tensor:
    """(B,) mean squared error between each warped previous output frame and the next one.

    `outputs` is (B, T, C, H, W) in [0, 1]; `flows` (B, T - 1, 2, H, W) are the reference flows
    from frame t - 1 to frame t, and `confidence` (B, T - 1, 1, H, W) weighs their pixels. The
    error is averaged over channels, then over all confident pixels of all pairs of a video; a
    video without any confident pixel scores 0.
    """
    previous = outputs[:, :-1].flatten(0, 1).float()
    current = outputs[:, 1:].flatten(0, 1).float()
    warped = warp(previous, flows.flatten(0, 1))
    error = (warped - current).square().mean(1, keepdim=True)
    weights = confidence.flatten(0, 1).float()
    batch = outputs.shape[0]
    total = (error * weights).view(batch, -1).sum(1)
    count = weights.view(batch, -1).sum(1)
    # Occlusions and flow failures are masked out, so an all-masked video has nothing to score.
    return torch.where(count > 0, total / count.clamp_min(1e-12), torch.zeros_like(total))


def frechet_distance(features_a: torch.Tensor, features_b: torch.Tensor) -> float:
    """Fréchet distance between Gaussians fitted to (N, D) and (M, D) feature sets.

    ||mu_a - mu_b||^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2)), in float64. The trace of the matrix
    square root equals that of (sqrt(S_a) S_b sqrt(S_a))^(1/2), a symmetric matrix, so both roots
    come from `eigh` instead of a general (and less stable) non-symmetric square root.
    """
    if features_a.shape[0] < 2 or features_b.shape[0] < 2:
        raise ValueError(
            "the Fréchet distance needs at least 2 feature vectors on each side, got "
            f"{features_a.shape[0]} and {features_b.shape[0]}"
        )
    mean_a, cov_a = _gaussian(features_a)
    mean_b, cov_b = _gaussian(features_b)
    sqrt_a = _symmetric_sqrt(cov_a)
    product = sqrt_a @ cov_b @ sqrt_a
    # Rounding leaves tiny negative eigenvalues on a PSD matrix; they contribute nothing.
    eigenvalues = torch.linalg.eigvalsh((product + product.T) / 2).clamp_min(0)
    trace_sqrt = eigenvalues.sqrt().sum()
    distance = (mean_a - mean_b).square().sum() + cov_a.trace() + cov_b.trace() - 2 * trace_sqrt
    return float(distance)


def _gaussian(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean (D,) and unbiased covariance (D, D) of (N, D) features, in float64."""
    features = features.detach().double().flatten(1)
    mean = features.mean(0)
    centred = features - mean
    return mean, centred.T @ centred / (features.shape[0] - 1)


def _symmetric_sqrt(matrix: torch.Tensor) -> torch.Tensor:
    """Square root of a symmetric positive semi-definite matrix, through its eigenvectors."""
    eigenvalues, eigenvectors = torch.linalg.eigh(matrix)
    return (eigenvectors * eigenvalues.clamp_min(0).sqrt()) @ eigenvectors.T


def load_feature_network(
    path: str | None, what: str, setting: str = "the feature network path"
) -> torch.jit.ScriptModule | None:
    """The TorchScript feature network at `path` in eval mode, or None (with a warning) if unset.

    `what` names the distance in messages (e.g. "FID-style") and `setting` the configuration key
    that holds the path (e.g. "model.fid_network_path").
    """
    if path is None:
        log.warning(
            "The %s distance is not reported: set %s to a TorchScript feature network file.",
            what,
            setting,
        )
        return None
    if not Path(path).is_file():
        raise ConfigError(
            f"{setting}={path} does not exist: give a TorchScript feature network file or null."
        )
    try:
        with warnings.catch_warnings():
            # torch's advice to move to torch.export: the feature network files are TorchScript.
            warnings.filterwarnings(
                "ignore", "`torch.jit.load` is deprecated", category=FutureWarning
            )
            return torch.jit.load(path, map_location="cpu").eval()
    except RuntimeError as error:  # a file that is not TorchScript
        raise ConfigError(
            f"{setting}={path} is not a TorchScript file torch.jit.load can read ({error})."
        ) from None


class FrechetDistance:
    """Running Fréchet distance between features of real and synthesised videos.

    In mode "frames" the network maps frames (N, 3, H, W) in [0, 1] to (N, D) features and every
    frame is a sample (FID-style); in mode "clips" it maps clips (B, T, 3, H, W) in [0, 1] to
    (B, D) and every clip is a sample (FVD-style). The distance is only as meaningful as the
    network given: the paper's numbers used I3D and ResNeXt features, which are not bundled.
    """

    def __init__(self, network: torch.jit.ScriptModule, mode: str = "frames") -> None:
        if mode not in FRECHET_MODES:
            raise ValueError(f"unknown Fréchet mode {mode!r}: choose one of {FRECHET_MODES}")
        self.network = network
        self.mode = mode
        self.real: list[torch.Tensor] = []
        self.fake: list[torch.Tensor] = []

    def update(self, real: torch.Tensor, fake: torch.Tensor) -> None:
        """Add the features of a batch of (B, T, C, H, W) real and synthesised videos."""
        self.real.append(self.features(real))
        self.fake.append(self.features(fake))

    @torch.no_grad()
    def features(self, videos: torch.Tensor) -> torch.Tensor:
        """(samples, D) float64 CPU features of (B, T, C, H, W) videos in [0, 1]."""
        network = self.network.to(videos.device)
        videos = videos.float()
        if videos.shape[2] == 1:  # feature networks are RGB; greyscale video is repeated
            videos = videos.expand(-1, -1, 3, -1, -1)
        inputs = videos.flatten(0, 1) if self.mode == "frames" else videos
        return network(inputs).flatten(1).double().cpu()

    def compute(self) -> float:
        """The distance between all real and all synthesised features seen since the last reset."""
        if not self.real:
            raise ValueError("FrechetDistance.compute() called before any update()")
        return frechet_distance(torch.cat(self.real), torch.cat(self.fake))

    def reset(self) -> None:
        """Forget all features."""
        self.real.clear()
        self.fake.clear()

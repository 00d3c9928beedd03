"""Per-frame quality of predicted or synthesised video against ground truth, in [0, 1] pixels.

Every function takes float videos (B, T, C, H, W) in [0, 1] and returns one value per frame,
(B, T), so callers can average over videos and keep the per-timestep curve.
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import torch
from torchmetrics.functional.image import structural_similarity_index_measure

from videogen.errors import ConfigError

log = logging.getLogger(__name__)


def frame_mse(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Squared error summed over each frame's pixels and channels (the Moving MNIST convention)."""
    return (prediction.float() - target.float()).square().flatten(2).sum(-1)


def frame_psnr(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """PSNR in dB of each frame, for a data range of 1."""
    mean_error = (prediction.float() - target.float()).square().flatten(2).mean(-1)
    return -10.0 * torch.log10(mean_error.clamp_min(1e-10))


def frame_ssim(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """SSIM of each frame (11x11 Gaussian window, sigma 1.5), averaged over channels."""
    batch, frames = prediction.shape[:2]
    values = structural_similarity_index_measure(
        prediction.float().flatten(0, 1),
        target.float().flatten(0, 1),
        data_range=1.0,
        reduction="none",
    )
    return values.view(batch, frames)


class LPIPS:
    """LPIPS from a local TorchScript network `f(x, y) -> distance`, inputs in [-1, 1], RGB.

    LPIPS needs pretrained weights, which are never downloaded: without a file it is skipped
    (with one warning) and the other metrics are reported as usual.
    """

    def __init__(self, path: str | None) -> None:
        self.network: torch.jit.ScriptModule | None = None
        if path is None:
            log.warning(
                "LPIPS is not reported: set model.lpips_path to a TorchScript LPIPS network file."
            )
            return
        if not Path(path).is_file():
            raise ConfigError(
                f"model.lpips_path={path} does not exist: give a TorchScript LPIPS file or null."
            )
        self.network = torch.jit.load(path, map_location="cpu").eval()

    @property
    def available(self) -> bool:
        return self.network is not None

    @torch.no_grad()
    def __call__(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """(B, T) distances."""
        assert self.network is not None
        network = self.network.to(prediction.device)
        batch, frames = prediction.shape[:2]
        x, y = (v.float().flatten(0, 1) * 2 - 1 for v in (prediction, target))
        if x.shape[1] == 1:  # LPIPS networks are RGB; greyscale frames are repeated
            x, y = x.expand(-1, 3, -1, -1), y.expand(-1, 3, -1, -1)
        return network(x, y).reshape(batch, frames)


class TimestepCurves:
    """Running per-timestep sums of named (B, T) metrics, reduced to mean curves at the end."""

    def __init__(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.count = 0

    def update(self, values: dict[str, torch.Tensor]) -> None:
        for name, value in values.items():
            total = value.detach().double().sum(0)
            self.sums[name] = self.sums[name] + total if name in self.sums else total
        self.count += next(iter(values.values())).shape[0]

    def means(self) -> dict[str, torch.Tensor]:
        return {name: total / max(self.count, 1) for name, total in self.sums.items()}

    def write(self, folder: str | Path, means: dict[str, torch.Tensor]) -> Path:
        """Save the curves as `prediction_curves.csv` and `.png` in `folder`; returns the csv."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        names = sorted(means)
        steps = len(next(iter(means.values())))
        csv_path = folder / "prediction_curves.csv"
        with csv_path.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["future_frame", *names])
            for t in range(steps):
                writer.writerow([t + 1, *(f"{float(means[n][t]):.6g}" for n in names)])
        plot_curves(means, folder / "prediction_curves.png")
        return csv_path


def plot_curves(means: dict[str, torch.Tensor], path: Path) -> None:
    """One panel per metric against the future frame index."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = sorted(means)
    figure, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names), 2.8), squeeze=False)
    for axis, name in zip(axes[0], names, strict=True):
        values = means[name].cpu().numpy()
        axis.plot(range(1, len(values) + 1), values, marker="o")
        axis.set_title(name)
        axis.set_xlabel("future frame")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)

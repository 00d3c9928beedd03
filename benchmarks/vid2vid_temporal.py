"""vid2vid vs its per-frame baseline on synthetic shapes: temporal consistency and quality.

Trains `experiment=vid2vid_synthetic` (sequential generator: previous frames, flow, D_V) and
`experiment=vid2vid_synthetic_baseline` (the same generator without previous frames or flow,
i.e. image-to-image) through the real CLI, one after the other with the same seed, data and
budget, then prints both models' test metrics and the ratios:

- temporal warping error (lower is better): the previous output warped by the real video's
  flow against the current output, on pixels where that flow is confident;
- PSNR / SSIM of every frame against the real video.

    python -m benchmarks.vid2vid_temporal                     # 3 epochs each, CPU
    python -m benchmarks.vid2vid_temporal --epochs 5 trainer=gpu   # extra overrides for both
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

MODELS = {"vid2vid": "vid2vid_synthetic", "per-frame": "vid2vid_synthetic_baseline"}
METRICS = ("test/warp_error", "test/psnr", "test/ssim", "test/warp_error_real")


def train(experiment: str, run_dir: Path, epochs: int, overrides: list[str]) -> dict[str, float]:
    """Train and test one preset through the CLI; its test metrics and wall time."""
    command = [
        sys.executable,
        "-m",
        "videogen",
        f"experiment={experiment}",
        f"trainer.max_epochs={epochs}",
        "logger=csv",
        f"hydra.run.dir={run_dir}",
        *overrides,
    ]
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    metrics["seconds"] = time.perf_counter() - start
    return metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--output", type=Path, default=Path("outputs/benchmarks/vid2vid_temporal"))
    parser.add_argument("overrides", nargs="*", help="Hydra overrides applied to both runs")
    args = parser.parse_args()

    results = {
        name: train(experiment, args.output / name, args.epochs, args.overrides)
        for name, experiment in MODELS.items()
    }
    print(f"\n{'metric':24s}" + "".join(f"{name:>14s}" for name in results))
    for metric in (*METRICS, "seconds"):
        print(f"{metric:24s}" + "".join(f"{r[metric]:14.5g}" for r in results.values()))
    ours, baseline = results["vid2vid"], results["per-frame"]
    ratio = ours["test/warp_error"] / baseline["test/warp_error"]
    print(
        f"\nwarp error vid2vid / per-frame: {ratio:.3f} ({'lower' if ratio < 1 else 'NOT lower'})"
    )
    gap = ours["test/psnr"] - baseline["test/psnr"]
    print(f"PSNR vid2vid - per-frame: {gap:+.2f} dB ({'within' if gap >= -1 else 'beyond'} 1 dB)")


if __name__ == "__main__":
    main()

"""vid2vid generator inference at 256x512: frames/s, MFU, and channels_last vs the default layout.

The generator at the official defaults (width 128, 3 downsamplings, 9 residual blocks, L = 2
previous frames, flow and mask heads) on Cityscapes-shaped input (19 classes + instance
edges), generating a short sequence frame by frame with `rollout`, as at test time.
"""

from __future__ import annotations

import argparse

import torch

from benchmarks.common import Table, count_flops, fmt, seconds_per_call
from videogen.models.vid2vid.generator import SequentialGenerator
from videogen.tasks.base import to_channels_last

HEIGHT, WIDTH, CLASSES = 256, 512, 19


def table(
    device: str = "cpu",
    peak: float | None = None,
    dtype: str = "float32",
    frames: int = 3,
    repeats: int = 2,
) -> Table:
    """Frames/s and MFU (against `peak`, the matmul peak of `dtype`) in both memory layouts."""
    torch.manual_seed(0)
    dev = torch.device(device)
    low_precision = dtype != "float32"
    autocast = torch.autocast(dev.type, dtype=getattr(torch, dtype), enabled=low_precision)
    net = SequentialGenerator(CLASSES).to(dev).eval()
    segmentation = torch.randint(0, CLASSES, (1, frames, HEIGHT, WIDTH), device=dev)
    labels = net.semantic_input(segmentation)

    @torch.no_grad()
    def generate() -> None:
        with autocast:
            net.rollout(labels)

    flops = count_flops(generate)
    default_s = seconds_per_call(generate, dev, repeats=repeats)
    to_channels_last(net)
    channels_last_s = seconds_per_call(generate, dev, repeats=repeats)
    rows = []
    for layout, seconds in (("default (NCHW)", default_s), ("channels_last", channels_last_s)):
        mfu = f"{100 * flops / seconds / peak:.1f}%" if peak else "n/a"
        rows.append([layout, fmt(frames / seconds, 3), fmt(flops / frames / 1e9, 0), mfu, ""])
    rows[1][-1] = f"**{default_s / channels_last_s:.2f}x**"
    return Table(
        "vid2vid generator inference, 256x512",
        ["memory layout", "frames/s", "GFLOP / frame", "MFU", "speed-up over default"],
        rows,
        f"Official-size generator ({sum(p.numel() for p in net.parameters()) / 1e6:.1f}M "
        f"parameters), {dtype}, batch 1, {frames} frames generated one after the other (the first in "
        "single-image mode), no gradients.",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--frames", type=int, default=3)
    args = parser.parse_args()
    print(table(args.device, frames=args.frames).markdown())


if __name__ == "__main__":
    main()

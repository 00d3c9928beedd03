"""`python -m benchmarks` (or `make bench`): run every benchmark and write benchmarks/RESULTS.md.

Every figure is a ratio against a reference measured in the same run, on the same device,
dtype and thread count: peer implementations (vit-pytorch, timm), the plain-matmul peak (MFU),
raw decoding (data loader), FAR (for NAR), the default memory layout (channels_last).

    python -m benchmarks                          # everything, CPU float32 (about 30 minutes)
    python -m benchmarks --quick                  # fewer timed steps
    python -m benchmarks --only training,vptr     # some sections
    python -m benchmarks --device cuda --dtype bfloat16
    python -m benchmarks --only revisions --against /tmp/before/src   # vs another checkout
"""

from __future__ import annotations

import argparse
import importlib.util
import time
from collections.abc import Callable
from pathlib import Path

import torch

from benchmarks import (
    data_throughput,
    diffusion,
    profiles,
    revisions,
    training_step,
    vid2vid_generator,
    vptr_inference,
)
from benchmarks.common import Table, environment, matmul_peak_flops

RESULTS = Path(__file__).parent / "RESULTS.md"
SECTIONS = ("training", "data", "vptr", "vid2vid", "diffusion", "profiles")
# Run only when asked for, with --against.
OPTIONAL_SECTIONS = ("revisions",)


def section_tables(name: str, args: argparse.Namespace, peak: float) -> list[Table]:
    runners: dict[str, Callable[[], list[Table]]] = {
        "training": lambda: training_step.tables(
            args.device, args.dtype, torch.get_num_threads(), peak, args.quick
        ),
        "data": lambda: [data_throughput.table()],
        "vptr": lambda: [
            vptr_inference.table(args.device, batch=8 if args.device == "cuda" else 1)
        ],
        "vid2vid": lambda: [vid2vid_generator.table(args.device, peak, args.dtype)],
        "diffusion": lambda: diffusion.tables(
            args.device, torch.get_num_threads(), peak, args.quick
        ),
        "profiles": lambda: [profiles.table(args.device)],
        "revisions": lambda: [
            revisions.table(
                args.device, args.dtype, torch.get_num_threads(), args.against, args.quick
            )
        ],
    }
    return runners[name]()


def render(
    env: dict[str, str], peak: float, dtype: str, tables: list[Table], minutes: float
) -> str:
    lines = [
        "# videogen benchmarks",
        "",
        "Written by `python -m benchmarks`; every ratio compares two measurements taken in this "
        "run, on the same device, dtype and thread count.",
        "",
        "| | |",
        "| --- | --- |",
        *(f"| {key} | {value} |" for key, value in env.items()),
        f"| dtype | {dtype} |",
        f"| matmul peak ({dtype}) | {peak / 1e12:.3f} TFLOP/s |",
        f"| run time | {minutes:.1f} min |",
        "",
    ]
    return "\n".join(lines) + "\n" + "\n".join(table.markdown() for table in tables)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default=None, help="default: bfloat16 on CUDA, else float32")
    parser.add_argument("--only", default=",".join(SECTIONS), help="comma-separated sections")
    parser.add_argument("--quick", action="store_true", help="fewer timed training steps")
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument(
        "--against", type=Path, help="the src folder of another checkout (section revisions)"
    )
    args = parser.parse_args(argv)
    args.dtype = args.dtype or ("bfloat16" if args.device == "cuda" else "float32")
    chosen = [s.strip() for s in args.only.split(",") if s.strip()]
    known = SECTIONS + OPTIONAL_SECTIONS
    unknown = sorted(set(chosen) - set(known))
    if unknown:
        parser.error(f"unknown section(s) {', '.join(unknown)}; choose from {', '.join(known)}")
    if "revisions" in chosen and not (args.against and (args.against / "videogen").is_dir()):
        parser.error("--only revisions needs --against DIR, the src folder of another checkout")

    if "training" in chosen and importlib.util.find_spec("vit_pytorch") is None:
        parser.error(
            "the training section compares against vit-pytorch, which is not installed: "
            "pip install -e '.[bench]' (make bench does), or leave the section out with --only"
        )

    start = time.perf_counter()
    device = torch.device(args.device)
    peak = matmul_peak_flops(device, getattr(torch, args.dtype))
    print(f"matmul peak, {args.dtype} on {args.device}: {peak / 1e12:.3f} TFLOP/s", flush=True)
    tables: list[Table] = []
    for name in chosen:
        print(f"[{name}]", flush=True)
        tables += section_tables(name, args, peak)
    text = render(environment(device), peak, args.dtype, tables, (time.perf_counter() - start) / 60)
    args.output.write_text(text)
    print(text)
    print(f"Wrote {args.output}")


if __name__ == "__main__":
    main()

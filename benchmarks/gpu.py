"""Every GPU figure in one command, sized for a GPU machine lent for a few minutes.

    python -m benchmarks.gpu                  # or: sh benchmarks/gpu.sh
    python -m benchmarks.gpu --out $OUT/RESULTS-gpu.md --budget 420

In order, each part in its own processes, the results file rewritten after every part (a run
cut short still leaves what it measured):
1. the device, versions and the measured bf16 (and tf32) matmul peak;
2. the `gpu`-marked tests (`pytest -m gpu`);
3. training-step MFU at bf16 against that peak: ViViT-B/16x2 FE, Latte-XL/2, VPTR-FAR / NAR,
   vid2vid, VGAN, with clips/s and peak memory;
4. DDP scaling on every GPU present (when there are two or more);
5. the data loader with pinned memory and asynchronous copies to the GPU, against unpinned.
Parts past `--budget` seconds are skipped and say so.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import torch

from benchmarks import data_throughput
from benchmarks.common import Table, environment, fmt, matmul_peak_flops, run_child

RESULTS = Path(__file__).parent / "RESULTS-gpu.md"
# (case, label, batch, MFU target or None)
TRAINING_CASES = [
    ("vivit_b_fe", "ViViT-B/16x2 FE, 32x224x224, 400 classes", 8, 0.45),
    ("latte_xl", "Latte-XL/2, 16x4x32x32 latents, 101 classes, learned variance", 8, 0.40),
    ("vptr_far", "VPTR-FAR, 1x64x64, 10->10", 8, None),
    ("vptr_nar", "VPTR-NAR, 1x64x64, 10->10", 8, None),
    ("vid2vid", "vid2vid generator, 4 frames of 19-class 64x128 maps", 8, None),
    ("vgan", "VGAN (paper size), 32x3x64x64, D and G passes", 32, None),
]


class Report:
    """The results file, rewritten whole after every part."""

    def __init__(self, path: Path, header: list[str]) -> None:
        self.path = path
        self.header = header
        self.parts: list[str] = []

    def add(self, text: str) -> None:
        self.parts.append(text)
        self.path.write_text("\n".join(self.header) + "\n\n" + "\n".join(self.parts))
        print(text, flush=True)


def gpu_tests(timeout: float) -> Table:
    """The `gpu`-marked tests, run as the suite runs them."""
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider"],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    summary = (proc.stdout.strip().splitlines() or ["no output"])[-1]
    failures = [line for line in proc.stdout.splitlines() if line.startswith("FAILED")]
    rows = [["pytest -m gpu", summary, f"{time.perf_counter() - start:.0f} s"]]
    rows += [[line, "", ""] for line in failures[:10]]
    return Table("GPU tests", ["command", "result", "wall"], rows, f"exit code {proc.returncode}")


def training_table(device: str, peak: float, quick: bool) -> Table:
    rows = []
    steps = ["--warmup", "1", "--steps", "2"] if quick else ["--warmup", "2", "--steps", "5"]
    for case, label, batch, target in TRAINING_CASES:
        common = ["--device", device, "--dtype", "bfloat16", "--batch", str(batch), *steps]
        try:
            r = run_child("benchmarks.training_step", ["--case", case, *common], timeout=300)
        except (RuntimeError, subprocess.TimeoutExpired) as error:
            rows.append([label, "failed", "", "", "", "", str(error).splitlines()[-1][:120]])
            continue
        mfu = r["flops_per_s"] / peak
        rows.append(
            [
                label,
                str(batch),
                fmt(r["params_m"], 1),
                fmt(r["clips_per_s"], 2),
                f"{r['peak_mib'] / 1024:.1f}",
                f"**{100 * mfu:.1f}%**",
                ""
                if target is None
                else f"{100 * target:.0f}% ({'met' if mfu >= target else 'not met'})",
            ]
        )
        print(f"  {label}: MFU {100 * mfu:.1f}%", flush=True)
    return Table(
        "Training step at bf16 autocast (MFU against the measured bf16 matmul peak)",
        ["model", "batch", "params M", "clips/s", "peak GiB", "MFU", "target"],
        rows,
        f"Peak: {peak / 1e12:.1f} TFLOP/s (plain bf16 matmul, this device, this run). A step is "
        "forward, loss, backward and fused AdamW; FLOPs by torch's FlopCounterMode. Latte's "
        "official code: about 1.5 clips/s for XL/2 on an A100 in fp32.",
    )


def ddp_table(dtype: str = "bfloat16") -> Table:
    world = torch.cuda.device_count()
    if world < 2:
        return Table("DDP scaling", ["GPUs", "note"], [[str(world), "one GPU: nothing to scale"]])
    r = run_child(
        "benchmarks.ddp_scaling",
        ["--case", "vivit_b_fe", "--device", "cuda", "--dtype", dtype, "--world", str(world)],
        timeout=600,
    )
    return Table(
        "DDP scaling, ViViT-B/16x2 FE, batch 8 per GPU, bf16",
        ["GPUs", "clips/s on 1", f"clips/s on {world}", "efficiency"],
        [
            [
                str(world),
                fmt(r["single_clips_per_s"], 2),
                fmt(r["clips_per_s"], 2),
                f"**{100 * r['efficiency']:.0f}%**",
            ]
        ],
        "Efficiency = clips/s on N GPUs / (N x clips/s on one), NCCL, one process per GPU.",
    )


def pinned_loader_table(device: str) -> Table:
    """The Kinetics `val` loader with its batches copied to the GPU, pinned vs not."""
    args = data_throughput.parse([])
    rows = []
    with data_throughput.dataset_folder(args) as root:
        for pin in (False, True):
            speed = data_throughput.loader_speed(root, "auto", args, pin_memory=pin, device=device)
            rows.append([f"pin_memory={pin}", fmt(speed, 1)])
    return Table(
        "Data loader to the GPU",
        ["loader", "clips/s"],
        rows,
        "Kinetics-style h264 videos (benchmarks/data_throughput.py), data.num_workers=auto, "
        "decord, each batch copied to the GPU (non_blocking when pinned).",
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--budget", type=float, default=420, help="seconds; later parts skip")
    parser.add_argument("--device", default="cuda", help="cpu only to check the script itself")
    parser.add_argument("--parts", default="tests,training,ddp,data")
    parser.add_argument("--quick", action="store_true", help="fewer timed steps")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit(
            "benchmarks.gpu: no CUDA device here; run it on a GPU machine (or --device cpu "
            "to check the script)."
        )
    start = time.perf_counter()
    device = torch.device(args.device)
    peak = matmul_peak_flops(device, torch.bfloat16)
    header = ["# videogen GPU benchmarks", "", "Written by `python -m benchmarks.gpu`.", ""]
    header += ["| | |", "| --- | --- |"]
    header += [f"| {key} | {value} |" for key, value in environment(device).items()]
    header.append(f"| GPUs | {torch.cuda.device_count() if device.type == 'cuda' else 0} |")
    header.append(f"| matmul peak (bf16) | {peak / 1e12:.1f} TFLOP/s |")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        tf32 = matmul_peak_flops(device, torch.float32)
        header.append(f"| matmul peak (fp32, tf32 allowed) | {tf32 / 1e12:.1f} TFLOP/s |")
    report = Report(args.out, header)
    parts = {
        "tests": lambda: gpu_tests(timeout=max(30.0, args.budget / 4)),
        "training": lambda: training_table(args.device, peak, args.quick),
        "ddp": ddp_table,
        "data": lambda: pinned_loader_table(args.device),
    }
    for name in args.parts.split(","):
        spent = time.perf_counter() - start
        if spent > args.budget:
            report.add(
                f"## {name}\n\nskipped: {spent:.0f} s of the {args.budget:.0f} s budget spent.\n"
            )
            continue
        try:
            report.add(parts[name]().markdown())
        except Exception as error:  # one broken part must not cost the others' figures
            report.add(f"## {name}\n\nfailed: {type(error).__name__}: {error}\n")
    report.add(f"Total: {time.perf_counter() - start:.0f} s.\n")


if __name__ == "__main__":
    main()

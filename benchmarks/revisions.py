"""Training steps of this checkout against another checkout of videogen, measured in one run.

A refactor must not make a model slower: each case's training step (the same child as the
training section, `benchmarks.training_step`) runs in fresh processes, alternately importing
this checkout's `videogen` and the other one's (`--against DIR`, a `src` folder), and the table
gives each side's fastest run and their ratio.

    git worktree add /tmp/before <rev>
    python -m benchmarks --only revisions --against /tmp/before/src
"""

from __future__ import annotations

from pathlib import Path

from benchmarks.common import Table, fmt, run_child

CASES = [
    ("vivit_m1", "ViViT Model 1 (joint space-time)"),
    ("vivit_fe", "ViViT Model 2 (factorised encoder)"),
    ("vivit_fsa", "ViViT Model 3 (factorised self-attention)"),
    ("vivit_fdp", "ViViT Model 4 (factorised dot-product)"),
    ("vit", "ViT per frame"),
    ("vivit_b_fe", "ViViT-B/16x2 FE, 32x224x224 (paper size)"),
    ("vptr_ae", "VPTR autoencoder, 20 frames 1x64x64 (paper size)"),
    ("vptr_far", "VPTR-FAR, 1x64x64, 10->10 (paper size)"),
    ("vptr_nar", "VPTR-NAR, 1x64x64, 10->10 (paper size)"),
    ("vid2vid", "vid2vid generator, 4 frames 3x64x128"),
]
# Paper-size steps take seconds each: fewer of them.
SLOW_CASES = {"vivit_b_fe", "vptr_ae", "vptr_far", "vptr_nar"}


def fastest(case: str, common: list[str], rounds: int, against: Path) -> tuple[dict, dict]:
    """This checkout's and the other's fastest of `rounds` runs, alternating which goes first."""
    runs: dict[str, list[dict]] = {"this": [], "other": []}
    args = ["--case", case, *common]
    if case in SLOW_CASES:
        args += ["--warmup", "1", "--steps", "3"]
    for round_index in range(rounds):
        order = ["this", "other"] if round_index % 2 == 0 else ["other", "this"]
        for side in order:
            source = None if side == "this" else against
            runs[side].append(run_child("benchmarks.training_step", args, source=source))
    best = {side: max(results, key=lambda r: r["clips_per_s"]) for side, results in runs.items()}
    return best["this"], best["other"]


def table(device: str, dtype: str, threads: int, against: Path, quick: bool) -> Table:
    """Speed of every case's training step, this checkout vs `against`."""
    common = ["--device", device, "--dtype", dtype, "--threads", str(threads)]
    rounds = 1 if quick else 3
    rows = []
    for case, label in CASES:
        ours, theirs = fastest(case, common, rounds, against)
        ratio = ours["clips_per_s"] / theirs["clips_per_s"]
        rows.append(
            [
                label,
                fmt(ours["seconds_per_step"], 4),
                fmt(theirs["seconds_per_step"], 4),
                f"**{ratio:.3f}x**",
                fmt(ours["flops_per_step"] / max(theirs["flops_per_step"], 1), 3),
            ]
        )
        print(f"  {label}: {ratio:.3f}x", flush=True)
    return Table(
        "Training step: this checkout vs another",
        ["model", "s / step this", "s / step other", "speed ratio", "FLOP ratio"],
        rows,
        f"Other: {against}. Each side's fastest of {rounds} runs in fresh processes, alternating "
        "which goes first. Speed ratio > 1: this checkout is faster; FLOP ratio: its FLOPs per "
        "step over the other's (1: the same arithmetic).",
    )

"""Which checkpoint a run starts from: `ckpt_path=PATH`, `ckpt_path=last`, or `resume=auto`."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from videogen.errors import ConfigError

log = logging.getLogger(__name__)

RESUME_MODES = ("auto", "never")


def checkpoint_step(path: Path) -> int | None:
    """The global step stored in a checkpoint (-1 for a sharded folder), None if unreadable."""
    if path.is_dir():
        return -1
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
        return int(checkpoint.get("global_step", -1))
    except Exception:  # a half-written file from a killed run is not a resume point
        return None


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The most advanced checkpoint in `run_dir/checkpoints` (highest step, then newest), if any.

    Candidates are `last.ckpt` (end of epoch), `latest-step.ckpt` (every N steps),
    `preempted.ckpt` (on a stop signal) and `best.ckpt`; files that cannot be read are skipped.
    """
    folder = Path(run_dir) / "checkpoints"
    ranked = [
        (step, path.stat().st_mtime, path)
        for path in (folder.glob("*.ckpt") if folder.is_dir() else [])
        if (step := checkpoint_step(path)) is not None
    ]
    return max(ranked, key=lambda entry: entry[:2])[2] if ranked else None


def newest_other_run(run_dir: Path) -> Path | None:
    """The newest other run folder with checkpoints, in the default `outputs/<date>/<time>` layout."""
    root = run_dir.parent.parent
    runs = {path.parent.parent for path in root.glob("*/*/checkpoints/*.ckpt")} - {run_dir}
    return max(runs, key=lambda path: path.stat().st_mtime) if runs else None


def resolve_ckpt_path(ckpt_path: str | None, resume: str, run_dir: str | Path) -> str | None:
    """The checkpoint to resume from, or None to start fresh.

    `ckpt_path=last` must find a checkpoint in this run's folder (point `hydra.run.dir` at the
    run to continue); `resume=auto` uses one if there is one (a requeued or restarted job).
    """
    if resume not in RESUME_MODES:
        raise ConfigError(f"resume must be one of {RESUME_MODES}, got {resume!r}.")
    run_dir = Path(run_dir)
    if ckpt_path and ckpt_path != "last":
        return ckpt_path
    latest = latest_checkpoint(run_dir)
    if ckpt_path == "last" and latest is None:
        other = newest_other_run(run_dir)
        suggestion = f" (the newest run with one is {other})" if other else ""
        raise ConfigError(
            f"ckpt_path=last found no checkpoint in {run_dir}/checkpoints: to continue an earlier "
            f"run, add hydra.run.dir=<that run's folder>{suggestion}."
        )
    if latest is not None and (ckpt_path == "last" or resume == "auto"):
        log.info("Resuming from %s", latest)
        return str(latest)
    return None

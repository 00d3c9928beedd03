"""`<sweep dir>/summary.csv`: one row per job of a Hydra sweep (`-m`), whatever the launcher.

Each job writes its own small record under `<sweep dir>/.jobs/`, in the job's process (on a SLURM
node with submitit): UNFINISHED when it starts, then COMPLETED or FAILED when it ends, so a job
SLURM kills stays UNFINISHED. The submitting process gathers the records into the summary at the
end of the sweep. Hydra skips `on_multirun_end` when a job failed (it raises first), so the
summary is then written when the submitting process exits.
"""

from __future__ import annotations

import atexit
import contextlib
import csv
import json
import logging
import os
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from lightning_utilities.core.rank_zero import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from videogen.utils.cli import user_error_in

log = logging.getLogger(__name__)

SUMMARY_FILE = "summary.csv"
# One JSON file per job, written by the job itself.
RECORDS_DIR = ".jobs"
# A job that started and never reported its end: killed, out of time or memory, or still running.
UNFINISHED = "UNFINISHED"
UNFINISHED_ERROR = (
    "the job did not finish (killed, out of time or memory, or still running): see its log"
)


@dataclass
class JobRecord:
    """What the summary says about one job of a sweep."""

    job: int
    overrides: list[str]
    status: str
    metric: str | None
    value: float | None
    error: str
    output_dir: str


def is_multirun(config: DictConfig) -> bool:
    """Whether `config` (with its `hydra` node) belongs to a sweep rather than a single run."""
    return OmegaConf.select(config, "hydra.mode") == RunMode.MULTIRUN


def error_sentence(error: BaseException) -> str:
    """The one sentence of a user mistake, or the first line of any other error with its type."""
    user_error = user_error_in(error)
    if user_error is not None:
        return str(user_error)
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__


def record_of(config: DictConfig, job_return: JobReturn | None) -> JobRecord:
    """The record of a job, from its config and what Hydra returned for it (None: not yet)."""
    record = JobRecord(
        job=int(config.hydra.job.num),
        overrides=[str(o) for o in config.hydra.overrides.task],
        status=UNFINISHED,
        metric=config.get("optimized_metric"),
        value=None,
        error=UNFINISHED_ERROR,
        output_dir=str(config.hydra.runtime.output_dir),
    )
    if job_return is None:
        return record
    # `JobReturn.return_value` raises the job's exception when it failed; the field holds it.
    returned = job_return._return_value
    if job_return.status != JobStatus.COMPLETED:
        record.status, record.error = "FAILED", error_sentence(returned)
        return record
    record.status, record.error = "COMPLETED", ""
    if returned is not None:
        with contextlib.suppress(TypeError, ValueError):
            record.value = float(returned)
    return record


def write_record(config: DictConfig, record: JobRecord) -> None:
    """Write (or replace) the record of one job of the sweep; only rank 0 of the job writes."""
    if getattr(rank_zero_only, "rank", 0) != 0:
        return
    path = Path(str(config.hydra.sweep.dir)) / RECORDS_DIR / f"{record.job}.json"
    write_atomically(path, json.dumps(asdict(record), indent=1) + "\n")


def write_atomically(path: Path, text: str) -> None:
    """Write `text` to `path` through a temporary file, so that readers never see half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


def read_records(sweep_dir: Path) -> list[JobRecord]:
    """The records the jobs of the sweep in `sweep_dir` have written, by job number."""
    records = []
    for path in sorted((sweep_dir / RECORDS_DIR).glob("*.json")):
        with contextlib.suppress(OSError, ValueError, TypeError):
            records.append(JobRecord(**json.loads(path.read_text())))
    return sorted(records, key=lambda r: r.job)


def varying_overrides(records: Sequence[JobRecord]) -> dict[int, list[str]]:
    """Per job, the overrides that not every job shares (all of them when there is one job)."""
    shared = set.intersection(*(set(r.overrides) for r in records)) if len(records) > 1 else set()
    return {r.job: [o for o in r.overrides if o not in shared] for r in records}


def write_summary(sweep_dir: Path, records: Sequence[JobRecord]) -> Path:
    """Write `summary.csv` (one row per job) into `sweep_dir` and return its path."""
    path = sweep_dir / SUMMARY_FILE
    with open(path, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["job", "overrides", "status", "metric", "value", "error", "output_dir"])
        for r in records:
            value = "" if r.value is None else repr(r.value)
            row = [r.job, " ".join(r.overrides), r.status, r.metric or "", value, r.error]
            writer.writerow([*row, r.output_dir])
    return path


def summary_line(records: Sequence[JobRecord], mode: str | None = None) -> str:
    """One line: how many jobs completed, and which did not and why (or the best one)."""
    completed = [r for r in records if r.status == "COMPLETED"]
    failed = [r for r in records if r.status != "COMPLETED"]
    shown = varying_overrides(records)
    line = f"{len(completed)} of {len(records)} jobs completed"
    if failed:
        reasons = "; ".join(f"job {r.job} ({' '.join(shown[r.job])}): {r.error}" for r in failed)
        return f"{line}; failed: {reasons}"
    scored = [r for r in completed if r.value is not None]
    if scored and mode in ("min", "max"):
        pick = min if mode == "min" else max
        best = pick(scored, key=lambda r: r.value)
        line += (
            f"; best {best.metric} {best.value:.6g}: job {best.job} ({' '.join(shown[best.job])})"
        )
    return line


class SweepSummary(Callback):
    """Hydra callback: at the end of a sweep, `<sweep dir>/summary.csv` and a one-line summary.

    Registered in conf/hydra/default.yaml; single runs (no `-m`) are left alone.
    """

    def __init__(self) -> None:
        self._sweep_dir: Path | None = None
        self._mode: str | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Forget the records of an earlier sweep into the same folder; make sure the summary
        is written even if the sweep ends with a failed job (Hydra then skips on_multirun_end)."""
        self._sweep_dir = Path(str(config.hydra.sweep.dir))
        self._mode = config.get("optimized_mode")
        shutil.rmtree(self._sweep_dir / RECORDS_DIR, ignore_errors=True)
        atexit.register(self._summarise)

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        """In the job's process: record the job as unfinished until on_job_end says otherwise
        (a job SLURM kills never gets there)."""
        if is_multirun(config):
            write_record(config, record_of(config, None))

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        """In the job's process: record how the job ended and what it returned."""
        if is_multirun(config):
            write_record(config, record_of(config, job_return))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        """In the submitting process, after every job: gather the records into the summary."""
        atexit.unregister(self._summarise)
        self._summarise()

    def _summarise(self) -> None:
        if self._sweep_dir is None:
            return
        records = read_records(self._sweep_dir)
        if not records:
            return
        path = write_summary(self._sweep_dir, records)
        line = summary_line(records, self._mode)
        if all(r.status == "COMPLETED" for r in records):
            log.info("%s (%s)", line, path)
        else:
            log.error("%s (%s)", line, path)


class SubmititLocalRanks(Callback):
    """Hydra callback: give Lightning the ranks of a `hydra/launcher=submitit_local` job.

    On SLURM, Lightning reads each process's rank from SLURM's variables. The local submitit
    executor starts one process per task too (`tasks_per_node` = `trainer.devices`), but with
    variables of its own that Lightning does not know; submitit's helper exports them as the
    standard torch.distributed ones (RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT),
    which Lightning uses. Does nothing anywhere else, or for a job of one task.
    """

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        """In the job's process, before the task function builds the Trainer."""
        if os.environ.get("SUBMITIT_EXECUTOR") != "local":
            return
        if int(os.environ.get("SUBMITIT_LOCAL_NTASKS", "1")) < 2:
            return
        from submitit.helpers import TorchDistributedEnvironment

        # Every task sees the job's GPUs; Lightning picks the one of its local rank.
        TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)

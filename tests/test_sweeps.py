"""Sweeps: the submitit launchers' resources follow the trainer, every job of a sweep runs even
when one fails, `<sweep dir>/summary.csv` says which, and the Optuna search config composes and runs."""

from __future__ import annotations

import csv
import json
import logging
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import submitit
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn, JobStatus
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from tests.conftest import TINY_DATA, assert_ok, run_cli
from videogen.config import CONFIG_DIR
from videogen.errors import ConfigError
from videogen.utils.cli import report_user_errors
from videogen.utils.sweep import SUMMARY_FILE, SweepSummary

pytestmark = [
    pytest.mark.usefixtures("one_thread_per_cli_run"),
    # In-process composition: the filter videogen.config installs at import does not outlive
    # pytest's collection, so repeat it here (the CLI tests check that users never see it).
    pytest.mark.filterwarnings("ignore:(?s).*validated against ConfigStore schema:UserWarning"),
]

# One epoch of the small per-frame ViT on the CPU: a few seconds per job.
TINY_RUN = ["model=vit", "trainer=cpu", "trainer.max_epochs=1", *TINY_DATA]


def run_sweep(tmp_path: Path, *overrides: str) -> tuple[subprocess.CompletedProcess, Path]:
    """`python -m videogen -m <overrides>` with its sweep folder in `tmp_path`."""
    sweep_dir = tmp_path / "sweep"
    result = run_cli("videogen", "-m", *overrides, f"hydra.sweep.dir={sweep_dir}", cwd=tmp_path)
    return result, sweep_dir


def compose_with_hydra(*overrides: str) -> DictConfig:
    """The train config with its `hydra` node, as a sweep's launcher and sweeper see it."""
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(config_name="train", overrides=list(overrides), return_hydra_config=True)


def summary_rows(sweep_dir: Path) -> list[dict[str, str]]:
    with open(sweep_dir / SUMMARY_FILE, newline="") as file:
        return list(csv.DictReader(file))


def metrics_of(run_dir: Path) -> dict[str, float]:
    return json.loads((run_dir / "metrics.json").read_text())


@pytest.fixture
def fake_slurm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict]:
    """An `srun` on the PATH (submitit's SLURM executor looks for one) and a `map_array` that
    keeps the executor it is called on instead of submitting anything."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 1\n")
    (bin_dir / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir), prepend=os.pathsep)
    submitted: dict = {}

    def keep_executor(executor: submitit.AutoExecutor, fn: object, *args: object) -> list:
        submitted["executor"] = executor
        submitted["jobs"] = list(zip(*args, strict=True))
        return []

    monkeypatch.setattr(submitit.AutoExecutor, "map_array", keep_executor)
    yield submitted


def test_slurm_launcher_takes_one_task_per_gpu_from_the_trainer(
    tmp_path: Path, fake_slurm: dict
) -> None:
    sweep_dir = tmp_path / "sweep"
    cfg = compose_with_hydra(
        "hydra/launcher=submitit_slurm",
        "trainer=ddp",
        "trainer.devices=4",
        "trainer.num_nodes=2",
        "hydra.launcher.partition=gpu",
        f"hydra.sweep.dir={sweep_dir}",
    )
    launcher_cfg = cfg.hydra.launcher
    assert launcher_cfg._target_.endswith("submitit_launcher.SlurmLauncher")
    assert launcher_cfg.tasks_per_node == launcher_cfg.gpus_per_node == 4
    assert launcher_cfg.nodes == 2
    assert launcher_cfg.max_num_timeout > 0 and launcher_cfg.signal_delay_s >= 60
    assert launcher_cfg.submitit_folder.startswith(str(sweep_dir))

    # What the plugin hands to submitit: the real launcher, up to the submission itself.
    launcher = instantiate(launcher_cfg)
    launcher.setup(hydra_context=None, task_function=None, config=cfg)
    assert launcher.launch([["optimizer.lr=0.001"], ["optimizer.lr=0.0003"]], 0) == []
    executor = fake_slurm["executor"]
    assert executor.cluster == "slurm" and len(fake_slurm["jobs"]) == 2
    slurm = executor._executor
    assert slurm.max_num_timeout == launcher_cfg.max_num_timeout
    params = slurm.parameters
    assert params["ntasks_per_node"] == params["gpus_per_node"] == 4
    assert params["nodes"] == 2 and params["partition"] == "gpu" and params["job_name"] == "train"
    sbatch = slurm._make_submission_file_text("python -m submitit.core._submit x", "uid")
    for line in (
        "#SBATCH --nodes=2",
        "#SBATCH --ntasks-per-node=4",
        "#SBATCH --gpus-per-node=4",
        "#SBATCH --partition=gpu",
        f"#SBATCH --signal=USR2@{launcher_cfg.signal_delay_s}",
        f"#SBATCH --output={sweep_dir}/.submitit/%j/%j_0_log.out",
    ):
        assert line in sbatch.splitlines(), sbatch


def test_slurm_resources_follow_the_trainer_they_launch() -> None:
    cfg = compose_with_hydra("hydra/launcher=submitit_slurm", "trainer=ddp", "trainer.devices=8")
    assert cfg.hydra.launcher.tasks_per_node == cfg.hydra.launcher.gpus_per_node == 8
    assert cfg.hydra.launcher.nodes == cfg.trainer.num_nodes == 1

    local = compose_with_hydra("hydra/launcher=submitit_local", "trainer=ddp", "trainer.devices=2")
    assert local.hydra.launcher._target_.endswith("submitit_launcher.LocalLauncher")
    assert local.hydra.launcher.tasks_per_node == local.hydra.launcher.gpus_per_node == 2
    assert local.hydra.launcher.nodes == 1


def test_user_mistake_fails_one_job_of_a_sweep_but_exits_a_single_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def mistake() -> None:
        with report_user_errors():
            raise ConfigError("data.num_frames must be a positive integer.")

    with pytest.raises(SystemExit) as exit_info:
        mistake()
    assert exit_info.value.code == 2

    cfg = compose_with_hydra()
    with open_dict(cfg):
        cfg.hydra.mode = RunMode.MULTIRUN
    HydraConfig.instance().set_config(cfg)
    try:
        with pytest.raises(ConfigError), caplog.at_level(logging.ERROR):
            mistake()
    finally:
        HydraConfig.instance().cfg = None
    assert [r.getMessage() for r in caplog.records] == [
        "data.num_frames must be a positive integer."
    ]


def test_missing_optimized_metric_is_named_with_the_available_ones(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import videogen.train

    metrics = {"val/acc": 0.5, "val/loss": 1.0}
    monkeypatch.setattr(videogen.train, "train", lambda cfg: metrics)
    cfg = compose_with_hydra()
    with caplog.at_level(logging.WARNING):
        assert videogen.train.run.__wrapped__(cfg) == 0.5
    assert caplog.records == []
    cfg.optimized_metric = "val/psnr"
    with caplog.at_level(logging.WARNING):
        assert videogen.train.run.__wrapped__(cfg) is None
    assert len(caplog.records) == 1
    message = caplog.records[0].getMessage()
    assert "optimized_metric=val/psnr" in message and "val/acc, val/loss" in message


def job_config(sweep_dir: Path, mode: RunMode, num: int, *overrides: str) -> DictConfig:
    cfg = compose_with_hydra(f"hydra.sweep.dir={sweep_dir}", *overrides)
    with open_dict(cfg):
        cfg.hydra.mode = mode
        cfg.hydra.job.num = num
        cfg.hydra.overrides.task = list(overrides)
        cfg.hydra.runtime.output_dir = str(sweep_dir / str(num))
    return cfg


def test_single_runs_write_no_sweep_records(tmp_path: Path) -> None:
    cfg = job_config(tmp_path, RunMode.RUN, 0)
    summary = SweepSummary()
    summary.on_job_start(config=cfg)
    done = JobReturn(overrides=[], status=JobStatus.COMPLETED, _return_value=0.5)
    summary.on_job_end(config=cfg, job_return=done)
    assert list(tmp_path.iterdir()) == []


def test_summary_names_a_job_that_never_reported_its_end(tmp_path: Path) -> None:
    summary = SweepSummary()
    summary.on_multirun_start(config=job_config(tmp_path, RunMode.MULTIRUN, 0))
    killed = job_config(tmp_path, RunMode.MULTIRUN, 0, "optimizer.lr=0.1")
    summary.on_job_start(config=killed)  # and SLURM killed it there
    finished = job_config(tmp_path, RunMode.MULTIRUN, 1, "optimizer.lr=0.01")
    summary.on_job_start(config=finished)
    done = JobReturn(overrides=["optimizer.lr=0.01"], status=JobStatus.COMPLETED, _return_value=0.5)
    summary.on_job_end(config=finished, job_return=done)
    summary.on_multirun_end(config=finished)
    rows = summary_rows(tmp_path)
    assert [(r["job"], r["status"], r["value"]) for r in rows] == [
        ("0", "UNFINISHED", ""),
        ("1", "COMPLETED", "0.5"),
    ]
    assert "did not finish" in rows[0]["error"] and rows[0]["overrides"] == "optimizer.lr=0.1"


def test_local_submitit_sweep_runs_every_job_and_summarises_them(tmp_path: Path) -> None:
    result, sweep_dir = run_sweep(
        tmp_path,
        "hydra/launcher=submitit_local",
        "hydra.launcher.gpus_per_node=0",
        "optimizer.lr=1e-3,3e-4",
        *TINY_RUN,
    )
    assert_ok(result)
    # The jobs ran through submitit (their own processes, logs under the sweep folder).
    assert len(list(sweep_dir.glob(".submitit/*/*_0_log.out"))) == 2
    rows = summary_rows(sweep_dir)
    assert [r["job"] for r in rows] == ["0", "1"]
    for row, lr in zip(rows, ("optimizer.lr=0.001", "optimizer.lr=0.0003"), strict=True):
        metrics = metrics_of(sweep_dir / row["job"])
        assert 0.0 <= metrics["val/acc"] <= 1.0
        assert row["status"] == "COMPLETED" and row["error"] == ""
        assert row["metric"] == "val/acc"
        assert float(row["value"]) == pytest.approx(metrics["val/acc"], abs=1e-6)
        assert lr in row["overrides"].split()
    output = result.stdout + result.stderr
    assert "2 of 2 jobs completed" in output
    # Our launcher config shadows the plugin's of the same name; Hydra's note about it is silenced.
    assert "validated against ConfigStore schema" not in output


@pytest.mark.slow
def test_local_submitit_job_runs_one_ddp_process_per_task(tmp_path: Path) -> None:
    """tasks_per_node = trainer.devices locally too: the two tasks are the two DDP ranks."""
    result, sweep_dir = run_sweep(
        tmp_path,
        "hydra/launcher=submitit_local",
        "hydra.launcher.gpus_per_node=0",
        *TINY_RUN,
        "trainer=ddp_cpu",
    )
    assert_ok(result)
    logs = sorted(sweep_dir.glob(".submitit/*/*_log.err"))
    assert len(logs) == 2, logs
    ranks = "".join(path.read_text() for path in logs)
    assert "GLOBAL_RANK: 0, MEMBER: 1/2" in ranks and "GLOBAL_RANK: 1, MEMBER: 2/2" in ranks
    assert [r["status"] for r in summary_rows(sweep_dir)] == ["COMPLETED"]
    assert "val/acc" in metrics_of(sweep_dir / "0")


def test_failed_job_leaves_the_others_running_and_is_named_in_the_summary(
    tmp_path: Path,
) -> None:
    result, sweep_dir = run_sweep(
        tmp_path,
        "data.num_frames=0,4",
        *TINY_RUN,
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0, output[-3000:]
    # The bad job came first; the good one still ran to the end.
    assert not (sweep_dir / "0" / "metrics.json").exists()
    assert "val/acc" in metrics_of(sweep_dir / "1")
    rows = summary_rows(sweep_dir)
    assert [(r["job"], r["status"]) for r in rows] == [("0", "FAILED"), ("1", "COMPLETED")]
    sentence = "data.num_frames must be a positive integer, got 0"
    assert rows[0]["error"].startswith(sentence) and rows[0]["value"] == ""
    assert rows[1]["error"] == "" and float(rows[1]["value"]) >= 0.0
    assert f"1 of 2 jobs completed; failed: job 0 (data.num_frames=0): {sentence}" in output


@pytest.mark.parametrize(("mode", "direction"), [("max", "maximize"), ("min", "minimize")])
def test_optuna_search_config_composes(mode: str, direction: str) -> None:
    cfg = compose_with_hydra("hparams_search=vivit_optuna", f"optimized_mode={mode}")
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_.endswith("optuna_sweeper.OptunaSweeper")
    assert sweeper.direction == direction
    assert sweeper.sampler._target_ == "optuna.samplers.TPESampler"
    assert sweeper.sampler.seed == cfg.seed
    assert sweeper.n_trials >= 10
    searched = dict(sweeper.params)
    assert "optimizer.lr" in searched and searched["optimizer.lr"].startswith("tag(log")
    for key in searched:  # every searched key exists in the composed run config
        parent, _, leaf = key.rpartition(".")
        assert leaf in OmegaConf.select(cfg, parent), key


def test_optuna_search_runs_two_trials(tmp_path: Path) -> None:
    result, sweep_dir = run_sweep(
        tmp_path,
        "hparams_search=vivit_optuna",
        "hydra.sweeper.n_trials=2",
        "hydra.sweeper.n_jobs=2",
        "trainer=cpu",
        "trainer.max_epochs=1",
        *TINY_DATA,
    )
    assert_ok(result)
    best = (sweep_dir / "optimization_results.yaml").read_text()
    assert "best_params:" in best and "optimizer.lr:" in best
    rows = summary_rows(sweep_dir)
    assert [r["status"] for r in rows] == ["COMPLETED", "COMPLETED"]
    assert all("optimizer.lr=" in r["overrides"] for r in rows)

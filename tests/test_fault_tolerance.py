"""Runs that are killed, stopped or requeued resume and end exactly where an unbroken run ends."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from tests.conftest import REPO_ROOT, TINY_DATA, assert_ok, run_cli
from tests.faults import SignalAtStep
from videogen.callbacks.fault_tolerance import PreemptionCheckpoint
from videogen.errors import ConfigError
from videogen.utils.resume import latest_checkpoint, resolve_ckpt_path

pytestmark = pytest.mark.usefixtures("one_thread_per_cli_run")

# 32 clips at batch 4: 8 steps per epoch, 16 in all; a mid-epoch checkpoint every 3 steps.
RUN = [
    "model=vit",
    "trainer=cpu",
    "trainer.max_epochs=2",
    "callbacks.step_checkpoint.every_n_train_steps=3",
    "logger=csv",
    *TINY_DATA,
]
FAULT = "+callbacks.fault._target_=tests.faults.SignalAtStep"


def train(run_dir: Path, *overrides: str):
    return run_cli("videogen", *RUN, f"hydra.run.dir={run_dir}", *overrides, cwd=REPO_ROOT)


def final_metrics(run_dir: Path) -> dict[str, float]:
    return json.loads((run_dir / "metrics.json").read_text())


def step_of(path: Path) -> int:
    return torch.load(path, map_location="cpu", weights_only=False)["global_step"]


@pytest.fixture(scope="module")
def unbroken_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, float]:
    run_dir = tmp_path_factory.mktemp("unbroken")
    assert_ok(train(run_dir))
    return final_metrics(run_dir)


def assert_same_metrics(resumed: dict[str, float], unbroken: dict[str, float]) -> None:
    # Not train/*_epoch: Lightning's running mean of the resumed epoch starts at the resume.
    for name in ("val/loss", "val/acc", "val/acc_top5", "test/loss", "test/acc", "lr-AdamW/decay"):
        assert resumed[name] == pytest.approx(unbroken[name], rel=1e-5, abs=1e-6), name


def test_a_run_killed_mid_epoch_resumes_to_the_same_final_metrics(
    unbroken_run: dict[str, float], tmp_path: Path
) -> None:
    killed = train(tmp_path, FAULT, "+callbacks.fault.step=11")  # mid-epoch 2
    assert killed.returncode == -signal.SIGKILL
    assert not (tmp_path / "metrics.json").exists()
    latest = latest_checkpoint(tmp_path)
    assert latest is not None and latest.name == "latest-step.ckpt" and step_of(latest) == 9

    resumed = train(tmp_path, "ckpt_path=last")
    assert_ok(resumed)
    assert "Resuming from" in (tmp_path / "train.log").read_text()
    assert_same_metrics(final_metrics(tmp_path), unbroken_run)


def test_sigterm_writes_a_checkpoint_and_resume_auto_finishes_the_run(
    unbroken_run: dict[str, float], tmp_path: Path
) -> None:
    stopped = train(
        tmp_path, FAULT, "+callbacks.fault.step=5", "+callbacks.fault.signal_name=SIGTERM"
    )
    assert stopped.returncode == 128 + signal.SIGTERM, stopped.stderr[-2000:]
    preempted = tmp_path / "checkpoints" / "preempted.ckpt"
    assert step_of(preempted) == 6  # the step that was running when the signal came
    assert not (tmp_path / "metrics.json").exists()

    resumed = train(tmp_path)  # resume=auto is the default
    assert_ok(resumed)
    assert_same_metrics(final_metrics(tmp_path), unbroken_run)


def write_checkpoint(path: Path, step: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"global_step": step, "state_dict": {}}, path)


def test_resume_picks_the_most_advanced_checkpoint(tmp_path: Path) -> None:
    write_checkpoint(tmp_path / "checkpoints" / "last.ckpt", 8)
    write_checkpoint(tmp_path / "checkpoints" / "latest-step.ckpt", 12)
    write_checkpoint(tmp_path / "checkpoints" / "best.ckpt", 4)
    (tmp_path / "checkpoints" / "torn.ckpt").write_bytes(b"killed while writing")
    expected = str(tmp_path / "checkpoints" / "latest-step.ckpt")
    assert resolve_ckpt_path("last", "auto", tmp_path) == expected
    assert resolve_ckpt_path(None, "auto", tmp_path) == expected
    assert resolve_ckpt_path(None, "never", tmp_path) is None
    assert resolve_ckpt_path("/some/file.ckpt", "auto", tmp_path) == "/some/file.ckpt"


def test_ckpt_path_last_without_a_checkpoint_names_the_folder_and_the_newest_run(
    tmp_path: Path,
) -> None:
    earlier = tmp_path / "outputs" / "2026-01-01" / "10-00-00"
    write_checkpoint(earlier / "checkpoints" / "last.ckpt", 3)
    fresh = tmp_path / "outputs" / "2026-01-02" / "09-00-00"
    assert resolve_ckpt_path(None, "auto", fresh) is None
    with pytest.raises(ConfigError, match="found no checkpoint in .*09-00-00") as error:
        resolve_ckpt_path("last", "auto", fresh)
    assert str(earlier) in str(error.value) and "hydra.run.dir" in str(error.value)
    with pytest.raises(ConfigError, match="resume must be one of"):
        resolve_ckpt_path(None, "sometimes", fresh)


class TinyRegression(pl.LightningModule):
    """One linear layer on random data: a Lightning run that takes milliseconds."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(4, 1)

    def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self.layer(batch[0]).pow(2).mean()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(TensorDataset(torch.randn(32, 4)), batch_size=4)


def test_the_requeue_signal_is_handed_to_the_launcher_after_the_checkpoint(
    tmp_path: Path,
) -> None:
    calls: list[tuple[int, bool]] = []
    checkpoint = tmp_path / "checkpoints" / "preempted.ckpt"

    def launcher_handler(signum: int, frame: object) -> None:  # what submitit installs
        calls.append((signum, checkpoint.exists()))

    before = signal.signal(signal.SIGUSR2, launcher_handler)
    try:
        trainer = pl.Trainer(
            max_epochs=1,
            callbacks=[
                PreemptionCheckpoint(str(tmp_path / "checkpoints")),
                SignalAtStep(3, "SIGUSR2"),
            ],
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
        )
        trainer.fit(TinyRegression())
        # The signal waited for the step to end, the checkpoint was written, then the launcher's
        # handler ran exactly once; afterwards the launcher's handler is in place again.
        assert calls == [(signal.SIGUSR2, True)]
        assert step_of(checkpoint) == 4
        assert signal.getsignal(signal.SIGUSR2) is launcher_handler
    finally:
        signal.signal(signal.SIGUSR2, before)

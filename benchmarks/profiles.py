"""A torch.profiler summary of one training step of every task, so the top costs are visible.

Each task is built from its laptop-sized preset (`model=<name>_tiny` on synthetic video)
exactly as `python -m videogen` builds it, and Lightning runs two training batches; the second is
profiled (the first pays one-off costs). The operator table, sorted by self time, is written
to `benchmarks/profiles/<model>.txt`; `top_ops` reads back the leading rows.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_dir
from torch.profiler import ProfilerActivity, profile

from benchmarks.common import Table
from videogen.config import CONFIG_DIR
from videogen.utils.build import build_datamodule, build_task

PROFILE_DIR = Path(__file__).parent / "profiles"
# model preset -> extra overrides (the two VPTR predictors need a stage-1 checkpoint)
TASKS = {
    "vivit_tiny": [],
    "vit": ["model.net.embed_dim=96", "model.net.depth=4", "model.net.num_heads=4"],
    "vptr_ae_tiny": ["data.channels=1", "data.mean=[0.5]", "data.std=[0.5]"],
    "vptr_far_tiny": ["data.channels=1", "data.mean=[0.5]", "data.std=[0.5]"],
    "vptr_nar_tiny": ["data.channels=1", "data.mean=[0.5]", "data.std=[0.5]"],
    "vid2vid_tiny": [],
}
ROWS = 20


class ProfileSecondStep(pl.Callback):
    """Profile the second training batch from its start to its end (the first pays one-off
    costs)."""

    def __init__(self, device: torch.device) -> None:
        activities = [ProfilerActivity.CPU]
        if device.type == "cuda":
            activities.append(ProfilerActivity.CUDA)
        self.profiler = profile(activities=activities, record_shapes=False)

    def on_train_batch_start(self, trainer: pl.Trainer, task: Any, batch: Any, index: int) -> None:
        if index == 1:
            self.profiler.start()

    def on_train_batch_end(
        self, trainer: pl.Trainer, task: Any, outputs: Any, batch: Any, index: int
    ) -> None:
        if index == 1:
            self.profiler.stop()

    def table(self, device: torch.device) -> str:
        sort = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
        return self.profiler.key_averages().table(sort_by=sort, row_limit=ROWS)


def compose_task(model: str, device: torch.device, overrides: list[str]) -> Any:
    accelerator = "gpu" if device.type == "cuda" else "cpu"
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(
            config_name="train",
            overrides=[
                f"model={model}",
                f"trainer={accelerator}",
                "data.train_size=64",
                "data.batch_size=4",
                *TASKS[model],
                *overrides,
            ],
        )


def fit_batches(cfg: Any, batches: int, callbacks: list[pl.Callback], root: Path) -> pl.Trainer:
    pl.seed_everything(0)
    trainer = pl.Trainer(
        accelerator=cfg.trainer.accelerator,
        devices=1,
        precision=cfg.trainer.precision,
        max_epochs=1,
        limit_train_batches=batches,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=callbacks,
        default_root_dir=str(root),
    )
    trainer.fit(build_task(cfg), datamodule=build_datamodule(cfg))
    return trainer


def profile_task(model: str, device: torch.device, work: Path) -> Path:
    """Profile one training step of `model`; returns the path of its operator table."""
    overrides = []
    if model in ("vptr_far_tiny", "vptr_nar_tiny"):
        autoencoder = work / "autoencoder.ckpt"
        if not autoencoder.exists():  # an untrained stage 1 serves: only speed is measured
            trainer = fit_batches(compose_task("vptr_ae_tiny", device, []), 1, [], work)
            trainer.save_checkpoint(autoencoder)
        overrides.append(f"model.autoencoder_ckpt={autoencoder}")
    cfg = compose_task(model, device, overrides)
    probe = ProfileSecondStep(device)
    fit_batches(cfg, 2, [probe], work)
    PROFILE_DIR.mkdir(exist_ok=True)
    path = PROFILE_DIR / f"{model}.txt"
    path.write_text(f"# one training step of model={model}, {device.type}\n{probe.table(device)}\n")
    return path


def top_ops(path: Path, count: int = 3) -> list[tuple[str, str]]:
    """(operator, share of total self time) of the first rows of a saved table."""
    lines = [line for line in path.read_text().splitlines() if line and line[0] not in "#-"]
    header, rows = lines[0], lines[1:]
    share_column = header.index("Self CPU %")
    ops = []
    for row in rows[:count]:
        name = row[: header.index("Self CPU ")].strip()
        share = row[share_column:].split()[0]
        ops.append((name, share))
    return ops


def table(device: str = "cpu") -> Table:
    dev = torch.device(device)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for model in TASKS:
            path = profile_task(model, dev, Path(tmp))
            ops = ", ".join(f"`{name}` ({share})" for name, share in top_ops(path))
            rows.append([model, f"[{path.name}](profiles/{path.name})", ops])
            print(f"  profiled {model}", flush=True)
    return Table(
        "Profiles: one training step per task",
        ["model", "operator table", "top operators by self time (share)"],
        rows,
        "The second training step of each laptop preset (batch 4, synthetic data) under "
        "torch.profiler; full tables beside this file.",
    )


if __name__ == "__main__":
    print(table().markdown())

"""Callbacks that multi-process tests add to a CLI run (`+callbacks.<name>._target_=...`): what
each rank ends with, and a fault on one rank only."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch

# Per-step values that are settings or counters, not losses.
NOT_LOSSES = ("train/sequence_length", "train/skipped_steps")


class RankStateDump(pl.Callback):
    """Writes `<dirpath>/rank<N>.pt` at the end of fit on every rank: the task's state dict, the
    losses each training step logged on that rank, the task's skipped-update count and whether
    DDP searched for unused parameters. Rank zero also writes `init.pt`, the weights before the
    first step and the names of the trainable parameters."""

    def __init__(self, dirpath: str) -> None:
        self.dirpath = Path(dirpath)
        self.losses: list[dict[str, float]] = []

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.global_rank == 0:
            self.dirpath.mkdir(parents=True, exist_ok=True)
            trainable = [name for name, p in pl_module.named_parameters() if p.requires_grad]
            state = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}
            torch.save({"state": state, "trainable": trainable}, self.dirpath / "init.pt")

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any
    ) -> None:
        self.losses.append(
            {
                name: float(value)
                for name, value in trainer.callback_metrics.items()
                if name.startswith("train/") and name not in NOT_LOSSES and value.numel() == 1
            }
        )

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.dirpath.mkdir(parents=True, exist_ok=True)
        wrapped = trainer.strategy.model  # DistributedDataParallel under DDP
        torch.save(
            {
                "state": {k: v.detach().clone() for k, v in pl_module.state_dict().items()},
                "losses": self.losses,
                "skipped_steps": getattr(pl_module, "skipped_steps", None),
                "find_unused_parameters": getattr(wrapped, "find_unused_parameters", None),
                "world_size": trainer.world_size,
            },
            self.dirpath / f"rank{trainer.global_rank}.pt",
        )


class NonFiniteLossOnce(pl.Callback):
    """On rank `rank` only, makes the first call of the task's method `method` (one that
    returns a dict of losses) add a NaN loss: a non-finite loss on one rank of the run."""

    def __init__(self, rank: int, method: str) -> None:
        self.rank = rank
        self.method = method

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.global_rank != self.rank:
            return
        original = getattr(pl_module, self.method)

        def poisoned(*args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
            losses = original(*args, **kwargs)
            losses["poison"] = torch.tensor(float("nan"), device=pl_module.device)
            setattr(pl_module, self.method, original)  # once
            return losses

        setattr(pl_module, self.method, poisoned)

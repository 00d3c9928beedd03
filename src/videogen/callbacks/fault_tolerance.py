"""Checkpoints that let a run survive being stopped: on SIGTERM or a requeue signal.

Requeueing has one owner, the launcher (submitit under `hydra/launcher=submitit_slurm`): SLURM
warns a job with a signal before its time limit or a pre-emption, submitit's handler requeues it
and exits. Left alone, that handler would stop the run wherever it stands and lose everything since
the last checkpoint. This callback defers the signal to the next step boundary, writes
`checkpoints/preempted.ckpt`, then hands the signal to the handler that was installed before it
(submitit's), or, if there was none, to the default action. The requeued job resumes from the
newest checkpoint of its output folder (`resume=auto`).

SIGTERM is Lightning's own: it stops training after the current step; this callback writes the
same checkpoint first.
"""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path
from types import FrameType
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback

log = logging.getLogger(__name__)

PREEMPTED_NAME = "preempted.ckpt"


class PreemptionCheckpoint(Callback):
    """Write `dirpath/preempted.ckpt` at the first step boundary after SIGTERM or a requeue signal.

    `requeue_signals` are signal names (SIGUSR2 is submitit's and `--signal=USR2@...`'s). All ranks
    agree on stopping, so a signal seen by one process checkpoints every process at the same step.
    """

    def __init__(self, dirpath: str, requeue_signals: tuple[str, ...] | list[str] = ("SIGUSR2",)):
        self.dirpath = Path(dirpath)
        self.requeue_signals = [getattr(signal, name) for name in requeue_signals]
        self.previous: dict[int, Any] = {}
        self.pending: tuple[int, FrameType | None] | None = None

    def defer(self, signum: int, frame: FrameType | None) -> None:
        """The signal handler: remember the signal; the step in progress finishes first."""
        log.info("Received %s: checkpointing at the end of this step.", signal.Signals(signum).name)
        self.pending = (signum, frame)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        for signum in self.requeue_signals:
            self.previous[signum] = signal.getsignal(signum)
            signal.signal(signum, self.defer)

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any
    ) -> None:
        asked = self.pending is not None or trainer.received_sigterm
        if not trainer.strategy.reduce_boolean_decision(asked, all=False):
            return
        path = self.dirpath / PREEMPTED_NAME
        trainer.save_checkpoint(path)
        log.info("Wrote %s at step %d; resume with resume=auto.", path, trainer.global_step)
        if self.pending is not None:
            self.hand_over(*self.pending)

    def hand_over(self, signum: int, frame: FrameType | None) -> None:
        """Give the deferred signal to the handler that was there before (e.g. submitit's)."""
        self.pending = None
        previous = self.previous.get(signum, signal.SIG_DFL)
        self.restore_handlers()
        if callable(previous):
            previous(signum, frame)
        elif previous != signal.SIG_IGN:
            os.kill(os.getpid(), signum)  # the default action: end the process

    def restore_handlers(self) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)
        self.previous = {}

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.restore_handlers()

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        self.restore_handlers()

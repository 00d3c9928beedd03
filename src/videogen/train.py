"""`python -m videogen`: build everything from the Hydra config, fit, then test the best checkpoint."""

from __future__ import annotations

import logging
import signal
import sys
from typing import Any

import hydra
import pytorch_lightning as pl
from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.utilities.exceptions import SIGTERMException
from pytorch_lightning.utilities.rank_zero import rank_zero_only

from videogen.config import CONFIG_DIR, refuse_renamed_groups
from videogen.models.checkpoint_io import plain_data_loading
from videogen.utils.build import (
    build_callbacks,
    build_datamodule,
    build_loggers,
    build_task,
    build_trainer,
    choice,
    run_config_for_checkpoint,
    task_class,
)
from videogen.utils.cli import print_metrics, report_user_errors, save_metrics
from videogen.utils.resume import check_start_checkpoint, resolve_ckpt_path

log = logging.getLogger(__name__)


def best_checkpoint(trainer: pl.Trainer) -> str | None:
    """Path of the best checkpoint written during fit, if any (fast_dev_run writes none)."""
    callback = trainer.checkpoint_callback
    if isinstance(callback, ModelCheckpoint) and callback.best_model_path:
        return callback.best_model_path
    return None


def describe_batch(cfg: DictConfig, trainer: pl.Trainer) -> str:
    """How the global batch is made: data.batch_size is per device (per process)."""
    per_device = int(cfg.data.batch_size)
    accumulate = int(trainer.accumulate_grad_batches)
    devices = trainer.num_devices
    return (
        f"Global batch {per_device * trainer.world_size * accumulate}: data.batch_size "
        f"{per_device} per device x {devices} device(s) x {trainer.num_nodes} node(s)"
        f" x {accumulate} accumulated"
    )


def train(cfg: DictConfig) -> dict[str, float]:
    """Fit the configured task on the configured data, test it, and return the final metrics."""
    pl.seed_everything(cfg.seed, workers=True)
    # The pair is checked on the classes (batch keys are class attributes), before the data is
    # even looked for: a model that cannot use this dataset is the first thing to hear about.
    datamodule_cls = get_class(cfg.data._target_)
    task_cls = task_class(cfg)
    task_cls.check_data(
        datamodule_cls,
        data_name=choice("data", datamodule_cls.__name__),
        model_name=choice("model", task_cls.__name__),
    )
    # The checkpoint to continue from is checked (plain data, this task, this model and data,
    # not a finished run) before anything is built.
    run_choices = {group: choice(group, "") for group in ("model", "data")}
    ckpt_path = resolve_ckpt_path(
        cfg.get("ckpt_path"), cfg.get("resume", "auto"), cfg.paths.output_dir
    )
    if ckpt_path is not None:
        found = cfg.get("ckpt_path") in (None, "last")
        check_start_checkpoint(ckpt_path, cfg, task_cls, run_choices, found=found)
    datamodule = build_datamodule(cfg)
    task = build_task(cfg)
    task.run_config = run_config_for_checkpoint(cfg)
    task.run_choices = run_choices

    if cfg.trainer.get("compile"):
        # In place: the task and its state-dict keys stay as they are, only forward is compiled.
        task.net.compile()

    loggers = build_loggers(cfg.get("logger"))
    trainer = build_trainer(cfg, build_callbacks(cfg.get("callbacks")), loggers, task=task)
    for logger in loggers:
        logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))

    rank_zero_only(log.info)("Output folder: %s", cfg.paths.output_dir)
    rank_zero_only(log.info)(describe_batch(cfg, trainer))
    try:
        with plain_data_loading():
            trainer.fit(task, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    except SIGTERMException:
        # Stopped by the scheduler; PreemptionCheckpoint has written checkpoints/preempted.ckpt.
        rank_zero_only(log.warning)(
            "Stopped by SIGTERM at step %d; `resume=auto` continues from the checkpoint.",
            trainer.global_step,
        )
        sys.exit(128 + signal.SIGTERM)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}

    if cfg.get("test_after_fit", True):
        best = best_checkpoint(trainer)
        log.info("Testing %s", best or "the final weights (no checkpoint was written)")
        with plain_data_loading():
            results = trainer.test(
                task, datamodule=datamodule, ckpt_path=best, verbose=False, weights_only=True
            )
        metrics.update(results[0] if results else {})

    if trainer.is_global_zero:
        print_metrics(
            metrics, title=f"videogen {choice('model', '')} on {choice('data', '')}".strip()
        )
        save_metrics(metrics, cfg.paths.output_dir)
    return metrics


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def run(cfg: DictConfig) -> Any:
    """Hydra entry point; returns `optimized_metric` so that sweepers can optimise it."""
    with report_user_errors():
        metrics = train(cfg)
    name = cfg.get("optimized_metric")
    if name is not None and name not in metrics:
        log.warning(
            "optimized_metric=%s is not among this run's metrics (%s); a sweeper gets None.",
            name,
            ", ".join(sorted(metrics)) or "none",
        )
    return metrics.get(name)


def main() -> None:
    """Console entry point of `python -m videogen`: a renamed config group on the command line
    is refused, naming the new one, before Hydra composes anything."""
    with report_user_errors():
        refuse_renamed_groups(sys.argv[1:])
    run()


if __name__ == "__main__":
    main()

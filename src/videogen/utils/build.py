"""Building the run's parts (datamodule, task, callbacks, loggers, trainer) from a composed config."""

from __future__ import annotations

import logging
import uuid
import warnings
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from hydra.core.hydra_config import HydraConfig
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.accelerators import (
    Accelerator,
    CPUAccelerator,
    CUDAAccelerator,
    MPSAccelerator,
)
from pytorch_lightning.loggers import WandbLogger
from pytorch_lightning.plugins.environments import SLURMEnvironment
from pytorch_lightning.strategies import DDPStrategy
from pytorch_lightning.utilities.rank_zero import rank_zero_only

from videogen.callbacks.data_health import SkippedVideoReport
from videogen.data.base import VideoDataModule
from videogen.errors import ConfigError
from videogen.tasks.base import VideoTask

log = logging.getLogger(__name__)


def container(cfg: Any) -> Any:
    """A resolved plain dict/list from an OmegaConf node (None stays None)."""
    return OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg


def choice(group: str, default: str) -> str:
    """The config-group option picked for this run (e.g. model -> "vit"), when Hydra is running."""
    if HydraConfig.initialized():
        picked = HydraConfig.get().runtime.choices.get(group)
        if picked:
            return str(picked)
    return default


def build_datamodule(cfg: DictConfig) -> VideoDataModule:
    datamodule = instantiate(cfg.data)
    if not isinstance(datamodule, VideoDataModule):
        raise ConfigError(
            f"data._target_ must be a videogen VideoDataModule, got {type(datamodule).__name__}."
        )
    return datamodule


def task_class(cfg: DictConfig) -> type[VideoTask]:
    """The task class named by `model._target_`."""
    task_cls = get_class(cfg.model._target_)
    if not issubclass(task_cls, VideoTask):
        raise ConfigError(f"model._target_ must be a videogen task, got {task_cls.__name__}.")
    return task_cls


def build_task(cfg: DictConfig) -> VideoTask:
    """The task of `cfg.model`, given plain resolved dicts so that they pickle into hparams."""
    model_cfg = container(cfg.model)
    model_cfg.pop("_recursive_", None)
    model_cfg.pop("_target_")
    return task_class(cfg)(
        **model_cfg,
        optimizer=container(cfg.get("optimizer")),
        lr_scheduler=container(cfg.get("lr_scheduler")),
    )


def build_callbacks(cfg: DictConfig | None) -> list[pl.Callback]:
    return [instantiate(c) for c in (cfg or {}).values() if c is not None and "_target_" in c]


WANDB_ID_FILE = "wandb_run_id.txt"


def wandb_run_id(save_dir: str | Path) -> str:
    """The wandb run id of the run writing to `save_dir`: made once, read back on resume.

    A resumed or requeued run writes to the same folder, so its wandb run continues under the
    same id instead of starting a new one. Only rank zero creates the file.
    """
    path = Path(save_dir) / WANDB_ID_FILE
    if path.exists():
        return path.read_text().strip()
    run_id = uuid.uuid4().hex[:12]
    if rank_zero_only.rank == 0:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(run_id + "\n")
    return run_id


def build_loggers(cfg: DictConfig | None) -> list[Any]:
    loggers = []
    for node in (cfg or {}).values():
        if node is None or "_target_" not in node:
            continue
        options = {}
        if get_class(node._target_) is WandbLogger and not node.get("id"):
            options = {"id": wandb_run_id(node.save_dir), "resume": "allow"}
        loggers.append(instantiate(node, **options))
    return loggers


def class_set(paths: list[str]) -> set[type]:
    """Classes from their import paths; a path that does not import is one clear error."""
    classes = set()
    for path in paths:
        try:
            classes.add(get_class(path))
        except Exception as err:
            raise ConfigError(
                f"trainer.strategy lists {path!r}, which is not an importable class."
            ) from err
    return classes


def strategy_from(node: Any) -> Any:
    """`trainer.strategy`: a name, or a strategy config whose FSDP policies are class paths."""
    if not isinstance(node, DictConfig):
        return node
    options = {}
    for key in ("auto_wrap_policy", "activation_checkpointing_policy"):
        if node.get(key):
            options[key] = class_set(list(node[key]))
    return instantiate(node, **options)


def runs_on_cpu(accelerator: Any) -> bool:
    """Whether `trainer.accelerator` resolves to the CPU (`auto`: when no CUDA or MPS device is
    present, as Lightning picks it)."""
    if isinstance(accelerator, Accelerator):
        return isinstance(accelerator, CPUAccelerator)
    name = str(accelerator).lower()
    if name == "auto":
        return not (CUDAAccelerator.is_available() or MPSAccelerator.is_available())
    return name == "cpu"


def search_unused_parameters(trainer: pl.Trainer, task: VideoTask | None) -> None:
    """Give a DDP strategy the task's `find_unused_parameters` unless the config chose it.

    `trainer.strategy.find_unused_parameters: null` (the ddp configs), a strategy named by a
    string (`ddp`) or chosen by `auto` leave the choice to the task; `true` is honoured; `false`
    for a task that needs the search is one sentence here rather than DDP's error mid-step.
    """
    strategy = trainer.strategy
    if not isinstance(strategy, DDPStrategy):
        return
    needed = task is not None and task.find_unused_parameters
    # DDPStrategy keeps DistributedDataParallel's keyword arguments here until fit wraps the
    # model, so the task's choice can still be made once the trainer exists (for every way of
    # naming the strategy, `auto` included).
    ddp_options = strategy._ddp_kwargs
    chosen = ddp_options.get("find_unused_parameters")
    if chosen is None:
        ddp_options["find_unused_parameters"] = needed
    elif not chosen and needed:
        raise ConfigError(
            f"{type(task).__name__} updates its generator and discriminators in separate backward "
            "passes, each leaving the others' parameters unused, so DDP must look for unused "
            "parameters: set trainer.strategy.find_unused_parameters to null (the task decides) "
            "or true."
        )


def build_trainer(
    cfg: DictConfig,
    callbacks: list[pl.Callback],
    loggers: list[Any],
    task: VideoTask | None = None,
) -> pl.Trainer:
    """The Lightning Trainer of `cfg.trainer` (videogen's own keys, like `compile`, removed).

    With `task` (the one to fit), a DDP strategy searches for unused parameters as the task
    needs; sync batchnorm, which DDP supports on accelerators only, is turned off on the CPU.
    """
    # The synthetic data is rendered in the main process on purpose; Lightning's advice to add
    # workers is noise there, and real datasets set data.num_workers themselves.
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    # The adversarial tasks optimise manually; Lightning then warns at every run that a periodic
    # checkpoint holds the weights after the step's updates, which is what a resume needs.
    warnings.filterwarnings("ignore", message=".*ModelCheckpoint with manual optimization.*")
    options = container(cfg.trainer)
    options.pop("compile", None)
    options.pop("strategy", None)
    if options.get("sync_batchnorm") and runs_on_cpu(options.get("accelerator", "auto")):
        rank_zero_only(log.info)(
            "trainer.sync_batchnorm is off: DDP synchronises BatchNorm statistics on GPUs only, "
            "so on the CPU each process normalises with its own batch's statistics."
        )
        options["sync_batchnorm"] = False
    plugins = []
    if SLURMEnvironment.detect():
        # The launcher (submitit) owns requeueing; Lightning's own SLURM requeue would be a
        # second owner racing it for the same signal.
        plugins.append(SLURMEnvironment(auto_requeue=False))
    trainer = instantiate(
        options,
        strategy=strategy_from(cfg.trainer.get("strategy", "auto")),
        callbacks=[*callbacks, SkippedVideoReport()],
        logger=loggers or False,
        plugins=plugins or None,
    )
    search_unused_parameters(trainer, task)
    return trainer


def run_config_for_checkpoint(cfg: DictConfig) -> dict[str, Any]:
    """The run's config as saved in checkpoints: interpolations kept, the output folder resolved.

    Keeping interpolations lets `evaluate` point `paths` (and with it the loggers) at its own
    output folder while the data and model settings stay those of the training run.
    """
    saved = OmegaConf.to_container(cfg, resolve=False)
    saved["paths"] = OmegaConf.to_container(cfg.paths, resolve=True)
    return saved

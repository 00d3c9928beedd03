"""Building the run's parts (datamodule, task, callbacks, loggers, trainer) from a composed config."""

from __future__ import annotations

import logging
import warnings
from typing import Any

import pytorch_lightning as pl
from hydra.core.hydra_config import HydraConfig
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf

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
        scheduler=container(cfg.get("scheduler")),
    )


def build_callbacks(cfg: DictConfig | None) -> list[pl.Callback]:
    return [instantiate(c) for c in (cfg or {}).values() if c is not None and "_target_" in c]


def build_loggers(cfg: DictConfig | None) -> list[Any]:
    return [instantiate(c) for c in (cfg or {}).values() if c is not None and "_target_" in c]


def build_trainer(cfg: DictConfig, callbacks: list[pl.Callback], loggers: list[Any]) -> pl.Trainer:
    # The synthetic data is rendered in the main process on purpose; Lightning's advice to add
    # workers is noise there, and real datasets set data.num_workers themselves.
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    return instantiate(
        cfg.trainer, callbacks=[*callbacks, SkippedVideoReport()], logger=loggers or False
    )


def run_config_for_checkpoint(cfg: DictConfig) -> dict[str, Any]:
    """The run's config as saved in checkpoints: interpolations kept, the output folder resolved.

    Keeping interpolations lets `evaluate` point `paths` (and with it the loggers) at its own
    output folder while the data and model settings stay those of the training run.
    """
    saved = OmegaConf.to_container(cfg, resolve=False)
    saved["paths"] = OmegaConf.to_container(cfg.paths, resolve=True)
    return saved

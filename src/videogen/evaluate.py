"""`python -m videogen.evaluate ckpt_path=PATH`: test any saved checkpoint with its own run config.

The checkpoint carries the training run's config. It is registered as the Hydra config
`checkpoint_run` before Hydra starts, so the usual override syntax works on it
(`data.batch_size=4`, `trainer.accelerator=cpu`, `data.root=/elsewhere`) and typos are caught.
Of the `model.*` keys, only the task's `runtime_options` (evaluation-time settings such as
`model.view_aggregation`) may change; any other would describe a network that was not trained,
so it is refused.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import hydra
from hydra.core.config_store import ConfigStore
from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import RichProgressBar

from videogen.config import CONFIG_DIR, dotted_leaves
from videogen.data.base import VideoDataModule
from videogen.errors import CheckpointError, ConfigError
from videogen.tasks.base import CHECKPOINT_KEY, VideoTask, checkpoint_task, read_checkpoint
from videogen.utils.build import build_datamodule, build_loggers, build_trainer, choice
from videogen.utils.cli import print_metrics, report_user_errors, save_metrics
from videogen.utils.stored_targets import check_stored_targets, overridden_keys, resolves_within

log = logging.getLogger(__name__)


def ckpt_path_from_argv(argv: list[str]) -> str | None:
    """The value of a `ckpt_path=...` command-line override, if one was given."""
    for arg in argv:
        key, sep, value = arg.lstrip("+").partition("=")
        if sep and key == "ckpt_path":
            return value.strip("'\"")
    return None


def stored_run_config(path: str) -> dict[str, Any]:
    """The training run's config saved in the checkpoint at `path`."""
    checkpoint = read_checkpoint(path)
    task = checkpoint_task(checkpoint, path)
    config = checkpoint[CHECKPOINT_KEY].get("config")
    if not config:
        raise CheckpointError(
            f"{path} (task {task.rsplit('.', 1)[-1]}) holds no run config: it was not written by "
            "`python -m videogen`, so load it with Task.load_from_checkpoint and give the data yourself."
        )
    return config


def load_task(path: str) -> tuple[VideoTask, dict[str, Any]]:
    """The task stored in the checkpoint at `path`, of whichever class wrote it, and the run
    config stored with it (empty if none)."""
    checkpoint = read_checkpoint(path)
    recorded = checkpoint_task(checkpoint, path)
    # Importing the recorded name is the first thing the file steers: only videogen's tasks.
    if not resolves_within(recorded, ("videogen.tasks.",), ()):
        raise CheckpointError(f"{path} names the task {recorded!r}, which is not a videogen task.")
    task_cls = get_class(recorded)
    if not issubclass(task_cls, VideoTask):
        raise CheckpointError(f"{path} names {task_cls.__name__}, which is not a videogen task.")
    return task_cls.load_from_checkpoint(path), checkpoint[CHECKPOINT_KEY].get("config") or {}


def changed_model_keys(cfg: DictConfig, stored: dict[str, Any]) -> list[str]:
    """The `model.*` keys set on the command line: those that differ from the run config stored
    in the checkpoint (compared unresolved, so `data.*` overrides that models interpolate do
    not count)."""
    composed = dotted_leaves(OmegaConf.to_container(cfg.get("model", {}), resolve=False), "model")
    saved = dotted_leaves(stored.get("model", {}), "model")
    return sorted(
        key
        for key in composed.keys() | saved.keys()
        if key not in composed or key not in saved or composed[key] != saved[key]
    )


def option_of(key: str) -> str:
    """The `model.*` option a changed key belongs to: `model.fvd.frames` -> `fvd`."""
    return key.removeprefix("model.").split(".", 1)[0]


def apply_model_overrides(task: VideoTask, cfg: DictConfig, stored: dict[str, Any]) -> None:
    """Set the task's evaluation-time options given on the command line (model.<option>=...,
    or a key inside a dict option: model.<option>.<key>=...); refuse, naming the keys that may
    change, any other `model.*` override."""
    changed = changed_model_keys(cfg, stored)
    options = {f"model.{name}" for name in task.runtime_options}
    refused = [key for key in changed if f"model.{option_of(key)}" not in options]
    if refused:
        allowed = ", ".join(sorted(options)) if options else "none"
        raise ConfigError(
            f"{', '.join(refused)} cannot change on a trained {type(task).__name__}: the "
            f"checkpoint's network and training settings are fixed, and the model keys that "
            f"may change at evaluation are: {allowed}; drop the override or train a new model."
        )
    for key in changed:
        log.info("%s=%s (from the command line)", key, OmegaConf.select(cfg, key))
    # A dict option (model.fvd) is set whole: the stored keys with the command line's changes.
    for name in dict.fromkeys(option_of(key) for key in changed):
        value = cfg.model.get(name)
        setattr(task, name, OmegaConf.to_container(value) if OmegaConf.is_config(value) else value)


def load_task_and_data(
    cfg: DictConfig, loaded: tuple[VideoTask, dict[str, Any]] | None = None
) -> tuple[VideoTask, VideoDataModule]:
    """The checkpoint's task (`loaded`: task and stored config, if already read) and the run's
    datamodule, checked to fit each other."""
    task, stored = loaded or load_task(cfg.ckpt_path)
    # Evaluation-time options of a trained task (e.g. model.sample_style) follow the command
    # line; other model.* overrides are refused.
    apply_model_overrides(task, cfg, stored)
    datamodule = build_datamodule(cfg)
    task.check_data(
        datamodule,
        data_name=choice("data", type(datamodule).__name__),
        model_name=type(task).__name__,
    )
    return task, datamodule


def evaluate(cfg: DictConfig) -> dict[str, float]:
    """Restore the task from `cfg.ckpt_path`, build the run's data, and run the test loop."""
    task, datamodule = load_task_and_data(cfg)

    trainer = build_trainer(cfg, [RichProgressBar()], build_loggers(cfg.get("logger")))
    results = trainer.test(task, datamodule=datamodule, verbose=False)
    metrics = {k: float(v) for k, v in (results[0] if results else {}).items()}
    if trainer.is_global_zero:
        print_metrics(metrics, title="evaluate")
        log.info("Evaluated %s", cfg.ckpt_path)
        save_metrics(metrics, cfg.paths.output_dir)
    return metrics


def register_checkpoint_config(argv: list[str], command: str = "videogen.evaluate") -> None:
    """Register the run config of the checkpoint named on the command line as `checkpoint_run`."""
    path = ckpt_path_from_argv(argv)
    asks_hydra_only = any(
        arg.startswith(("-h", "--help", "--hydra-help", "--info")) for arg in argv
    )
    if not path and not asks_hydra_only:
        raise ConfigError(
            f"no checkpoint given: run `python -m {command} ckpt_path=PATH/TO/best.ckpt`."
        )
    node = stored_run_config(path) if path else {}
    for key in ("hydra", "ckpt_path", "task_name"):
        node.pop(key, None)
    # Before Hydra sees the config; what the command line replaces is the user's own choice.
    check_stored_targets(node, f"the run config stored in {path}", overridden_keys(argv))
    ConfigStore.instance().store(name="checkpoint_run", node=node)


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="eval")
def run(cfg: DictConfig) -> Any:
    with report_user_errors():
        return evaluate(cfg)


def main() -> None:
    """Console entry point of `python -m videogen.evaluate`."""
    with report_user_errors():
        register_checkpoint_config(sys.argv[1:])
    run()


if __name__ == "__main__":
    main()

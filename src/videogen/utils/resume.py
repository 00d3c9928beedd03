"""Which checkpoint a run starts from: `ckpt_path=PATH`, `ckpt_path=last`, or `resume=auto`."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from videogen.config import dotted_leaves
from videogen.errors import CheckpointError, ConfigError
from videogen.models.checkpoint_io import is_sharded, load_plain, read_sharded_checkpoint
from videogen.tasks.base import CHECKPOINT_KEY, checkpoint_task, read_checkpoint, task_id
from videogen.tasks.legacy import upgrade_config

log = logging.getLogger(__name__)

RESUME_MODES = ("auto", "never")


def checkpoint_step(path: Path) -> int | None:
    """The global step stored in a checkpoint (-1 for a sharded folder), None if unreadable.

    A checkpoint whose unpickling would run code is refused (CheckpointError), not skipped.
    """
    if path.is_dir():
        return -1
    try:
        checkpoint = load_plain(path, mmap=True)
        return int(checkpoint.get("global_step", -1))
    except CheckpointError:
        raise
    except Exception:  # a half-written file from a killed run is not a resume point
        return None


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The most advanced checkpoint in `run_dir/checkpoints` (highest step, then newest), if any.

    Candidates are `last.ckpt` (end of epoch), `latest-step.ckpt` (every N steps),
    `preempted.ckpt` (on a stop signal) and `best.ckpt`; files that cannot be read are skipped.
    """
    folder = Path(run_dir) / "checkpoints"
    ranked = [
        (step, path.stat().st_mtime, path)
        for path in (folder.glob("*.ckpt") if folder.is_dir() else [])
        if (step := checkpoint_step(path)) is not None
    ]
    return max(ranked, key=lambda entry: entry[:2])[2] if ranked else None


def newest_other_run(run_dir: Path) -> Path | None:
    """The newest other run folder with checkpoints, in the default `outputs/<date>/<time>` layout."""
    root = run_dir.parent.parent
    runs = {path.parent.parent for path in root.glob("*/*/checkpoints/*.ckpt")} - {run_dir}
    return max(runs, key=lambda path: path.stat().st_mtime) if runs else None


def resolve_ckpt_path(ckpt_path: str | None, resume: str, run_dir: str | Path) -> str | None:
    """The checkpoint to resume from, or None to start fresh.

    `ckpt_path=last` must find a checkpoint in this run's folder (point `hydra.run.dir` at the
    run to continue); `resume=auto` uses one if there is one (a requeued or restarted job).
    """
    if resume not in RESUME_MODES:
        raise ConfigError(f"resume must be one of {RESUME_MODES}, got {resume!r}.")
    run_dir = Path(run_dir)
    if ckpt_path and ckpt_path != "last":
        return ckpt_path
    latest = latest_checkpoint(run_dir)
    if ckpt_path == "last" and latest is None:
        other = newest_other_run(run_dir)
        suggestion = f" (the newest run with one is {other})" if other else ""
        raise ConfigError(
            f"ckpt_path=last found no checkpoint in {run_dir}/checkpoints: to continue an earlier "
            f"run, add hydra.run.dir=<that run's folder>{suggestion}."
        )
    if latest is not None and (ckpt_path == "last" or resume == "auto"):
        log.info("Resuming from %s", latest)
        return str(latest)
    return None


# Keys of the model and data configs that may differ between a run and the checkpoint it starts
# from. They say where files are and how fast they are read, not what the network or the clips
# are: the data moved to another disk (root, index caches), another machine or allocation
# (loader workers, pinned memory, the per-device batch size when the device count changes), the
# tolerance for unreadable videos, memory-only switches that compute the same (gradient
# checkpointing, channels_last), and local files (`*_path`, `*_ckpt`): pretrained and stage-1
# weights that the checkpoint's own weights replace, and metric networks read at test time.
# Everything else in `model` and `data` changes the network or the clips. The other sections
# (trainer, optimizer, lr_scheduler, logger, callbacks, paths) may change freely: more epochs,
# other devices, a new learning rate for fine-tuning are what resuming is for.
RESUME_FREE_KEYS = frozenset(
    {
        "data.root",
        "data.index_cache",
        "data.index_cache_dir",
        "data.num_workers",
        "data.decoder",
        "data.pin_memory",
        "data.batch_size",
        "data.max_bad_fraction",
    }
)
RESUME_FREE_NAMES = frozenset({"grad_checkpointing", "channels_last"})
RESUME_FREE_SUFFIXES = ("_path", "_ckpt")
COMPARED_SECTIONS = ("data", "model")  # data first: model shapes follow from it


def free_on_resume(key: str) -> bool:
    name = key.rsplit(".", 1)[-1]
    return (
        key in RESUME_FREE_KEYS
        or name in RESUME_FREE_NAMES
        or (key.startswith("model.") and name.endswith(RESUME_FREE_SUFFIXES))
    )


def section(config: DictConfig, name: str) -> Any:
    """`config[name]` as plain data, interpolations resolved where they can be."""
    node = config.get(name)
    try:
        return OmegaConf.to_container(node, resolve=True) if node is not None else None
    except Exception:  # an interpolation of the stored config that cannot resolve here
        return OmegaConf.to_container(node, resolve=False)


def config_differences(stored: dict[str, Any], current: DictConfig) -> list[str]:
    """What differs between a stored run config and this run's in the network or data shape."""
    stored_config = OmegaConf.create(stored)
    differences = []
    for name in COMPARED_SECTIONS:
        before = dotted_leaves(section(stored_config, name), name)
        now = dotted_leaves(section(current, name), name)
        for key in sorted(before.keys() | now.keys()):
            if free_on_resume(key) or before.get(key) == now.get(key):
                continue
            differences.append(
                f"{key}={before.get(key, '<unset>')} there, {now.get(key, '<unset>')} here"
            )
    return differences


def described(choices: Any, task: str) -> str:
    """`model=vit, data=synthetic` from Hydra's choices, or the task's class name."""
    if isinstance(choices, dict) and choices.get("model"):
        return ", ".join(
            f"{group}={choices[group]}" for group in ("model", "data") if group in choices
        )
    return f"the task {task.rsplit('.', 1)[-1]}"


def epochs_done(checkpoint: dict[str, Any]) -> int | None:
    """Epochs a checkpoint's run had finished (Lightning's fit-loop progress), if recorded."""
    try:
        return int(checkpoint["loops"]["fit_loop"]["epoch_progress"]["current"]["processed"])
    except (KeyError, TypeError, ValueError):
        return None


def finished_because(checkpoint: dict[str, Any], trainer: Any) -> str | None:
    """Why the run of `checkpoint` has nothing left to train under `trainer`'s limits, if so.

    Lightning's own rule: `max_steps` reached, or `max_epochs` epochs done (with Lightning's
    defaults when unset: 1000 epochs, or no epoch limit once max_steps is given).
    """
    max_steps = trainer.get("max_steps", -1)
    max_epochs = trainer.get("max_epochs")
    if max_epochs is None:
        max_epochs = 1000 if max_steps in (None, -1) else -1
    step = int(checkpoint.get("global_step", 0))
    if max_steps not in (None, -1) and step >= max_steps:
        return f"step {step} of trainer.max_steps={max_steps}"
    done = epochs_done(checkpoint)
    if max_epochs != -1 and done is not None and done >= max_epochs:
        return f"epoch {done} of trainer.max_epochs={max_epochs}"
    return None


def read_start_checkpoint(path: Path) -> dict[str, Any]:
    """The entries of the checkpoint a run starts from (a sharded folder: its meta.pt), checked
    to be plain data throughout; a one-sentence CheckpointError if it is not a checkpoint."""
    if not is_sharded(path):
        return read_checkpoint(path)
    try:
        return read_sharded_checkpoint(path, weights=False)
    except CheckpointError:
        raise
    except Exception as err:
        raise CheckpointError(
            f"{path} is not a Lightning checkpoint (the sharded folder could not be read)."
        ) from err


def check_start_checkpoint(
    ckpt_path: str, cfg: DictConfig, task_cls: type, run_choices: dict[str, str], found: bool
) -> None:
    """Refuse, before any work, a checkpoint this run cannot continue from: missing, corrupt or
    not videogen's, of another task, of another model or data config, or of a run that has
    already finished. `found`: picked from this run's folder (resume=auto, ckpt_path=last),
    as opposed to given as ckpt_path=PATH."""
    path = Path(ckpt_path)
    checkpoint = read_start_checkpoint(path)
    recorded = checkpoint_task(checkpoint, path)
    meta = checkpoint[CHECKPOINT_KEY]
    stored = meta.get("config")
    # A run written before the shared modelling core named some keys differently.
    stored = upgrade_config(stored) if isinstance(stored, dict) else stored
    differences = [] if not isinstance(stored, dict) else config_differences(stored, cfg)
    if recorded != task_id(task_cls):  # every model key differs then: name the task instead
        differences = [
            f"task {recorded.rsplit('.', 1)[-1]} there, {task_cls.__name__} here",
            *(line for line in differences if line.startswith("data.")),
        ]
    where = str(path) if found else f"ckpt_path={path}"
    if differences:
        shown = "; ".join(differences[:3])
        if len(differences) > 3:
            shown += f"; and {len(differences) - 3} more"
        advice = (
            "use resume=never or another hydra.run.dir"
            if found
            else "give a checkpoint of this model and data, or leave ckpt_path unset"
        )
        raise CheckpointError(
            f"{where} was written by {described(meta.get('choices'), recorded)}, not this run's "
            f"{described(run_choices, task_id(task_cls))} ({shown}): {advice}."
        )
    if cfg.trainer.get("fast_dev_run"):
        return  # one debug batch: Lightning's epoch and step limits do not apply
    reason = finished_because(checkpoint, cfg.trainer)
    if reason is not None:
        again = "use resume=never to start afresh, " if found else ""
        raise CheckpointError(
            f"{where} is the end of a finished run ({reason}): raise trainer.max_epochs or "
            f"trainer.max_steps to train on, {again}or evaluate it with "
            f"`python -m videogen.evaluate ckpt_path={path}`."
        )

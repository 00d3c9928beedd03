"""Where the Hydra configs live and small helpers to validate config values."""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from videogen.errors import ConfigError

# `conf/` is shipped inside the package (src/videogen/conf links to the top-level conf/ in a
# checkout, and the wheel carries a copy), so the same path works for editable and wheel installs.
CONFIG_DIR = str(Path(__file__).resolve().parent / "conf")

# Arithmetic the data configs use to derive the prediction split from the clip length
# (`context_frames: ${half_of:${.num_frames}}`), so it follows `data.num_frames` overrides.
OmegaConf.register_new_resolver("half_of", lambda n: max(1, int(n) // 2), replace=True)
OmegaConf.register_new_resolver("minus", lambda a, b: int(a) - int(b), replace=True)


def default_precision(accelerator: Any) -> str:
    """`trainer.precision` unless set: bf16 autocast ("bf16-mixed") on a GPU, "32-true" otherwise.

    `gpu` / `cuda` always get bf16-mixed; `auto` gets it when CUDA is available and the GPU
    supports bf16 (Ampere or newer); `cpu` and anything else get 32-true.
    """
    accelerator = str(accelerator).lower()
    if accelerator in ("gpu", "cuda"):
        return "bf16-mixed"
    if accelerator == "auto":
        import torch  # here, so that reading configs alone does not import torch

        # Native bf16 only: older GPUs emulate it, slower than float32.
        if torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False):
            return "bf16-mixed"
    return "32-true"


# conf/trainer/default.yaml: `precision: ${default_precision:${.accelerator}}`.
OmegaConf.register_new_resolver("default_precision", default_precision, replace=True)


def process_rank() -> int:
    """This process's global rank, from the variables that SLURM, torchrun or Lightning set."""
    for name in ("RANK", "SLURM_PROCID", "LOCAL_RANK"):
        if os.environ.get(name, "").isdigit():
            return int(os.environ[name])
    return 0


# Only rank zero writes the run's log file and its .hydra config copy; other ranks of a
# multi-process run would otherwise write the same files (or one each) in the same folder.
OmegaConf.register_new_resolver(
    "rank_zero_path", lambda path: path if process_rank() == 0 else os.devnull, replace=True
)
OmegaConf.register_new_resolver(
    "rank_zero_value", lambda value: value if process_rank() == 0 else None, replace=True
)

# conf/hydra/launcher/submitit_{slurm,local}.yaml take the names of the submitit plugin's own
# configs on purpose (`hydra/launcher=submitit_slurm` picks ours); Hydra then validates them
# against the plugin's dataclasses of the same name and notes that this matching is deprecated.
# The files are complete without it, so the note says nothing a user could act on.
warnings.filterwarnings(
    "ignore",
    message=r"\s*'hydra/launcher/submitit_(slurm|local)' is validated against ConfigStore schema",
    category=UserWarning,
)


# Config groups that have a new name (old -> new). The task argument named after a group follows
# it: checkpoints that use an old name are mapped on load (tasks/legacy.py); a command line that
# uses one is refused, naming the new one.
RENAMED_GROUPS = {"scheduler": "lr_scheduler"}


def refuse_renamed_groups(overrides: Sequence[str]) -> None:
    """Raise a ConfigError, with the override to write instead, if a command-line override uses
    a renamed config group (`scheduler=constant`, `+scheduler=...`, `scheduler.warmup_epochs=1`,
    `~scheduler`); Hydra's own flags (`-m`, `--config-name ...`) are not overrides."""
    for override in overrides:
        if override.startswith("-"):
            continue
        body = override.lstrip("+~")
        prefix = override[: len(override) - len(body)]
        group = re.match(r"[^.=@/:,]*", body)[0]
        if group in RENAMED_GROUPS:
            new = RENAMED_GROUPS[group]
            raise ConfigError(
                f"the config group `{group}` is now `{new}`: write "
                f"{prefix}{new}{body[len(group) :]}."
            )


def dotted_leaves(node: Any, prefix: str) -> dict[str, Any]:
    """A plain nested config as {"prefix.key.subkey": leaf value}; lists are leaves, compared whole."""
    if not isinstance(node, dict) or not node:
        return {prefix: node}
    leaves: dict[str, Any] = {}
    for key, value in node.items():
        leaves.update(dotted_leaves(value, f"{prefix}.{key}"))
    return leaves


def require_positive_int(key: str, value: Any) -> int:
    """Return `value` as an int, or raise a ConfigError naming `key` if it is not a positive integer."""
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(
            f"{key} must be a positive integer, got {value!r}: set {key}=<n> with n >= 1."
        )
    return value


def require_non_negative_int(key: str, value: Any) -> int:
    """Return `value` as an int, or raise a ConfigError naming `key` if it is negative or not an int."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(
            f"{key} must be an integer >= 0, got {value!r}: set {key}=<n> with n >= 0."
        )
    return value


def require_range(key: str, low: int, high: int) -> None:
    """Raise a ConfigError if the inclusive range `low..high` is empty."""
    if low > high:
        raise ConfigError(
            f"{key}: the minimum ({low}) is larger than the maximum ({high}); swap or fix them."
        )

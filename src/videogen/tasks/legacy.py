"""Checkpoints written in earlier layouts: their names and optimiser states, mapped on load here.

What changed is mapped in this one module:
- state-dict keys of layers that now come from `models/layers` (the VPTR frame discriminator,
  vid2vid's residual blocks, the prediction task's frozen autoencoder);
- hyper-parameter names that now follow one convention across families (`in_channels`,
  `drop_rate`, `drop_path_rate`, `num_*`), and the learning-rate schedule, once the task
  argument and config group `scheduler`, now `lr_scheduler`;
- optimiser states from before parameter groups: one group per optimiser, where the tasks now
  build two (with and without weight decay, see tasks/param_groups.py).
`upgrade_state_dict`, `upgrade_config` and `split_optimizer_state` are idempotent: new names
and layouts pass through unchanged.
tests/data/state_dict_layout.json records the old layout; tests/test_state_dict_layout.py
checks that every recorded key still lands on a parameter of the same shape.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from videogen.config import RENAMED_GROUPS
from videogen.tasks.param_groups import DECAY_GROUP, NO_DECAY_GROUP

# Hyper-parameter renames, wherever they appear in a task's (nested) config.
RENAMED_KEYS = {
    "in_chans": "in_channels",
    "out_chans": "out_channels",
    "dropout": "drop_rate",
    "drop_path": "drop_path_rate",
    "n_scales_spatial": "num_spatial_scales",
    "n_frames_start": "num_frames_start",
    "n_frames_total": "num_frames_total",
}


# Renames of top-level keys only: a task's arguments named after the renamed config groups
# (`scheduler` -> `lr_scheduler`), and a run config's groups. Nested, an old name may mean
# something else (a diffusion noise schedule is not a learning-rate schedule).
RENAMED_TOP_LEVEL_KEYS = RENAMED_GROUPS


def upgrade_nested_keys(config: Any) -> Any:
    """`config` with every key of RENAMED_KEYS renamed, at any depth."""
    if isinstance(config, dict):
        return {
            RENAMED_KEYS.get(key, key): upgrade_nested_keys(value) for key, value in config.items()
        }
    if isinstance(config, list):
        return [upgrade_nested_keys(value) for value in config]
    return config


def upgrade_config(config: Any) -> Any:
    """`config` (hyper-parameters or a stored run config) with every old key renamed.

    A top-level old name is renamed only where its new name is absent: a config written since
    has the new name, and may use the old one for something else.
    """
    config = upgrade_nested_keys(config)
    if not isinstance(config, dict):
        return config
    return {
        (new if (new := RENAMED_TOP_LEVEL_KEYS.get(key)) and new not in config else key): value
        for key, value in config.items()
    }


def vptr_discriminator_keys(state: dict[str, Any]) -> dict[str, Any]:
    """VPTR's PatchGAN was one flat `layers` Sequential: [conv, act] + [conv, norm, act] * L +
    [conv]; the shared PatchGAN keeps one `blocks` entry per stage."""
    pattern = re.compile(r"^discriminator\.layers\.(\d+)\.(.+)$")
    indices = [int(m[1]) for key in state if (m := pattern.match(key))]
    if not indices:
        return state
    last = max(indices)

    def new_key(index: int, rest: str) -> str:
        if index == 0:
            return f"discriminator.blocks.0.0.{rest}"
        if index == last:
            return f"discriminator.blocks.{(last - 2) // 3 + 1}.{rest}"
        level, offset = (index - 2) // 3 + 1, (index - 2) % 3
        return f"discriminator.blocks.{level}.{offset}.{rest}"

    return {
        (new_key(int(m[1]), m[2]) if (m := pattern.match(key)) else key): value
        for key, value in state.items()
    }


# vid2vid's residual blocks nested their first conv-norm-relu: body.0.1 was the first conv and
# body.2 the second; the shared block is flat, with the convs at body.1 and body.5.
VID2VID_RESIDUAL = re.compile(
    r"^(.*\.(?:trunk|branches\.\w+)\.\d+\.body)\.(0\.1|2)\.(weight|bias)$"
)


def vid2vid_residual_keys(state: dict[str, Any]) -> dict[str, Any]:
    def new_key(key: str) -> str:
        match = VID2VID_RESIDUAL.match(key)
        if not match:
            return key
        return f"{match[1]}.{'1' if match[2] == '0.1' else '5'}.{match[3]}"

    return {new_key(key): value for key, value in state.items()}


def frozen_autoencoder_keys(state: dict[str, Any]) -> dict[str, Any]:
    """The prediction task's autoencoder is now held by the frozen-autoencoder piece (`.net`)."""
    return {
        (f"autoencoder.net.{key.removeprefix('autoencoder.')}")
        if key.startswith("autoencoder.") and not key.startswith("autoencoder.net.")
        else key: value
        for key, value in state.items()
    }


# Per task (its class name): the state-dict key mappings of its checkpoints.
STATE_DICT_UPGRADES: dict[str, tuple[Callable[[dict[str, Any]], dict[str, Any]], ...]] = {
    "AutoencoderTask": (vptr_discriminator_keys,),
    "PredictionTask": (frozen_autoencoder_keys,),
    "SynthesisTask": (vid2vid_residual_keys,),
}


def upgrade_state_dict(task_name: str, state: dict[str, Any]) -> dict[str, Any]:
    """A task state dict with the keys of an earlier layout mapped to today's."""
    for upgrade in STATE_DICT_UPGRADES.get(task_name, ()):
        state = upgrade(state)
    return state


# Entries of a learning-rate scheduler's state that hold one value per parameter group.
SCHEDULER_GROUP_KEYS = ("base_lrs", "_last_lr", "lr_lambdas", "min_lrs")


def split_optimizer_state(state: dict[str, Any], no_decay: list[bool]) -> dict[str, Any]:
    """An optimiser state written before parameter groups (one group) in the layout the tasks
    build now: a group with weight decay, then one without, each keeping the order in which its
    parameters were given to the old optimiser.

    `no_decay[i]`: whether the i-th parameter of the old group takes no weight decay. Per-parameter
    entries (`exp_avg`, `momentum_buffer`, ...) move to their parameter's new index; both groups
    keep the old group's hyper-parameters (learning rate, betas, `initial_lr`, ...), the second
    with `weight_decay` 0. A state of another layout (already two groups, parameters named rather
    than numbered, another parameter count) is returned as it is.
    """
    groups = state.get("param_groups") or []
    if len(groups) != 1:
        return state
    (group,) = groups
    ids = group.get("params", [])
    if len(ids) != len(no_decay) or not all(isinstance(i, int) for i in ids):
        return state
    decay_ids = [i for i, skip in zip(ids, no_decay, strict=True) if not skip]
    order = decay_ids + [i for i, skip in zip(ids, no_decay, strict=True) if skip]
    per_parameter = state.get("state", {})
    return {
        **state,
        "state": {new: per_parameter[old] for new, old in enumerate(order) if old in per_parameter},
        "param_groups": [
            {**group, "params": list(range(len(decay_ids))), "name": DECAY_GROUP},
            {
                **group,
                "params": list(range(len(decay_ids), len(order))),
                "weight_decay": 0.0,
                "name": NO_DECAY_GROUP,
            },
        ],
    }


def split_scheduler_state(state: dict[str, Any]) -> dict[str, Any]:
    """A learning-rate scheduler's state of one parameter group for the two groups of
    `split_optimizer_state`: each per-group entry (`base_lrs`, `_last_lr`, ...) given twice."""
    return {
        key: [value[0], value[0]]
        if key in SCHEDULER_GROUP_KEYS and isinstance(value, list) and len(value) == 1
        else value
        for key, value in state.items()
    }

"""Checkpoints written before the modelling core was shared: their names, mapped on load here.

Two kinds of names changed, and both are mapped in this one module:
- state-dict keys of layers that now come from `models/layers` (the VPTR frame discriminator,
  vid2vid's residual blocks, the prediction task's frozen autoencoder);
- hyper-parameter names that now follow one convention across families (`in_channels`,
  `drop_rate`, `drop_path_rate`, `num_*`, `lr_scheduler`).
`upgrade_state_dict` and `upgrade_config` are idempotent: new names pass through unchanged.
tests/data/state_dict_layout.json records the old layout; tests/test_state_dict_layout.py
checks that every recorded key still lands on a parameter of the same shape.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

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


def upgrade_config(config: Any) -> Any:
    """`config` (hyper-parameters or a stored run config) with every old key renamed."""
    if isinstance(config, dict):
        return {RENAMED_KEYS.get(key, key): upgrade_config(value) for key, value in config.items()}
    if isinstance(config, list):
        return [upgrade_config(value) for value in config]
    return config


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
VID2VID_RESIDUAL = re.compile(r"^(.*\.(?:trunk|branches\.\w+)\.\d+\.body)\.(0\.1|2)\.(weight|bias)$")


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

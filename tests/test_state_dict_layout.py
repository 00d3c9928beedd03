"""Every recorded task layout (tests/data/state_dict_layout.json) is still what the code builds:
the same state-dict keys with the same shapes, so checkpoints written with the recorded layout
keep loading. Keys that the code maps on load (videogen.tasks.legacy) are mapped the same way
first."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.state_dict_layout import LAYOUT_FILE, build_task, layout_of
from videogen.tasks.legacy import upgrade_state_dict

RECORDED: dict[str, Any] = json.loads(LAYOUT_FILE.read_text())
NAMES = sorted(name for name in RECORDED if not name.startswith("_"))
SHOWN = 8  # keys listed per kind of difference


def as_current_code_names_them(task_name: str, state: dict[str, Any]) -> dict[str, Any]:
    """`state` (keys of an old checkpoint) with its keys mapped as the code maps them on load."""
    return upgrade_state_dict(task_name, state)


def first(keys: list[str]) -> str:
    more = f" ... ({len(keys)} in all)" if len(keys) > SHOWN else ""
    return ", ".join(keys[:SHOWN]) + more


def test_the_record_covers_every_model_config() -> None:
    models = {"vit", "vit_b16", "vivit", "vivit_tiny", "vid2vid", "vid2vid_tiny"}
    models |= {f"vptr_{kind}{size}" for kind in ("ae", "far", "nar") for size in ("", "_tiny")}
    assert models <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_the_current_code_builds_the_recorded_layout(name: str) -> None:
    task = build_task(name)
    current = layout_of(task)
    recorded = as_current_code_names_them(type(task).__name__, RECORDED[name])
    missing = sorted(recorded.keys() - current.keys())
    unexpected = sorted(current.keys() - recorded.keys())
    reshaped = sorted(
        f"{key} {recorded[key]} -> {current[key]}"
        for key in recorded.keys() & current.keys()
        if list(recorded[key]) != list(current[key])
    )
    problems = [
        f"{len(keys)} {kind}: {first(keys)}"
        for kind, keys in (
            ("missing (recorded, no longer built)", missing),
            ("unexpected (built, not recorded)", unexpected),
            ("reshaped (recorded -> built)", reshaped),
        )
        if keys
    ]
    assert not problems, f"layout {name} changed:\n" + "\n".join(problems)

"""A dataset index cached as JSON, reused while its key (settings, file stamps) is unchanged.

Listing a large dataset (240k Kinetics rows, thousands of Cityscapes folders) at every start is
slow, so datamodules build their index once and keep it next to the data.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any, TypeVar

log = logging.getLogger(__name__)

Entry = TypeVar("Entry")


def cached_index(
    path: Path, key: Any, build: Callable[[], list[Entry]], entry_type: type[Entry]
) -> list[Entry]:
    """The entries cached at `path` if they were stored under `key`, else `build()` (and cache it).

    `key` must survive a JSON round trip unchanged (lists, not tuples). An empty index is not
    cached, and a read-only dataset folder just means building again next time.
    """
    try:
        cached = json.loads(path.read_text())
    except (OSError, ValueError):
        cached = None
    if isinstance(cached, dict) and cached.get("key") == key:
        return [entry_type(**entry) for entry in cached["entries"]]
    entries = build()
    if entries:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            partial = path.with_suffix(f".{os.getpid()}.tmp")  # readers never see half a file
            partial.write_text(json.dumps({"key": key, "entries": [asdict(e) for e in entries]}))
            partial.replace(path)
        except OSError as error:
            log.info("Not caching the dataset index at %s (%s)", path, error)
    return entries


def file_stamps(paths: list[Path]) -> list[list[Any]]:
    """[path, modification time] of each file: editing any of them changes the stamp."""
    return [[str(p), p.stat().st_mtime_ns] for p in paths]

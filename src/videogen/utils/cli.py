"""Turning user mistakes into one sentence on stderr, and printing metrics tables."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from rich.console import Console
from rich.table import Table

from videogen.errors import VideogenError

log = logging.getLogger(__name__)

EXIT_USER_ERROR = 2


def user_error_in(error: BaseException) -> VideogenError | None:
    """The VideogenError behind `error`, if any (Hydra's instantiate wraps the original one)."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, VideogenError):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


def in_multirun() -> bool:
    """Whether this is one job of a Hydra sweep (`-m`), as opposed to a single run."""
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


@contextmanager
def report_user_errors() -> Iterator[None]:
    """Print a user mistake as one sentence and exit with status 2; let real bugs raise.

    In a sweep the sentence is logged and the VideogenError raised instead: Hydra then marks this
    one job failed and goes on with the others (exiting would end the whole sweep).
    """
    try:
        yield
    except Exception as error:
        user_error = user_error_in(error)
        if user_error is None:
            raise
        if in_multirun():
            log.error("%s", user_error)
            if user_error is error:
                raise
            raise user_error from None
        print(f"error: {user_error}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)


def print_metrics(metrics: Mapping[str, float], title: str) -> None:
    """Print metrics as a two-column table, sorted by name."""
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name in sorted(metrics):
        table.add_row(name, f"{metrics[name]:.6g}")
    Console().print(table)


def save_metrics(metrics: Mapping[str, float], output_dir: str | Path) -> Path:
    """Write metrics to `output_dir/metrics.json` and return the path."""
    path = Path(output_dir) / "metrics.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(dict(sorted(metrics.items())), indent=2) + "\n")
    return path

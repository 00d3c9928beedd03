"""Turning user mistakes into one sentence on stderr, and printing metrics tables."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from rich.console import Console
from rich.table import Table

from videogen.errors import VideogenError

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


@contextmanager
def report_user_errors() -> Iterator[None]:
    """Print a user mistake as one sentence and exit with status 2; let real bugs raise."""
    try:
        yield
    except Exception as error:
        user_error = user_error_in(error)
        if user_error is None:
            raise
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

"""notebooks/quickstart.ipynb runs top to bottom and shows its figure."""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbclient import NotebookClient

from tests.conftest import REPO_ROOT, cli_env


def test_quickstart_notebook_executes(tmp_path: Path, monkeypatch) -> None:
    for key, value in cli_env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel shows figures inline
    notebook = nbformat.read(REPO_ROOT / "notebooks" / "quickstart.ipynb", as_version=4)
    NotebookClient(
        notebook,
        timeout=600,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    ).execute()
    outputs = [
        output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs
    ]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "test/acc" in text and "predictions" in text
    assert any("image/png" in o.get("data", {}) for o in outputs), "the frames figure is shown"
    assert (tmp_path / "outputs" / "quickstart" / "checkpoints" / "best.ckpt").is_file()


def test_generation_notebook_executes(tmp_path: Path, monkeypatch) -> None:
    for key, value in cli_env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("MPLBACKEND", raising=False)
    notebook = nbformat.read(REPO_ROOT / "notebooks" / "generation.ipynb", as_version=4)
    NotebookClient(
        notebook,
        timeout=600,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    ).execute()
    outputs = [
        output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs
    ]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "test/loss" in text
    assert "DDPM 100 (4, 8, 3, 32, 32)" in text and "DDIM 20 (4, 8, 3, 32, 32)" in text
    assert any("image/png" in o.get("data", {}) for o in outputs), "the clips figure is shown"

"""The notebooks run top to bottom and show their figures."""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbclient import NotebookClient

from tests.conftest import REPO_ROOT, cli_env


def executed_outputs(name: str, tmp_path: Path, monkeypatch) -> tuple[list, str]:
    """Run notebooks/<name> in tmp_path; its code cells' outputs and their printed text."""
    for key, value in cli_env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel shows figures inline
    notebook = nbformat.read(REPO_ROOT / "notebooks" / name, as_version=4)
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
    return outputs, text


def test_quickstart_notebook_executes(tmp_path: Path, monkeypatch) -> None:
    outputs, text = executed_outputs("quickstart.ipynb", tmp_path, monkeypatch)
    assert "test/acc" in text and "predictions" in text
    assert any("image/png" in o.get("data", {}) for o in outputs), "the frames figure is shown"
    assert (tmp_path / "outputs" / "quickstart" / "checkpoints" / "best.ckpt").is_file()


def test_generation_notebook_executes(tmp_path: Path, monkeypatch) -> None:
    outputs, text = executed_outputs("generation.ipynb", tmp_path, monkeypatch)
    assert "test/loss" in text
    assert "DDPM 50 (4, 8, 3, 32, 32)" in text and "DDIM 10 (4, 8, 3, 32, 32)" in text
    assert any("image/png" in o.get("data", {}) for o in outputs), "the clips figure is shown"

"""The configs ship inside the wheel, and an installed wheel finds them without the checkout."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.conftest import CONF_ROOT, REPO_ROOT, cli_env


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(out),
            str(REPO_ROOT),
        ],
        check=True,
        capture_output=True,
        text=True,
        env=cli_env(),
    )
    (path,) = out.glob("videogen-*.whl")
    return path


def test_wheel_contains_every_config(wheel: Path) -> None:
    expected = {
        f"videogen/conf/{p.relative_to(CONF_ROOT).as_posix()}" for p in CONF_ROOT.rglob("*.yaml")
    }
    with zipfile.ZipFile(wheel) as archive:
        shipped = {name for name in archive.namelist() if name.startswith("videogen/conf/")}
    assert expected and expected == shipped


def test_installed_wheel_composes_the_train_config(wheel: Path, tmp_path: Path) -> None:
    target = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "-q",
            "--target",
            str(target),
            str(wheel),
        ],
        check=True,
        capture_output=True,
        text=True,
        env=cli_env(),
    )
    script = (
        "import videogen, videogen.config as c\n"
        "from hydra import compose, initialize_config_dir\n"
        "with initialize_config_dir(config_dir=c.CONFIG_DIR, version_base='1.3'):\n"
        "    cfg = compose(config_name='train', overrides=['model=vit_b16'])\n"
        "print(videogen.__file__)\n"
        "print(c.CONFIG_DIR)\n"
        "print(cfg.model.net.model_name)\n"
    )
    env = cli_env()
    env["PYTHONPATH"] = str(target)  # the wheel's copy comes before the editable install
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-3000:]
    module_file, config_dir, model_name = result.stdout.split()
    assert module_file.startswith(str(target)) and config_dir.startswith(str(target))
    assert model_name == "vit_base_patch16_224"

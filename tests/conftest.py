"""Shared helpers: run the real CLI in a process of its own, compose configs in-process."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, open_dict

from tests.forked_cli import run_forked
from videogen.config import CONFIG_DIR

REPO_ROOT = Path(__file__).resolve().parents[1]
CONF_ROOT = REPO_ROOT / "conf"

# Small and quick data for CLI runs; the shapes stay those of the default config.
TINY_DATA = [
    "data.train_size=32",
    "data.val_size=16",
    "data.test_size=16",
    "data.batch_size=4",
]
# One epoch of two training batches, one validation and one test batch of TINY_DATA: a real
# best.ckpt / last.ckpt in seconds.
FAST_RUN = [
    "trainer=cpu",
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=1",
    *TINY_DATA,
]


def config_names(group: str) -> list[str]:
    """The options of a config group, from the files in conf/<group>/ (a name starting with an
    underscore is a part other options include, not an option)."""
    return sorted(p.stem for p in (CONF_ROOT / group).glob("*.yaml") if not p.stem.startswith("_"))


def cli_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        PYTHONUNBUFFERED="1",
        WANDB_MODE="offline",
        WANDB_SILENT="true",
        WANDB_DISABLE_GIT="true",
        HYDRA_FULL_ERROR="0",
        COLUMNS="120",
    )
    return env


def run_cli(
    module: str, *overrides: str, cwd: Path, timeout: float = 300
) -> subprocess.CompletedProcess:
    """Run `python -m <module> <overrides>` as a user would, capturing its output, in a process
    forked from one that has imported the entry points (`tests.forked_cli`)."""
    return run_forked(module, list(overrides), cwd, cli_env(), timeout)


def assert_ok(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 0, (
        f"exit {result.returncode}\nstdout:\n{result.stdout[-3000:]}\nstderr:\n{result.stderr[-5000:]}"
    )


def assert_one_sentence_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    """A user mistake: exit status 2 and exactly one `error: ...` line containing `fragments`."""
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr and "KeyError" not in result.stderr
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(error_lines) == 1, result.stderr[-3000:]
    for fragment in fragments:
        assert fragment in error_lines[0]


@pytest.fixture
def compose_train(tmp_path: Path) -> Iterator:
    """compose_train(*overrides) -> the composed train config with outputs under tmp_path."""

    def _compose(*overrides: str) -> DictConfig:
        with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
            cfg = compose(config_name="train", overrides=list(overrides))
        with open_dict(cfg):
            cfg.paths.output_dir = str(tmp_path)
        return cfg

    yield _compose


@pytest.fixture(scope="module")
def one_intra_op_thread() -> Iterator[None]:
    """One intra-op thread for a module of tiny-tensor tests: on a small shared CPU, torch's
    thread pool only spins against other processes. Restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def one_thread_per_cli_run() -> Iterator[None]:
    """Each CLI run of a module uses one intra-op thread: on a small shared CPU, torch's thread
    pool otherwise spins against other processes and a 6 s run takes 30 s. Results are unchanged."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OMP_NUM_THREADS", "1")
        yield


@pytest.fixture(scope="session")
def judge_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A classifier checkpoint on clips of the size the generation tests use (their judge),
    trained once for every test that needs one."""
    run_dir = tmp_path_factory.mktemp("judge")
    assert_ok(run_cli("videogen", *FAST_RUN, f"hydra.run.dir={run_dir}", cwd=run_dir))
    return run_dir


def write_tiny_vae(folder: Path, seed: int = 0) -> None:
    """A random AutoencoderKL saved as users have the SD VAE (config.json + weights)."""
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        block_out_channels=(8, 16),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=4,
        scaling_factor=0.5,
    ).save_pretrained(folder)


def tiny_latte_net(**changes: object) -> dict:
    """The `net` config of a tiny class-conditional Latte (pixel space), with `changes`."""
    return {
        "_target_": "videogen.models.diffusion.Latte",
        "num_frames": 2,
        "img_size": [32, 32],
        "in_channels": 3,
        "patch_size": 8,
        "size": None,
        "embed_dim": 16,
        "depth": 2,
        "num_heads": 2,
        "num_classes": 8,
        **changes,
    }

"""Real checkpoints written before the modelling-core refactor still load and still run.

tests/data/legacy/ holds genuine Lightning checkpoints written by `python -m videogen` at commit
54aacac: tiny runs of two training batches on the synthetic data (16 x 16 frames, 4 per clip,
networks shrunk by overrides so that each file stays small):
- vptr_ae_tiny: the VPTR autoencoder with its PatchGAN discriminator (gan_weight 0.01);
- vptr_far_tiny: VPTR-FAR on that autoencoder (the autoencoder travels in the checkpoint);
- vivit_tiny: the spatio-temporal ViViT classifier;
- vid2vid_tiny: the vid2vid generator (trunk and branch residual blocks) and both discriminators.
Each loads with its task's `load_from_checkpoint`, holds exactly the stored weights, and makes
finite outputs of the right shape; the ViViT checkpoint also evaluates through the CLI to the
test metrics its training run reported.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest
import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

import videogen.config  # noqa: F401  (registers the resolvers the stored data configs use)
from tests.conftest import assert_ok, run_cli
from videogen.tasks.base import VideoTask

LEGACY_DIR = Path(__file__).resolve().parent / "data" / "legacy"
CHECKPOINTS = {path.stem: path for path in sorted(LEGACY_DIR.glob("*.ckpt"))}
# What the vivit_tiny training run reported for its best.ckpt (its 4 synthetic test clips).
VIVIT_TINY_TEST_LOSS = 2.073108196258545

pytestmark = pytest.mark.usefixtures("one_intra_op_thread", "one_thread_per_cli_run")


def stored(name: str) -> dict[str, Any]:
    return torch.load(CHECKPOINTS[name], map_location="cpu", weights_only=True)


def recorded_task_class(checkpoint: dict[str, Any]) -> type[VideoTask]:
    """The task class the checkpoint names; only videogen's own tasks are imported."""
    recorded = checkpoint["videogen"]["task"]
    assert recorded.startswith("videogen.tasks."), recorded
    module, _, name = recorded.rpartition(".")
    task_cls = getattr(importlib.import_module(module), name)
    assert issubclass(task_cls, VideoTask)
    return task_cls


def as_current_code_names_them(task_name: str, state: dict[str, Any]) -> dict[str, Any]:
    """The stored keys mapped as the code maps an old checkpoint's keys on load (once it does)."""
    if importlib.util.find_spec("videogen.tasks.legacy") is None:
        return state
    return importlib.import_module("videogen.tasks.legacy").upgrade_state_dict(task_name, state)


def load(name: str) -> tuple[VideoTask, dict[str, Any]]:
    checkpoint = stored(name)
    task = recorded_task_class(checkpoint).load_from_checkpoint(CHECKPOINTS[name])
    return task.eval(), checkpoint


def stored_data(checkpoint: dict[str, Any]) -> dict[str, Any]:
    """The run's data config, as stored in the checkpoint, resolved."""
    config = OmegaConf.create(checkpoint["videogen"]["config"])
    return OmegaConf.to_container(config.data, resolve=True)


def panel_videos(output: Any) -> dict[str, torch.Tensor]:
    """The videos of a generating task's `predict_step` output, by panel name."""
    panels = output[0] if isinstance(output, tuple) else output
    return dict(panels.videos if hasattr(panels, "videos") else panels)


def test_every_legacy_checkpoint_is_here() -> None:
    assert set(CHECKPOINTS) == {"vptr_ae_tiny", "vptr_far_tiny", "vivit_tiny", "vid2vid_tiny"}
    for path in CHECKPOINTS.values():
        assert path.stat().st_size < 300_000, path


@pytest.mark.parametrize("name", sorted(CHECKPOINTS))
def test_a_legacy_checkpoint_loads_with_exactly_its_weights(name: str) -> None:
    task, checkpoint = load(name)
    expected = as_current_code_names_them(type(task).__name__, checkpoint["state_dict"])
    loaded = task.state_dict()
    assert sorted(loaded) == sorted(expected)
    differ = [key for key in expected if not torch.equal(loaded[key], expected[key])]
    assert not differ, f"{len(differ)} tensors differ from the file: {differ[:8]}"
    if name == "vptr_ae_tiny":  # trained with its discriminator
        assert any(key.startswith("discriminator.") for key in loaded)


@pytest.mark.parametrize("name", sorted(CHECKPOINTS))
def test_a_legacy_checkpoint_makes_finite_outputs_of_the_right_shape(name: str) -> None:
    task, checkpoint = load(name)
    clips = 2
    data = stored_data(checkpoint)
    sizes = ("train_size", "val_size", "test_size", "batch_size")
    datamodule = instantiate({**data, **dict.fromkeys(sizes, clips)})
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    (output,) = trainer.predict(task, datamodule=datamodule)
    clip_shape = (clips, *(data[key] for key in ("num_frames", "channels", "height", "width")))
    if isinstance(output, torch.Tensor):  # a classifier: class probabilities per clip
        assert output.shape == (clips, data["num_classes"])
        assert torch.isfinite(output).all()
        torch.testing.assert_close(output.sum(-1), torch.ones(clips))
    else:  # a generating task: videos side by side, each the shape of the clips
        videos = panel_videos(output)
        assert len(videos) >= 2, sorted(videos)
        for panel, video in videos.items():
            assert video.shape == clip_shape, (panel, video.shape)
            assert torch.isfinite(video).all(), panel


def test_a_legacy_checkpoint_evaluates_through_the_cli(tmp_path: Path) -> None:
    result = run_cli(
        "videogen.evaluate",
        f"ckpt_path={CHECKPOINTS['vivit_tiny']}",
        f"hydra.run.dir={tmp_path}",
        cwd=tmp_path,
    )
    assert_ok(result)
    assert "test/acc" in result.stdout  # the metrics table
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert 0.0 <= metrics["test/acc"] <= 1.0
    assert metrics["test/loss"] == pytest.approx(VIVIT_TINY_TEST_LOSS, abs=1e-4)

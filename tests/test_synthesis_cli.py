"""vid2vid through the real command line, tiny, on the synthetic shapes: train -> test metrics,
generate videos longer than the training clips, progressive coarse-to-fine training,
multimodal style sampling, and data without semantic maps refused in one sentence. The per-frame
baseline and the coarse checkpoint checks are tested in-process (tests/test_synthesis_task.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.conftest import TINY_DATA, assert_ok, assert_one_sentence_error, run_cli
from tests.test_prediction_cli import gif_frames, is_red

# One epoch of two batches of four 4-frame clips, one validation and one test batch.
FAST = [
    "model=vid2vid_tiny",
    "trainer=cpu",
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=1",
    "data.num_frames=4",
    *TINY_DATA,
]
TRAIN_FRAMES, HEIGHT = 4, 32


pytestmark = pytest.mark.usefixtures("one_thread_per_cli_run")


def train(run_dir: Path, *overrides: str) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    assert_ok(run_cli("videogen", *FAST, *overrides, f"hydra.run.dir={run_dir}", cwd=run_dir))
    return run_dir


def metrics_of(run_dir: Path) -> dict[str, float]:
    return json.loads((run_dir / "metrics.json").read_text())


def weights_of(run_dir: Path) -> dict[str, torch.Tensor]:
    checkpoint = torch.load(
        run_dir / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=False
    )
    return checkpoint["state_dict"]


@pytest.fixture(scope="module")
def vid2vid_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train(tmp_path_factory.mktemp("vid2vid"))


def test_training_reports_synthesis_metrics(vid2vid_run: Path) -> None:
    metrics = metrics_of(vid2vid_run)
    assert 0 < metrics["test/psnr"] < 60
    assert -1 <= metrics["test/ssim"] <= 1
    # The real video is nearly consistent with its own reference flow; an untrained GAN is not
    # (it hallucinates every frame anew), so its warping error is the larger.
    assert 0 <= metrics["test/warp_error_real"] < metrics["test/warp_error"]
    weights = weights_of(vid2vid_run)
    assert any(k.startswith("video_discriminator.") for k in weights)
    assert any(k.startswith("image_discriminator.") for k in weights)
    assert not any("perceptual" in k or k.startswith("estimator") for k in weights)


def test_generate_makes_videos_longer_than_the_training_clips(
    vid2vid_run: Path, tmp_path: Path
) -> None:
    frames = 2 * TRAIN_FRAMES + 1
    result = run_cli(
        "videogen.generate",
        f"ckpt_path={vid2vid_run / 'checkpoints' / 'best.ckpt'}",
        "num_videos=2",
        "formats=[gif]",
        f"data.num_frames={frames}",
        f"hydra.run.dir={tmp_path}",
        cwd=tmp_path,
    )
    assert_ok(result)
    assert sorted(p.name for p in (tmp_path / "videos").iterdir()) == [
        "example_000.gif",
        "example_001.gif",
    ]
    gif = gif_frames(tmp_path / "videos" / "example_001.gif")
    assert len(gif) == frames
    height, width = gif[0].shape[:2]
    # labels | output | truth, with thin gaps; only the middle (generated) panel is framed red.
    assert abs(width - 3 * height) <= 8, (height, width)
    third = width // 3
    assert all(is_red(frame[0, third + 4 : 2 * third - 4]).all() for frame in gif)
    assert not any(is_red(frame[0, 2 * third + 4 :]).all() for frame in gif)
    assert not any(is_red(frame[0, : third - 4]).all() for frame in gif)


def test_a_second_spatial_scale_starts_from_the_coarser_checkpoint(
    vid2vid_run: Path, tmp_path: Path
) -> None:
    coarse = vid2vid_run / "checkpoints" / "best.ckpt"
    run_dir = train(
        tmp_path,
        "model.net.num_spatial_scales=2",
        f"model.coarse_ckpt={coarse}",
        "optimizer.lr=0",  # steps that change nothing: the weights are exactly the loaded ones
        "test_after_fit=false",
    )
    coarse_weights, fine_weights = weights_of(vid2vid_run), weights_of(run_dir)
    global_level = [k for k in coarse_weights if k.startswith("net.levels.0.")]
    assert global_level
    assert all(torch.equal(coarse_weights[k], fine_weights[k]) for k in global_level)
    assert any(k.startswith("net.levels.1.") for k in fine_weights)


class FramePooling(torch.nn.Module):
    """A stand-in feature network: mean colour of each frame, (N, 3, H, W) -> (N, 3)."""

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return frames.mean(dim=(2, 3))


class ClipPooling(torch.nn.Module):
    """A stand-in clip feature network: mean colour of each clip, (B, T, 3, H, W) -> (B, 3)."""

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        return clips.mean(dim=(1, 3, 4))


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")
def test_style_sampling_and_frechet_distances_at_evaluation(tmp_path: Path) -> None:
    run_dir = train(tmp_path / "train", "model.net.feature_channels=3")
    weights = weights_of(run_dir)
    assert weights["style_mixture.fitted"][1:].all()  # every shape class has a mixture
    networks = {}
    for name, module in (("fid", FramePooling()), ("fvd", ClipPooling())):
        networks[name] = tmp_path / f"{name}.pt"
        torch.jit.script(module).save(str(networks[name]))
    sampled = tmp_path / "sampled"
    result = run_cli(
        "videogen.evaluate",
        f"ckpt_path={run_dir / 'checkpoints' / 'best.ckpt'}",
        "model.sample_style=true",
        f"model.fid_network_path={networks['fid']}",
        f"model.fvd_network_path={networks['fvd']}",
        f"hydra.run.dir={sampled}",
        cwd=tmp_path,
    )
    assert_ok(result)
    metrics = metrics_of(sampled)
    assert metrics["test/psnr"] > 0
    # Untrained outputs differ from the real frames in colour statistics: both distances > 0.
    assert metrics["test/fid"] > 0 and metrics["test/fvd"] > 0
    assert "FID-style distance is not reported" not in result.stderr


def test_vid2vid_on_data_without_maps_is_one_sentence(tmp_path: Path) -> None:
    result = run_cli(
        "videogen",
        *FAST,
        "data=moving_mnist",
        "data.num_frames=20",
        f"hydra.run.dir={tmp_path}",
        cwd=tmp_path,
    )
    assert_one_sentence_error(result, "segmentation", "moving_mnist")

"""VPTR video prediction through the real command line, tiny, on the synthetic data: stage 1
(autoencoder) -> stage 2 (FAR / NAR) -> evaluate and generate from the stage-2 checkpoint alone,
and the user mistakes of the two-stage workflow as one-sentence errors."""

from __future__ import annotations

import csv
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import av
import numpy as np
import pytest
import torch
import yaml
from omegaconf import DictConfig, OmegaConf
from PIL import Image

from tests.conftest import FAST_RUN, TINY_DATA, assert_ok, assert_one_sentence_error, run_cli
from videogen.tasks.prediction import PredictionTask

# The synthetic data's defaults: 8 frames of 32x32, 4 context + 4 future.
NUM_FRAMES, FUTURE_FRAMES, HEIGHT = 8, 4, 32
STAGE2 = {"far": "vptr_far_tiny", "nar": "vptr_nar_tiny"}
QUALITY = {"test/mse", "test/psnr", "test/ssim", "test/mse_copy_last"}


pytestmark = pytest.mark.usefixtures("one_thread_per_cli_run")


def metrics_of(run_dir: Path) -> dict[str, float]:
    return json.loads((run_dir / "metrics.json").read_text())


def curves_of(run_dir: Path) -> list[dict[str, str]]:
    with (run_dir / "prediction_curves.csv").open() as handle:
        return list(csv.DictReader(handle))


def run_data(run_dir: Path) -> DictConfig:
    """The data config a run used (its .hydra/config.yaml, interpolations resolved)."""
    import videogen.config  # noqa: F401  (registers the half_of / minus resolvers)

    return OmegaConf.load(run_dir / ".hydra" / "config.yaml").data


def train(run_dir: Path, *overrides: str) -> Path:
    assert_ok(run_cli("videogen", *overrides, *FAST_RUN, f"hydra.run.dir={run_dir}", cwd=run_dir))
    return run_dir


@pytest.fixture(scope="module")
def ae_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Stage 1: a tiny autoencoder run with its checkpoints/best.ckpt."""
    return train(tmp_path_factory.mktemp("ae"), "model=vptr_ae_tiny")


@pytest.fixture(scope="module")
def stage2(ae_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """stage2("far" | "nar") -> its run folder, trained once on a private copy of the stage-1
    checkpoint that is deleted right after: everything later uses the stage-2 checkpoint alone."""
    runs: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in runs:
            copy = tmp_path_factory.mktemp(f"stage1_for_{name}") / "autoencoder.ckpt"
            shutil.copy(ae_run / "checkpoints" / "best.ckpt", copy)
            run_dir = train(
                tmp_path_factory.mktemp(name),
                f"model={STAGE2[name]}",
                f"model.autoencoder_ckpt={copy}",
            )
            copy.unlink()
            runs[name] = run_dir
        return runs[name]

    return get


@pytest.fixture(scope="module")
def classification_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real checkpoint of another task (the default model, ViViT-tiny classification)."""
    run_dir = tmp_path_factory.mktemp("classification")
    train(run_dir, "test_after_fit=false")
    return run_dir / "checkpoints" / "best.ckpt"


def is_red(pixels: np.ndarray) -> np.ndarray:
    pixels = pixels.astype(int)
    return (pixels[..., 0] > 180) & (pixels[..., 1] < 90) & (pixels[..., 2] < 90)


def gif_frames(path: Path) -> list[np.ndarray]:
    with Image.open(path) as image:
        frames = []
        for index in range(image.n_frames):
            image.seek(index)
            frames.append(np.asarray(image.convert("RGB")))
    return frames


# --------------------------------------------------------------------------- stage 1


def test_autoencoder_run_writes_a_checkpoint_and_reconstruction_metrics(ae_run: Path) -> None:
    assert (ae_run / "checkpoints" / "best.ckpt").is_file()
    metrics = metrics_of(ae_run)
    assert {"test/mse", "test/psnr", "test/ssim", "val/mse", "train/loss_d"} <= metrics.keys()
    assert metrics["test/mse"] > 0 and metrics["test/psnr"] > 0 and -1 <= metrics["test/ssim"] <= 1
    assert not (ae_run / "prediction_curves.csv").exists()  # reconstruction, not prediction
    checkpoint = torch.load(
        ae_run / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=False
    )
    assert checkpoint["videogen"]["task"] == "videogen.tasks.prediction.AutoencoderTask"
    assert any(key.startswith("discriminator.") for key in checkpoint["state_dict"])


# --------------------------------------------------------------------------- stage 2


@pytest.mark.parametrize("name", ["far", "nar"])
def test_prediction_run_reports_metrics_and_per_frame_curves(
    name: str, stage2: Callable[[str], Path]
) -> None:
    run_dir = stage2(name)
    metrics = metrics_of(run_dir)
    assert metrics.keys() >= QUALITY, sorted(metrics)
    assert metrics["test/mse"] > 0 and metrics["test/mse_copy_last"] > 0
    data = run_data(run_dir)
    assert data.future_frames == FUTURE_FRAMES and data.num_frames == NUM_FRAMES
    rows = curves_of(run_dir)
    assert [row["future_frame"] for row in rows] == [str(t + 1) for t in range(data.future_frames)]
    assert {"mse", "psnr", "ssim", "mse_copy_last"} <= rows[0].keys()
    # Copying the last context frame drifts further from the truth the further ahead it is.
    assert float(rows[-1]["mse_copy_last"]) > float(rows[0]["mse_copy_last"])
    assert (run_dir / "prediction_curves.png").stat().st_size > 1000


@pytest.mark.parametrize("name", ["far", "nar"])
def test_prediction_checkpoint_holds_the_frozen_autoencoder(
    name: str, stage2: Callable[[str], Path], ae_run: Path
) -> None:
    """The stage-1 file is gone; the stage-2 checkpoint loads alone, with the stage-1 weights
    (BatchNorm statistics included: the frozen autoencoder must not move during stage 2)."""
    task = PredictionTask.load_from_checkpoint(stage2(name) / "checkpoints" / "best.ckpt")
    stage1 = torch.load(
        ae_run / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=False
    )
    expected = {
        k.removeprefix("net."): v for k, v in stage1["state_dict"].items() if k.startswith("net.")
    }
    loaded = task.autoencoder.net.state_dict()
    assert loaded.keys() == expected.keys()
    for key, value in expected.items():
        torch.testing.assert_close(loaded[key], value, msg=key)
    assert task.hparams["autoencoder"] == stage1["hyper_parameters"]["net"]
    assert not any(p.requires_grad for p in task.autoencoder.parameters())
    net = task.hparams["net"]
    assert net["feature_dim"] == 64 and list(net["feature_size"]) == [8, 8]  # from vptr_ae_tiny
    if name == "far":
        assert net["trained_frames"] == NUM_FRAMES and task.net.max_input_frames == NUM_FRAMES - 1
    else:
        assert net["context_frames"] == 4 and net["future_frames"] == FUTURE_FRAMES


@pytest.mark.parametrize("name", ["far", "nar"])
def test_evaluate_a_longer_horizon_from_the_stage2_checkpoint_alone(
    name: str, stage2: Callable[[str], Path], tmp_path: Path
) -> None:
    """10 frames, 4 of context: 6 future frames, more than trained (FAR slides its window,
    NAR predicts a second block); the stage-1 checkpoint file no longer exists."""
    run_dir = stage2(name)
    stored = yaml.safe_load((run_dir / ".hydra" / "config.yaml").read_text())
    assert not Path(stored["model"]["autoencoder_ckpt"]).exists()
    result = run_cli(
        "videogen.evaluate",
        f"ckpt_path={run_dir / 'checkpoints' / 'best.ckpt'}",
        "data.num_frames=10",
        "data.context_frames=4",
        f"hydra.run.dir={tmp_path}",
        cwd=tmp_path,
    )
    assert_ok(result)
    assert metrics_of(tmp_path).keys() >= QUALITY
    assert run_data(tmp_path).future_frames == 6
    rows = curves_of(tmp_path)
    assert [row["future_frame"] for row in rows] == [str(t) for t in range(1, 7)]
    assert all(np.isfinite(float(row["mse"])) for row in rows)


def test_generate_writes_side_by_side_videos(stage2: Callable[[str], Path], tmp_path: Path) -> None:
    result = run_cli(
        "videogen.generate",
        f"ckpt_path={stage2('far') / 'checkpoints' / 'best.ckpt'}",
        "num_videos=3",
        f"hydra.run.dir={tmp_path}",
        cwd=tmp_path,
    )
    assert_ok(result)
    videos = tmp_path / "videos"
    assert sorted(p.name for p in videos.iterdir()) == [
        f"example_{i:03d}.{suffix}" for i in range(3) for suffix in ("gif", "mp4")
    ]
    with av.open(str(videos / "example_001.mp4")) as container:
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    assert len(frames) == NUM_FRAMES
    height, width = frames[0].shape[:2]
    assert height >= 128  # small frames are enlarged to min_height
    assert abs(width - 2 * height) <= 4, (height, width)  # truth | prediction, a thin gap
    # The gif shows the same layout; the predicted frames (4 on) of the right panel are framed red.
    gif = gif_frames(videos / "example_001.gif")
    assert len(gif) == NUM_FRAMES and gif[0].shape == (height, width, 3)
    right_top, left_top = (
        (frame[0, width // 2 + 4 :] for frame in gif),
        (frame[0, : width // 2 - 4] for frame in gif),
    )
    red_right = [bool(is_red(row).all()) for row in right_top]
    assert red_right == [False] * 4 + [True] * 4
    assert not any(is_red(row).all() for row in left_top)  # the truth panel is not marked


def test_generate_from_the_autoencoder_shows_reconstructions(ae_run: Path, tmp_path: Path) -> None:
    result = run_cli(
        "videogen.generate",
        f"ckpt_path={ae_run / 'checkpoints' / 'best.ckpt'}",
        "num_videos=1",
        "formats=[gif]",
        f"hydra.run.dir={tmp_path}",
        cwd=tmp_path,
    )
    assert_ok(result)
    assert [p.name for p in (tmp_path / "videos").iterdir()] == ["example_000.gif"]
    gif = gif_frames(tmp_path / "videos" / "example_000.gif")
    assert len(gif) == NUM_FRAMES
    width = gif[0].shape[1]
    assert all(is_red(frame[0, width // 2 + 4 :]).all() for frame in gif)  # every frame is made


# --------------------------------------------------------------------------- user mistakes


def test_prediction_without_an_autoencoder_checkpoint_is_one_sentence(tmp_path: Path) -> None:
    result = run_cli(
        "videogen", "model=vptr_far_tiny", *FAST_RUN, f"hydra.run.dir={tmp_path}", cwd=tmp_path
    )
    assert_one_sentence_error(result, "model.autoencoder_ckpt", "model=vptr_ae")


@pytest.mark.parametrize("other", ["classification", "far", "missing"])
def test_prediction_on_a_checkpoint_that_is_no_autoencoder_is_one_sentence(
    other: str,
    request: pytest.FixtureRequest,
    stage2: Callable[[str], Path],
    tmp_path: Path,
) -> None:
    if other == "classification":
        path, fragment = request.getfixturevalue("classification_ckpt"), "ClassificationTask"
    elif other == "far":
        path, fragment = stage2("far") / "checkpoints" / "best.ckpt", "PredictionTask"
    else:
        path, fragment = tmp_path / "no_such.ckpt", "does not exist"
    result = run_cli(
        "videogen",
        "model=vptr_nar_tiny",
        f"model.autoencoder_ckpt={path}",
        *FAST_RUN,
        f"hydra.run.dir={tmp_path / 'run'}",
        cwd=tmp_path,
    )
    assert_one_sentence_error(result, str(path), fragment)


def test_prediction_data_of_another_frame_size_is_one_sentence(
    ae_run: Path, tmp_path: Path
) -> None:
    result = run_cli(
        "videogen",
        "model=vptr_far_tiny",
        f"model.autoencoder_ckpt={ae_run / 'checkpoints' / 'best.ckpt'}",
        "data.height=16",
        "data.width=16",
        *FAST_RUN,
        f"hydra.run.dir={tmp_path}",
        cwd=tmp_path,
    )
    assert_one_sentence_error(result, "32x32", "16x16", "data.height")


def test_generate_with_a_classification_checkpoint_is_one_sentence(
    classification_ckpt: Path, tmp_path: Path
) -> None:
    result = run_cli(
        "videogen.generate",
        f"ckpt_path={classification_ckpt}",
        "num_videos=1",
        f"hydra.run.dir={tmp_path}",
        cwd=tmp_path,
    )
    assert_one_sentence_error(result, "ClassificationTask", "makes no videos")
    assert not (tmp_path / "videos").exists()


@pytest.mark.parametrize("experiment", ["vptr_synthetic_far", "vptr_synthetic_nar"])
def test_stage2_experiment_presets_train_on_a_stage1_checkpoint(
    experiment: str, ae_run: Path, tmp_path: Path
) -> None:
    result = run_cli(
        "videogen",
        f"experiment={experiment}",
        f"model.autoencoder_ckpt={ae_run / 'checkpoints' / 'best.ckpt'}",
        "trainer.fast_dev_run=true",
        *TINY_DATA,
        f"hydra.run.dir={tmp_path}",
        cwd=tmp_path,
    )
    assert_ok(result)
    assert set(metrics_of(tmp_path)) >= QUALITY


@pytest.mark.parametrize(
    ("model", "net"),
    [
        ("vptr_far", {"depth": 12, "num_heads": 8, "window_size": 4, "trained_frames": 20}),
        (
            "vptr_nar",
            {"encoder_depth": 4, "decoder_depth": 8, "context_frames": 10, "future_frames": 10},
        ),
    ],
)
def test_paper_size_configs_take_the_paper_recipe(model: str, net: dict, compose_train) -> None:
    cfg = compose_train(f"model={model}", "data=moving_mnist")
    resolved = OmegaConf.to_container(cfg, resolve=True)
    assert net.items() <= resolved["model"]["net"].items()
    assert resolved["optimizer"]["_target_"] == "torch.optim.AdamW"
    assert resolved["optimizer"]["lr"] == pytest.approx(1e-4)
    assert resolved["model"]["grad_clip_norm"] == 1.0
    assert (resolved["optimized_metric"], resolved["optimized_mode"]) == ("val/mse", "min")


def test_autoencoder_config_takes_the_paper_recipe(compose_train) -> None:
    resolved = OmegaConf.to_container(
        compose_train("model=vptr_ae", "data=moving_mnist"), resolve=True
    )
    assert resolved["optimizer"]["_target_"] == "torch.optim.Adam"
    assert resolved["optimizer"]["betas"] == [0.5, 0.999]
    assert resolved["model"]["gan_weight"] == 0.01
    assert resolved["model"]["net"]["output_activation"] == "sigmoid"

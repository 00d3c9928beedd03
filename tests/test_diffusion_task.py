"""The diffusion task through the CLI: training with EMA, resume, latent space with a tiny
VAE saved like the SD VAE, judged evaluation and generation from a checkpoint alone."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch

from tests.conftest import (
    FAST_RUN,
    assert_ok,
    assert_one_sentence_error,
    run_cli,
    write_tiny_vae,
)
from tests.test_fvd import write_tiny_detector
from videogen.errors import ConfigError
from videogen.metrics.fvd import read_fvd_record
from videogen.tasks.base import read_checkpoint
from videogen.tasks.diffusion import DiffusionTask
from videogen.tasks.judge import Judge

pytestmark = pytest.mark.usefixtures("one_thread_per_cli_run")

# Two training steps of a tiny pixel-space Latte on 8 x 32 x 32 synthetic clips.
LATTE = ["model=latte_tiny", "model.net.depth=2", "model.net.embed_dim=32", *FAST_RUN]
QUICK_SAMPLING = ["model.sample_steps=2", "model.samples_per_class=2", "model.sample_batch_size=8"]


def metrics_of(run_dir: Path) -> dict[str, float]:
    return json.loads((run_dir / "metrics.json").read_text())


@pytest.fixture(scope="module")
def latte_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("latte")
    result = run_cli("videogen", *LATTE, *QUICK_SAMPLING, f"hydra.run.dir={run_dir}", cwd=run_dir)
    assert_ok(result)
    return run_dir


def test_training_keeps_ema_weights_and_the_raw_ones(latte_run: Path) -> None:
    checkpoint = read_checkpoint(latte_run / "checkpoints" / "last.ckpt")
    ema, raw = checkpoint["state_dict"], checkpoint["current_model_state"]
    assert ema.keys() == raw.keys()
    assert any(not torch.equal(ema[key], raw[key]) for key in ema)
    assert int(checkpoint["averaging_state"]["n_averaged"]) == checkpoint["global_step"] == 2
    metrics = metrics_of(latte_run)
    assert 0 < metrics["test/loss"] < 10


def test_a_run_stopped_mid_epoch_keeps_its_raw_weights_in_last_ckpt(tmp_path: Path) -> None:
    """max_steps ends the run inside its epoch: last.ckpt is then written after Lightning has
    copied the average over the weights, and must still hold the raw ones for resuming."""
    result = run_cli(
        "videogen",
        *LATTE,
        "trainer.limit_train_batches=3",
        "trainer.max_steps=2",
        "trainer.limit_test_batches=0",
        f"hydra.run.dir={tmp_path}",
        cwd=tmp_path,
    )
    assert_ok(result)
    checkpoint = read_checkpoint(tmp_path / "checkpoints" / "last.ckpt")
    assert checkpoint["global_step"] == 2
    ema, raw = checkpoint["state_dict"], checkpoint["current_model_state"]
    assert any(not torch.equal(ema[key], raw[key]) for key in ema)


def test_the_checkpoint_samples_from_the_ema_weights(latte_run: Path) -> None:
    path = latte_run / "checkpoints" / "last.ckpt"
    task = DiffusionTask.load_from_checkpoint(path)
    ema = read_checkpoint(path)["state_dict"]
    for name, value in task.state_dict().items():
        assert torch.equal(value, ema[name]), name
    labels = torch.tensor([0, 3])
    first, second = (
        task.sample_clips(labels, 2, generator=torch.Generator().manual_seed(5)) for _ in range(2)
    )
    assert first.shape == (2, 8, 3, 32, 32) and first.min() >= 0 and first.max() <= 1
    assert torch.equal(first, second)


def test_a_run_resumes_with_its_optimiser_ema_and_step(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    common = [*LATTE, *QUICK_SAMPLING, "test_after_fit=false", f"hydra.run.dir={run_dir}"]
    assert_ok(run_cli("videogen", *common, cwd=tmp_path))
    before = read_checkpoint(run_dir / "checkpoints" / "last.ckpt")
    assert_ok(run_cli("videogen", *common, "trainer.max_epochs=2", "ckpt_path=last", cwd=tmp_path))
    after = read_checkpoint(run_dir / "checkpoints" / "last.ckpt")
    assert before["global_step"] == 2 and after["global_step"] == 4
    # the EMA went on from where it was (two more updates, not a fresh start), and so did AdamW
    assert int(after["averaging_state"]["n_averaged"]) == 4
    assert int(after["optimizer_states"][0]["state"][0]["step"]) == 4


def test_generate_writes_clips_of_the_asked_classes_and_a_grid(
    latte_run: Path, tmp_path: Path
) -> None:
    out = tmp_path / "videos"
    args = [
        f"ckpt_path={latte_run / 'checkpoints' / 'last.ckpt'}",
        "num_videos=3",
        "labels=[0,3]",
        "sampler=ddim",
        "steps=3",
        "eta=0",
        "guidance=2",
        "seed=0",
        "formats=[gif]",
        f"output_dir={out}",
        f"hydra.run.dir={tmp_path}",
    ]
    assert_ok(run_cli("videogen.generate", *args, cwd=tmp_path))
    names = sorted(p.name for p in out.iterdir())
    assert names == [
        "clip_000_class0.gif",
        "clip_001_class3.gif",
        "clip_002_class0.gif",
        "grid.gif",
    ]
    grid = (out / "grid.gif").stat().st_size
    assert grid > max((out / name).stat().st_size for name in names[:-1])  # all clips in one


def test_generate_refuses_a_class_the_model_does_not_have(latte_run: Path, tmp_path: Path) -> None:
    result = run_cli(
        "videogen.generate",
        f"ckpt_path={latte_run / 'checkpoints' / 'last.ckpt'}",
        "labels=[9]",
        f"hydra.run.dir={tmp_path}",
        cwd=tmp_path,
    )
    assert_one_sentence_error(result, "labels=[9]", "[0, 7]")


def test_evaluate_judges_generated_clips_with_a_classifier(
    latte_run: Path, judge_run: Path, tmp_path: Path
) -> None:
    result = run_cli(
        "videogen.evaluate",
        f"ckpt_path={latte_run / 'checkpoints' / 'last.ckpt'}",
        f"model.judge_ckpt={judge_run / 'checkpoints' / 'best.ckpt'}",
        *QUICK_SAMPLING,
        "data.test_size=16",
        "data.batch_size=8",
        f"hydra.run.dir={tmp_path}",
        cwd=tmp_path,
    )
    assert_ok(result)
    metrics = metrics_of(tmp_path)
    assert 0.0 <= metrics["test/judge_acc"] <= 1.0
    assert metrics["test/judge_fd"] > 0
    assert metrics["test/generated_clips"] == 16  # 2 per class, 8 classes


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")
def test_evaluate_reports_fvd_under_the_protocol_given_on_the_command_line(
    latte_run: Path, tmp_path: Path
) -> None:
    detector = write_tiny_detector(tmp_path / "i3d_torchscript.pt")
    result = run_cli(
        "videogen.evaluate",
        f"ckpt_path={latte_run / 'checkpoints' / 'last.ckpt'}",
        f"model.fvd_network_path={detector}",
        "model.fvd.frames=8",
        "model.fvd.resolution=32",
        "model.fvd.generated_clips=12",
        *QUICK_SAMPLING,
        "data.test_size=16",
        "data.batch_size=8",
        "trainer.limit_test_batches=2",
        f"hydra.run.dir={tmp_path}",
        cwd=tmp_path,
    )
    assert_ok(result)
    metrics = metrics_of(tmp_path)
    assert metrics["test/fvd"] > 0
    # 16 samples (2 per class), 12 of them scored; all 16 test clips (fewer than 2048)
    assert metrics["test/fvd_generated_clips"] == 12 and metrics["test/fvd_real_clips"] == 16
    sha = hashlib.sha256(detector.read_bytes()).hexdigest()
    assert sha in result.stdout + result.stderr  # the detector's hash is printed
    record = read_fvd_record(tmp_path)
    assert record["protocol"]["detector_sha256"] == sha
    assert record["protocol"]["frames"] == 8 and record["protocol"]["resolution"] == 32
    assert record["protocol"]["real_sampling"] == "per_class"
    assert (record["generated_clips"], record["real_clips"]) == (12, 16)


def test_a_judge_of_another_clip_size_is_refused(judge_run: Path) -> None:
    judge = Judge(judge_run / "checkpoints" / "best.ckpt")  # trained on 8 frames of 32x32
    with pytest.raises(ConfigError, match="clips of 8 frames at 32x32, but this model makes 4"):
        judge(torch.rand(2, 4, 3, 32, 32))
    logits, features = judge(torch.rand(2, 8, 3, 32, 32))
    assert logits.shape == (2, 8) and features.shape[0] == 2


def test_latent_diffusion_with_a_vae_folder_then_without_it(tmp_path: Path) -> None:
    vae = tmp_path / "vae"
    write_tiny_vae(vae)
    run_dir = tmp_path / "run"
    result = run_cli(
        "videogen",
        *LATTE,
        *QUICK_SAMPLING,
        f"model.vae_path={vae}",
        f"hydra.run.dir={run_dir}",
        cwd=tmp_path,
    )
    assert_ok(result)
    checkpoint = read_checkpoint(run_dir / "checkpoints" / "last.ckpt")
    hparams = checkpoint["hyper_parameters"]
    # the network denoises 4-channel 16 x 16 latents of the 3-channel 32 x 32 frames
    assert hparams["net"]["in_channels"] == 4 and list(hparams["net"]["img_size"]) == [16, 16]
    assert hparams["vae_config"]["scaling_factor"] == 0.5
    assert any(key.startswith("vae.") for key in checkpoint["state_dict"])
    # the checkpoint alone generates: the VAE folder is gone
    shutil.rmtree(vae)
    task = DiffusionTask.load_from_checkpoint(run_dir / "checkpoints" / "last.ckpt")
    clips = task.sample_clips(torch.tensor([1]), 1, generator=torch.Generator().manual_seed(0))
    assert clips.shape == (1, 8, 3, 32, 32)
    vae_weights = {k: v for k, v in checkpoint["state_dict"].items() if k.startswith("vae.")}
    for name, value in task.state_dict().items():
        if name in vae_weights:
            assert torch.equal(value, vae_weights[name])


def test_a_missing_vae_folder_is_one_sentence(tmp_path: Path) -> None:
    result = run_cli(
        "videogen",
        *LATTE,
        f"model.vae_path={tmp_path / 'nowhere'}",
        f"hydra.run.dir={tmp_path}",
        cwd=tmp_path,
    )
    assert_one_sentence_error(result, "model.vae_path", "not a diffusers model folder")

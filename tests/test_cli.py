"""The real command line: every model, data and experiment config trains with fast_dev_run,
a trained checkpoint evaluates to the same test metrics, and user mistakes are one sentence."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from tests.conftest import TINY_DATA, assert_ok, assert_one_sentence_error, config_names, run_cli
from tests.video_files import TINY_VIDEO_OVERRIDES


def metrics_of(run_dir: Path) -> dict[str, float]:
    return json.loads((run_dir / "metrics.json").read_text())


# Stage-2 prediction configs need a stage-1 checkpoint: tests/test_prediction_cli.py runs them.
NEEDS_AUTOENCODER = ("vptr_far", "vptr_nar", "vptr_synthetic_far", "vptr_synthetic_nar")
# Paper-size vid2vid (a 290M-parameter generator) takes minutes per step on a CPU; its config is
# composed and built on the meta device in tests/test_synthesis_task.py instead.
TOO_BIG_FOR_CPU = ("vid2vid", "latte", "uvit")


def first_test_metric(config: str) -> str:
    """The test metric every run of this model/experiment reports."""
    if config.startswith("vptr"):
        return "test/mse"
    if config.startswith(("latte", "uvit")):
        return "test/loss"
    if config.startswith("vgan"):
        return "test/motion_in_mask"
    return "test/psnr" if config.startswith("vid2vid") else "test/acc"


# Datamodules that read files have CLI tests of their own, on tiny datasets in their real layouts.
@pytest.mark.parametrize("data", ["synthetic"])
@pytest.mark.parametrize(
    "model",
    [
        m
        for m in config_names("model")
        if not m.startswith(NEEDS_AUTOENCODER) and m not in TOO_BIG_FOR_CPU
    ],
)
def test_every_model_config_trains_through_the_cli(model: str, data: str, tmp_path: Path) -> None:
    result = run_cli(
        "videogen",
        f"model={model}",
        f"data={data}",
        "trainer=cpu",
        "trainer.fast_dev_run=true",
        *TINY_DATA,
        "data.batch_size=2",
        f"hydra.run.dir={tmp_path}",
        cwd=tmp_path,
    )
    assert_ok(result)
    metrics = metrics_of(tmp_path)
    if first_test_metric(model) == "test/acc":
        assert 0.0 <= metrics["test/acc"] <= 1.0 and metrics["test/loss"] > 0
    elif first_test_metric(model) == "test/loss":  # a denoising MSE of unit-variance noise
        assert 0.0 < metrics["test/loss"] < 10
    elif first_test_metric(model) == "test/motion_in_mask":  # a share of the clips' motion
        assert 0.0 <= metrics["test/motion_in_mask"] <= 1 and 0.0 < metrics["test/d_real"] < 1
    elif first_test_metric(model) == "test/psnr":  # synthesised frames against the real ones
        assert 0.0 < metrics["test/psnr"] < 60 and metrics["test/warp_error"] >= 0
    else:  # a reconstruction error summed over a 3 x 32 x 32 frame
        assert 0.0 < metrics["test/mse"] < 3 * 32 * 32
    assert (tmp_path / ".hydra" / "config.yaml").is_file()


def tiny_dataset_overrides(experiment: str, tmp_path: Path) -> list[str]:
    """Overrides that run a paper preset on a tiny dataset of its real layout, on the CPU."""
    from tests.test_video_data import write_kinetics, write_ssv2

    if experiment in (
        "vit_synthetic",
        "vptr_synthetic_ae",
        "latte_synthetic",
        "vgan_synthetic",
    ) or experiment.startswith("vid2vid"):
        return TINY_DATA
    root = tmp_path / "data"
    if experiment.endswith("k400"):
        write_kinetics(root, "csv_flat", per_class=1)
        classes = 3
    else:
        write_ssv2(root)
        classes = 2
    return [
        f"data.root={root}",
        f"data.num_classes={classes}",
        *TINY_VIDEO_OVERRIDES,
        "trainer=cpu",
        "trainer.devices=1",
        "model.net.depth=2",
        "model.net.temporal_depth=1",
    ]


@pytest.mark.parametrize(
    "experiment", [e for e in config_names("experiment") if not e.startswith(NEEDS_AUTOENCODER)]
)
def test_every_experiment_config_trains_through_the_cli(experiment: str, tmp_path: Path) -> None:
    result = run_cli(
        "videogen",
        f"experiment={experiment}",
        "trainer.fast_dev_run=true",
        *tiny_dataset_overrides(experiment, tmp_path),
        f"hydra.run.dir={tmp_path / 'run'}",
        cwd=tmp_path,
    )
    assert_ok(result)
    assert first_test_metric(experiment) in metrics_of(tmp_path / "run")


@pytest.mark.parametrize(
    ("logger", "expected"),
    [
        ("csv", "csv/metrics.csv"),
        ("tensorboard", "tensorboard/events.out.tfevents.*"),
        ("many", "tensorboard/events.out.tfevents.*"),
    ],
)
def test_loggers_write_their_files(logger: str, expected: str, tmp_path: Path) -> None:
    result = run_cli(
        "videogen",
        f"logger={logger}",
        "trainer=cpu",
        "trainer.max_steps=2",
        "trainer.limit_val_batches=1",
        "trainer.limit_test_batches=1",
        *TINY_DATA,
        f"hydra.run.dir={tmp_path}",
        cwd=tmp_path,
    )
    assert_ok(result)
    assert list(tmp_path.glob(expected)), sorted(p.name for p in tmp_path.rglob("*"))


def test_wandb_logger_works_offline_without_an_account(tmp_path: Path) -> None:
    result = run_cli(
        "videogen",
        "logger=wandb",
        "logger.wandb.offline=true",
        "trainer=cpu",
        "trainer.fast_dev_run=true",
        *TINY_DATA,
        f"hydra.run.dir={tmp_path}",
        cwd=tmp_path,
    )
    assert_ok(result)
    assert list(tmp_path.glob("wandb/offline-run-*")), sorted(p.name for p in tmp_path.rglob("*"))[
        :50
    ]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A short real training run (2 epochs on a small synthetic set) shared by the tests below."""
    run_dir = tmp_path_factory.mktemp("train")
    result = run_cli(
        "videogen",
        "model=vit",
        "trainer=cpu",
        "trainer.max_epochs=2",
        "data.train_size=128",
        "data.val_size=64",
        "data.test_size=96",
        "data.batch_size=16",
        f"hydra.run.dir={run_dir}",
        cwd=run_dir,
    )
    assert_ok(result)
    return run_dir


def test_training_writes_checkpoints_config_logs_and_a_metrics_table(trained_run: Path) -> None:
    assert (trained_run / "checkpoints" / "best.ckpt").is_file()
    assert (trained_run / "checkpoints" / "last.ckpt").is_file()
    assert (trained_run / ".hydra" / "config.yaml").is_file()
    assert (trained_run / "csv" / "metrics.csv").is_file()
    metrics = metrics_of(trained_run)
    assert {"test/acc", "test/acc_top5", "test/loss", "val/acc"} <= metrics.keys()
    checkpoint = torch.load(
        trained_run / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=False
    )
    meta = checkpoint["videogen"]
    assert meta["task"] == "videogen.tasks.classification.ClassificationTask"
    assert meta["config"]["data"]["test_size"] == 96


def test_evaluate_reproduces_the_test_metrics_from_the_checkpoint_alone(
    trained_run: Path, tmp_path: Path
) -> None:
    result = run_cli(
        "videogen.evaluate",
        f"ckpt_path={trained_run / 'checkpoints' / 'best.ckpt'}",
        f"hydra.run.dir={tmp_path}",
        cwd=tmp_path,
    )
    assert_ok(result)
    trained, evaluated = metrics_of(trained_run), metrics_of(tmp_path)
    assert evaluated["test/acc"] == pytest.approx(trained["test/acc"], abs=1e-4)
    assert evaluated["test/loss"] == pytest.approx(trained["test/loss"], abs=1e-4)
    assert "test/acc" in result.stdout  # the metrics table


def test_evaluate_accepts_overrides_of_the_stored_config(trained_run: Path, tmp_path: Path) -> None:
    result = run_cli(
        "videogen.evaluate",
        f"ckpt_path={trained_run / 'checkpoints' / 'last.ckpt'}",
        "data.batch_size=4",
        "data.test_size=12",
        f"hydra.run.dir={tmp_path}",
        cwd=tmp_path,
    )
    assert_ok(result)
    composed = yaml.safe_load((tmp_path / ".hydra" / "config.yaml").read_text())
    assert composed["data"]["batch_size"] == 4 and composed["data"]["test_size"] == 12
    assert composed["model"]["net"]["embed_dim"] == 96  # the rest comes from the checkpoint
    accuracy = metrics_of(tmp_path)["test/acc"]
    assert accuracy * 12 == pytest.approx(round(accuracy * 12))  # 12 clips were tested


def test_unknown_model_or_data_lists_the_choices(tmp_path: Path) -> None:
    for group, known in (("model", "vit"), ("data", "synthetic")):
        result = run_cli("videogen", f"{group}=no_such_thing", cwd=tmp_path)
        assert result.returncode != 0
        assert f"Available options in '{group}'" in result.stderr and known in result.stderr


@pytest.mark.parametrize("override", ["data.num_frames=0", "data.height=-8", "data.batch_size=-1"])
def test_invalid_sizes_are_one_sentence_naming_the_key(override: str, tmp_path: Path) -> None:
    result = run_cli("videogen", override, f"hydra.run.dir={tmp_path}", cwd=tmp_path)
    assert_one_sentence_error(result, override.split("=")[0])


def test_evaluate_bad_checkpoints_are_one_sentence_naming_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "missing.ckpt"
    assert_one_sentence_error(
        run_cli("videogen.evaluate", f"ckpt_path={missing}", cwd=tmp_path), str(missing)
    )
    not_a_checkpoint = tmp_path / "notes.txt"
    not_a_checkpoint.write_text("hello")
    assert_one_sentence_error(
        run_cli("videogen.evaluate", f"ckpt_path={not_a_checkpoint}", cwd=tmp_path),
        str(not_a_checkpoint),
        "not a Lightning checkpoint",
    )
    assert_one_sentence_error(run_cli("videogen.evaluate", cwd=tmp_path), "ckpt_path=")


def test_evaluate_names_the_task_of_a_checkpoint_without_a_run_config(tmp_path: Path) -> None:
    path = tmp_path / "bare.ckpt"
    torch.save(
        {"state_dict": {}, "videogen": {"task": "videogen.tasks.prediction.PredictionTask"}}, path
    )
    assert_one_sentence_error(
        run_cli("videogen.evaluate", f"ckpt_path={path}", cwd=tmp_path), "PredictionTask"
    )

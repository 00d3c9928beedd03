"""Mistakes a user makes on the command line: each is one sentence on stderr (what is wrong,
where, what to do) and exit status 2, before any work is wasted."""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.conftest import assert_ok, assert_one_sentence_error, run_cli
from tests.test_moving_mnist import write_sequences
from tests.test_video_data import write_kinetics
from tests.video_files import TINY_VIDEO_OVERRIDES
from videogen.config import refuse_renamed_groups
from videogen.data.synthetic import SyntheticVideoDataModule
from videogen.errors import ConfigError

pytestmark = pytest.mark.usefixtures("one_thread_per_cli_run")

KINETICS = ["data=kinetics", "data.num_classes=3", *TINY_VIDEO_OVERRIDES, "trainer=cpu"]


# --- a training split too small for one batch -------------------------------------------------


def test_a_training_split_smaller_than_one_batch_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "moving_mnist"
    root.mkdir()
    write_sequences(root / "mnist_test_seq.npy", count=14)
    run_dir = tmp_path / "run"
    result = run_cli(
        "videogen",
        "model=vptr_ae_tiny",
        "data=moving_mnist",
        f"data.root={root}",
        "data.train_size=10",  # the preset's batch is 16: not one full batch
        "data.val_size=2",
        "data.test_size=2",
        "trainer=cpu",
        f"hydra.run.dir={run_dir}",
        cwd=tmp_path,
    )
    assert_one_sentence_error(
        result, "data.train_size=10 clips", "no full batch of data.batch_size=16", "lower"
    )
    assert not (run_dir / "checkpoints").exists() and not (run_dir / "metrics.json").exists()


def test_a_dataset_on_disk_with_fewer_videos_than_a_batch_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "k400"
    write_kinetics(root, "csv_flat", per_class=1)  # 3 training videos
    result = run_cli(
        "videogen",
        *KINETICS,
        f"data.root={root}",
        "data.batch_size=4",
        f"hydra.run.dir={tmp_path / 'run'}",
        cwd=tmp_path,
    )
    assert_one_sentence_error(result, "train split's 3 clips", "data.batch_size=4")


def test_the_batch_check_counts_the_clips_of_each_process() -> None:
    def data_on(world_size: int, limit_train_batches: float = 1.0) -> SyntheticVideoDataModule:
        data = SyntheticVideoDataModule(train_size=10, val_size=2, test_size=2, batch_size=4)
        data.trainer = SimpleNamespace(
            world_size=world_size, limit_train_batches=limit_train_batches
        )
        return data

    data_on(2).setup("fit")  # 5 clips per process: one batch of 4
    with pytest.raises(
        ConfigError, match=r"no full batch of data\.batch_size=4 per process x 4 processes"
    ):
        data_on(4).setup("fit")
    data_on(4, limit_train_batches=0).setup("fit")  # no training asked for: nothing to refuse


# --- a renamed config group -----------------------------------------------------------------------


def test_the_old_scheduler_group_is_refused_naming_the_new_one(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    result = run_cli("videogen", "scheduler=constant", f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert_one_sentence_error(
        result, "the config group `scheduler` is now `lr_scheduler`: write lr_scheduler=constant."
    )
    assert not run_dir.exists()  # refused before Hydra made the run's folder


@pytest.mark.parametrize(
    ("override", "instead"),
    [
        ("+scheduler=constant", "+lr_scheduler=constant"),
        ("scheduler.warmup_epochs=1", "lr_scheduler.warmup_epochs=1"),
        ("~scheduler", "~lr_scheduler"),
        ("scheduler=constant,warmup_cosine", "lr_scheduler=constant,warmup_cosine"),
    ],
)
def test_every_form_of_the_old_group_name_is_refused(override: str, instead: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(f"now `lr_scheduler`: write {instead}.")):
        refuse_renamed_groups(["-m", override])


def test_the_new_group_and_other_keys_are_not_refused() -> None:
    refuse_renamed_groups(
        ["lr_scheduler=constant", "lr_scheduler.warmup_epochs=1", "-m", "hydra.job.name=scheduler"]
    )


# --- model overrides at evaluation ----------------------------------------------------------------


@pytest.fixture(scope="module")
def classifier_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A per-frame ViT trained for one step, tested with two views per video."""
    run_dir = tmp_path_factory.mktemp("classifier")
    result = run_cli(
        "videogen",
        "model=vit",
        "model.net.depth=1",
        "trainer=cpu",
        "trainer.max_steps=1",
        "trainer.limit_val_batches=1",
        "test_after_fit=false",
        "data.train_size=8",
        "data.val_size=4",
        "data.test_size=4",
        "data.test_views=2",
        "data.batch_size=4",
        f"hydra.run.dir={run_dir}",
        cwd=run_dir,
    )
    assert_ok(result)
    return run_dir / "checkpoints" / "last.ckpt"


def test_evaluate_applies_an_evaluation_option_of_the_model(
    classifier_checkpoint: Path, tmp_path: Path
) -> None:
    result = run_cli(
        "videogen.evaluate",
        f"ckpt_path={classifier_checkpoint}",
        "model.view_aggregation=mean_softmax",
        f"hydra.run.dir={tmp_path / 'softmax'}",
        cwd=tmp_path,
    )
    assert_ok(result)
    assert "model.view_aggregation=mean_softmax (from the command line)" in result.stdout
    metrics = json.loads((tmp_path / "softmax" / "metrics.json").read_text())
    assert metrics["test/views_per_video"] == 2
    # The value is checked like any other, which it could not be if it were ignored.
    result = run_cli(
        "videogen.evaluate",
        f"ckpt_path={classifier_checkpoint}",
        "model.view_aggregation=max",
        f"hydra.run.dir={tmp_path / 'max'}",
        cwd=tmp_path,
    )
    assert_one_sentence_error(result, "model.view_aggregation", "mean_softmax", "'max'")


@pytest.mark.parametrize("module", ["videogen.evaluate", "videogen.generate"])
def test_overriding_the_trained_network_is_refused_naming_what_may_change(
    module: str, classifier_checkpoint: Path, tmp_path: Path
) -> None:
    result = run_cli(
        module,
        f"ckpt_path={classifier_checkpoint}",
        "model.net.depth=4",
        "model.label_smoothing=0.1",
        f"hydra.run.dir={tmp_path}",
        cwd=tmp_path,
    )
    assert_one_sentence_error(
        result, "model.label_smoothing, model.net.depth cannot change", "model.view_aggregation"
    )
    assert not (tmp_path / "metrics.json").exists()


# --- model configs that do not fit the data ------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "fragments"),
    [
        (["data.num_frames=6"], ["data.num_frames=6 is not a multiple of 4", "tubelet_size"]),
        (["model.net.num_heads=5"], ["model.net.embed_dim=96", "model.net.num_heads=5"]),
        (
            ["model=vptr_ae_tiny", "data.height=30"],
            ["data.height=30", "model.net.num_downsampling=2", "multiples of 4"],
        ),
        (  # found at the first generated frame (the generator does not know the frame size)
            ["model=vid2vid_tiny", "data.height=30", "data.num_frames=2"],
            ["data.height=30", "model.net.num_downsampling=2", "divisible by 4"],
        ),
    ],
    ids=["tubelet", "heads", "autoencoder_size", "vid2vid_size"],
)
def test_model_configs_that_do_not_fit_name_the_keys(
    overrides: list[str], fragments: list[str], tmp_path: Path
) -> None:
    result = run_cli(
        "videogen",
        *overrides,
        "trainer=cpu",
        "trainer.fast_dev_run=true",
        "data.train_size=2",
        "data.val_size=2",
        "data.test_size=2",
        "data.batch_size=2",
        f"hydra.run.dir={tmp_path}",
        cwd=tmp_path,
    )
    assert_one_sentence_error(result, *fragments)


# --- Kinetics on disk ------------------------------------------------------------------------------


def test_a_missing_kinetics_split_folder_lists_the_folders_there(tmp_path: Path) -> None:
    root = tmp_path / "k400"
    write_kinetics(root, "csv_flat", per_class=1)
    (root / "val").rename(root / "clips_val")
    result = run_cli(
        "videogen",
        *KINETICS,
        f"data.root={root}",
        "trainer.fast_dev_run=true",
        f"hydra.run.dir={tmp_path / 'run'}",
        cwd=tmp_path,
    )
    assert_one_sentence_error(
        result,
        "no Kinetics val video folder",
        "looked for val, validate, valid",
        "annotations, clips_val, train",
        "data.split_dirs.val=",
    )


def test_kinetics_labels_beyond_the_classes_are_refused_at_setup(tmp_path: Path) -> None:
    root = tmp_path / "k400"
    write_kinetics(root, "list", per_class=1)
    lists = root / "train_list.txt"
    lists.write_text(lists.read_text().replace(" 2\n", " 7\n"))
    result = run_cli(
        "videogen",
        *KINETICS,
        f"data.root={root}",
        "trainer.fast_dev_run=true",
        f"hydra.run.dir={tmp_path / 'run'}",
        cwd=tmp_path,
    )
    assert_one_sentence_error(result, str(lists), "labels up to 7", "data.num_classes=3")

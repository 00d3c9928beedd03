"""Moving MNIST from a real-format `mnist_test_seq.npy`: items, splits, errors, and the CLI."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import assert_ok, assert_one_sentence_error, run_cli
from videogen.data.moving_mnist import MovingMNISTDataModule
from videogen.errors import ConfigError

NUM_SEQUENCES = 12
SPLIT_SIZES = {"train_size": 8, "val_size": 2, "test_size": 2}


def write_sequences(path: Path, count: int = NUM_SEQUENCES) -> np.ndarray:
    """A (20, count, 64, 64) uint8 file in which a bright square moves right, one pixel per frame.

    Each sequence starts its square on another row and writes its own number into pixel (0, 0),
    so that sequences can be told apart by their contents.
    """
    sequences = np.zeros((20, count, 64, 64), np.uint8)
    for n in range(count):
        for t in range(20):
            top = 4 * n % 56
            sequences[t, n, top : top + 8, t : t + 8] = 255
        sequences[:, n, 0, 0] = n + 1
    np.save(path, sequences)
    return sequences


@pytest.fixture
def mnist_root(tmp_path: Path) -> Path:
    root = tmp_path / "moving_mnist"
    root.mkdir()
    write_sequences(root / "mnist_test_seq.npy")
    return root


def make_datamodule(root: Path, **options) -> MovingMNISTDataModule:
    return MovingMNISTDataModule(root=str(root), **{**SPLIT_SIZES, **options})


def test_item_is_the_sequence_of_the_file(mnist_root: Path) -> None:
    sequences = np.load(mnist_root / "mnist_test_seq.npy")
    item = make_datamodule(mnist_root).dataset("val")[1]
    assert item["video"].dtype == torch.uint8 and item["video"].shape == (20, 1, 64, 64)
    assert int(item["video_index"]) == 9 and int(item["view_index"]) == 0
    assert torch.equal(item["video"][:, 0], torch.from_numpy(sequences[:, 9]))


def test_splits_are_disjoint_runs_in_file_order(mnist_root: Path) -> None:
    dm = make_datamodule(mnist_root)
    contents = {}
    for split, size in zip(("train", "val", "test"), SPLIT_SIZES.values(), strict=True):
        dataset = dm.dataset(split)
        assert len(dataset) == size
        contents[split] = {dataset[i]["video"].numpy().tobytes() for i in range(size)}
        assert len(contents[split]) == size
    assert not contents["train"] & contents["val"]
    assert not contents["train"] & contents["test"]
    assert not contents["val"] & contents["test"]
    test_ids = [int(dm.dataset("test")[i]["video"][0, 0, 0, 0]) - 1 for i in range(2)]
    assert test_ids == [10, 11], "the test split is the last sequences of the file"


def test_context_and_future_frames_make_the_clip(mnist_root: Path) -> None:
    dm = make_datamodule(mnist_root, context_frames=3, future_frames=2, num_frames=None)
    video = dm.dataset("train")[0]["video"]
    assert dm.num_frames == 5 and video.shape == (5, 1, 64, 64)
    columns = [int(video[t, 0, 6].nonzero().min()) for t in range(5)]  # square's left edge
    assert columns == [0, 1, 2, 3, 4], "the clip is the first frames, in order"


def test_other_sizes_are_resized(mnist_root: Path) -> None:
    video = make_datamodule(mnist_root, height=32, width=32).dataset("train")[0]["video"]
    assert video.shape == (20, 1, 32, 32) and video.dtype == torch.uint8
    assert int(video[0, 0, 1:3, 1:3].min()) > 200, "the square survives the resize"


def test_normalised_video_is_in_the_unit_range(mnist_root: Path) -> None:
    dm = make_datamodule(mnist_root, batch_size=4)
    batch = next(iter(dm.train_dataloader()))
    assert batch["video"].shape == (4, 20, 1, 64, 64)
    raw = batch["video"].clone()
    video = dm.on_after_batch_transfer(batch, 0)["video"]
    torch.testing.assert_close(video, raw.float() / 255)


def test_dataset_pickles_without_the_array(mnist_root: Path) -> None:
    dataset = make_datamodule(mnist_root).dataset("train")
    dataset[0]  # maps the file
    assert len(pickle.dumps(dataset)) < 5000, "workers must map the file, not receive a copy"
    assert torch.equal(pickle.loads(pickle.dumps(dataset))[3]["video"], dataset[3]["video"])


def test_missing_root_names_the_key_and_the_file(tmp_path: Path) -> None:
    for root in (tmp_path / "absent", tmp_path):
        with pytest.raises(ConfigError, match=r"data\.root=.*mnist_test_seq\.npy"):
            make_datamodule(root)


@pytest.mark.parametrize(
    "array",
    [np.zeros((20, 12, 64), np.uint8), np.zeros((20, 12, 64, 64), np.float32)],
    ids=["three_dims", "float"],
)
def test_wrong_array_says_what_was_expected(tmp_path: Path, array: np.ndarray) -> None:
    np.save(tmp_path / "mnist_test_seq.npy", array)
    with pytest.raises(ConfigError, match=r"expected uint8 of shape \(T, N, H, W\)"):
        make_datamodule(tmp_path)


def test_not_an_npy_file(tmp_path: Path) -> None:
    (tmp_path / "mnist_test_seq.npy").write_text("not an array")
    with pytest.raises(ConfigError, match="not a .npy array file"):
        make_datamodule(tmp_path)


@pytest.mark.parametrize(
    ("options", "key"),
    [
        ({"train_size": 10}, "data.train_size"),
        ({"num_frames": 20, "context_frames": 5, "future_frames": 5}, "data.num_frames"),
        ({"context_frames": 15, "future_frames": 10, "num_frames": None}, "data.context_frames"),
        ({"channels": 3, "mean": [0.0] * 3, "std": [1.0] * 3}, "data.channels"),
        ({"val_size": 0}, "data.val_size"),
    ],
)
def test_invalid_values_name_their_key(mnist_root: Path, options: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        make_datamodule(mnist_root, **options)


def test_cli_refuses_a_classifier_on_moving_mnist(mnist_root: Path, tmp_path: Path) -> None:
    result = run_cli(
        "videogen",
        "data=moving_mnist",
        f"data.root={mnist_root}",
        *(f"data.{key}={value}" for key, value in SPLIT_SIZES.items()),
        "trainer=cpu",
        f"hydra.run.dir={tmp_path / 'run'}",
        cwd=tmp_path,
    )
    assert_one_sentence_error(result, "'label'", "moving_mnist")


def test_cli_trains_the_vptr_autoencoder_one_step(mnist_root: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    result = run_cli(
        "videogen",
        "model=vptr_ae_tiny",
        "data=moving_mnist",
        f"data.root={mnist_root}",
        *(f"data.{key}={value}" for key, value in SPLIT_SIZES.items()),
        "data.batch_size=2",
        "trainer=cpu",
        "trainer.fast_dev_run=true",
        f"hydra.run.dir={run_dir}",
        cwd=tmp_path,
    )
    assert_ok(result)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    # One greyscale 64x64 frame summed over pixels: a finite error below the worst case.
    assert 0 < metrics["test/mse"] < 64 * 64
    assert 0 <= metrics["test/ssim"] <= 1

"""The synthetic bouncing-shapes data: contract, determinism, and that the label is the motion."""

from __future__ import annotations

import math

import numpy as np
import pytest
import pytorch_lightning as pl
import torch

from videogen.data.synthetic import (
    NUM_DIRECTIONS,
    SHAPE_CLASSES,
    SyntheticVideoDataModule,
    SyntheticVideoDataset,
)
from videogen.errors import ConfigError


def make_dataset(split: str = "train", size: int = 64, **options) -> SyntheticVideoDataset:
    defaults = dict(num_frames=8, height=32, width=32, channels=3, seed=0)
    defaults.update(options)
    return SyntheticVideoDataset(size, split=split, **defaults)


def test_item_follows_the_batch_contract() -> None:
    item = make_dataset()[3]
    assert item["video"].dtype == torch.uint8 and item["video"].shape == (8, 3, 32, 32)
    assert item["segmentation"].dtype == torch.int64 and item["segmentation"].shape == (8, 32, 32)
    assert item["instance"].shape == (8, 32, 32)
    assert item["label"].dtype == torch.int64 and 0 <= int(item["label"]) < NUM_DIRECTIONS
    assert int(item["video_index"]) == 3 and int(item["view_index"]) == 0
    assert set(item["segmentation"].unique().tolist()) <= {0, *SHAPE_CLASSES.values()}


def test_clips_are_deterministic_and_splits_differ() -> None:
    first, again = make_dataset()[5], make_dataset()[5]
    for key in first:
        assert torch.equal(first[key], again[key]), key
    assert not torch.equal(first["video"], make_dataset("test")[5]["video"])
    assert not torch.equal(first["video"], make_dataset(seed=1)[5]["video"])


def test_background_is_textured_and_static() -> None:
    item = make_dataset()[0]
    video, instance = item["video"].float(), item["instance"]
    background = instance == 0
    always_background = background.all(dim=0)  # pixels never covered by a shape
    assert always_background.sum() > 100
    pixels = video[:, :, always_background]  # T, C, N
    assert torch.equal(pixels[0], pixels[-1]), "background must not move"
    assert pixels[0].std() > 5, "background must be textured, not flat"


def test_a_plain_background_is_one_colour_and_keeps_the_moving_shape() -> None:
    textured, plain = make_dataset()[0], make_dataset(background="plain")[0]
    background = plain["instance"] == 0
    pixels = plain["video"].permute(1, 0, 2, 3)[:, background]  # C, N: every background pixel
    assert (pixels == pixels[:, :1]).all(), "a plain background has one colour"
    # The same draws otherwise: the label and where the shapes are do not change.
    assert int(plain["label"]) == int(textured["label"])
    assert torch.equal(plain["instance"], textured["instance"])


@pytest.mark.parametrize("num_frames", [4, 8, 16])
def test_label_is_the_direction_of_the_main_object(num_frames: int) -> None:
    dataset = make_dataset(size=80, num_frames=num_frames, height=48, width=48)
    seen = set()
    for index in range(len(dataset)):
        item = dataset[index]
        main = item["instance"] == 1
        assert main.flatten(1).any(dim=1).all(), "the main object is visible in every frame"
        ys, xs = torch.meshgrid(torch.arange(48.0), torch.arange(48.0), indexing="ij")
        centre = [(ys[m].mean(), xs[m].mean()) for m in (main[0], main[-1])]
        dy, dx = centre[1][0] - centre[0][0], centre[1][1] - centre[0][1]
        angle = math.atan2(-float(dy), float(dx)) % (2 * math.pi)  # image y points down
        label = int(item["label"])
        expected = 2 * math.pi * label / NUM_DIRECTIONS
        error = abs((angle - expected + math.pi) % (2 * math.pi) - math.pi)
        assert error < math.pi / NUM_DIRECTIONS, (
            f"clip {index}: label {label}, moved at {math.degrees(angle):.0f} deg"
        )
        seen.add(label)
    assert seen == set(range(NUM_DIRECTIONS))


def test_object_count_is_within_the_configured_range() -> None:
    dataset = make_dataset(size=60, min_objects=2, max_objects=3)
    counts = [int(dataset[i]["instance"].max()) for i in range(len(dataset))]
    assert set(counts) <= {2, 3} and len(set(counts)) == 2


def test_datamodule_normalises_on_the_device() -> None:
    dm = SyntheticVideoDataModule(
        train_size=8, val_size=8, test_size=8, batch_size=4, mean=[0.5] * 3, std=[0.25] * 3
    )
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["video"].dtype == torch.uint8 and batch["video"].shape == (4, 8, 3, 32, 32)
    raw = batch["video"].clone()
    out = dm.on_after_batch_transfer(batch, 0)
    assert out["video"].dtype == torch.float32
    expected = (raw.float() / 255 - 0.5) / 0.25
    torch.testing.assert_close(out["video"], expected)
    torch.testing.assert_close(dm.denormalize(out["video"]), raw.float() / 255)


class RangeProbe(pl.LightningModule):
    """A task that declares `pixel_range` and keeps the validation video it is given."""

    def __init__(self, pixel_range: str) -> None:
        super().__init__()
        self.pixel_range = pixel_range
        self.layer = torch.nn.Linear(1, 1)
        self.seen: list[torch.Tensor] = []

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self.seen.append(batch["video"])


@pytest.mark.parametrize(
    ("pixel_range", "expected"),
    [
        ("standardized", lambda raw: (raw / 255 - 0.5) / 0.25),
        ("unit", lambda raw: raw / 255),
        ("signed", lambda raw: raw / 127.5 - 1),
    ],
)
def test_a_trainer_delivers_video_in_the_range_its_task_declares(pixel_range, expected) -> None:
    dm = SyntheticVideoDataModule(
        train_size=4, val_size=4, test_size=4, batch_size=4, mean=[0.5] * 3, std=[0.25] * 3
    )
    task = RangeProbe(pixel_range)
    trainer = pl.Trainer(
        accelerator="cpu",
        limit_val_batches=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.validate(task, datamodule=dm, verbose=False)
    raw = next(iter(dm.val_dataloader()))["video"].float()
    (video,) = task.seen
    torch.testing.assert_close(video, expected(raw))
    torch.testing.assert_close(dm.to_unit_range(video, pixel_range), raw / 255)


@pytest.mark.parametrize(
    ("options", "key"),
    [
        ({"num_frames": 0}, "data.num_frames"),
        ({"height": -32}, "data.height"),
        ({"batch_size": 0}, "data.batch_size"),
        ({"train_size": -1}, "data.train_size"),
        ({"min_objects": 3, "max_objects": 1}, "data.min_objects"),
        ({"num_classes": 5}, "data.num_classes"),
        ({"background": "noise"}, "data.background"),
        ({"mean": [0.5]}, "data.mean"),
    ],
)
def test_invalid_values_name_their_key(options: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        SyntheticVideoDataModule(**options)


def test_every_direction_is_balanced_enough() -> None:
    labels = np.array([int(make_dataset(size=400)[i]["label"]) for i in range(400)])
    counts = np.bincount(labels, minlength=NUM_DIRECTIONS)
    assert counts.min() > 25, counts


def test_test_views_are_overlapping_clips_of_one_video() -> None:
    dataset = make_dataset(split="test", size=4, views=3, view_stride=2)
    assert len(dataset) == 12
    first, second = dataset[3], dataset[4]  # video 1, views 0 and 1
    assert int(first["video_index"]) == int(second["video_index"]) == 1
    assert (int(first["view_index"]), int(second["view_index"])) == (0, 1)
    assert int(first["label"]) == int(second["label"])
    torch.testing.assert_close(first["video"][2:], second["video"][:-2])  # shifted by the stride

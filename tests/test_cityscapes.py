"""Cityscapes sequences from a tiny tree in the real layout: clips, maps, index cache, errors, CLI."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image

from tests.conftest import assert_ok, assert_one_sentence_error, run_cli
from videogen.data import cityscapes
from videogen.data.cityscapes import LABEL_TO_TRAIN_ID, CityscapesSequenceDataModule
from videogen.errors import ConfigError

HEIGHT, WIDTH = 32, 64
# (split, city, seq, first frame): 6 consecutive frames each; frankfurt has two snippets in seq 0.
SNIPPETS = [
    ("train", "aachen", 0, 0),
    ("train", "aachen", 1, 10),
    ("train", "bochum", 3, 100),
    ("val", "frankfurt", 0, 0),
    ("val", "frankfurt", 0, 20),
]
SNIPPET_LENGTH = 6
UNLABELLED_FRAME = ("bochum", 3, 105)  # its label map is missing: the clips holding it are skipped
# Label ids by column band, and what they become: road (7) -> 0, car (26) -> 13, unlabeled -> 255.
ROAD, CAR, UNLABELED = slice(0, 16), slice(16, 32), slice(32, 64)


def write_png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def write_frame(root: Path, split: str, city: str, seq: int, frame: int, instances: bool) -> None:
    """One frame: red = frame number, green = seq, blue = column (so a flip shows); its maps."""
    stem = f"{city}_{seq:06d}_{frame:06d}"
    rgb = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    rgb[..., 0] = frame
    rgb[..., 1] = seq
    rgb[..., 2] = np.arange(WIDTH, dtype=np.uint8) * 4
    write_png(root / "leftImg8bit_sequence" / split / city / f"{stem}_leftImg8bit.png", rgb)
    maps = root / "gtFine_sequence" / split / city
    if (city, seq, frame) != UNLABELLED_FRAME:
        label_ids = np.zeros((HEIGHT, WIDTH), np.uint8)
        label_ids[:, ROAD], label_ids[:, CAR] = 7, 26
        write_png(maps / f"{stem}_gtFine_labelIds.png", label_ids)
    if instances:
        # Two cars (26 * 1000 + k) in the car band; road is stuff and keeps its bare class id.
        instance_ids = np.zeros((HEIGHT, WIDTH), np.uint16)
        instance_ids[:, ROAD] = 7
        instance_ids[:, 16:24], instance_ids[:, 24:32] = 26001, 26002
        write_png(maps / f"{stem}_gtFine_instanceIds.png", instance_ids)


@pytest.fixture
def cityscapes_root(tmp_path: Path) -> Path:
    """Train snippets with instance maps, val snippets without."""
    root = tmp_path / "cityscapes"
    for split, city, seq, first in SNIPPETS:
        for frame in range(first, first + SNIPPET_LENGTH):
            write_frame(root, split, city, seq, frame, instances=split == "train")
    return root


def make_datamodule(root: Path, **options) -> CityscapesSequenceDataModule:
    defaults = dict(num_frames=4, height=HEIGHT, width=WIDTH, flip=False, batch_size=2)
    return CityscapesSequenceDataModule(root=str(root), **{**defaults, **options})


def frame_numbers(item: dict) -> list[int]:
    return item["video"][:, 0, 0, 0].tolist()


def test_items_follow_the_batch_contract(cityscapes_root: Path) -> None:
    item = make_datamodule(cityscapes_root).dataset("train")[0]
    assert item["video"].dtype == torch.uint8 and item["video"].shape == (4, 3, HEIGHT, WIDTH)
    for key in ("segmentation", "instance"):
        assert item[key].dtype == torch.int64 and item[key].shape == (4, HEIGHT, WIDTH)
    assert item["video_index"].dtype == torch.int64 and item["view_index"].dtype == torch.int64


def test_train_clips_are_every_start_of_consecutive_frames(cityscapes_root: Path) -> None:
    dataset = make_datamodule(cityscapes_root).dataset("train")
    # 3 starts in each 6-frame snippet, less the bochum clip that holds the unlabelled frame.
    assert len(dataset) == 3 + 3 + 2
    clips = []
    for index in range(len(dataset)):
        item = dataset[index]
        frames = frame_numbers(item)
        assert frames == list(range(frames[0], frames[0] + 4)), "consecutive frames"
        clips.append((int(item["video"][0, 1, 0, 0]), frames[0]))  # (seq, first frame)
    assert clips == [(0, 0), (0, 1), (0, 2), (1, 10), (1, 11), (1, 12), (3, 100), (3, 101)]


def test_frame_stride_skips_frames(cityscapes_root: Path) -> None:
    dataset = make_datamodule(cityscapes_root, num_frames=3, frame_stride=2).dataset("train")
    assert frame_numbers(dataset[0]) == [0, 2, 4]
    assert [frame_numbers(dataset[i])[0] for i in range(len(dataset))] == [0, 1, 10, 11, 100]


def test_val_is_the_centre_clip_and_test_reads_the_val_folder(cityscapes_root: Path) -> None:
    dm = make_datamodule(cityscapes_root)
    val, test = dm.dataset("val"), dm.dataset("test")
    assert [frame_numbers(val[i]) for i in range(len(val))] == [[1, 2, 3, 4], [21, 22, 23, 24]]
    assert [int(val[i]["video_index"]) for i in range(len(val))] == [0, 1]
    assert len(test) == len(val)
    assert torch.equal(test[1]["video"], val[1]["video"])


def test_label_ids_become_train_ids(cityscapes_root: Path) -> None:
    segmentation = make_datamodule(cityscapes_root).dataset("val")[0]["segmentation"]
    assert (segmentation[:, :, ROAD] == 0).all()
    assert (segmentation[:, :, CAR] == 13).all()
    assert (segmentation[:, :, UNLABELED] == 255).all()


def test_train_id_table_is_the_cityscapes_one() -> None:
    evaluated = {7: 0, 8: 1, 11: 2, 21: 8, 23: 10, 24: 11, 26: 13, 31: 16, 33: 18}
    for label_id, train_id in evaluated.items():
        assert LABEL_TO_TRAIN_ID[label_id] == train_id
    for ignored in (0, 1, 6, 9, 10, 14, 15, 16, 18, 29, 30):
        assert LABEL_TO_TRAIN_ID[ignored] == 255
    assert sorted(set(LABEL_TO_TRAIN_ID[:34].tolist()) - {255}) == list(range(19))


def test_instance_ids_are_kept_and_stuff_is_zero(cityscapes_root: Path) -> None:
    instance = make_datamodule(cityscapes_root).dataset("train")[0]["instance"]
    assert (instance[:, :, 16:24] == 26001).all() and (instance[:, :, 24:32] == 26002).all()
    assert (instance[:, :, ROAD] == 0).all() and (instance[:, :, UNLABELED] == 0).all()


def test_missing_instance_maps_give_zeros_and_one_warning(
    cityscapes_root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    dm = make_datamodule(cityscapes_root)
    with caplog.at_level(logging.WARNING, logger=cityscapes.__name__):
        val = dm.dataset("val")
        dm.dataset("test")
    assert not val[0]["instance"].any()
    warnings = [r.getMessage() for r in caplog.records if "instanceIds" in r.getMessage()]
    assert len(warnings) == 1, warnings


def test_missing_label_maps_are_counted(
    cityscapes_root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger=cityscapes.__name__):
        make_datamodule(cityscapes_root).dataset("train")
    assert any("left out 1 clips" in r.getMessage() for r in caplog.records), caplog.text


def frame_path(root: Path, split: str, city: str, seq: int, frame: int) -> Path:
    stem = f"{city}_{seq:06d}_{frame:06d}"
    return root / "leftImg8bit_sequence" / split / city / f"{stem}_leftImg8bit.png"


def label_path(root: Path, split: str, city: str, seq: int, frame: int) -> Path:
    stem = f"{city}_{seq:06d}_{frame:06d}"
    return root / "gtFine_sequence" / split / city / f"{stem}_gtFine_labelIds.png"


def test_clips_with_unreadable_pngs_are_skipped_and_counted(cityscapes_root: Path) -> None:
    corrupt = frame_path(cityscapes_root, "train", "aachen", 0, 2)
    corrupt.write_bytes(b"not a png")
    truncated = label_path(cityscapes_root, "train", "aachen", 1, 12)
    truncated.write_bytes(truncated.read_bytes()[:60])
    dm = make_datamodule(cityscapes_root, max_bad_fraction=1.0)
    dm.setup("fit")
    bad, good = [], []
    for batch in dm.loader("train", shuffle=False):
        bad += [path for path, _ in batch["bad_videos"]]
        if "video" in batch:
            good += batch["video"][:, 0, 0, 0, 0].tolist()  # first frame numbers
    # Each file is in 3 of the 8 clips (4 frames from 6); the 2 bochum clips are untouched.
    assert sorted(bad) == sorted([str(corrupt)] * 3 + [str(truncated)] * 3)
    assert good == [100, 101]


def test_cli_skips_unreadable_pngs_and_stops_past_the_limit(
    cityscapes_root: Path, tmp_path: Path
) -> None:
    frame_path(cityscapes_root, "train", "aachen", 0, 2).write_bytes(b"not a png")
    args = [
        "videogen",
        "model=vptr_ae_tiny",
        "data=cityscapes",
        f"data.root={cityscapes_root}",
        "data.num_frames=4",
        f"data.height={HEIGHT}",
        f"data.width={WIDTH}",
        "data.batch_size=2",
        "data.num_workers=0",
        "trainer=cpu",
        "trainer.max_epochs=1",
        "trainer.limit_val_batches=1",
        "trainer.limit_test_batches=1",
    ]
    run_dir = tmp_path / "run"
    result = run_cli(*args, "data.max_bad_fraction=0.5", f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert_ok(result)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["train/skipped_videos"] == 3  # the clips holding the frame; 5 trained on
    result = run_cli(*args, f"hydra.run.dir={tmp_path / 'strict'}", cwd=tmp_path)
    assert_one_sentence_error(result, "of 8 train videos could not be read", "max_bad_fraction")


def test_flip_moves_the_maps_with_the_frames(cityscapes_root: Path) -> None:
    dm = make_datamodule(cityscapes_root, flip=True)
    dataset = dm.dataset("train")
    assert dataset.flip_probability == 0.5 and dm.dataset("val").flip_probability == 0.0
    dataset.flip_probability = 0.0
    plain = dataset[0]
    dataset.flip_probability = 1.0
    flipped = dataset[0]
    for key in ("video", "segmentation", "instance"):
        assert torch.equal(flipped[key], plain[key].flip(-1)), key
    assert (flipped["segmentation"][:, :, -16:] == 0).all(), "the road is now on the right"


def test_other_sizes_are_resized_with_nearest_maps(cityscapes_root: Path) -> None:
    item = make_datamodule(cityscapes_root, height=16, width=24).dataset("train")[0]
    assert item["video"].shape == (4, 3, 16, 24)
    assert item["segmentation"].shape == item["instance"].shape == (4, 16, 24)
    assert set(item["segmentation"].unique().tolist()) == {0, 13, 255}
    assert set(item["instance"].unique().tolist()) == {0, 26001, 26002}


def test_index_is_cached_and_reused(cityscapes_root: Path, monkeypatch) -> None:
    first = make_datamodule(cityscapes_root).dataset("train")
    assert (cityscapes_root / ".videogen_index_train.json").is_file()

    def no_scan(*args, **kwargs):
        raise AssertionError("the split was scanned again")

    monkeypatch.setattr(cityscapes, "scan_split", no_scan)
    again = make_datamodule(cityscapes_root, num_frames=2).dataset("train")
    assert again.snippets == first.snippets and len(again) == 5 + 5 + 4
    # A new file in a city folder makes the cache stale. The folder's time is moved on by hand
    # too, since a coarse filesystem clock may not have ticked since the fixture wrote it.
    write_frame(cityscapes_root, "train", "aachen", 7, 0, instances=False)
    city = cityscapes_root / "leftImg8bit_sequence" / "train" / "aachen"
    stat = city.stat()
    os.utime(city, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    with pytest.raises(AssertionError, match="scanned again"):
        make_datamodule(cityscapes_root).dataset("train")


def test_index_cache_folder_and_unwritable_cache(cityscapes_root: Path, tmp_path: Path) -> None:
    make_datamodule(cityscapes_root, index_cache=str(tmp_path / "cache")).dataset("val")
    assert (tmp_path / "cache" / "videogen_index_val.json").is_file()
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    dataset = make_datamodule(cityscapes_root, index_cache=str(blocker / "cache")).dataset("val")
    assert len(dataset) == 2, "an unwritable cache folder only skips caching"


def test_missing_root_names_the_key_and_the_layout(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as error:
        make_datamodule(tmp_path / "absent")
    message = str(error.value)
    assert "data.root" in message
    assert "leftImg8bit_sequence/{split}/{city}/*_leftImg8bit.png" in message


def test_a_split_without_frames_is_a_config_error(cityscapes_root: Path) -> None:
    dm = make_datamodule(cityscapes_root, test_split_dir="test")
    with pytest.raises(ConfigError, match=r"no Cityscapes frames found for the test split"):
        dm.dataset("test")


def test_clips_longer_than_the_snippets_are_a_config_error(cityscapes_root: Path) -> None:
    with pytest.raises(ConfigError, match=r"data\.num_frames"):
        make_datamodule(cityscapes_root, num_frames=7).dataset("val")


def test_cli_refuses_a_classifier_on_cityscapes(cityscapes_root: Path, tmp_path: Path) -> None:
    result = run_cli(
        "videogen",
        "data=cityscapes",
        f"data.root={cityscapes_root}",
        "data.num_frames=4",
        f"data.height={HEIGHT}",
        f"data.width={WIDTH}",
        "data.num_workers=0",
        "trainer=cpu",
        f"hydra.run.dir={tmp_path / 'run'}",
        cwd=tmp_path,
    )
    assert_one_sentence_error(result, "'label'", "cityscapes")


def test_cli_trains_the_vptr_autoencoder_on_cityscapes_clips(
    cityscapes_root: Path, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    result = run_cli(
        "videogen",
        "model=vptr_ae_tiny",
        "data=cityscapes",
        f"data.root={cityscapes_root}",
        "data.num_frames=4",
        f"data.height={HEIGHT}",
        f"data.width={WIDTH}",
        "data.batch_size=1",
        "data.num_workers=0",
        "trainer=cpu",
        "trainer.fast_dev_run=true",
        f"hydra.run.dir={run_dir}",
        cwd=tmp_path,
    )
    assert_ok(result)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert 0 < metrics["test/mse"] < 3 * HEIGHT * WIDTH


def test_vid2vid_trains_on_cityscapes_clips_and_generates_longer_videos(
    cityscapes_root: Path, tmp_path: Path
) -> None:
    data = [
        "data=cityscapes",
        f"data.root={cityscapes_root}",
        f"data.height={HEIGHT}",
        f"data.width={WIDTH}",
        "data.batch_size=1",
        "data.num_workers=0",
    ]
    run_dir = tmp_path / "run"
    result = run_cli(
        "videogen",
        "model=vid2vid_tiny",
        *data,
        "data.num_frames=3",
        "trainer=cpu",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=1",
        "trainer.limit_val_batches=1",
        "trainer.limit_test_batches=1",
        f"hydra.run.dir={run_dir}",
        cwd=tmp_path,
    )
    assert_ok(result)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert 0 < metrics["test/psnr"] < 60 and metrics["test/warp_error"] >= 0
    # Whole 6-frame snippets from a model trained on 3-frame clips: labels | output | truth.
    videos = tmp_path / "videos"
    result = run_cli(
        "videogen.generate",
        f"ckpt_path={run_dir / 'checkpoints' / 'best.ckpt'}",
        *data[1:],  # the run's data=cityscapes comes with the checkpoint; keys may change
        "data.num_frames=6",
        "num_videos=1",
        "formats=[mp4]",
        f"output_dir={videos}",
        f"hydra.run.dir={tmp_path / 'generate'}",
        cwd=tmp_path,
    )
    assert_ok(result)
    with av.open(str(videos / "example_000.mp4")) as container:
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    assert len(frames) == SNIPPET_LENGTH
    height, width = frames[0].shape[:2]
    assert abs(width - 3 * WIDTH * height // HEIGHT) <= 8, (height, width)


def test_vid2vid_label_panels_use_the_cityscapes_colours(tmp_path: Path) -> None:
    """Road and sky (train ids 0 and 10) get their official colours, also from the checkpoint
    alone; before, both were drawn black."""
    root = tmp_path / "cityscapes"
    for split, city in (("train", "aachen"), ("val", "frankfurt")):
        for frame in range(3):
            stem = f"{city}_000000_{frame:06d}"
            write_png(
                root / "leftImg8bit_sequence" / split / city / f"{stem}_leftImg8bit.png",
                np.full((HEIGHT, WIDTH, 3), 60 * frame, np.uint8),
            )
            label_ids = np.full((HEIGHT, WIDTH), 7, np.uint8)  # road on the left...
            label_ids[:, WIDTH // 2 :] = 23  # ...sky on the right
            write_png(
                root / "gtFine_sequence" / split / city / f"{stem}_gtFine_labelIds.png", label_ids
            )
    data = [
        f"data.root={root}",
        f"data.height={HEIGHT}",
        f"data.width={WIDTH}",
        "data.num_frames=2",
        "data.batch_size=1",
        "data.num_workers=0",
    ]
    run_dir = tmp_path / "run"
    result = run_cli(
        "videogen",
        "model=vid2vid_tiny",
        "data=cityscapes",
        *data,
        "trainer=cpu",
        "trainer.max_steps=1",
        "trainer.limit_val_batches=1",
        "test_after_fit=false",
        f"hydra.run.dir={run_dir}",
        cwd=tmp_path,
    )
    assert_ok(result)
    checkpoint = run_dir / "checkpoints" / "last.ckpt"
    stored = torch.load(checkpoint, map_location="cpu", weights_only=False)
    assert stored["hyper_parameters"]["palette"][10] == [70, 130, 180]
    videos = tmp_path / "videos"
    result = run_cli(
        "videogen.generate",
        f"ckpt_path={checkpoint}",
        "num_videos=1",
        "formats=[mp4]",
        "min_height=0",
        f"output_dir={videos}",
        f"hydra.run.dir={tmp_path / 'generate'}",
        cwd=tmp_path,
    )
    assert_ok(result)
    with av.open(str(videos / "example_000.mp4")) as container:
        frame = next(container.decode(video=0)).to_ndarray(format="rgb24").astype(int)
    road, sky = frame[HEIGHT // 2, WIDTH // 4], frame[HEIGHT // 2, 3 * WIDTH // 4]
    assert np.abs(road - (128, 64, 128)).max() <= 16, road  # labels | output | truth
    assert np.abs(sky - (70, 130, 180)).max() <= 16, sky

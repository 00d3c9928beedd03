"""The shared file-based data layer: decoding, clip sampling, transforms, Kinetics and SSv2 layouts,
and unreadable files that are skipped and counted without losing anything else."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch

from tests.conftest import assert_ok, run_cli
from tests.video_files import (
    TINY_VIDEO_OVERRIDES,
    frame_value,
    make_frames,
    truncate,
    write_frame_folder,
    write_video,
)
from videogen.data import sampling, transforms
from videogen.data.decode import (
    READERS,
    VideoDecodeError,
    check_decoder,
    decoder_order,
    installed,
    open_video,
    read_clip,
)
from videogen.data.kinetics import KineticsDataModule, clip_file_name
from videogen.data.ssv2 import SomethingSomethingV2DataModule
from videogen.errors import ConfigError, DataError

CLASSES = ["abseiling", "air drumming", "playing cards (magic)"]
SMALL = dict(
    num_frames=4, frame_stride=1, height=32, width=32, short_side=40, batch_size=2, num_workers=0
)


def brightness(clip: np.ndarray) -> list[int]:
    return [round(v) for v in clip.reshape(len(clip), -1).mean(axis=1)]


# --- decoding -------------------------------------------------------------------------------


@pytest.mark.parametrize(("codec", "suffix"), [("libx264", ".mp4"), ("libvpx-vp9", ".webm")])
def test_exact_frames_are_decoded(tmp_path: Path, codec: str, suffix: str) -> None:
    path = write_video(tmp_path / f"v{suffix}", make_frames(20), codec)
    clip = read_clip(path, [0, 7, 19, 7])
    assert clip.dtype == np.uint8 and clip.shape == (4, 48, 64, 3)
    assert brightness(clip) == pytest.approx([frame_value(t) for t in (0, 7, 19, 7)], abs=3)


def test_decode_time_resize_and_frame_folders(tmp_path: Path) -> None:
    video = write_video(tmp_path / "v.mp4", make_frames(6))
    assert read_clip(video, [1], short_side=24).shape == (1, 24, 32, 3)
    folder = write_frame_folder(tmp_path / "frames", make_frames(6))
    with open_video(folder) as reader:
        assert reader.num_frames == 6
        assert brightness(reader.get_batch([5, 2])) == [frame_value(5), frame_value(2)]


def test_unreadable_files_raise_a_typed_error_with_the_path(tmp_path: Path) -> None:
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    truncated = truncate(write_video(tmp_path / "cut.mp4", make_frames(20)))
    for path, reason in (
        (tmp_path / "missing.mp4", "does not exist"),
        (empty, "empty"),
        (truncated, "no decoder could open it"),
    ):
        with pytest.raises(VideoDecodeError, match=reason) as info:
            read_clip(path, [0, 1])
        assert info.value.path == str(path)


needs_torchcodec = pytest.mark.skipif(
    not installed("torchcodec"),
    reason="torchcodec (pip install 'videogen[torchcodec]') or FFmpeg's libraries are missing",
)


@needs_torchcodec
@pytest.mark.parametrize(
    ("codec", "suffix"), [("libx264", ".mp4"), ("mpeg4", ".avi"), ("libvpx-vp9", ".webm")]
)
@pytest.mark.parametrize("short_side", [None, 24])
def test_every_decoder_reads_the_same_frames(
    tmp_path: Path, codec: str, suffix: str, short_side: int | None
) -> None:
    """torchcodec, decord and PyAV, each alone: same frame count, shapes and pixels (the
    colour conversion and resize filters may differ by a few levels)."""
    path = write_video(tmp_path / f"v{suffix}", make_frames(20), codec)
    indices = [0, 7, 19, 7, 3]
    clips = {}
    for name, reader_cls in READERS.items():
        try:
            reader = reader_cls(str(path), short_side)
        except Exception:
            assert name == "decord" and suffix == ".webm"  # decord cannot open some VP9
            continue
        with reader:
            assert reader.num_frames == 20, name
            clips[name] = reader.read(indices).astype(np.int16)
    assert "torchcodec" in clips and "pyav" in clips
    expected_shape = (5, 24, 32, 3) if short_side else (5, 48, 64, 3)
    for name, clip in clips.items():
        assert clip.shape == expected_shape, name
        assert brightness(clip) == pytest.approx([frame_value(t) for t in indices], abs=3), name
        assert np.abs(clip - clips["pyav"]).mean() < 3, name


@needs_torchcodec
def test_the_chosen_decoder_reads_first_and_others_catch_its_failures(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_video(tmp_path / "v.mp4", make_frames(6))
    with open_video(path, decoder="torchcodec") as reader:
        assert isinstance(reader, READERS["torchcodec"])
    with open_video(path) as reader:  # auto: the fastest installed first
        assert isinstance(reader, READERS[decoder_order("auto")[0]])

    def broken(self: object, path: str, short_side: int | None = None) -> None:
        raise RuntimeError("cannot open")

    monkeypatch.setattr(READERS["torchcodec"], "__init__", broken)
    with open_video(path, decoder="torchcodec") as reader:  # read all the same, by another
        assert not isinstance(reader, READERS["torchcodec"])
        assert brightness(reader.read([5])) == pytest.approx([frame_value(5)], abs=3)


def test_decoder_choice_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    assert check_decoder("auto") == "auto" and check_decoder("pyav") == "pyav"
    with pytest.raises(ConfigError, match="data.decoder='ffmpeg' is not one of auto, decord"):
        check_decoder("ffmpeg")
    monkeypatch.setattr("videogen.data.decode.installed", lambda name: name != "torchcodec")
    with pytest.raises(ConfigError, match=r"torchcodec cannot be imported here: pip install"):
        check_decoder("torchcodec")
    assert "torchcodec" not in decoder_order("auto")
    assert decoder_order("pyav") == ["pyav", "decord"]


@needs_torchcodec
def test_a_datamodule_reads_the_same_clips_with_each_decoder(tmp_path: Path) -> None:
    write_kinetics(tmp_path / "k", "list")
    videos = {}
    for decoder in ("decord", "torchcodec", "pyav"):
        module = KineticsDataModule(
            root=str(tmp_path / "k"), num_classes=3, decoder=decoder, **SMALL
        )
        module.setup("validate")
        videos[decoder] = torch.cat([b["video"] for b in module.val_dataloader()]).short()
    for decoder in ("torchcodec", "pyav"):
        assert videos[decoder].shape == videos["decord"].shape
        assert (videos[decoder] - videos["decord"]).abs().float().mean() < 3, decoder


# --- sampling and transforms -----------------------------------------------------------------


def test_clip_sampling_modes() -> None:
    rng = np.random.default_rng(0)
    assert sampling.centre_clip(20, 4, 2.0).tolist() == [6, 8, 10, 12]
    starts = {int(sampling.random_clip(20, 4, 2.0, rng)[0]) for _ in range(200)}
    assert starts == set(range(0, 14))
    views = sampling.multi_view_clips(20, 4, 2.0, num_clips=3)
    assert [v[0] for v in views] == [0, 6, 13] and all(
        np.diff(v).tolist() == [2, 2, 2] for v in views
    )
    assert sampling.centre_clip(3, 5, 1.0, "loop").tolist() == [0, 1, 2, 0, 1]
    assert sampling.centre_clip(3, 5, 1.0, "pad").tolist() == [0, 1, 2, 2, 2]
    # 30 fps video sampled at 10 fps: every third frame, whatever data.frame_stride says.
    assert sampling.centre_clip(30, 4, sampling.frame_step(1, 30.0, 10.0)).tolist() == [
        10,
        13,
        16,
        19,
    ]


def test_geometric_transforms_move_maps_with_the_frames() -> None:
    video = torch.zeros(2, 3, 8, 8, dtype=torch.uint8)
    video[:, :, :, :2] = 200  # a bright band on the left
    maps = (video[:, 0] > 0).long() * 5
    clip = transforms.horizontal_flip(
        {"video": video.clone(), "segmentation": maps.clone()}, np.random.default_rng(0), 1.0
    )
    assert clip["video"][0, 0, 0, -1] == 200 and clip["segmentation"][0, 0, -1] == 5
    resized = transforms.resize({"video": video.clone(), "segmentation": maps.clone()}, 16, 16)
    assert set(resized["segmentation"].unique().tolist()) == {0, 5}  # nearest: no blended ids
    crops = transforms.spatial_crops(
        {"video": torch.arange(10).repeat(1, 3, 4, 1).to(torch.uint8)}, 4, 3
    )
    assert [int(c["video"][0, 0, 0, 0]) for c in crops] == [0, 3, 6]  # left, centre, right


# --- Kinetics --------------------------------------------------------------------------------


def write_kinetics(root: Path, layout: str, per_class: int = 2) -> list[tuple[Path, int]]:
    """A tiny Kinetics in `layout` ('csv_flat', 'csv_folders', 'list' or 'folders'); returns (path, label)."""
    videos = []
    rows = {"train": [], "validate": []}
    for split, split_dir in (("train", "train"), ("validate", "val")):
        for label, name in enumerate(CLASSES):
            for k in range(per_class):
                file_name = clip_file_name(f"yt{label}{k}{split[0]}", 10 * k, 10 * k + 10)
                folder = (
                    root / split_dir / name
                    if layout in ("csv_folders", "folders")
                    else root / split_dir
                )
                path = write_video(folder / file_name, make_frames(8 + 2 * k, 40, 40))
                rows[split].append((name, file_name, k, path))
                videos.append((path, label))
    if layout.startswith("csv"):
        (root / "annotations").mkdir()
        for split, entries in rows.items():
            with (root / "annotations" / f"{split}.csv").open("w", newline="") as handle:
                writer = csv.writer(handle)
                writer.writerow(["label", "youtube_id", "time_start", "time_end", "split"])
                for name, file_name, k, _ in entries:
                    writer.writerow([name, file_name.split("_0")[0], 10 * k, 10 * k + 10, split])
    if layout == "list":
        for split, list_name in (("train", "train_list.txt"), ("validate", "val_list.txt")):
            lines = [f"{path.name} {CLASSES.index(name)}" for name, _, _, path in rows[split]]
            (root / list_name).write_text("\n".join(lines) + "\n")
    return videos


@pytest.mark.parametrize("layout", ["csv_flat", "csv_folders", "list", "folders"])
def test_kinetics_layouts_give_the_same_index(tmp_path: Path, layout: str) -> None:
    videos = write_kinetics(tmp_path, layout)
    dm = KineticsDataModule(str(tmp_path), num_classes=3, **SMALL)
    train = dm.samples("train")
    assert len(train) == 6 and {s.label for s in train} == {0, 1, 2}
    expected = {(str(p), label) for p, label in videos if "/train/" in str(p)}
    assert {(s.path, s.label) for s in train} == expected
    item = dm.dataset("val")[0]
    assert item["video"].shape == (4, 3, 32, 32) and item["video"].dtype == torch.uint8


def test_kinetics_index_is_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_kinetics(tmp_path, "csv_flat")
    first = KineticsDataModule(str(tmp_path), num_classes=3, **SMALL).samples("train")
    assert list((tmp_path / ".videogen_index").glob("*_train_*.json"))

    def no_rescan(*args, **kwargs):
        raise AssertionError("the index was rebuilt instead of read from the cache")

    monkeypatch.setattr(KineticsDataModule, "build_samples", no_rescan)
    assert KineticsDataModule(str(tmp_path), num_classes=3, **SMALL).samples("train") == first


def test_kinetics_val_videos_in_a_folder_named_like_the_csv_are_found(tmp_path: Path) -> None:
    write_kinetics(tmp_path, "csv_flat")
    (tmp_path / "val").rename(tmp_path / "validate")  # the split's name in the official CSV
    dm = KineticsDataModule(str(tmp_path), num_classes=3, **SMALL)
    val = dm.samples("val")
    assert len(val) == 6 and all(Path(s.path).parent.name == "validate" for s in val)
    assert all(Path(s.path).is_file() for s in val)
    assert dm.dataset("val")[0]["video"].shape == (4, 3, 32, 32)


def test_missing_kinetics_root_names_the_layout_and_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"does not exist: expected .*annotations.*data\.root="):
        KineticsDataModule(str(tmp_path / "nowhere"), num_classes=3, **SMALL).samples("train")
    write_kinetics(tmp_path, "csv_flat")
    with pytest.raises(ConfigError, match="data.num_classes=3"):
        KineticsDataModule(str(tmp_path), num_classes=400, **SMALL).samples("train")


def test_multi_view_test_items(tmp_path: Path) -> None:
    write_kinetics(tmp_path, "csv_flat", per_class=1)
    dm = KineticsDataModule(str(tmp_path), num_classes=3, test_clips=2, test_crops=3, **SMALL)
    test = dm.dataset("test")
    assert len(test) == 3 * 6
    items = [test[i] for i in range(len(test))]
    assert [int(i["video_index"]) for i in items] == [v for v in range(3) for _ in range(6)]
    assert [int(i["view_index"]) for i in items] == list(range(6)) * 3
    first_clip, second_clip = items[0]["video"], items[3]["video"]  # views 0 and 3: clips 0 and 1
    assert (
        brightness(first_clip.permute(0, 2, 3, 1).numpy())[0]
        < brightness(second_clip.permute(0, 2, 3, 1).numpy())[0]
    )


def test_bad_files_are_skipped_counted_and_nothing_else_is_lost(tmp_path: Path) -> None:
    videos = write_kinetics(tmp_path, "csv_flat", per_class=3)
    train = sorted(str(p) for p, _ in videos if "/train/" in str(p))
    Path(train[0]).write_bytes(b"")  # 0 bytes
    truncate(Path(train[1]))  # truncated mp4
    Path(train[2]).unlink()  # a CSV row whose file is missing
    dm = KineticsDataModule(
        str(tmp_path), num_classes=3, max_bad_fraction=0.5, **{**SMALL, "batch_size": 4}
    )
    dm.setup("fit")
    seen, bad = [], []
    for batch in dm.loader("train", shuffle=False):
        bad += [path for path, _ in batch["bad_videos"]]
        if "video" in batch:
            assert batch["video"].shape[0] == len(batch["video_index"])
            seen += batch["video_index"].tolist()
    index = dm.dataset("train").samples
    assert sorted(bad) == sorted(train[:3])
    good = [i for i, s in enumerate(index) if s.path not in train[:3]]
    assert sorted(seen) == good  # every good video exactly once

    dm.bad_videos.record("train", [(p, "x") for p in bad], 9, 9)
    assert dm.bad_videos.take_epoch("train") == (3, 9)
    strict = KineticsDataModule(str(tmp_path), num_classes=3, max_bad_fraction=0.1, **SMALL)
    with pytest.raises(DataError, match="3 of 9 train videos could not be read"):
        strict.bad_videos.record("train", [(p, "x") for p in bad], 9, 9)


def test_a_training_epoch_with_bad_files_completes_and_reports_them(tmp_path: Path) -> None:
    from videogen.callbacks.data_health import SkippedVideoReport
    from videogen.tasks.classification import ClassificationTask

    videos = write_kinetics(tmp_path, "csv_flat", per_class=2)
    train = sorted(str(p) for p, _ in videos if "/train/" in str(p))
    Path(train[0]).write_bytes(b"")
    truncate(Path(train[3]))
    net = {
        "_target_": "videogen.models.vit.FrameViT",
        "num_classes": 3,
        "img_size": 32,
        "patch_size": 8,
        "embed_dim": 16,
        "depth": 1,
        "num_heads": 2,
    }
    task = ClassificationTask(
        net=net, optimizer={"_target_": "torch.optim.AdamW", "_partial_": True, "lr": 1e-3}
    )
    dm = KineticsDataModule(str(tmp_path), num_classes=3, max_bad_fraction=0.5, **SMALL)
    trainer = pl.Trainer(
        max_epochs=1,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[SkippedVideoReport()],
        default_root_dir=tmp_path,
    )
    trainer.fit(task, datamodule=dm)
    assert trainer.callback_metrics["train/skipped_videos"] == 2
    assert trainer.global_step == 3  # 6 clips, batch 2: no batch was lost


def test_kinetics_trains_through_the_cli(tmp_path: Path) -> None:
    root = tmp_path / "k"
    write_kinetics(root, "csv_folders", per_class=1)
    result = run_cli(
        "videogen",
        "data=kinetics",
        f"data.root={root}",
        "data.num_classes=3",
        *TINY_VIDEO_OVERRIDES,
        "data.test_clips=2",
        "data.test_crops=1",
        "model=vivit_tiny",
        "trainer=cpu",
        "trainer.fast_dev_run=true",
        f"hydra.run.dir={tmp_path / 'run'}",
        cwd=tmp_path,
    )
    assert_ok(result)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["test/views_per_video"] == 2.0


# --- Something-Something-v2 --------------------------------------------------------------------


def write_ssv2(root: Path) -> None:
    templates = ["Putting something on something", "Pushing something from left to right"]
    (root / "something-something-v2-labels.json").parent.mkdir(parents=True, exist_ok=True)
    (root / "something-something-v2-labels.json").write_text(
        json.dumps({t: str(i) for i, t in enumerate(templates)})
    )
    bracketed = ["Putting [something] on [something]", "Pushing [something] from left to right"]
    for split, ids in (("train", [1, 2, 3, 4]), ("validation", [5, 6])):
        items = [
            {"id": str(i), "label": "x", "template": bracketed[i % 2], "placeholders": ["cup"]}
            for i in ids
        ]
        (root / f"something-something-v2-{split}.json").write_text(json.dumps(items))
        for i in ids:
            write_video(
                root / "20bn-something-something-v2" / f"{i}.webm",
                make_frames(8, 40, 56),
                "libvpx-vp9",
            )


def test_ssv2_labels_from_templates_and_webm_videos(tmp_path: Path) -> None:
    write_ssv2(tmp_path)
    dm = SomethingSomethingV2DataModule(str(tmp_path), num_classes=2, **SMALL)
    samples = dm.samples("train")
    assert [(Path(s.path).name, s.label) for s in samples] == [
        ("1.webm", 1),
        ("2.webm", 0),
        ("3.webm", 1),
        ("4.webm", 0),
    ]
    item = dm.dataset("val")[1]
    assert item["video"].shape == (4, 3, 32, 32) and int(item["label"]) == 0
    with pytest.raises(ConfigError, match="something-something-v2-labels.json"):
        SomethingSomethingV2DataModule(str(tmp_path / "none"), num_classes=2, **SMALL).samples(
            "train"
        )


def test_ssv2_trains_through_the_cli(tmp_path: Path) -> None:
    root = tmp_path / "ssv2"
    write_ssv2(root)
    result = run_cli(
        "videogen",
        "data=ssv2",
        f"data.root={root}",
        "data.num_classes=2",
        *TINY_VIDEO_OVERRIDES,
        "model=vivit_tiny",
        "trainer=cpu",
        "trainer.fast_dev_run=true",
        f"hydra.run.dir={tmp_path / 'run'}",
        cwd=tmp_path,
    )
    assert_ok(result)


@pytest.mark.parametrize("augment", ["rand_augment", "colour_jitter"])
def test_photometric_augmentations_draw_once_per_clip(augment: str) -> None:
    torch.manual_seed(1)
    rng = np.random.default_rng(1)
    frame = torch.randint(0, 256, (3, 16, 16), dtype=torch.uint8)
    clip = {"video": frame.unsqueeze(0).repeat(5, 1, 1, 1)}
    if augment == "rand_augment":
        out = transforms.rand_augment(clip, num_ops=2, magnitude=20)["video"]
    else:
        out = transforms.colour_jitter(clip, rng, 0.4, 0.4, 0.4)["video"]
    assert out.dtype == torch.uint8 and not torch.equal(out[0], frame)
    assert all(torch.equal(out[0], out[t]) for t in range(1, 5)), "every frame gets the same draw"


def test_changing_index_settings_rebuilds_the_cached_index(tmp_path: Path) -> None:
    write_ssv2(tmp_path)
    webm = SomethingSomethingV2DataModule(str(tmp_path), num_classes=2, **SMALL).samples("train")
    mp4 = SomethingSomethingV2DataModule(
        str(tmp_path), num_classes=2, video_suffix=".mp4", **SMALL
    ).samples("train")
    assert webm[0].path.endswith(".webm") and mp4[0].path.endswith(".mp4")


def test_training_clips_get_the_configured_photometric_augmentations(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_kinetics(tmp_path, "csv_flat", per_class=1)
    calls = []
    monkeypatch.setattr(transforms, "rand_augment", lambda clip, n, m: calls.append((n, m)) or clip)
    dm = KineticsDataModule(
        str(tmp_path), num_classes=3, rand_augment=[2, 20], colour_jitter=[0.5, 0.0, 0.0], **SMALL
    )
    plain = KineticsDataModule(str(tmp_path), num_classes=3, **SMALL)
    torch.manual_seed(0)
    jittered = dm.dataset("train")[0]["video"]
    torch.manual_seed(0)
    untouched = plain.dataset("train")[0]["video"]
    assert calls == [(2, 20)]
    assert not torch.equal(jittered, untouched)  # brightness jitter changed the clip


def test_the_crops_of_one_test_clip_share_one_decode(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from videogen.data import clips

    write_kinetics(tmp_path, "csv_flat", per_class=1)
    opened = []
    real_open = clips.open_video
    monkeypatch.setattr(
        clips, "open_video", lambda path, *a: opened.append(path) or real_open(path, *a)
    )
    test = KineticsDataModule(
        str(tmp_path), num_classes=3, test_clips=2, test_crops=3, **SMALL
    ).dataset("test")
    for index in range(len(test)):
        test[index]
    assert len(opened) == 3 * 2  # one decode per temporal clip, not per view


# --- loader workers ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("requested", "processes", "cores", "chosen"),
    [
        ("auto", 1, 2, 1),  # this machine: one core for the training loop, one worker
        ("auto", 1, 1, 0),  # a single core: load in the training process
        ("auto", 2, 16, 7),  # two processes share 16 cores
        ("auto", 1, 64, 8),  # capped
        (4, 1, 2, 2),  # more workers than cores is lowered to the cores
        (4, 1, 16, 4),  # a count that fits is kept
        (0, 4, 2, 0),
    ],
)
def test_worker_count_follows_the_machine(
    requested: int | str, processes: int, cores: int, chosen: int
) -> None:
    from videogen.data.base import choose_num_workers

    assert choose_num_workers(requested, processes, cores) == chosen


def test_worker_count_is_said_once_at_start(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from videogen.data.base import available_cores

    root = tmp_path / "kinetics"
    module = KineticsDataModule(root=str(root), **{**SMALL, "num_workers": "auto"})
    with caplog.at_level("INFO"):
        first, again = module.num_workers, module.num_workers
    assert first == again == max(0, min(8, available_cores() - 1))
    said = [r.getMessage() for r in caplog.records if "worker(s) per process" in r.getMessage()]
    assert len(said) == 1 and "data.num_workers=auto" in said[0], said


@pytest.mark.parametrize("value", [-1, "four", 2.5, True])
def test_a_bad_worker_count_is_refused(value: object) -> None:
    with pytest.raises(ConfigError, match="data.num_workers must be 'auto' or an integer"):
        KineticsDataModule(root="unused", **{**SMALL, "num_workers": value})

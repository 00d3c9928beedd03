"""The video generation datasets in their real on-disk layouts: UCF-101 (avi class folders and the
official split lists), SkyTimelapse (two levels of JPEG frame folders), Taichi-HD (mp4 files or
frame folders named like them), FaceForensics (frame folders) and any video folder, each read
through the shared clip machinery and trained on by a tiny Latte through the CLI."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from tests.conftest import assert_ok, run_cli
from tests.video_files import frame_value, make_frames, write_video
from videogen.data.decode import frame_files, frame_order, open_video
from videogen.data.ucf101 import UCF101DataModule
from videogen.data.video_folder import VideoFolderDataModule
from videogen.errors import ConfigError

pytestmark = pytest.mark.usefixtures("one_thread_per_cli_run")

SMALL = dict(
    num_frames=4,
    frame_stride=1,
    height=16,
    width=16,
    short_side=16,
    batch_size=2,
    num_workers=0,
    pin_memory=False,
)
UCF_CLASSES = ["ApplyEyeMakeup", "BandMarching", "HandstandPushups"]


def brightness(video: torch.Tensor) -> list[int]:
    """Mean value of each frame of a (T, C, H, W) clip."""
    return [round(float(v)) for v in video.float().flatten(1).mean(dim=1)]


def write_frames(folder: Path, values: list[int], name: str, suffix: str = ".jpg") -> Path:
    """One image per value (constant brightness), named `name.format(t)`."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for t, value in enumerate(values):
        image = np.full((24, 32, 3), value, np.uint8)
        Image.fromarray(image).save(folder / (name.format(t) + suffix), quality=95)
    return folder


def frame_values(first: int, count: int) -> list[int]:
    return [frame_value(t) for t in range(first, first + count)]


# --- UCF-101 -----------------------------------------------------------------------------------


def write_ucf101(parent: Path, lists_beside: bool = True) -> Path:
    """UCF-101/<Class>/v_<Class>_g0G_c01.avi for groups 1-3, and the official lists: fold k
    tests group k and trains on the others. Returns the UCF-101 folder."""
    videos = parent / "UCF-101"
    for name in UCF_CLASSES:
        for group in (1, 2, 3):
            # Frame t of group g has brightness frame_value(t + g): the clip tells its video.
            path = videos / name / f"v_{name}_g0{group}_c01.avi"
            write_video(path, make_frames(6 + group, 24, 32)[group:], codec="mpeg4", fps=25)
    lists = (parent if lists_beside else videos) / "ucfTrainTestlist"
    lists.mkdir(parents=True)
    # The official files have Windows line ends.
    (lists / "classInd.txt").write_text(
        "".join(f"{i} {name}\r\n" for i, name in enumerate(UCF_CLASSES, start=1))
    )
    for fold in (1, 2, 3):
        train, test = [], []
        for index, name in enumerate(UCF_CLASSES, start=1):
            for group in (1, 2, 3):
                entry = f"{name}/v_{name}_g0{group}_c01.avi"
                if group == fold:
                    test.append(f"{entry}\r\n")
                else:
                    train.append(f"{entry} {index}\r\n")
        (lists / f"trainlist0{fold}.txt").write_text("".join(train))
        (lists / f"testlist0{fold}.txt").write_text("".join(test))
    return videos


@pytest.fixture(scope="module")
def ucf_parent(tmp_path_factory: pytest.TempPathFactory) -> Path:
    parent = tmp_path_factory.mktemp("ucf")
    write_ucf101(parent)
    return parent


def ucf(root: Path, **options) -> UCF101DataModule:
    return UCF101DataModule(str(root), num_classes=3, **{**SMALL, **options})


def group_of(path: str) -> int:
    return int(Path(path).stem.split("_g0")[1][0])


@pytest.mark.parametrize("fold", [1, 2, 3])
def test_ucf101_fold_picks_the_lists_and_labels_come_from_class_ind(
    ucf_parent: Path, fold: int
) -> None:
    dm = ucf(ucf_parent / "UCF-101", fold=fold)
    train, test = dm.samples("train"), dm.samples("test")
    assert {group_of(s.path) for s in test} == {fold}
    assert {group_of(s.path) for s in train} == {1, 2, 3} - {fold}
    assert len(train) == 6 and dm.samples("val") == test
    # The test list has no labels: they come from classInd.txt by folder, 0-based.
    assert [(Path(s.path).parent.name, s.label) for s in test] == [
        (name, index) for index, name in enumerate(UCF_CLASSES)
    ]
    assert all(Path(s.path).is_file() for s in train + test)


def test_ucf101_items_root_forms_and_train_on_all(ucf_parent: Path) -> None:
    # root may be the folder that holds UCF-101/ and ucfTrainTestlist/.
    dm = ucf(ucf_parent, train_on="all")
    assert len(dm.samples("train")) == 9
    item = dm.dataset("val")[2]  # HandstandPushups, group 1
    assert item["video"].shape == (4, 3, 16, 16) and item["video"].dtype == torch.uint8
    assert int(item["label"]) == 2
    # A 7-frame avi of brightness frame_value(1..7): the centre clip holds its frames 1..4.
    assert brightness(item["video"]) == pytest.approx(frame_values(2, 4), abs=4)


def test_ucf101_split_lists_inside_the_video_folder(tmp_path: Path) -> None:
    videos = write_ucf101(tmp_path, lists_beside=False)
    assert len(ucf(videos).samples("train")) == 6


def test_ucf101_layout_mistakes_are_one_sentence_each(ucf_parent: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"data\.fold must be 1, 2 or 3 .* got 4\."):
        ucf(ucf_parent, fold=4)
    with pytest.raises(ConfigError, match=r"set data\.num_classes=3\."):
        UCF101DataModule(str(ucf_parent), num_classes=101, **SMALL).samples("train")
    with pytest.raises(ConfigError, match=r"no UCF-101 split lists: .*data\.list_dir="):
        ucf(ucf_parent / "UCF-101" / "ApplyEyeMakeup").samples("train")

    lists = tmp_path / "lists"
    lists.mkdir()
    for source in (ucf_parent / "ucfTrainTestlist").iterdir():
        (lists / source.name).write_bytes(source.read_bytes())
    (lists / "testlist02.txt").unlink()
    with pytest.raises(ConfigError, match=r"testlist02\.txt is missing \(data\.fold=2\)"):
        ucf(ucf_parent, fold=2, list_dir=str(lists)).samples("test")
    with (lists / "trainlist01.txt").open("a") as handle:
        handle.write("Juggling/v_Juggling_g01_c01.avi 4\r\n")
    with pytest.raises(ConfigError, match=r"trainlist01\.txt:7: 'Juggling/.*classInd\.txt"):
        ucf(ucf_parent, list_dir=str(lists)).samples("train")


# --- frame order -------------------------------------------------------------------------------


def test_frames_are_ordered_by_the_last_number_in_their_names(tmp_path: Path) -> None:
    names = ["v_frames_10.png", "v_frames_9.png", "v_frames_100.png", "cover.png", "0000001.png"]
    assert sorted(names, key=lambda n: frame_order(Path(n))) == [
        "0000001.png",
        "v_frames_9.png",
        "v_frames_10.png",
        "v_frames_100.png",
        "cover.png",
    ]
    folder = write_frames(tmp_path / "clip", frame_values(0, 12), "clip7_frames_{}", ".png")
    assert [p.name for p in frame_files(folder)][8:11] == [
        "clip7_frames_8.png",
        "clip7_frames_9.png",
        "clip7_frames_10.png",
    ]
    with open_video(folder) as reader:
        assert brightness(torch.from_numpy(reader.read([9, 10, 11])).permute(0, 3, 1, 2)) == [
            frame_value(t) for t in (9, 10, 11)
        ]


# --- SkyTimelapse ------------------------------------------------------------------------------


def write_sky(root: Path) -> dict[str, Path]:
    """sky_train/<video>/<video>_<k>/<video>_frames_<n:08d>.jpg, numbered across the video's
    clips as in the release; one clip too short for 4 frames and one with a corrupt frame."""
    folders = {}
    for split, video, k, first, count in (
        ("sky_train", "07U1fSrk9oI", 1, 0, 8),
        ("sky_train", "07U1fSrk9oI", 2, 8, 2),  # shorter than a clip
        ("sky_train", "0EkwXRD1oTw", 1, 0, 6),
        ("sky_train", "0EkwXRD1oTw", 2, 6, 4),  # gets a corrupt frame
        ("sky_test", "1kcmNPdvvUc", 1, 0, 5),
    ):
        name = f"{video}_frames_{{:08d}}"
        folder = root / split / video / f"{video}_{k}"
        folder.mkdir(parents=True)
        from PIL import Image

        for t in range(first, first + count):
            Image.fromarray(np.full((24, 32, 3), frame_value(t - first), np.uint8)).save(
                folder / (name.format(t + 1) + ".jpg"), quality=95
            )
        folders[f"{video}_{k}"] = folder
    broken = sorted(folders["0EkwXRD1oTw_2"].iterdir())[1]
    broken.write_bytes(broken.read_bytes()[:200])
    return folders


def test_sky_timelapse_two_level_frame_folders(
    tmp_path: Path, compose_train, caplog: pytest.LogCaptureFixture
) -> None:
    from hydra.utils import instantiate

    folders = write_sky(tmp_path)
    cfg = compose_train("data=sky_timelapse", f"data.root={tmp_path}", "data.max_bad_fraction=0.5")
    assert cfg.data.short_video == "drop" and cfg.data.num_frames == 16
    dm = instantiate(cfg.data, **SMALL)
    with caplog.at_level(logging.INFO, logger="videogen.data.video_folder"):
        train = dm.samples("train")
    assert [Path(s.path).name for s in train] == ["07U1fSrk9oI_1", "0EkwXRD1oTw_1", "0EkwXRD1oTw_2"]
    assert "Dropped 1 of 4 train videos shorter than a clip of 4 frames" in caplog.text
    assert dm.samples("val")[0].path == str(folders["1kcmNPdvvUc_1"])

    item = dm.dataset("val")[0]
    assert "label" not in item and item["video"].shape == (4, 3, 16, 16)
    assert brightness(item["video"]) == pytest.approx(frame_values(0, 4), abs=3)

    dm.setup("fit")
    seen, bad = [], []
    for batch in dm.loader("train", shuffle=False):
        bad += [path for path, _ in batch["bad_videos"]]
        if "video" in batch:
            assert "label" not in batch and batch["video"].dtype == torch.uint8
            seen += batch["video_index"].tolist()
    assert bad == [str(folders["0EkwXRD1oTw_2"])] and sorted(seen) == [0, 1]


def test_short_clips_loop_unless_dropped(tmp_path: Path) -> None:
    write_sky(tmp_path)
    dm = VideoFolderDataModule(
        str(tmp_path), split_dirs={"train": "sky_train"}, short_video="loop", **SMALL
    )
    paths = [s.path for s in dm.samples("train")]
    short = paths.index(str(tmp_path / "sky_train" / "07U1fSrk9oI" / "07U1fSrk9oI_2"))
    assert len(paths) == 4  # the 2-frame clip is kept, and loops
    clip = dm.dataset("train")[short]["video"]
    assert brightness(clip) == pytest.approx([frame_value(t) for t in (0, 1, 0, 1)], abs=3)
    too_long = VideoFolderDataModule(
        str(tmp_path),
        split_dirs={"val": "sky_test"},
        short_video="drop",
        **{**SMALL, "num_frames": 6},
    )
    with pytest.raises(ConfigError, match=r"all 1 val videos .* shorter than a clip .*6 frames"):
        too_long.samples("val")


# --- Taichi-HD and FaceForensics ---------------------------------------------------------------


def write_taichi(root: Path) -> None:
    """train/ holds an mp4 file and a png-mode folder named like one; test/ one png folder."""
    write_video(root / "train" / "-5b0Pp6Lo#000000#000100.mp4", make_frames(10, 24, 32))
    write_frames(root / "train" / "2Fh0dPFYD4U#000120#000400.mp4", frame_values(0, 8), "{:07d}")
    write_frames(root / "test" / "aAxq3ChZJ9U#000010#000200.mp4", frame_values(0, 6), "{:07d}")


def test_taichi_video_files_and_folders_named_like_them(tmp_path: Path, compose_train) -> None:
    from hydra.utils import instantiate

    write_taichi(tmp_path)
    dm = instantiate(compose_train("data=taichi", f"data.root={tmp_path}").data, **SMALL)
    train = dm.samples("train")
    assert [(Path(s.path).name, Path(s.path).is_dir()) for s in train] == [
        ("-5b0Pp6Lo#000000#000100.mp4", False),
        ("2Fh0dPFYD4U#000120#000400.mp4", True),
    ]
    assert [Path(s.path).parent.name for s in dm.samples("val")] == ["test"]
    for item in (dm.dataset("train")[0], dm.dataset("train")[1]):  # random clips: frames in order
        steps = torch.tensor(brightness(item["video"])).diff()
        assert item["video"].shape == (4, 3, 16, 16) and ((steps - 10).abs() <= 3).all()
    test_item = dm.dataset("val")[0]  # 6 png frames in a folder named like an mp4: the centre 4
    assert brightness(test_item["video"]) == frame_values(1, 4)


def test_faceforensics_frame_folders_validate_on_the_training_videos(
    tmp_path: Path, compose_train
) -> None:
    from hydra.utils import instantiate

    for video in ("000", "001", "002"):
        write_frames(tmp_path / video, frame_values(0, 5), "{:03d}")
    dm = instantiate(compose_train("data=faceforensics", f"data.root={tmp_path}").data, **SMALL)
    assert [Path(s.path).name for s in dm.samples("train")] == ["000", "001", "002"]
    assert dm.samples("test") == dm.samples("train")
    assert len(dm.dataset("train")) == 3 and dm.dataset("train")[0]["video"].shape[0] == 4


# --- any video folder: class folders and list files --------------------------------------------


def write_classes(root: Path) -> None:
    write_video(root / "cats" / "a.mp4", make_frames(6, 24, 32))
    write_frames(root / "cats" / "b", frame_values(0, 6), "{}", ".png")
    write_video(root / "dogs" / "c.webm", make_frames(6, 24, 32), codec="libvpx-vp9")
    write_video(root / "birds" / "park" / "d.mp4", make_frames(6, 24, 32))  # deeper is fine
    (root / "train.txt").write_text("cats/a.mp4\ndogs/c.webm 2\nbirds/park/d.mp4\n")
    (root / "test.txt").write_text("cats/b\n")


def test_class_folders_and_list_files(tmp_path: Path) -> None:
    write_classes(tmp_path)
    folders = VideoFolderDataModule(str(tmp_path), num_classes=3, class_folders=True, **SMALL)
    assert [(Path(s.path).name, s.label) for s in folders.samples("train")] == [
        ("d.mp4", 0),
        ("a.mp4", 1),
        ("b", 1),
        ("c.webm", 2),
    ]
    listed = VideoFolderDataModule(
        str(tmp_path),
        num_classes=3,
        class_folders=True,
        train_list="train.txt",
        test_list="test.txt",
        **SMALL,
    )
    assert [(Path(s.path).name, s.label) for s in listed.samples("train")] == [
        ("a.mp4", 1),
        ("c.webm", 2),
        ("d.mp4", 0),
    ]
    item = listed.dataset("test")[0]
    assert int(item["label"]) == 1 and item["video"].shape == (4, 3, 16, 16)
    assert brightness(item["video"]) == frame_values(1, 4)  # PNG frames: exact

    with pytest.raises(ConfigError, match=r"in 3 class folders .* set data\.num_classes=3\."):
        VideoFolderDataModule(str(tmp_path), num_classes=5, class_folders=True, **SMALL).samples(
            "train"
        )
    with pytest.raises(ConfigError, match=r"data\.class_folders is false, so the videos have no"):
        VideoFolderDataModule(str(tmp_path), num_classes=3, **SMALL)
    with pytest.raises(ConfigError, match=r"missing\.txt \(data\.train_list\) does not exist"):
        VideoFolderDataModule(str(tmp_path), train_list="missing.txt", **SMALL).samples("train")
    with pytest.raises(ConfigError, match=r"no train folder .*sky_train: the folders in"):
        VideoFolderDataModule(str(tmp_path), split_dirs={"train": "sky_train"}, **SMALL).samples(
            "train"
        )


def test_unlabelled_folders_refuse_a_task_that_reads_labels(tmp_path: Path) -> None:
    write_classes(tmp_path)
    dm = VideoFolderDataModule(str(tmp_path), **SMALL)
    assert len(dm.samples("train")) == 4 and "label" not in dm.provides
    dm.trainer = SimpleNamespace(lightning_module=SimpleNamespace(requires={"video", "label"}))
    with pytest.raises(ConfigError, match=r"needs the batch keys \['label'\].*class_folders=true"):
        dm.setup("fit")
    # The classifier configs take data.num_classes (0 here): refused before anything is built.
    from videogen.tasks.classification import ClassificationTask

    with pytest.raises(ConfigError, match=r"at least 2 classes, got model\.net\.num_classes=0"):
        ClassificationTask(net={"_target_": "videogen.models.vit.FrameViT", "num_classes": 0})


# --- a tiny Latte trains on each layout through the CLI ----------------------------------------

TINY_LATTE = [
    "model=latte_tiny",
    "model.net.depth=2",
    "model.net.embed_dim=32",
    "model.sample_steps=2",
    "model.samples_per_class=2",
    "model.sample_batch_size=8",
    "trainer=cpu",
    "trainer.fast_dev_run=true",
    *(f"data.{key}={str(value).lower()}" for key, value in SMALL.items()),
]


@pytest.mark.parametrize("preset", ["ucf101", "sky_timelapse", "taichi", "faceforensics"])
def test_a_tiny_latte_trains_on_each_layout(tmp_path: Path, preset: str) -> None:
    root = tmp_path / "data"
    extra = []
    if preset == "ucf101":
        write_ucf101(root)
        extra = ["data.num_classes=3"]
    elif preset == "sky_timelapse":
        write_sky(root)
        extra = ["data.max_bad_fraction=0.5"]
    elif preset == "taichi":
        write_taichi(root)
    else:
        for video in ("000", "001"):
            write_frames(root / video, frame_values(0, 5), "{:03d}")
    run = tmp_path / "run"
    result = run_cli(
        "videogen",
        f"data={preset}",
        f"data.root={root}",
        *TINY_LATTE,
        *extra,
        f"hydra.run.dir={run}",
        cwd=tmp_path,
    )
    assert_ok(result)
    metrics = json.loads((run / "metrics.json").read_text())
    assert math.isfinite(metrics["train/loss"]) and math.isfinite(metrics["val/loss"])
    assert metrics["val/skipped_videos"] == 0  # the validation videos were found and read

"""`python -m videogen.prepare`: re-encode a dataset to a short side and short keyframe interval."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np

from tests.conftest import assert_ok, assert_one_sentence_error, run_cli
from tests.test_video_data import write_kinetics, write_ssv2
from videogen.data.kinetics import KineticsDataModule
from videogen.data.ssv2 import SomethingSomethingV2DataModule


def keyframe_gaps(path: Path) -> tuple[tuple[int, int], list[int]]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        size = (stream.codec_context.height, stream.codec_context.width)
        flags = [packet.is_keyframe for packet in container.demux(stream) if packet.size]
    keyframes = [i for i, key in enumerate(flags) if key]
    return size, [b - a for a, b in zip(keyframes, keyframes[1:], strict=False)]


def test_prepare_reencodes_resumably_and_the_result_trains(tmp_path: Path) -> None:
    root, out = tmp_path / "k400", tmp_path / "k400_small"
    write_kinetics(root, "csv_flat", per_class=2)
    args = [
        "videogen.prepare",
        "data=kinetics",
        f"data.root={root}",
        "data.num_classes=3",
        f"output_root={out}",
        "short_side=24",
        "keyframe_interval=3",
        f"hydra.run.dir={tmp_path / 'run'}",
    ]
    first = run_cli(*args, cwd=tmp_path)
    assert_ok(first)
    videos = sorted(out.rglob("*.mp4"))
    assert len(videos) == 12 and (out / "annotations" / "train.csv").is_file()
    (height, width), gaps = keyframe_gaps(videos[-1])
    assert (height, width) == (24, 24) and gaps and max(gaps) <= 3
    assert "encoded" in first.stdout

    videos[0].unlink()  # as if the first run had stopped before this file
    untouched = videos[1].stat().st_mtime_ns
    second = run_cli(*args, cwd=tmp_path)
    assert_ok(second)
    assert videos[0].is_file() and videos[1].stat().st_mtime_ns == untouched
    assert "11" in second.stdout  # 11 skipped as already done

    prepared = KineticsDataModule(
        str(out), num_classes=3, num_frames=4, frame_stride=1, height=16, width=16, short_side=24
    )
    item = prepared.dataset("train")[0]
    assert item["video"].shape == (4, 3, 16, 16)


def test_prepared_ssv2_is_read_with_the_mp4_suffix(tmp_path: Path) -> None:
    root, out = tmp_path / "ssv2", tmp_path / "ssv2_mp4"
    write_ssv2(root)
    result = run_cli(
        "videogen.prepare",
        "data=ssv2",
        f"data.root={root}",
        "data.num_classes=2",
        f"output_root={out}",
        "short_side=32",
        f"hydra.run.dir={tmp_path / 'run'}",
        cwd=tmp_path,
    )
    assert_ok(result)
    dm = SomethingSomethingV2DataModule(
        str(out),
        num_classes=2,
        video_suffix=".mp4",
        num_frames=4,
        frame_stride=1,
        height=32,
        width=32,
        short_side=32,
    )
    assert all(Path(s.path).is_file() for s in dm.samples("train"))


def write_video_that_fails_late(path: Path, good_frames: int = 40) -> None:
    """An MJPEG video (in an AVI container, whatever the suffix) whose frames after
    `good_frames` are garbage: it opens and decodes, and the decoder fails only once the
    re-encoded output has been begun."""
    frames = path.with_name("frames.avi")
    with av.open(str(frames), "w", format="avi") as out:
        stream = out.add_stream("mjpeg", rate=12)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuvj420p"
        for t in range(good_frames + 8):
            image = np.full((48, 64, 3), 5 * t % 256, np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    with av.open(str(frames)) as source, av.open(str(path), "w", format="avi") as out:
        stream = out.add_stream_from_template(source.streams.video[0])
        for number, packet in enumerate(source.demux(source.streams.video[0])):
            if packet.dts is None:
                continue
            if number >= good_frames:
                garbage = av.Packet(b"garbage!" * 32)
                garbage.pts, garbage.dts, garbage.time_base = (
                    packet.pts,
                    packet.dts,
                    packet.time_base,
                )
                packet = garbage
            packet.stream = stream
            out.mux(packet)
    frames.unlink()


def test_failed_files_make_prepare_exit_non_zero_and_leave_no_partial_output(
    tmp_path: Path,
) -> None:
    root, out = tmp_path / "k400", tmp_path / "k400_small"
    write_kinetics(root, "csv_flat", per_class=1)
    broken = sorted((root / "train").glob("*.mp4"))[0]
    write_video_that_fails_late(broken)
    result = run_cli(
        "videogen.prepare",
        "data=kinetics",
        f"data.root={root}",
        "data.num_classes=3",
        f"output_root={out}",
        "short_side=24",
        f"hydra.run.dir={tmp_path / 'run'}",
        cwd=tmp_path,
    )
    assert_one_sentence_error(result, "1 of 6 videos could not be re-encoded", "run prepare again")
    assert f"Could not re-encode {broken}" in result.stdout + result.stderr
    written = sorted(p.relative_to(out) for p in out.rglob("*.mp4"))
    expected = sorted(p.relative_to(root) for p in root.rglob("*.mp4") if p != broken)
    assert written == expected and len(written) == 5
    assert not [p for p in out.rglob("*") if p.name.endswith(".partial")]

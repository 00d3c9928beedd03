"""`python -m videogen.prepare data=kinetics data.root=...`: re-encode a dataset for fast, exact seeking.
(`python -m videogen.prepare latents ...` makes a latent cache instead: videogen/cache_latents.py.)

Each video becomes H.264 with its short side at `short_side` and a keyframe every
`keyframe_interval` frames (what mmaction2 recommends for decord's exact frame access), under
`output_root` with the same relative path (suffix .mp4); annotation files are copied alongside.
The run is resumable: finished files are skipped, and each file is written under a temporary
name in its folder and renamed when complete, so a killed run leaves no half-written video
behind and a failed file leaves nothing. Files that fail (an unreadable source, a full disk)
are reported one by one, and the run then exits with status 2 and their count.
Afterwards train with `data.root=<output_root>`.
"""

from __future__ import annotations

import logging
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import av
import hydra
from omegaconf import DictConfig
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from videogen.config import CONFIG_DIR
from videogen.data.clips import VideoFileDataModule
from videogen.data.decode import scaled_size
from videogen.errors import ConfigError, DataError
from videogen.utils.build import build_datamodule
from videogen.utils.cli import print_metrics, report_user_errors

log = logging.getLogger(__name__)


@contextmanager
def written_atomically(target: Path) -> Iterator[Path]:
    """The temporary path to write `target` under, in the same folder (so renaming is atomic):
    renamed to `target` when the block completes, removed if it raises."""
    partial = target.with_name(target.name + ".partial")
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        yield partial
        partial.replace(target)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def file_progress() -> Progress:
    """The progress bar of the prepare commands: description, bar, done / total, time left."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
    )


def reencode(source: Path, target: Path, short_side: int, keyframe_interval: int, crf: int) -> None:
    """Decode `source` and write it to `target` as H.264 mp4 with the given size and keyframes;
    a failure leaves no file behind and raises."""
    with written_atomically(target) as partial:
        encode_to(source, partial, short_side, keyframe_interval, crf)


def copy_file(source: Path, target: Path) -> None:
    """Copy `source` to `target` through a temporary name; no partial copy is left behind."""
    try:
        with written_atomically(target) as partial:
            shutil.copy2(source, partial)
    except OSError as error:
        raise DataError(
            f"could not write {target} ({error.strerror or error}): check that output_root is "
            "writable and has free space."
        ) from error


def encode_to(source: Path, path: Path, short_side: int, keyframe_interval: int, crf: int) -> None:
    """The encoding of `reencode`, written to `path`."""
    with av.open(str(source)) as reader, av.open(str(path), mode="w", format="mp4") as writer:
        in_stream = reader.streams.video[0]
        rate = in_stream.average_rate or 30
        out_stream = None
        for frame in reader.decode(in_stream):
            if out_stream is None:
                height, width = scaled_size(frame.height, frame.width, short_side)
                out_stream = writer.add_stream("libx264", rate=rate)
                out_stream.width, out_stream.height = (
                    width - width % 2,
                    height - height % 2,
                )  # yuv420p needs even sizes
                out_stream.pix_fmt = "yuv420p"
                out_stream.gop_size = keyframe_interval
                out_stream.options = {
                    "crf": str(crf),
                    "preset": "veryfast",
                    "keyint_min": str(keyframe_interval),
                }
            frame = frame.reformat(
                width=out_stream.width, height=out_stream.height, format="yuv420p"
            )
            for packet in out_stream.encode(frame):
                writer.mux(packet)
        if out_stream is None:
            raise ValueError("no video frames")
        for packet in out_stream.encode():
            writer.mux(packet)


def prepare(cfg: DictConfig) -> dict[str, float]:
    datamodule = build_datamodule(cfg)
    if not isinstance(datamodule, VideoFileDataModule):
        raise ConfigError(
            f"prepare re-encodes video files; data={type(datamodule).__name__} has none to re-encode."
        )
    root, output_root = datamodule.root.resolve(), Path(cfg.output_root).resolve()
    if output_root == root:
        raise ConfigError(
            "output_root must differ from data.root: prepare never overwrites the originals."
        )
    videos: dict[Path, Path] = {}
    for split in datamodule.splits:
        for path in datamodule.annotation_files(split):
            copy_file(path, output_root / path.resolve().relative_to(root))
        for sample in datamodule.samples(split):
            source = Path(sample.path).resolve()
            relative = (
                source.relative_to(root) if source.is_relative_to(root) else Path(source.name)
            )
            videos[source] = output_root / relative.with_suffix(".mp4")

    counts = {"videos": len(videos), "encoded": 0, "skipped (already done)": 0, "failed": 0}
    with file_progress() as progress:
        task = progress.add_task("re-encoding", total=len(videos))
        for source, target in sorted(videos.items()):
            if target.is_file() and target.stat().st_size > 0:
                counts["skipped (already done)"] += 1
            else:
                try:
                    reencode(source, target, cfg.short_side, cfg.keyframe_interval, cfg.crf)
                    counts["encoded"] += 1
                except Exception as error:  # a bad source file is reported, not fatal
                    counts["failed"] += 1
                    log.warning(
                        "Could not re-encode %s (%s: %s)", source, type(error).__name__, error
                    )
            progress.advance(task)
    print_metrics({k: float(v) for k, v in counts.items()}, title=f"prepared {output_root}")
    if counts["failed"]:
        raise DataError(
            f"{counts['failed']} of {counts['videos']} videos could not be re-encoded into "
            f"{output_root} (each is named in a warning above, and none left a partial file): "
            "fix the sources or free space, then run prepare again, which skips finished files."
        )
    return counts


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="prepare")
def main(cfg: DictConfig) -> None:
    """Console entry point of `python -m videogen.prepare`."""
    with report_user_errors():
        prepare(cfg)


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="prepare_latents")
def latents_main(cfg: DictConfig) -> None:
    """`python -m videogen.prepare latents ...`: the latent cache of a dataset's training clips."""
    from videogen.cache_latents import make_latent_cache

    with report_user_errors():
        make_latent_cache(cfg)


if __name__ == "__main__":
    if sys.argv[1:2] == ["latents"]:
        del sys.argv[1]  # Hydra reads the overrides that follow
        latents_main()
    else:
        main()

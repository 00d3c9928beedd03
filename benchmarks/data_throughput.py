"""Clips/s through the whole data loader vs raw decord decoding of the same frames.

Writes a small Kinetics-style dataset of real h264 mp4 files (list-file layout) to a temporary
folder, then measures in one process:
- raw: decord.VideoReader(num_threads=1).get_batch(indices) for each video's centre clip;
- loader: the `val` DataLoader of KineticsDataModule (open, sample, decode, resize, crop,
  collate) over the same clips, with 0, 1 and 2 workers (decord), then with 0 workers and each
  other installed decoder (`data.decoder=torchcodec`, `pyav`).
The ratio loader(0 workers) / raw is the data layer's overhead on one worker (target >= 0.8).

    python -m benchmarks.data_throughput [--videos 32] [--frames 96] [--size 320x240]
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import decord
import numpy as np
import torch

from benchmarks.common import Table, fmt, synchronize
from videogen.data import sampling
from videogen.data.decode import installed
from videogen.data.kinetics import KineticsDataModule


def write_dataset(root: Path, videos: int, frames: int, width: int, height: int) -> list[Path]:
    import av

    paths = []
    rng = np.random.default_rng(0)
    (root / "val").mkdir(parents=True)
    for i in range(videos):
        path = root / "val" / f"video{i:03d}.mp4"
        with av.open(str(path), mode="w") as container:
            stream = container.add_stream("libx264", rate=25)
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            stream.gop_size = 12  # a short keyframe interval, as `prepare` would write
            base = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
            for t in range(frames):
                image = np.roll(base, shift=2 * t, axis=1)  # moving texture: real compression work
                for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
        paths.append(path)
    (root / "val_list.txt").write_text("".join(f"{p.name} {i % 5}\n" for i, p in enumerate(paths)))
    (root / "train_list.txt").write_text((root / "val_list.txt").read_text())
    return paths


def raw_decode(paths: list[Path], num_frames: int, stride: int) -> float:
    start = time.perf_counter()
    for path in paths:
        reader = decord.VideoReader(str(path), num_threads=1)
        indices = sampling.centre_clip(len(reader), num_frames, float(stride))
        reader.get_batch(indices.tolist()).asnumpy()
        del reader
    return len(paths) / (time.perf_counter() - start)


@contextlib.contextmanager
def dataset_folder(args: argparse.Namespace) -> Iterator[Path]:
    """A temporary folder holding the benchmark's videos (`write_dataset`)."""
    width, height = (int(v) for v in args.size.split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        write_dataset(Path(tmp), args.videos, args.frames, width, height)
        yield Path(tmp)


def loader_speed(
    root: Path,
    workers: int | str,
    args: argparse.Namespace,
    decoder: str = "decord",
    pin_memory: bool = False,
    device: str = "cpu",
) -> float:
    """Clips/s of the `val` loader; with a CUDA `device`, each batch is also copied there."""
    dm = KineticsDataModule(
        str(root),
        decoder=decoder,
        pin_memory=pin_memory,
        num_classes=5,
        num_frames=args.num_frames,
        frame_stride=args.stride,
        height=224,
        width=224,
        short_side=args.short_side,
        batch_size=4,
        num_workers=workers,
        index_cache_dir=str(root / "cache"),
    )
    dm.setup("validate")
    loader = dm.val_dataloader()
    target = torch.device(device)
    start = time.perf_counter()
    clips = 0
    for batch in loader:
        clips += len(batch["video_index"])
        if target.type != "cpu":
            batch["video"].to(target, non_blocking=pin_memory)
    synchronize(target)
    return clips / (time.perf_counter() - start)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=32)
    parser.add_argument("--frames", type=int, default=96)
    parser.add_argument("--size", default="320x240")
    parser.add_argument("--num-frames", type=int, default=16)
    parser.add_argument("--stride", type=int, default=2)
    parser.add_argument("--short-side", type=int, default=240)
    return parser.parse_args(argv)


def table(args: argparse.Namespace | None = None) -> Table:
    """Raw decode and the loader with 0, 1 and 2 workers over the same clips, as a table."""
    args = args or parse([])
    width, height = (int(v) for v in args.size.split("x"))
    with dataset_folder(args) as root:
        paths = sorted((root / "val").glob("*.mp4"))
        raw_decode(paths[:4], args.num_frames, args.stride)  # warm the page cache
        raw = raw_decode(paths, args.num_frames, args.stride)
        rows = [["raw decord decode (1 thread)", fmt(raw, 1), "1.00x"]]
        for workers in (0, 1, 2):
            speed = loader_speed(root, workers, args)
            rows.append([f"loader, {workers} workers", fmt(speed, 1), f"**{speed / raw:.2f}x**"])
        for decoder in ("torchcodec", "pyav"):
            if not installed(decoder):
                rows.append([f"loader, 0 workers, data.decoder={decoder}", "not installed", ""])
                continue
            speed = loader_speed(root, 0, args, decoder)
            rows.append(
                [
                    f"loader, 0 workers, data.decoder={decoder}",
                    fmt(speed, 1),
                    f"**{speed / raw:.2f}x**",
                ]
            )
    return Table(
        "Data loader vs raw decode",
        ["pipeline", "clips/s", "ratio to raw"],
        rows,
        f"{args.videos} h264 videos of {width}x{height}, {args.frames} frames; clips of "
        f"{args.num_frames} frames at stride {args.stride}, resized to short side "
        f"{args.short_side} and centre-cropped to 224 (Kinetics datamodule, `val` loader). The "
        "0-worker ratio is the data layer's own overhead (target >= 0.8); the decoder rows "
        "read the same clips with torchcodec and with PyAV instead of decord (torchcodec target "
        ">= 0.9x decord's loader row).",
    )


def main() -> None:
    print(table(parse()).markdown())


if __name__ == "__main__":
    main()

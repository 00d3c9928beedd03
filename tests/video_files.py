"""Writing tiny real video datasets for the tests (h264 mp4, vp9 webm, PNG folders).

Frame t of every video has brightness 8 + 10 * t (before compression), so a test can tell which
frames a clip holds from their mean value.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from videogen.utils.video_io import write_video as save_video


def frame_value(t: int) -> int:
    return 8 + 10 * t


def make_frames(num_frames: int, height: int = 48, width: int = 64) -> np.ndarray:
    """(T, H, W, 3) uint8 frames of constant brightness frame_value(t), with a small mark."""
    frames = np.zeros((num_frames, height, width, 3), np.uint8)
    for t in range(num_frames):
        frames[t] = frame_value(t)
    return frames


def write_video(path: Path, frames: np.ndarray, codec: str = "libx264", fps: int = 12) -> Path:
    """Encode frames (T, H, W, 3) as mp4 (h264) or webm (vp9) with a keyframe every 4 frames."""
    return save_video(path, frames, fps=fps, codec=codec, keyframe_interval=4, crf=10)


def write_frame_folder(folder: Path, frames: np.ndarray) -> Path:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for t, image in enumerate(frames):
        Image.fromarray(image).save(folder / f"{t:06d}.png")
    return folder


def truncate(path: Path, keep: float = 0.3) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


# Overrides that shrink a file-based datamodule to the tiny datasets above (CLI runs on the CPU).
TINY_VIDEO_OVERRIDES = [
    "data.num_frames=4",
    "data.frame_stride=1",
    "data.height=32",
    "data.width=32",
    "data.short_side=36",
    "data.num_workers=0",
    "data.batch_size=2",
    "data.pin_memory=false",
]

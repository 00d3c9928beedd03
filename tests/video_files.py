"""Writing tiny real video datasets for the tests (h264 mp4, vp9 webm, PNG folders).

Frame t of every video has brightness 8 + 10 * t (before compression), so a test can tell which
frames a clip holds from their mean value.
"""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np


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
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.gop_size = 4
        if codec == "libx264":
            stream.options = {"crf": "10", "preset": "ultrafast"}
        for image in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


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

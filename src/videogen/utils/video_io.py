"""Writing videos: H.264 / VP9 through PyAV, animated GIF through Pillow."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np


def write_video(
    path: str | Path,
    frames: np.ndarray,
    fps: int = 4,
    codec: str = "libx264",
    keyframe_interval: int = 12,
    crf: int = 18,
) -> Path:
    """Encode uint8 frames (T, H, W, 3) as mp4/webm (`codec`), or as a GIF for a .gif path.

    H.264 needs even frame sizes, so odd sizes are padded by one black row/column.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".gif":
        from PIL import Image

        images = [Image.fromarray(frame) for frame in frames]
        images[0].save(
            path, save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0
        )
        return path
    pad_h, pad_w = frames.shape[1] % 2, frames.shape[2] % 2
    if pad_h or pad_w:
        frames = np.pad(frames, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)))
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.gop_size = keyframe_interval
        if codec == "libx264":
            stream.options = {"crf": str(crf), "preset": "ultrafast"}
        for image in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path

"""Writing videos: H.264 / VP9 through PyAV, animated GIF through Pillow; and the side-by-side
panel layout that `videogen.generate` and the sample-video callback show examples in."""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import av
import numpy as np
import torch
import torch.nn.functional as F

GAP = 2  # white pixels between panels
BORDER = 2  # red pixels around generated frames
RED = torch.tensor([1.0, 0.1, 0.1]).view(3, 1, 1)
INPUT_PANELS = ("truth", "labels", "clip", "real")  # shown as given, never marked as generated


def to_rgb(video: torch.Tensor) -> torch.Tensor:
    """(T, C, H, W) in [0, 1] with 1 or 3 channels -> (T, 3, H, W)."""
    return video.expand(-1, 3, -1, -1) if video.shape[1] == 1 else video[:, :3]


def mark_generated(video: torch.Tensor, first: int) -> torch.Tensor:
    """Draw a red border inside frames first.. of a (T, 3, H, W) video."""
    video = video.clone()
    red = RED.to(video)
    for edge in (
        (slice(None), slice(None, BORDER)),
        (slice(None), slice(-BORDER, None)),
        (slice(None, BORDER), slice(None)),
        (slice(-BORDER, None), slice(None)),
    ):
        video[first:, :, edge[0], edge[1]] = red
    return video


def upscale_factor(height: int, min_height: int) -> int:
    """The whole-number factor that enlarges frames of `height` to at least `min_height`."""
    return max(1, math.ceil(min_height / height))


def side_by_side(panels: dict[str, torch.Tensor], first_generated: int, scale: int) -> np.ndarray:
    """One example's panels (each (T, C, H, W) in [0, 1]) -> uint8 frames (T, H, W', 3)."""
    columns = []
    for name, video in panels.items():
        video = to_rgb(video.float().clamp(0, 1))
        if scale > 1:
            video = F.interpolate(video, scale_factor=scale, mode="nearest")
        if name not in INPUT_PANELS:
            video = mark_generated(video, first_generated)
        columns.append(video)
        columns.append(torch.ones_like(video[..., :GAP]))
    frames = torch.cat(columns[:-1], dim=-1)
    return (frames.permute(0, 2, 3, 1) * 255).round().byte().cpu().numpy()


def grid(clips: torch.Tensor, columns: int, scale: int) -> np.ndarray:
    """Clips (N, T, C, H, W) in [0, 1] tiled row by row, `columns` to a row, white gaps
    between them -> uint8 frames (T, H', W', 3)."""
    count, frames = clips.shape[:2]
    tiles = [to_rgb(clip.float().clamp(0, 1)) for clip in clips]
    if scale > 1:
        tiles = [F.interpolate(tile, scale_factor=scale, mode="nearest") for tile in tiles]
    blank = torch.ones_like(tiles[0])
    rows_of_tiles = math.ceil(count / columns)
    tiles += [blank] * (rows_of_tiles * columns - count)
    rows = []
    for row in range(rows_of_tiles):
        line = []
        for tile in tiles[row * columns : (row + 1) * columns]:
            line += [tile, torch.ones_like(tile[..., :GAP])]
        rows += [torch.cat(line[:-1], dim=-1)]
        rows += [torch.ones_like(rows[-1][..., :GAP, :])]
    video = torch.cat(rows[:-1], dim=-2)
    return (video.permute(0, 2, 3, 1) * 255).round().byte().cpu().numpy()


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


def encode_video(frames: np.ndarray, fps: int = 4, suffix: str = "gif") -> bytes:
    """The bytes of uint8 frames (T, H, W, 3) encoded as a `suffix` ("gif", "mp4") file."""
    with tempfile.TemporaryDirectory() as folder:
        return write_video(Path(folder) / f"video.{suffix}", frames, fps=fps).read_bytes()

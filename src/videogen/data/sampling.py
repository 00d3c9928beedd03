"""Which frames of a video make a clip: random (train), centre (val) and multi-view (test).

A clip is `num_frames` frames taken every `stride` frames. With `target_fps`, the stride is
measured in time instead (`video_fps / target_fps` source frames per clip frame), so clips span
the same duration whatever the video's frame rate. A video shorter than the clip is looped
(indices wrap around) or padded (the last frame repeats), never dropped.
"""

from __future__ import annotations

import numpy as np

SHORT_VIDEO_MODES = ("loop", "pad")


def frame_step(
    stride: int, video_fps: float | None = None, target_fps: float | None = None
) -> float:
    """Source frames between two clip frames."""
    if target_fps and video_fps:
        return video_fps / target_fps
    return float(stride)


def clip_span(num_frames: int, step: float) -> int:
    """Source frames covered by a clip of `num_frames` frames `step` apart."""
    return int(np.floor((num_frames - 1) * step)) + 1


def fit_to_video(indices: np.ndarray, video_frames: int, short_video: str = "loop") -> np.ndarray:
    """Map indices beyond the end of a short video back into it: wrap around, or hold the last frame."""
    if short_video == "loop":
        return np.mod(indices, video_frames)
    if short_video == "pad":
        return np.minimum(indices, video_frames - 1)
    raise ValueError(f"short_video must be one of {SHORT_VIDEO_MODES}, got {short_video!r}")


def clip_at(
    start: int, num_frames: int, step: float, video_frames: int, short_video: str = "loop"
) -> np.ndarray:
    """Indices of the clip that starts at source frame `start`."""
    indices = start + np.floor(np.arange(num_frames) * step).astype(np.int64)
    return fit_to_video(indices, video_frames, short_video)


def random_clip(
    video_frames: int,
    num_frames: int,
    step: float,
    rng: np.random.Generator,
    short_video: str = "loop",
) -> np.ndarray:
    """A clip starting at a uniformly random frame (training)."""
    last_start = max(video_frames - clip_span(num_frames, step), 0)
    return clip_at(
        int(rng.integers(0, last_start + 1)), num_frames, step, video_frames, short_video
    )


def centre_clip(
    video_frames: int, num_frames: int, step: float, short_video: str = "loop"
) -> np.ndarray:
    """The clip in the middle of the video (validation)."""
    start = max(video_frames - clip_span(num_frames, step), 0) // 2
    return clip_at(start, num_frames, step, video_frames, short_video)


def multi_view_clips(
    video_frames: int, num_frames: int, step: float, num_clips: int, short_video: str = "loop"
) -> list[np.ndarray]:
    """`num_clips` clips with starts spread evenly from the first to the last possible start (test)."""
    last_start = max(video_frames - clip_span(num_frames, step), 0)
    starts = np.linspace(0, last_start, num_clips) if num_clips > 1 else np.array([last_start / 2])
    return [clip_at(int(round(s)), num_frames, step, video_frames, short_video) for s in starts]

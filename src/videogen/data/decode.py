"""Reading frames from video files and frame folders, with one typed error for unreadable input.

Three decoders for files, chosen by `data.decoder`: torchcodec (PyTorch's decoder on the
system's FFmpeg libraries, an optional extra; exact seeks), decord (exact frame access with
`get_batch`) and PyAV (always installed, the slowest: it decodes from the start of the file);
each uses one thread per reader, opened per sample inside the worker. "auto" tries the installed
ones fastest first, and a file one decoder cannot open or decode (decord and some VP9 webm)
falls back to the next. A folder of
PNG/JPG frames reads through the same interface. Frames come back as uint8 (T, H, W, C) numpy
arrays.
"""

from __future__ import annotations

import abc
import functools
import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

import numpy as np

from videogen.errors import ConfigError, VideogenError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
VIDEO_SUFFIXES = (".mp4", ".webm", ".mkv", ".avi", ".mov")
log = logging.getLogger(__name__)
LAST_NUMBER = re.compile(r"(\d+)(?!.*\d)")


def frame_order(path: Path) -> tuple[int, int, str]:
    """Sort key of a frame file: the last number in its name, numerically (frame 10 after 9 even
    without zero padding, `sky_frames_00000046.jpg` by 46), then the name; unnumbered files last."""
    match = LAST_NUMBER.search(path.stem)
    return (0, int(match.group(1)), path.name) if match else (1, 0, path.name)


def frame_files(folder: Path) -> list[Path]:
    """The frame images (PNG/JPG) of a folder, in frame order."""
    return sorted(
        (p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES), key=frame_order
    )


class VideoDecodeError(VideogenError):
    """A video (or frame folder) that is missing, empty, truncated or undecodable."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"cannot read video {path}: {reason}")


class VideoReader(abc.ABC):
    """Random access to the frames of one video."""

    path: str
    short_side: int | None  # resized at decode time to this shorter side (None: as stored)
    num_frames: int
    fps: float
    # A fast decoder that opens a file it then cannot decode hands it to PyAV (see `read`).
    falls_back_to_pyav: ClassVar[bool] = False

    @abc.abstractmethod
    def get_batch(self, indices: Sequence[int]) -> np.ndarray:
        """Frames at `indices` as uint8 (len(indices), H, W, C)."""

    def read(self, indices: Sequence[int]) -> np.ndarray:
        """`get_batch`, with any decoder failure (a truncated file, say) as a VideoDecodeError.

        A file that opened but does not decode with a fast decoder (decord and some VP9 webm)
        is decoded again with PyAV before it counts as unreadable.
        """
        try:
            return self.get_batch(indices)
        except VideoDecodeError:
            raise
        except Exception as error:  # each backend raises its own types for a bad file
            if self.falls_back_to_pyav:
                log.debug(
                    "%s failed on %s (%s); decoding with PyAV",
                    type(self).__name__,
                    self.path,
                    error,
                )
                return PyAVReader(self.path, self.short_side, self.num_frames).read(indices)
            raise VideoDecodeError(
                self.path, f"decoding failed ({type(error).__name__}: {error})"[:300]
            ) from error

    def close(self) -> None:  # noqa: B027 - most readers hold nothing to release
        """Release the decoder (readers are opened per sample, so this runs after every clip)."""

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def scaled_size(height: int, width: int, short_side: int | None) -> tuple[int, int]:
    """(height, width) resized so that the shorter side is `short_side` (unchanged if None)."""
    if not short_side:
        return height, width
    scale = short_side / min(height, width)
    return max(round(height * scale), 1), max(round(width * scale), 1)


class DecordReader(VideoReader):
    """decord-backed reader; resizes at decode time when a short side is given."""

    falls_back_to_pyav = True

    def __init__(self, path: str, short_side: int | None = None) -> None:
        import decord

        self.path = path
        self.short_side = short_side
        reader = decord.VideoReader(path, num_threads=1)
        if short_side:
            height, width = reader[0].shape[:2]
            new_height, new_width = scaled_size(height, width, short_side)
            if (new_height, new_width) != (height, width):
                del reader
                reader = decord.VideoReader(path, num_threads=1, width=new_width, height=new_height)
        self.reader = reader
        self.num_frames = len(reader)
        if self.num_frames == 0:
            raise ValueError("no video frames")
        self.fps = float(reader.get_avg_fps() or 30.0)

    def get_batch(self, indices: Sequence[int]) -> np.ndarray:
        return self.reader.get_batch(list(indices)).asnumpy()

    def close(self) -> None:
        self.reader = None


class TorchCodecReader(VideoReader):
    """torchcodec-backed reader (exact seeks, one FFmpeg thread); resizes at decode time when a
    short side is given, as decord does."""

    falls_back_to_pyav = True

    def __init__(self, path: str, short_side: int | None = None) -> None:
        from torchcodec.decoders import VideoDecoder

        self.path = path
        self.short_side = short_side
        transforms = None
        if short_side:
            # The header's size is enough to plan the resize; "approximate" skips the scan.
            header = VideoDecoder(path, seek_mode="approximate").metadata
            size = (header.height, header.width)
            if scaled_size(*size, short_side) != size:
                from torchcodec.transforms import Resize

                transforms = [Resize(scaled_size(*size, short_side))]
        self.decoder = VideoDecoder(
            path, dimension_order="NHWC", num_ffmpeg_threads=1, transforms=transforms
        )
        metadata = self.decoder.metadata
        self.num_frames = len(self.decoder)
        if self.num_frames == 0:
            raise ValueError("no video frames")
        self.fps = float(metadata.average_fps or 30.0)

    def get_batch(self, indices: Sequence[int]) -> np.ndarray:
        return self.decoder.get_frames_at(list(indices)).data.numpy()

    def close(self) -> None:
        self.decoder = None


class PyAVReader(VideoReader):
    """PyAV fallback: decodes the stream once, keeping only the frames that are asked for."""

    def __init__(
        self, path: str, short_side: int | None = None, num_frames: int | None = None
    ) -> None:
        import av

        self.path = path
        self.short_side = short_side
        with av.open(path) as container:
            stream = container.streams.video[0]
            self.fps = float(stream.average_rate or 30.0)
            # The header's frame count is missing or wrong in some files: count by decoding,
            # unless the caller (decord, which indexed the file) already knows it.
            self.num_frames = num_frames or sum(1 for _ in container.decode(stream))
        if self.num_frames == 0:
            raise ValueError("no decodable video frames")

    def get_batch(self, indices: Sequence[int]) -> np.ndarray:
        import av

        wanted = set(indices)
        frames: dict[int, np.ndarray] = {}
        with av.open(self.path) as container:
            stream = container.streams.video[0]
            for index, frame in enumerate(container.decode(stream)):
                if index in wanted:
                    if self.short_side:
                        height, width = scaled_size(frame.height, frame.width, self.short_side)
                        frame = frame.reformat(width=width, height=height)
                    frames[index] = frame.to_ndarray(format="rgb24")
                if index >= max(wanted):
                    break
        missing = wanted - frames.keys()
        if missing:
            raise VideoDecodeError(self.path, f"frames {sorted(missing)[:5]} could not be decoded")
        return np.stack([frames[i] for i in indices])


class FrameFolderReader(VideoReader):
    """A folder of frame images (PNG/JPG), in the order of the last number in their names, read
    as a video."""

    def __init__(self, path: str, short_side: int | None = None, fps: float = 30.0) -> None:
        self.path = path
        self.short_side = short_side
        self.files = frame_files(Path(path))
        if not self.files:
            raise VideoDecodeError(path, "the folder holds no PNG/JPG frames")
        self.num_frames = len(self.files)
        self.fps = fps

    def get_batch(self, indices: Sequence[int]) -> np.ndarray:
        from PIL import Image

        frames = []
        for index in indices:
            with Image.open(self.files[index]) as image:
                image = image.convert("RGB")
                if self.short_side:
                    height, width = scaled_size(image.height, image.width, self.short_side)
                    image = image.resize((width, height), Image.BILINEAR)
                frames.append(np.asarray(image))
        return np.stack(frames)


READERS: dict[str, type[VideoReader]] = {
    "decord": DecordReader,
    "torchcodec": TorchCodecReader,
    "pyav": PyAVReader,
}
# "auto" tries the installed decoders in this order, the fastest first: through the Kinetics
# loader (benchmarks/data_throughput.py, 2-core AMD EPYC, h264 320x240, 16-frame clips) torchcodec
# read 28.6 clips/s, decord 14.3, PyAV 12.3 (it decodes every frame up to the last one asked for).
AUTO_ORDER = ("torchcodec", "decord", "pyav")
DECODERS = ("auto", *READERS)


@functools.cache
def installed(decoder: str) -> bool:
    """Whether `decoder` imports here (torchcodec also needs FFmpeg's shared libraries)."""
    try:
        if decoder == "decord":
            import decord  # noqa: F401
        elif decoder == "torchcodec":
            import torchcodec

            # The import succeeds without FFmpeg (0.17, the extra's minimum) and says so here.
            if torchcodec.ffmpeg_major_version is None:
                return False
        else:
            import av  # noqa: F401
    except Exception:  # not installed, or broken (a missing shared library)
        return False
    return True


def check_decoder(decoder: str) -> str:
    """`data.decoder` if it is known and installed; a ConfigError that says what to do if not."""
    if decoder not in DECODERS:
        raise ConfigError(
            f"data.decoder={decoder!r} is not one of {', '.join(DECODERS)}: pick one of them."
        )
    if decoder != "auto" and not installed(decoder):
        hint = {
            "torchcodec": "pip install 'videogen[torchcodec]' and FFmpeg's shared libraries "
            "(apt install ffmpeg)",
            "decord": "pip install decord",
            "pyav": "pip install av",
        }[decoder]
        raise ConfigError(
            f"data.decoder={decoder} but {decoder} cannot be imported here: {hint}, or set "
            "data.decoder=auto."
        )
    return decoder


def decoder_order(decoder: str = "auto") -> list[str]:
    """The decoders a file is tried with, in order: the chosen one, then the other installed
    ones fastest first (a file the chosen one cannot read is still read)."""
    preferred = [] if decoder == "auto" else [decoder]
    return preferred + [d for d in AUTO_ORDER if d not in preferred and installed(d)]


def open_video(
    path: str | Path, short_side: int | None = None, decoder: str = "auto"
) -> VideoReader:
    """Open a video file (with `decoder`, falling back to the other installed decoders) or a
    frame folder; raise VideoDecodeError if unreadable."""
    path = Path(path)
    if not path.exists():
        raise VideoDecodeError(path, "the file does not exist")
    if path.is_dir():
        return FrameFolderReader(str(path), short_side)
    if path.stat().st_size == 0:
        raise VideoDecodeError(path, "the file is empty (0 bytes)")
    errors = []
    for reader_cls in (READERS[name] for name in decoder_order(decoder)):
        try:
            return reader_cls(str(path), short_side)
        except VideoDecodeError:
            raise
        except Exception as error:  # each backend raises its own types for a bad file
            errors.append(f"{reader_cls.__name__}: {type(error).__name__}: {error}".strip()[:200])
    raise VideoDecodeError(path, "no decoder could open it (" + "; ".join(errors) + ")")


def read_clip(
    path: str | Path,
    indices: Sequence[int],
    short_side: int | None = None,
    decoder: str = "auto",
) -> np.ndarray:
    """Decode the frames at `indices` of one video as uint8 (T, H, W, C); the reader is released after."""
    with open_video(path, short_side, decoder) as reader:
        return reader.read(indices)

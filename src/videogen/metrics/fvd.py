"""A written-down Fréchet video distance: the protocol, the detector file it pins, and the
record a test run leaves behind.

FVD numbers of different codebases disagree mostly because of what happens before the Fréchet
distance: which detector file, how frames are resized and cropped, the value range and
quantisation the detector sees, how many clips of how many frames, and how the real clips are
drawn. `FVDProtocol` names every one of these, the detector file is identified by its sha256,
and `FVDDetector.record` writes the protocol together with the counts a run actually used.

The defaults follow StyleGAN-V's `fvd2048_16f` with its TorchScript I3D (`i3d_torchscript.pt`,
called with `rescale=True, resize=True, return_features=True` on (B, C, T, H, W) clips of
uint8 values): 16 frames, 2048 generated and 2048 real clips. No detector ships with videogen:
the file is always a local one the user gives.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from videogen.errors import ConfigError
from videogen.metrics.synthesis import load_feature_network

RESIZE_MODES = ("short_side_crop", "stretch", "none")
INTERPOLATIONS = ("bilinear", "bicubic", "area", "nearest")
LAYOUTS = ("BCTHW", "BTCHW")
REAL_SAMPLING = ("auto", "uniform", "per_class")
RECORD_NAME = "fvd_protocol.json"
# How StyleGAN-V calls its TorchScript I3D on uint8-valued clips: the network rescales the
# values and resizes frames to 224 x 224 itself, and returns its raw features (before the
# softmax). Frames already at 224 x 224 (this protocol's default) leave that resize nothing to do.
STYLEGAN_V_DETECTOR_KWARGS: dict[str, Any] = {
    "rescale": True,
    "resize": True,
    "return_features": True,
}


@dataclass(frozen=True)
class FVDProtocol:
    """Everything that decides an FVD number besides the two sets of clips.

    - `detector_path`: the TorchScript detector file; `detector_sha256`: the hash it must have
      (None: any file, its hash is recorded); `detector_kwargs`: keyword arguments of every
      detector call; `layout`: the axis order it takes ("BCTHW" for I3D).
    - `resolution`, `resize`, `interpolation`, `antialias`: frames are resized so that their
      short side is `resolution` and centre-cropped to a square ("short_side_crop"), resized
      to a square without cropping ("stretch"), or left alone ("none").
    - `value_range`: the detector receives values in [low, high] (e.g. [0, 255] or [-1, 1]);
      `quantize`: frames are first rounded to 256 levels, as if saved as 8-bit images.
    - `frames`: the first `frames` frames of each clip are scored.
    - `generated_clips`, `real_clips`: how many clips of each side (at most; a run records how
      many it used); `real_sampling`: real clips drawn uniformly over the test set, per class
      (the same number of each class), or "auto" (per class when the data has labels).
    - `mp4`: clips go through an H.264 encode and decode (crf 18, yuv420p) before the detector.
    """

    detector_path: str | None = None
    detector_sha256: str | None = None
    detector_kwargs: dict[str, Any] = field(
        default_factory=lambda: dict(STYLEGAN_V_DETECTOR_KWARGS)
    )
    layout: str = "BCTHW"
    resolution: int | None = 224
    resize: str = "short_side_crop"
    interpolation: str = "bilinear"
    antialias: bool = False
    value_range: tuple[float, float] = (0.0, 255.0)
    quantize: bool = True
    frames: int = 16
    generated_clips: int = 2048
    real_clips: int = 2048
    real_sampling: str = "auto"
    mp4: bool = False

    def __post_init__(self) -> None:
        choices = {
            "resize": RESIZE_MODES,
            "interpolation": INTERPOLATIONS,
            "layout": LAYOUTS,
            "real_sampling": REAL_SAMPLING,
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ConfigError(
                    f"model.fvd.{name}={getattr(self, name)!r} is not one of {', '.join(allowed)}."
                )
        low, high = self.value_range
        if not low < high:
            raise ConfigError(f"model.fvd.value_range must be [low, high], got {[low, high]}.")
        if self.resize != "none" and (self.resolution is None or self.resolution < 1):
            raise ConfigError(
                f"model.fvd.resize={self.resize} needs a positive model.fvd.resolution, got "
                f"{self.resolution}."
            )
        if self.frames < 1:
            raise ConfigError(f"model.fvd.frames must be at least 1, got {self.frames}.")
        for name in ("generated_clips", "real_clips"):
            if getattr(self, name) < 2:
                raise ConfigError(
                    f"model.fvd.{name} must be at least 2 (a Fréchet distance needs two clips "
                    f"on each side), got {getattr(self, name)}."
                )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every field (value_range as a list)."""
        data = asdict(self)
        data["value_range"] = list(self.value_range)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> FVDProtocol:
        """The protocol of a dict such as `to_dict` writes or `model.fvd` holds; missing keys
        take the defaults, unknown keys are refused by name."""
        data = dict(data or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(
                f"unknown FVD protocol keys {unknown}: the keys are {', '.join(sorted(known))}."
            )
        if "value_range" in data:
            low, high = data["value_range"]
            data["value_range"] = (float(low), float(high))
        if "detector_kwargs" in data:
            data["detector_kwargs"] = dict(data["detector_kwargs"] or {})
        for name in ("frames", "generated_clips", "real_clips"):
            if name in data:
                data[name] = int(data[name])
        if data.get("resolution") is not None:
            data["resolution"] = int(data["resolution"])
        return cls(**data)

    def describe(self) -> str:
        """The protocol in one line, for logs."""
        detector = Path(self.detector_path).name if self.detector_path else "no detector"
        if self.detector_sha256:
            detector += f" (sha256 {self.detector_sha256[:12]}...)"
        if self.resize == "short_side_crop":
            size = f"short side to {self.resolution} + centre crop ({self.interpolation})"
        elif self.resize == "stretch":
            size = f"resized to {self.resolution}x{self.resolution} ({self.interpolation})"
        else:
            size = "frames at their own size"
        low, high = self.value_range
        values = f"values [{low:g}, {high:g}]" + (", 8-bit quantised" if self.quantize else "")
        return (
            f"FVD: {detector}, {self.frames} frames, {size}, {values}, {self.layout}, "
            f"{self.generated_clips} generated / {self.real_clips} real clips drawn "
            f"{self.real_sampling.replace('_', ' ')}, {'mp4 round trip' if self.mp4 else 'no mp4'}"
        )


def file_sha256(path: str | Path, chunk_size: int = 1 << 20) -> str:
    """The hex sha256 of a file, read in chunks (a detector file need not fit in memory twice)."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def mp4_round_trip(clips: torch.Tensor) -> torch.Tensor:
    """(B, T, 3, H, W) in [0, 1] after an H.264 encode and decode (videogen's own writer:
    crf 18, yuv420p), as clips saved to mp4 files and read back would be."""
    import av
    import numpy as np

    from videogen.utils.video_io import encode_video

    height, width = clips.shape[-2:]
    decoded_clips = []
    for clip in clips:
        frames = (clip.permute(0, 2, 3, 1).clamp(0, 1) * 255).round().byte().cpu().numpy()
        data = encode_video(frames, suffix="mp4")
        with av.open(io.BytesIO(data)) as container:
            decoded = [image.to_ndarray(format="rgb24") for image in container.decode(video=0)]
        # The writer pads odd sizes by one row / column; the padding is not part of the clip.
        array = np.stack(decoded)[:, :height, :width]
        decoded_clips.append(torch.from_numpy(array).permute(0, 3, 1, 2).float() / 255)
    return torch.stack(decoded_clips).to(clips.device)


def resize_frames(frames: torch.Tensor, protocol: FVDProtocol) -> torch.Tensor:
    """(N, C, H, W) frames resized (and cropped) as the protocol says."""
    if protocol.resize == "none":
        return frames
    size = int(protocol.resolution)  # type: ignore[arg-type]
    height, width = frames.shape[-2:]
    if protocol.resize == "stretch":
        target = (size, size)
    else:
        short = min(height, width)
        target = (max(size, round(height * size / short)), max(size, round(width * size / short)))
    if target != (height, width):
        kwargs: dict[str, Any] = {"size": target, "mode": protocol.interpolation}
        if protocol.interpolation in ("bilinear", "bicubic"):
            kwargs.update(align_corners=False, antialias=protocol.antialias)
        # Bicubic overshoots; values outside [0, 1] are not pixels.
        frames = F.interpolate(frames, **kwargs).clamp(0, 1)
    top, left = (frames.shape[-2] - size) // 2, (frames.shape[-1] - size) // 2
    return frames[..., top : top + size, left : left + size]


def preprocess_clips(clips: torch.Tensor, protocol: FVDProtocol) -> torch.Tensor:
    """Clips (B, T, C, H, W) in [0, 1] -> what the protocol's detector receives.

    The first `protocol.frames` frames, greyscale repeated to RGB, optionally an mp4 round trip,
    8-bit quantisation, resize (and centre crop), the value range, then the detector's layout.
    Quantising comes before resizing, as for frames read from files.
    """
    if clips.dim() != 5:
        raise ValueError(f"FVD clips must be (B, T, C, H, W), got shape {tuple(clips.shape)}")
    if clips.shape[1] < protocol.frames:
        raise ConfigError(
            f"model.fvd.frames={protocol.frames}, but these clips have {clips.shape[1]} frames: "
            f"set model.fvd.frames={clips.shape[1]} (a different protocol) or score longer clips."
        )
    video = clips[:, : protocol.frames].float().clamp(0, 1)
    if video.shape[2] == 1:  # video detectors are RGB; greyscale video is repeated
        video = video.expand(-1, -1, 3, -1, -1)
    if protocol.mp4:
        video = mp4_round_trip(video)
    if protocol.quantize:
        video = (video * 255).round() / 255
    batch, frames = video.shape[:2]
    video = resize_frames(video.flatten(0, 1), protocol)
    video = video.view(batch, frames, *video.shape[1:])
    low, high = protocol.value_range
    video = low + video * (high - low)
    if protocol.layout == "BCTHW":
        video = video.permute(0, 2, 1, 3, 4)
    return video.contiguous()


def balanced_subset(labels: torch.Tensor | None, count: int, wanted: int) -> torch.Tensor:
    """Indices (sorted) of at most `wanted` of `count` clips, taking the classes in turn (the
    first clip of every class, then the second of every class, ...), so that a subset of
    class-ordered generated clips stays balanced; the first `wanted` without labels."""
    if labels is None or wanted >= count:
        return torch.arange(min(count, wanted))
    labels = labels[:count].long().cpu()
    seen: dict[int, int] = {}
    turn = torch.empty(count, dtype=torch.long)
    for index, label in enumerate(labels.tolist()):
        turn[index] = seen.get(label, 0)
        seen[label] = turn[index].item() + 1
    key = turn * (int(labels.max()) + 1) + labels
    return torch.argsort(key, stable=True)[:wanted].sort().values


def draw_real_clips(
    labels: torch.Tensor | None, count: int, wanted: int, mode: str, seed: int
) -> torch.Tensor:
    """Indices (sorted) of the real clips to score among `count` test clips.

    "uniform": `wanted` drawn uniformly without replacement (all when there are fewer).
    "per_class": `wanted` split evenly over the classes present (the first classes take the
    remainder), each class's share drawn uniformly among its clips (all of them when it has
    fewer; the shortfall is not moved to other classes). Draws come from `seed`.
    """
    generator = torch.Generator().manual_seed(seed)
    if mode == "uniform" or labels is None:
        if count <= wanted:
            return torch.arange(count)
        return torch.randperm(count, generator=generator)[:wanted].sort().values
    if mode != "per_class":
        raise ValueError(f"unknown real-clip sampling {mode!r}")
    labels = labels[:count].long().cpu()
    classes = labels.unique()
    base, extra = divmod(wanted, len(classes))
    chosen = []
    for position, label in enumerate(classes.tolist()):
        members = (labels == label).nonzero().flatten()
        share = base + (1 if position < extra else 0)
        order = torch.randperm(len(members), generator=generator)
        chosen.append(members[order[:share]])
    return torch.cat(chosen).sort().values


class FVDDetector:
    """The protocol's detector file, loaded, hashed (and checked against a pinned hash), and
    fed clips the protocol's way.

    `setting` names the configuration key of the detector path in messages.
    """

    def __init__(self, protocol: FVDProtocol, setting: str = "model.fvd_network_path") -> None:
        path = protocol.detector_path
        if path is None:
            raise ConfigError(f"no FVD detector: set {setting} to a TorchScript video network.")
        network = load_feature_network(path, "FVD", setting)
        assert network is not None  # a path was given
        self.sha256 = file_sha256(path)
        if protocol.detector_sha256 and protocol.detector_sha256.lower() != self.sha256:
            raise ConfigError(
                f"{setting}={path} has sha256 {self.sha256}, not the pinned "
                f"model.fvd.detector_sha256={protocol.detector_sha256}: give the detector file "
                "the protocol names, or set model.fvd.detector_sha256=null to accept any."
            )
        self.check_arguments(network, protocol, setting)
        self.network = network
        # The record carries the hash of the file actually used, pinned or not.
        self.protocol = replace(protocol, detector_sha256=self.sha256)

    @staticmethod
    def check_arguments(
        network: torch.jit.ScriptModule, protocol: FVDProtocol, setting: str
    ) -> None:
        """Refuse detector keyword arguments the network's forward does not take, now rather
        than after the clips are sampled."""
        schema = getattr(network.forward, "schema", None)
        if schema is None or not protocol.detector_kwargs:
            return
        accepted = {argument.name for argument in schema.arguments}
        missing = sorted(set(protocol.detector_kwargs) - accepted)
        if missing:
            raise ConfigError(
                f"the detector {setting}={protocol.detector_path} takes no keyword argument "
                f"{', '.join(missing)}: set model.fvd.detector_kwargs to the ones it takes "
                "({} for none), with model.fvd.value_range and resolution the input it expects."
            )

    @torch.no_grad()
    def features(self, clips: torch.Tensor) -> torch.Tensor:
        """(B, D) float64 CPU features of clips (B, T, C, H, W) in [0, 1]."""
        inputs = preprocess_clips(clips, self.protocol)
        network = self.network.to(inputs.device)
        # The detector runs in float32 whatever the trainer's precision: a pinned protocol
        # means the same arithmetic in every run.
        with torch.autocast(inputs.device.type, enabled=False):
            output = network(inputs, **self.protocol.detector_kwargs)
        return output.flatten(1).double().cpu()

    def record(self, generated_clips: int, real_clips: int, fvd: float, **extra: Any) -> dict:
        """What a run used: the protocol (with the detector's hash), the clip counts actually
        scored, the value, and `extra` notes."""
        return {
            "protocol": self.protocol.to_dict(),
            "description": self.protocol.describe(),
            "generated_clips": int(generated_clips),
            "real_clips": int(real_clips),
            "fvd": float(fvd),
            **extra,
        }


def write_fvd_record(record: dict[str, Any], folder: str | Path) -> Path:
    """Write `record` as `folder/fvd_protocol.json`; returns the path."""
    path = Path(folder) / RECORD_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    return path


def read_fvd_record(path: str | Path) -> dict[str, Any]:
    """The record a test run wrote: `path` is the file or the run folder holding it."""
    path = Path(path)
    if path.is_dir():
        path = path / RECORD_NAME
    if not path.is_file():
        raise ConfigError(f"{path} does not exist: no FVD was computed in that run.")
    return json.loads(path.read_text())

"""Reference optical flow for vid2vid, estimated on real frames without downloaded weights.

Flow convention. A flow is a (B, 2, H, W) float tensor in pixels: channel 0 is the displacement
along x (width), channel 1 along y (height). `warp` samples backwards: output pixel p is the input
image sampled at p + flow(p). The flow of the pair (previous -> current) is the one that OpenCV
returns from `calc(current, previous)` (and RAFT from `raft(current, previous)`), so that

    warp(previous, flow) ~= current.

This is the flow vid2vid uses: the generator predicts where each pixel of the new frame comes
from in the previous output frame, and the warped previous frame is compared to the new one.

The OpenCV estimators (DIS, Farneback) need no weights and run on the CPU; RAFT runs on the
input's device from a local torchvision state-dict file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from videogen.errors import ConfigError
from videogen.models.checkpoint_io import load_plain

# ITU-R BT.601 luma weights, the ones OpenCV's own RGB -> grey conversion uses.
_LUMA = (0.299, 0.587, 0.114)

_DIS_PRESETS = {
    "ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
    "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
    "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM,
}

ESTIMATOR_NAMES = ("dis", "dis_fast", "farneback", "raft_small", "raft_large")


def to_grey_uint8(images: torch.Tensor) -> np.ndarray:
    """(B, 1 or 3, H, W) floats in [0, 1] -> (B, H, W) uint8 grey images on the CPU, for OpenCV."""
    images = images.detach().float()
    if images.shape[1] == 3:
        weights = images.new_tensor(_LUMA).view(1, 3, 1, 1)
        images = (images * weights).sum(1, keepdim=True)
    elif images.shape[1] != 1:
        raise ValueError(f"flow estimation needs 1 or 3 channels, got {images.shape[1]}")
    grey = (images[:, 0].clamp(0, 1) * 255).round().to(torch.uint8)
    return grey.cpu().numpy()


class FlowEstimator:
    """Estimates the (previous -> current) flow of image pairs.

    Called as `estimator(current, previous)` with (B, C, H, W) floats in [0, 1], C 1 or 3; returns
    (B, 2, H, W) float32 pixel flows on the input's device, such that
    `warp(previous, flow) ~= current`.
    """

    def __call__(self, current: torch.Tensor, previous: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class OpenCVFlowEstimator(FlowEstimator):
    """Base of the OpenCV estimators: converts to grey uint8 and runs one pair at a time."""

    def pair_flow(self, current: np.ndarray, previous: np.ndarray) -> np.ndarray:
        """(H, W, 2) float32 flow such that current(p) ~= previous(p + flow(p))."""
        raise NotImplementedError

    def __call__(self, current: torch.Tensor, previous: torch.Tensor) -> torch.Tensor:
        current_grey, previous_grey = to_grey_uint8(current), to_grey_uint8(previous)
        flows = [
            self.pair_flow(np.ascontiguousarray(c), np.ascontiguousarray(p))
            for c, p in zip(current_grey, previous_grey, strict=True)
        ]
        stacked = torch.from_numpy(np.stack(flows)).permute(0, 3, 1, 2)
        return stacked.float().contiguous().to(current.device)


class DISFlowEstimator(OpenCVFlowEstimator):
    """OpenCV's Dense Inverse Search flow (Kroeger et al. 2016): fast, CPU, no weights."""

    def __init__(self, preset: str = "medium") -> None:
        if preset not in _DIS_PRESETS:
            raise ValueError(f"unknown DIS preset {preset!r}: choose one of {sorted(_DIS_PRESETS)}")
        self.preset = preset
        self._dis: Any = None  # built on first use: OpenCV objects cannot be pickled

    def __getstate__(self) -> dict[str, Any]:
        # Dropped so that deep copies and dataloader workers rebuild their own OpenCV object.
        return {**self.__dict__, "_dis": None}

    def pair_flow(self, current: np.ndarray, previous: np.ndarray) -> np.ndarray:
        if self._dis is None:
            self._dis = cv2.DISOpticalFlow_create(_DIS_PRESETS[self.preset])
        return self._dis.calc(current, previous, None)


class FarnebackFlowEstimator(OpenCVFlowEstimator):
    """OpenCV's Farneback polynomial-expansion flow: slower and smoother than DIS, no weights."""

    def pair_flow(self, current: np.ndarray, previous: np.ndarray) -> np.ndarray:
        return cv2.calcOpticalFlowFarneback(
            current,
            previous,
            None,
            pyr_scale=0.5,
            levels=3,
            winsize=15,
            iterations=3,
            poly_n=5,
            poly_sigma=1.2,
            flags=0,
        )


class RAFTFlowEstimator(FlowEstimator):
    """torchvision's RAFT (small or large) from a local state-dict file; never downloads.

    The network is held as a plain attribute, not a submodule, so a LightningModule that holds
    this estimator neither trains nor checkpoints it.
    """

    # Features are 1/8 of the input and the correlation pyramid halves them three more times
    # down to 2 pixels, so RAFT rejects inputs under 128 pixels on a side.
    MIN_SIZE = 128

    def __init__(self, network: nn.Module) -> None:
        self.network: nn.Module = network.eval().requires_grad_(False)

    @classmethod
    def from_path(cls, weights_path: str, small: bool = True) -> RAFTFlowEstimator:
        """RAFT small or large with the weights of the local state-dict file `weights_path`."""
        from torchvision.models.optical_flow import raft_large, raft_small

        if not Path(weights_path).is_file():
            raise ConfigError(
                f"RAFT weights {weights_path} do not exist: give the path of a torchvision "
                f"{'raft_small' if small else 'raft_large'} state-dict file."
            )
        network = raft_small(weights=None) if small else raft_large(weights=None)
        network.load_state_dict(load_plain(weights_path))
        return cls(network)

    def __call__(self, current: torch.Tensor, previous: torch.Tensor) -> torch.Tensor:
        height, width = current.shape[-2:]
        network = self.network.to(current.device).eval()
        pad_height = max(-(-height // 8) * 8, self.MIN_SIZE) - height
        pad_width = max(-(-width // 8) * 8, self.MIN_SIZE) - width
        images = []
        for frames in (current, previous):
            frames = frames.detach().float() * 2 - 1
            if frames.shape[1] == 1:
                frames = frames.expand(-1, 3, -1, -1)
            # Replicate padding on the right and bottom, so pixel coordinates are unchanged.
            images.append(F.pad(frames, (0, pad_width, 0, pad_height), mode="replicate"))
        # Reference flows are targets, so they are computed in float32 even inside an autocast
        # region that the training step opened.
        with torch.no_grad(), torch.autocast(current.device.type, enabled=False):
            # RAFT(image1, image2) gives image1(p) ~= image2(p + flow(p)).
            flow = network(images[0], images[1])[-1]
        return flow[..., :height, :width].float().contiguous()


def build_flow_estimator(name: str = "dis", weights_path: str | None = None) -> FlowEstimator:
    """The estimator called `name`: dis, dis_fast, farneback, raft_small or raft_large."""
    if name == "dis":
        return DISFlowEstimator("medium")
    if name == "dis_fast":
        return DISFlowEstimator("fast")
    if name == "farneback":
        return FarnebackFlowEstimator()
    if name in ("raft_small", "raft_large"):
        if weights_path is None:
            raise ConfigError(
                f"flow estimator {name} needs weights: set the flow weights path to a local "
                "torchvision RAFT state-dict file, or use dis."
            )
        return RAFTFlowEstimator.from_path(weights_path, small=name == "raft_small")
    raise ConfigError(
        f"unknown flow estimator {name!r}: choose one of {', '.join(ESTIMATOR_NAMES)}."
    )


def flow_confidence(
    current: torch.Tensor, warped_previous: torch.Tensor, threshold: float = 0.02
) -> torch.Tensor:
    """(B, 1, H, W) mask, 1 where the warped previous frame matches the current one, else 0.

    Images are in [-1, 1]; a pixel is confident when its squared warp error summed over channels
    is below `threshold`, the vid2vid paper's mask for occlusions and flow failures.
    """
    error = (current.detach().float() - warped_previous.detach().float()).square().sum(1, True)
    return (error < threshold).to(current.dtype)


def reference_flows(
    frames: torch.Tensor, estimator: FlowEstimator, stride: int = 1
) -> torch.Tensor:
    """(B, T - stride, 2, H, W) flows from frame t - stride to frame t, for t = stride .. T - 1.

    `frames` is (B, T, C, H, W) in [0, 1]; all pairs go to the estimator in one call.
    """
    batch, length = frames.shape[:2]
    if not 1 <= stride < length:
        raise ValueError(f"stride must be in [1, {length - 1}] for {length} frames, got {stride}")
    current = frames[:, stride:].flatten(0, 1)
    previous = frames[:, :-stride].flatten(0, 1)
    flows = estimator(current, previous)
    return flows.view(batch, length - stride, *flows.shape[1:])

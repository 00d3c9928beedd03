"""vid2vid reference flow and synthesis metrics as plain tensors: the warp convention, the
weight-free estimators on known translations, confidence masks, temporal warping error and
Fréchet distances with known answers."""

from __future__ import annotations

import copy
import logging
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from videogen.errors import ConfigError
from videogen.metrics.synthesis import (
    FrechetDistance,
    frechet_distance,
    load_feature_network,
    temporal_warping_error,
)
from videogen.models.layers import warp
from videogen.models.vid2vid.flow import (
    DISFlowEstimator,
    FarnebackFlowEstimator,
    FlowEstimator,
    RAFTFlowEstimator,
    build_flow_estimator,
    flow_confidence,
    reference_flows,
)

pytestmark = pytest.mark.usefixtures("one_intra_op_thread")


def smooth_texture(size: int, seed: int = 0) -> torch.Tensor:
    """(1, 1, size, size) smooth random texture in [0, 1]: bicubic upsampling of 8x8-pixel noise."""
    generator = torch.Generator().manual_seed(seed)
    noise = torch.rand(1, 1, size // 8, size // 8, generator=generator)
    return F.interpolate(noise, size=(size, size), mode="bicubic", align_corners=False).clamp(0, 1)


def moved(texture: torch.Tensor, dx: int, dy: int, size: int, margin: int = 8) -> torch.Tensor:
    """A size x size window of `texture` whose content has moved by (dx, dy) pixels.

    The returned frame satisfies frame(y, x) = texture(margin + y - dy, margin + x - dx), so the
    backward flow from the unmoved window to this one is (-dx, -dy) everywhere.
    """
    top, left = margin - dy, margin - dx
    return texture[..., top : top + size, left : left + size]


# --------------------------------------------------------------------------- warp


def test_warp_with_zero_flow_is_the_identity() -> None:
    image = torch.rand(2, 3, 9, 13)
    assert torch.allclose(warp(image, torch.zeros(2, 2, 9, 13)), image, atol=1e-6)


def test_warp_with_integer_flow_shifts_the_interior_exactly() -> None:
    """flow (dx=2, dy=-1): out(y, x) = image(y - 1, x + 2)."""
    image = torch.rand(1, 3, 10, 12)
    flow = torch.zeros(1, 2, 10, 12)
    flow[:, 0], flow[:, 1] = 2.0, -1.0
    out = warp(image, flow)
    assert torch.allclose(out[..., 1:, :-2], image[..., :-1, 2:], atol=1e-5)
    # Border padding: the column that samples past the right edge repeats the last column.
    assert torch.allclose(out[..., 1:, -1], image[..., :-1, -1], atol=1e-5)


def test_warp_is_differentiable_in_image_and_flow() -> None:
    image = torch.rand(1, 1, 8, 8, requires_grad=True)
    flow = torch.full((1, 2, 8, 8), 0.3, requires_grad=True)
    warp(image, flow).square().sum().backward()
    assert image.grad is not None and image.grad.abs().sum() > 0
    assert flow.grad is not None and flow.grad.abs().sum() > 0


def test_warp_keeps_bfloat16_and_matches_float32() -> None:
    image, flow = torch.rand(1, 3, 16, 16), torch.randn(1, 2, 16, 16)
    out = warp(image.bfloat16(), flow.bfloat16())
    assert out.dtype == torch.bfloat16
    assert torch.allclose(out.float(), warp(image, flow.bfloat16().float()), atol=2e-2)


# --------------------------------------------------------------------------- estimators


@pytest.mark.parametrize(
    "estimator",
    [DISFlowEstimator("medium"), DISFlowEstimator("ultrafast"), FarnebackFlowEstimator()],
    ids=["dis_medium", "dis_ultrafast", "farneback"],
)
@pytest.mark.parametrize("channels", [1, 3])
def test_opencv_estimators_recover_a_known_translation(
    estimator: FlowEstimator, channels: int
) -> None:
    """Content moved by (dx, dy) = (2, 1): the backward flow is (-2, -1) and warping the previous
    frame by it reproduces the current frame far better than not warping."""
    texture = smooth_texture(80).expand(-1, channels, -1, -1)
    previous, current = moved(texture, 0, 0, 64), moved(texture, 2, 1, 64)
    flow = estimator(current, previous)
    assert flow.shape == (1, 2, 64, 64) and flow.dtype == torch.float32
    interior = flow[..., 16:48, 16:48]
    assert interior[:, 0].median().item() == pytest.approx(-2.0, abs=0.3)
    assert interior[:, 1].median().item() == pytest.approx(-1.0, abs=0.3)
    warped_error = (warp(previous, flow) - current)[..., 8:56, 8:56].abs().mean()
    unwarped_error = (previous - current)[..., 8:56, 8:56].abs().mean()
    assert warped_error < 0.1 * unwarped_error


def test_dis_estimator_survives_deep_copy_after_use() -> None:
    """The OpenCV object is dropped on copy and rebuilt, so the copy still estimates."""
    estimator = DISFlowEstimator("fast")
    frames = torch.rand(1, 1, 32, 32)
    estimator(frames, frames)
    clone = copy.deepcopy(estimator)
    assert clone.preset == "fast"
    assert clone(frames, frames).shape == (1, 2, 32, 32)


def test_dis_rejects_an_unknown_preset() -> None:
    with pytest.raises(ValueError, match="ultrafast"):
        DISFlowEstimator("slow")


def test_randomly_initialised_raft_small_returns_full_size_flow(tmp_path: Path) -> None:
    """32x32 is padded up to RAFT's 128-pixel minimum and the flow is cropped back."""
    from torchvision.models.optical_flow import raft_small

    path = tmp_path / "raft_small.pt"
    torch.manual_seed(0)
    torch.save(raft_small(weights=None).state_dict(), path)
    estimator = build_flow_estimator("raft_small", str(path))
    assert isinstance(estimator, RAFTFlowEstimator)
    flow = estimator(torch.rand(2, 1, 32, 32), torch.rand(2, 1, 32, 32))
    assert flow.shape == (2, 2, 32, 32) and flow.dtype == torch.float32
    assert torch.isfinite(flow).all()


def test_build_flow_estimator_names_and_errors(tmp_path: Path) -> None:
    assert isinstance(build_flow_estimator(), DISFlowEstimator)
    assert build_flow_estimator("dis_fast").preset == "fast"
    assert isinstance(build_flow_estimator("farneback"), FarnebackFlowEstimator)
    with pytest.raises(ConfigError, match="raft_large"):
        build_flow_estimator("pwcnet")
    with pytest.raises(ConfigError, match="weights path"):
        build_flow_estimator("raft_small")
    missing = tmp_path / "nowhere.pt"
    with pytest.raises(ConfigError, match=str(missing)):
        build_flow_estimator("raft_large", str(missing))


# --------------------------------------------------------------------------- helpers


class FrameDifference(FlowEstimator):
    """A stand-in estimator whose 'flow' is current - previous, to check which pairs are sent."""

    def __call__(self, current: torch.Tensor, previous: torch.Tensor) -> torch.Tensor:
        return (current - previous)[:, :1].expand(-1, 2, -1, -1)


@pytest.mark.parametrize("stride", [1, 2])
def test_reference_flows_pair_frame_t_minus_stride_with_frame_t(stride: int) -> None:
    # Frame t of video b is the constant b + t / 10.
    values = torch.arange(2).view(2, 1) + torch.arange(5).view(1, 5) / 10
    frames = values.view(2, 5, 1, 1, 1).expand(-1, -1, 1, 4, 6)
    flows = reference_flows(frames, FrameDifference(), stride)
    assert flows.shape == (2, 5 - stride, 2, 4, 6)
    assert torch.allclose(flows, torch.full_like(flows, stride / 10))
    colour_flows = reference_flows(torch.rand(1, 3, 3, 16, 16), DISFlowEstimator())
    assert colour_flows.shape == (1, 2, 2, 16, 16)
    with pytest.raises(ValueError, match="stride"):
        reference_flows(frames, FrameDifference(), stride=5)


def test_flow_confidence_is_one_where_images_agree_and_zero_where_they_differ() -> None:
    current = torch.rand(2, 3, 8, 8) * 2 - 1
    warped = current.clone()
    warped[..., :, 4:] += 0.5  # squared error 3 * 0.25 = 0.75 summed over channels
    warped[..., 0, 0] += 0.05  # 3 * 0.0025 = 0.0075: still below the 0.02 threshold
    mask = flow_confidence(current, warped)
    assert mask.shape == (2, 1, 8, 8)
    assert (mask[..., :4] == 1).all() and (mask[..., 4:] == 0).all()
    assert not mask.requires_grad


# --------------------------------------------------------------------------- warping error


def translating_video(length: int, dx: int, dy: int, size: int = 32) -> torch.Tensor:
    """(1, length, 3, size, size): frame t is the texture with its content moved by t * (dx, dy)."""
    texture = smooth_texture(64, seed=1).expand(-1, 3, -1, -1)
    frames = [moved(texture, t * dx, t * dy, size, margin=16) for t in range(length)]
    return torch.stack(frames, dim=1)


def test_temporal_warping_error_of_an_exact_translation_with_true_flow_is_zero() -> None:
    video = translating_video(4, 2, 1)
    flows = torch.zeros(1, 3, 2, 32, 32)
    flows[:, :, 0], flows[:, :, 1] = -2.0, -1.0
    # Pixels whose source lies above or left of the frame (top row, two left columns) are
    # occluded; every other pixel is confident, and flow_confidence agrees.
    confidence = torch.ones(1, 3, 1, 32, 32)
    confidence[..., :1, :] = 0
    confidence[..., :, :2] = 0
    warped = warp(video[:, :-1].flatten(0, 1), flows.flatten(0, 1))
    agreed = flow_confidence(video[:, 1:].flatten(0, 1) * 2 - 1, warped * 2 - 1)
    assert (agreed.view_as(confidence)[confidence == 1] == 1).all()
    error = temporal_warping_error(video, flows, confidence)
    assert error.shape == (1,) and error.item() < 1e-10
    # Unmasked, the occluded border adds a little error, and ignoring the motion adds more.
    unmasked = temporal_warping_error(video, flows, torch.ones_like(confidence)).item()
    assert 0 < unmasked < 0.01
    still = temporal_warping_error(video, torch.zeros_like(flows), confidence).item()
    assert still > 10 * unmasked


def test_temporal_warping_error_of_flicker_is_large_and_of_no_confidence_is_zero() -> None:
    torch.manual_seed(0)
    flicker = torch.rand(2, 4, 3, 16, 16)
    flows = torch.zeros(2, 3, 2, 16, 16)
    confident = torch.ones(2, 3, 1, 16, 16)
    # Independent uniform frames: E[(a - b)^2] = 1/6.
    error = temporal_warping_error(flicker, flows, confident)
    assert error.shape == (2,)
    assert torch.allclose(error, torch.full((2,), 1 / 6), atol=0.02)
    confident[1] = 0
    assert temporal_warping_error(flicker, flows, confident)[1].item() == 0.0


# --------------------------------------------------------------------------- Fréchet


def test_frechet_distance_of_identical_sets_is_zero() -> None:
    features = torch.randn(500, 4) @ torch.randn(4, 4)
    assert frechet_distance(features, features) == pytest.approx(0.0, abs=1e-8)


def test_frechet_distance_of_gaussians_with_known_parameters() -> None:
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(20000, 3, generator=generator, dtype=torch.float64)
    b = torch.randn(20000, 3, generator=generator, dtype=torch.float64)
    # Identity covariances: only the means count, ||(1, 2, 0)||^2 = 5.
    assert frechet_distance(a, b + torch.tensor([1.0, 2.0, 0.0])) == pytest.approx(5.0, abs=0.05)
    # Equal means, standard deviations 2 and 1 per dimension: 3 * (2 - 1)^2 = 3.
    assert frechet_distance(2 * a, b) == pytest.approx(3.0, abs=0.05)


def test_frechet_distance_is_symmetric_and_needs_two_samples() -> None:
    a = torch.randn(300, 5) @ torch.randn(5, 5)
    b = torch.randn(200, 5) @ torch.randn(5, 5) + 1
    assert frechet_distance(a, b) == pytest.approx(frechet_distance(b, a), rel=1e-6)
    with pytest.raises(ValueError, match="at least 2"):
        frechet_distance(a[:1], b)


class FramePool(nn.Module):
    """(N, 3, H, W) -> (N, 3): mean colour of each frame."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3))


class ClipPool(nn.Module):
    """(B, T, 3, H, W) -> (B, 3): mean colour of each clip."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(1, 3, 4))


# Recent torch releases deprecate TorchScript; the feature networks are still TorchScript files.
jit_deprecation = pytest.mark.filterwarnings(
    "ignore:`torch.jit.script` is deprecated:FutureWarning",
    "ignore:`torch.jit.load` is deprecated:FutureWarning",
)


def saved_network(module: nn.Module, path: Path) -> str:
    torch.jit.script(module).save(str(path))
    return str(path)


@jit_deprecation
@pytest.mark.parametrize(
    ("module", "mode"), [(FramePool(), "frames"), (ClipPool(), "clips")], ids=["fid", "fvd"]
)
def test_frechet_distance_metric_with_a_scripted_feature_network(
    module: nn.Module, mode: str, tmp_path: Path
) -> None:
    path = saved_network(module, tmp_path / f"{mode}.pt")
    network = load_feature_network(path, "FID-style", "model.fid_network_path")
    assert network is not None and not network.training
    metric = FrechetDistance(network, mode)
    torch.manual_seed(0)
    batches = [torch.rand(8, 3, 3, 8, 8) * 0.6 for _ in range(2)]
    for real in batches:
        metric.update(real, real.clone())
    assert metric.compute() == pytest.approx(0.0, abs=1e-8)
    metric.reset()
    for real in batches:
        metric.update(real, real + 0.3)
    # Brightness +0.3 in all three colours moves the mean features by 0.3 each: 3 * 0.09.
    assert metric.compute() == pytest.approx(0.27, abs=1e-4)
    metric.reset()
    with pytest.raises(ValueError, match="update"):
        metric.compute()


@jit_deprecation
def test_frechet_distance_repeats_greyscale_video(tmp_path: Path) -> None:
    network = load_feature_network(saved_network(FramePool(), tmp_path / "f.pt"), "FID-style")
    assert network is not None
    metric = FrechetDistance(network)
    grey = torch.rand(2, 3, 1, 8, 8)
    metric.update(grey, grey)
    assert metric.real[0].shape == (6, 3) and metric.real[0].dtype == torch.float64


def test_load_feature_network_without_a_path_warns_and_with_a_missing_file_raises(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="videogen.metrics.synthesis"):
        assert load_feature_network(None, "FID-style", "model.fid_network_path") is None
    assert "FID-style" in caplog.text and "model.fid_network_path" in caplog.text
    missing = tmp_path / "i3d.pt"
    with pytest.raises(ConfigError, match=str(missing)):
        load_feature_network(str(missing), "FVD-style", "model.fvd_network_path")

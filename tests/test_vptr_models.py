"""VPTR networks and frame metrics as plain tensors: paper sizes, shapes, causality, locality,
block-autoregressive inference, and the metric formulas."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from videogen.errors import ConfigError
from videogen.metrics.frames import TimestepCurves, frame_mse, frame_psnr, frame_ssim
from videogen.models.layers import sincos_1d, sincos_2d
from videogen.models.losses import gradient_difference_loss
from videogen.models.vptr import VPTRFAR, VPTRNAR, PatchDiscriminator, VPTRAutoencoder
from videogen.models.vptr.vidhrformer import (
    ConvFFN,
    VidHRFormerBlock,
    VidHRFormerDecoderBlock,
    WindowAttention,
)

# Tiny transformers: 32-d features on a 4x4 feature map, 2x2 windows, no dropout.
TINY = dict(
    feature_dim=32,
    feature_size=(4, 4),
    num_heads=4,
    window_size=2,
    drop_rate=0.0,
    drop_path_rate=0.0,
)
TINY_AE = dict(base_channels=8, feature_dim=16, num_downsampling=2, num_res_blocks=1)


pytestmark = pytest.mark.usefixtures("one_intra_op_thread")


def count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# --------------------------------------------------------------------------- paper sizes


@pytest.fixture(scope="module")
def paper_models() -> dict[str, nn.Module]:
    """The paper-size Moving MNIST models (1 channel, 64x64, 10 -> 10, d 528), built once."""
    torch.manual_seed(0)
    return {
        "ae": VPTRAutoencoder(1, (64, 64)),
        "far": VPTRFAR(),
        "nar": VPTRNAR(),
    }


def test_paper_size_autoencoder_maps_64x64_to_8x8x528(paper_models: dict[str, nn.Module]) -> None:
    ae = paper_models["ae"]
    assert ae.feature_size == (8, 8) and ae.feature_dim == 528
    far, nar = paper_models["far"], paper_models["nar"]
    assert len(far.blocks) == 12 and len(nar.encoder) == 4 and len(nar.decoder) == 8
    assert tuple(nar.queries.shape) == (10, 8, 8, 528)
    assert far.max_input_frames == 19  # trained on 20 frames: inputs 0..18


def test_paper_parameter_count_of_far(paper_models: dict[str, nn.Module]) -> None:
    """VPTR-FAR: 136.37M, counting the autoencoder's encoder and decoder (no discriminator)."""
    ae = paper_models["ae"]
    total = count(ae.encoder) + count(ae.decoder) + count(paper_models["far"])
    assert total == pytest.approx(136.37e6, rel=0.03)
    assert total == pytest.approx(136.37e6, abs=0.01e6)


def test_paper_parameter_count_of_nar(paper_models: dict[str, nn.Module]) -> None:
    """VPTR-NAR: 165.83M, the same counting, without the learned queries."""
    ae, nar = paper_models["ae"], paper_models["nar"]
    total = count(ae.encoder) + count(ae.decoder) + count(nar) - nar.queries.numel()
    assert total == pytest.approx(165.83e6, rel=0.03)
    assert total == pytest.approx(165.83e6, abs=0.01e6)


# --------------------------------------------------------------------------- autoencoder


@pytest.mark.parametrize(("activation", "low"), [("sigmoid", 0.0), ("tanh", -1.0)])
def test_autoencoder_shapes_and_output_range(activation: str, low: float) -> None:
    torch.manual_seed(0)
    ae = VPTRAutoencoder(3, (16, 24), output_activation=activation, **TINY_AE)
    assert ae.feature_size == (4, 6)
    video = torch.rand(2, 3, 3, 16, 24) * 4 - 2
    features = ae.encode(video)
    assert features.shape == (2, 3, 16, 4, 6)
    assert features.min() >= 0  # the encoder ends in a ReLU
    output = ae.decode(features)
    assert output.shape == video.shape
    assert ae(video).shape == video.shape
    assert low <= output.min() and output.max() <= 1.0
    if activation == "tanh":
        assert output.min() < 0  # really the tanh range, not a sigmoid's
    pixels = torch.rand(2, 3, 3, 16, 24)
    torch.testing.assert_close(ae.to_unit_range(ae.to_output_range(pixels)), pixels)


def test_autoencoder_encodes_each_frame_on_its_own() -> None:
    torch.manual_seed(0)
    ae = VPTRAutoencoder(1, (8, 8), **TINY_AE).eval()
    video = torch.rand(2, 3, 1, 8, 8)
    features = ae.encode(video)
    torch.testing.assert_close(features[:, 1], ae.encoder(video[:, 1]))
    torch.testing.assert_close(ae.decode(features)[1], ae.decoder(features[1]))


@pytest.mark.parametrize("size", [(18, 16), (16, 20), (6, 6)])
def test_autoencoder_rejects_sizes_not_divisible_by_the_downsampling(size: tuple[int, int]) -> None:
    with pytest.raises(ConfigError, match=r"data\.height=.* must be multiples of 8"):
        VPTRAutoencoder(1, size, num_downsampling=3)


def test_autoencoder_rejects_an_unknown_output_activation() -> None:
    with pytest.raises(ValueError, match="output_activation"):
        VPTRAutoencoder(1, (8, 8), output_activation="relu", **TINY_AE)


@pytest.mark.parametrize(("size", "layers", "expected"), [(64, 3, 6), (256, 3, 30), (32, 2, 6)])
def test_patch_discriminator_gives_one_logit_per_patch(
    size: int, layers: int, expected: int
) -> None:
    discriminator = PatchDiscriminator(in_channels=3, base_channels=4, num_layers=layers)
    logits = discriminator(torch.randn(2, 3, size, size))
    assert logits.shape == (2, 1, expected, expected)  # 256 -> 30x30: pix2pix's 70x70 PatchGAN


# --------------------------------------------------------------------------- position codes


def test_sine_position_codes() -> None:
    code = sincos_1d(5, 8)
    assert code.shape == (5, 8)
    torch.testing.assert_close(code[0, 0::2], torch.zeros(4))  # sin(0)
    torch.testing.assert_close(code[0, 1::2], torch.ones(4))  # cos(0)
    torch.testing.assert_close(sincos_1d(3, 8, offset=2), code[2:5])
    assert torch.unique(code, dim=0).shape[0] == 5  # every position distinct
    grid = sincos_2d(3, 4, 8)
    assert grid.shape == (3, 4, 8)
    torch.testing.assert_close(grid[1, 2, :4], sincos_1d(3, 4)[1])  # rows
    torch.testing.assert_close(grid[1, 2, 4:], sincos_1d(4, 4)[2])  # columns


# --------------------------------------------------------------------------- window attention


@pytest.mark.parametrize("relative_position", [False, True])
@pytest.mark.parametrize(("height", "width"), [(4, 4), (5, 6), (3, 7)])
def test_window_attention_keeps_the_shape_padding_odd_sizes(
    relative_position: bool, height: int, width: int
) -> None:
    torch.manual_seed(0)
    attention = WindowAttention(16, 2, window_size=4, relative_position=relative_position)
    x = torch.randn(2, 3, height, width, 16)
    out = attention(x)
    assert out.shape == x.shape
    assert torch.isfinite(out).all()
    out.sum().backward()
    grad = (
        attention.relative_bias.grad
        if relative_position
        else attention.attention.q_proj.weight.grad
    )
    assert grad is not None and grad.abs().sum() > 0


@pytest.mark.parametrize("relative_position", [False, True])
def test_window_attention_is_local_to_each_window(relative_position: bool) -> None:
    torch.manual_seed(0)
    attention = WindowAttention(16, 2, window_size=2, relative_position=relative_position).eval()
    x = torch.randn(1, 2, 4, 6, 16)
    changed = x.clone()
    changed[:, :, 2, 3] += 1.0  # a token of the window rows 2-3, columns 2-3
    before, after = attention(x), attention(changed)
    same = torch.ones(4, 6, dtype=torch.bool)
    same[2:4, 2:4] = False
    torch.testing.assert_close(after[:, :, same], before[:, :, same])
    for row, col in [(2, 2), (2, 3), (3, 2), (3, 3)]:
        assert not torch.allclose(after[:, :, row, col], before[:, :, row, col])


def test_window_attention_relative_bias_matters() -> None:
    torch.manual_seed(0)
    attention = WindowAttention(16, 2, window_size=2, relative_position=True).eval()
    x = torch.randn(1, 1, 2, 2, 16)
    before = attention(x)
    with torch.no_grad():
        attention.relative_bias.add_(torch.randn_like(attention.relative_bias))
    assert not torch.allclose(attention(x), before)


def test_conv_ffn_norms() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 3, 4, 4, 8)
    for norm in ("batch", "frame"):
        assert ConvFFN(8, 16, (4, 4), norm=norm)(x).shape == x.shape
    with pytest.raises(ValueError, match="norm"):
        ConvFFN(8, 16, (4, 4), norm="group")
    # Per-frame norm mixes no frames, even in train mode; BatchNorm does.
    frame, batch = ConvFFN(8, 16, (4, 4), norm="frame").train(), ConvFFN(8, 16, (4, 4)).train()
    changed = x.clone()
    changed[1, 2] += 3.0
    torch.testing.assert_close(frame(changed)[0], frame(x)[0])
    assert not torch.allclose(batch(changed)[0], batch(x)[0])


def test_vidhrformer_blocks_keep_the_shape() -> None:
    torch.manual_seed(0)
    block = VidHRFormerBlock(32, 4, (4, 4), window_size=2, drop_rate=0.0, drop_path_rate=0.0)
    x = torch.randn(2, 3, 4, 4, 32)
    assert block(x, sincos_1d(3, 32)).shape == x.shape
    decoder = VidHRFormerDecoderBlock(
        32, 4, (4, 4), window_size=2, drop_rate=0.0, drop_path_rate=0.0
    )
    target = torch.randn(2, 5, 4, 4, 32)
    out = decoder(target, torch.randn(5, 4, 4, 32), x, sincos_1d(5, 32, 3), sincos_1d(3, 32))
    assert out.shape == target.shape
    with pytest.raises(ValueError, match="divisible"):
        VidHRFormerBlock(30, 4, (4, 4))


# --------------------------------------------------------------------------- FAR


def tiny_far(**overrides: object) -> VPTRFAR:
    torch.manual_seed(0)
    options = {**TINY, "depth": 2, "trained_frames": 6, **overrides}
    return VPTRFAR(**options)


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_far_is_causal(mode: str) -> None:
    """Output t depends on inputs 0..t only, in eval and (with per-frame norms) train mode."""
    far = tiny_far()
    far.train(mode == "train")
    features = torch.rand(2, 5, 32, 4, 4)
    out = far(features)
    assert out.shape == features.shape and out.min() >= 0
    for k in range(5):
        changed = features.clone()
        changed[:, k] = torch.rand(2, 32, 4, 4)
        after = far(changed)
        torch.testing.assert_close(after[:, :k], out[:, :k])
        assert not torch.allclose(after[:, k], out[:, k])


def test_far_relative_position_is_causal_too() -> None:
    far = tiny_far(relative_position=True).eval()
    features = torch.rand(1, 4, 32, 4, 4)
    changed = features.clone()
    changed[:, 2] += 1.0
    before, after = far(features), far(changed)
    torch.testing.assert_close(after[:, :2], before[:, :2])
    assert not torch.allclose(after[:, 2:], before[:, 2:])


class Recorder:
    """A refine callable and a forward pre-hook that record what the predictor was given."""

    def __init__(self) -> None:
        self.refined: list[int] = []
        self.inputs: list[int] = []

    def refine(self, features: torch.Tensor) -> torch.Tensor:
        self.refined.append(features.shape[1])
        return features * 0.5

    def hook(self, module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        self.inputs.append(args[0].shape[1])


@pytest.mark.parametrize("horizon", [1, 3, 9])
@pytest.mark.parametrize("cached", [False, True])
def test_far_predict_refines_each_step_and_slides_its_window(horizon: int, cached: bool) -> None:
    far = tiny_far(trained_frames=6).eval()  # at most 5 input frames
    assert far.max_input_frames == 5
    recorder = Recorder()
    far.register_forward_pre_hook(recorder.hook)
    context = torch.rand(2, 3, 32, 4, 4)
    predicted = far.predict(context, horizon, refine=recorder.refine, cached=cached)
    assert predicted.shape == (2, horizon, 32, 4, 4)
    assert recorder.refined == [1] * (horizon - 1)  # once per fed-back step, one frame each
    if cached:
        # The context once, then one frame per step until the window (5) is full; from then
        # on the window slides and is recomputed whole.
        assert recorder.inputs == [3] + [1 if 3 + t <= 5 else 5 for t in range(1, horizon)]
    else:
        assert recorder.inputs == [min(3 + t, 5) for t in range(horizon)]
    # The first step is the last output of one pass over the context.
    recorder.inputs.clear()
    torch.testing.assert_close(predicted[:, :1], far(context)[:, -1:])


@pytest.mark.parametrize("relative_position", [False, True])
def test_far_cached_prediction_equals_the_full_recompute(relative_position: bool) -> None:
    """The key / value cache changes the cost, not the outputs: 9 frames from 3, through a
    window of 5, so the run covers the cached steps, the full window and the slide."""
    far = tiny_far(trained_frames=6, relative_position=relative_position).eval()
    context = torch.rand(2, 3, 32, 4, 4)

    def refine(features: torch.Tensor) -> torch.Tensor:
        return features.flip(-1) * 0.9

    cached = far.predict(context, 9, refine=refine, cached=True)
    full = far.predict(context, 9, refine=refine, cached=False)
    torch.testing.assert_close(cached, full, rtol=1e-5, atol=1e-5)


def test_far_incremental_forward_equals_one_pass() -> None:
    """Frames fed one or two at a time through the caches give the one-pass outputs."""
    far = tiny_far().eval()
    features = torch.rand(2, 5, 32, 4, 4)
    caches = far.new_caches()
    pieces = [
        far(features[:, :2], caches),
        far(features[:, 2:3], caches),
        far(features[:, 3:], caches),
    ]
    assert [cache.length for cache in caches] == [5, 5]
    torch.testing.assert_close(torch.cat(pieces, dim=1), far(features), rtol=1e-5, atol=1e-5)


def test_far_predict_feeds_back_refined_features() -> None:
    far = tiny_far().eval()
    context = torch.rand(1, 3, 32, 4, 4)
    plain = far.predict(context, 3)
    refined = far.predict(context, 3, refine=lambda f: f * 0.5)
    torch.testing.assert_close(refined[:, 0], plain[:, 0])
    assert not torch.allclose(refined[:, 1:], plain[:, 1:])


# --------------------------------------------------------------------------- NAR


def tiny_nar(**overrides: object) -> VPTRNAR:
    torch.manual_seed(0)
    options = {
        **TINY,
        "encoder_depth": 1,
        "decoder_depth": 2,
        "context_frames": 3,
        "future_frames": 2,
        **overrides,
    }
    return VPTRNAR(**options)


def test_nar_output_shape_and_horizon_limit() -> None:
    nar = tiny_nar().eval()
    context = torch.rand(2, 3, 32, 4, 4)
    out = nar(context)
    assert out.shape == (2, 2, 32, 4, 4) and out.min() >= 0
    assert nar(context, 1).shape == (2, 1, 32, 4, 4)
    for horizon in (3, 0):
        with pytest.raises(ValueError, match="1..2"):
            nar(context, horizon)


def test_nar_train_mode_backpropagates_to_the_queries() -> None:
    nar = tiny_nar().train()
    nar(torch.rand(2, 3, 32, 4, 4)).square().mean().backward()
    assert nar.queries.grad is not None and nar.queries.grad.abs().sum() > 0


@pytest.mark.parametrize(("horizon", "passes"), [(1, 1), (2, 1), (3, 2), (5, 3), (6, 3)])
def test_nar_predict_is_block_autoregressive(horizon: int, passes: int) -> None:
    nar = tiny_nar().eval()
    recorder = Recorder()
    nar.register_forward_pre_hook(recorder.hook)
    context = torch.rand(2, 3, 32, 4, 4)
    predicted = nar.predict(context, horizon, refine=recorder.refine)
    assert predicted.shape == (2, horizon, 32, 4, 4)
    assert len(recorder.refined) == math.ceil(horizon / 2) - 1 == passes - 1
    assert recorder.inputs == [3] * passes  # always the 3 most recent frames as context
    torch.testing.assert_close(predicted[:, : min(horizon, 2)], nar(context, min(horizon, 2)))


def test_nar_predict_keeps_a_longer_context_to_the_trained_length() -> None:
    nar = tiny_nar().eval()
    recorder = Recorder()
    nar.register_forward_pre_hook(recorder.hook)
    context = torch.rand(2, 7, 32, 4, 4)
    predicted = nar.predict(context, 2)
    assert recorder.inputs == [3]
    torch.testing.assert_close(predicted, nar(context[:, -3:], 2))


# --------------------------------------------------------------------------- metrics


def test_frame_mse_is_the_per_frame_pixel_sum() -> None:
    target = torch.rand(2, 3, 1, 4, 4)
    assert torch.equal(frame_mse(target, target), torch.zeros(2, 3))
    prediction = target.clone()
    prediction[0, 1, 0, 0, 0] += 0.5
    prediction[0, 1, 0, 2, 3] -= 0.25
    prediction[1, 2] += 0.1  # 16 pixels off by 0.1
    expected = torch.zeros(2, 3)
    expected[0, 1] = 0.5**2 + 0.25**2
    expected[1, 2] = 16 * 0.1**2
    torch.testing.assert_close(frame_mse(prediction, target), expected)
    rgb = torch.zeros(1, 1, 3, 2, 2)
    assert frame_mse(rgb + 1, rgb).item() == pytest.approx(12.0)  # summed over channels too


@pytest.mark.parametrize("error", [0.5, 0.1, 0.01])
def test_frame_psnr_of_a_constant_error(error: float) -> None:
    target = torch.full((2, 3, 3, 8, 8), 0.25)
    psnr = frame_psnr(target + error, target)
    assert psnr.shape == (2, 3)
    torch.testing.assert_close(
        psnr, torch.full((2, 3), -10 * math.log10(error**2)), atol=1e-3, rtol=0
    )


def test_frame_ssim_is_one_for_identical_frames_and_lower_for_noise() -> None:
    torch.manual_seed(0)
    target = torch.rand(2, 3, 1, 32, 32)
    same = frame_ssim(target, target)
    assert same.shape == (2, 3)
    torch.testing.assert_close(same, torch.ones(2, 3), atol=1e-4, rtol=0)
    noisy = frame_ssim((target + 0.3 * torch.randn_like(target)).clamp(0, 1), target)
    assert (noisy < 0.9).all()
    slightly = frame_ssim((target + 0.05 * torch.randn_like(target)).clamp(0, 1), target)
    assert (noisy < slightly).all() and (slightly < 1).all()


def test_gradient_difference_loss() -> None:
    torch.manual_seed(0)
    video = torch.rand(2, 3, 1, 8, 8)
    assert gradient_difference_loss(video, video).item() == 0.0
    assert gradient_difference_loss(video + 0.3, video).item() == pytest.approx(0.0, abs=1e-6)
    assert gradient_difference_loss(torch.zeros_like(video), video).item() > 0.1
    # Only spatial gradients count: shifting frame 1 by a constant costs nothing.
    shifted = video.clone()
    shifted[:, 1] += 0.2
    assert gradient_difference_loss(shifted, video).item() == pytest.approx(0.0, abs=1e-6)


def test_timestep_curves_average_over_videos(tmp_path) -> None:
    curves = TimestepCurves()
    curves.update(
        {"mse": torch.tensor([[1.0, 2.0, 3.0]]), "psnr": torch.tensor([[10.0, 20.0, 30.0]])}
    )
    curves.update(
        {"mse": torch.tensor([[3.0, 4.0, 5.0], [5.0, 6.0, 7.0]]), "psnr": torch.zeros(2, 3)}
    )
    means = curves.means()
    torch.testing.assert_close(means["mse"], torch.tensor([3.0, 4.0, 5.0], dtype=torch.float64))
    path = curves.write(tmp_path, means)
    rows = path.read_text().splitlines()
    assert rows[0] == "future_frame,mse,psnr" and len(rows) == 4
    assert rows[1].startswith("1,3,")
    assert (tmp_path / "prediction_curves.png").stat().st_size > 0

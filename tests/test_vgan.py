"""VGAN: the two-stream generator's streams and composition, the 3D discriminator, sizes that
fit or are refused, the task's losses, and train -> evaluate -> generate through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from PIL import Image

from tests.conftest import FAST_RUN, assert_ok, assert_one_sentence_error, run_cli
from tests.test_fvd import write_tiny_detector
from videogen.config import CONFIG_DIR
from videogen.errors import ConfigError
from videogen.metrics.motion import motion_inside_mask
from videogen.models.layers import compose_masked
from videogen.models.vgan import (
    ClipDiscriminator,
    TwoStreamGenerator,
    TwoStreamOutput,
    real_logit,
)
from videogen.tasks.base import read_checkpoint
from videogen.tasks.vgan import VganTask, softmax_gan_loss
from videogen.utils.video_io import GAP

pytestmark = pytest.mark.usefixtures("one_intra_op_thread", "one_thread_per_cli_run")

TINY_NET = {"num_frames": 8, "img_size": 32, "base_channels": 8, "max_channels": 16}
# Two training steps of a class-conditional vgan_tiny on 8 x 32 x 32 synthetic clips.
VGAN = ["model=vgan_tiny", "model.net.num_classes=8", *FAST_RUN]
QUICK_TEST = ["model.samples_per_class=2", "model.sample_batch_size=8"]


def perturbed(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """`module` with every parameter moved by noise: outputs far from the initial ones (a mask
    near 0.5 everywhere, streams near 0), so that checks cannot pass by accident."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in module.parameters():
            param.add_(torch.randn(param.shape, generator=generator) * 0.3)
    return module.eval()


def tiny_generator(**changes: object) -> TwoStreamGenerator:
    torch.manual_seed(0)
    return perturbed(TwoStreamGenerator(**{**TINY_NET, **changes}))


def metrics_of(run_dir: Path) -> dict[str, float]:
    return json.loads((run_dir / "metrics.json").read_text())


# --------------------------------------------------------------------------- the networks


def test_the_background_stream_is_one_image_in_every_frame() -> None:
    net = tiny_generator()
    z = torch.randn(3, 100)
    out = net(z)
    assert out.background.shape == (3, 8, 3, 32, 32)
    for t in range(8):
        assert torch.equal(out.background[:, t], out.background[:, 0])
    # ...and that image is the 2D stream's output for this z, repeated along time (not tiled
    # along another axis): a view with stride 0 over the frames.
    image = net.background(z[:, :, None, None])
    assert torch.equal(out.background[:, 5], image)
    assert out.background.stride(1) == 0
    # the clips themselves move: the foreground differs from frame to frame
    assert not torch.equal(out.foreground[:, 0], out.foreground[:, 1])


def test_resize_upsampling_keeps_the_streams_and_draws_no_even_odd_flicker() -> None:
    """`upsample=resize`: the same clip shapes and stream contract; a constant input to the
    foreground trunk gives frames that differ only at the clip's ends (zero padding), where
    the paper's stride-2 transposed convs alternate between even and odd frames."""
    flicker = {}
    for mode in ("transposed", "resize"):
        net = tiny_generator(upsample=mode)
        out = net(torch.randn(2, 100))
        assert out.video.shape == (2, 8, 3, 32, 32) and out.mask.shape == (2, 8, 1, 32, 32)
        assert out.background.stride(1) == 0 and 0 <= out.mask.min() <= out.mask.max() <= 1
        # One temporal-doubling layer of each kind on a map that is constant over time.
        layer = upsampling_layer(mode)
        torch.manual_seed(0)
        torch.nn.init.normal_(layer.weight if mode == "transposed" else layer[1].weight)
        frames = layer(torch.ones(1, 4, 4, 8, 8))[0, :, 2:-2]  # (C, T, H, W) away from the ends
        flicker[mode] = (frames[:, 1:] - frames[:, :-1]).abs().max().item()
    assert flicker["resize"] < 1e-5 < flicker["transposed"]


def upsampling_layer(mode: str) -> torch.nn.Module:
    from videogen.models.vgan.generator import upsampling

    return upsampling(4, 4, doubles_time=True, bias=False, mode=mode)


def test_an_unknown_upsampling_or_mask_activation_is_refused() -> None:
    with pytest.raises(ConfigError, match="model.net.upsample='bilinear' is not one of"):
        TwoStreamGenerator(**{**TINY_NET, "upsample": "bilinear"})
    with pytest.raises(ConfigError, match="model.net.mask_activation='relu' is not one of"):
        TwoStreamGenerator(**{**TINY_NET, "mask_activation": "relu"})


def test_a_hard_sigmoid_mask_closes_exactly_so_no_foreground_shows() -> None:
    """With the hard sigmoid, a mask logit under -3 gives m = 0 exactly: the clip is the
    background, bit for bit, where the sigmoid would still let e^-logit of the foreground in."""
    clips = {}
    for activation in ("sigmoid", "hard_sigmoid"):
        torch.manual_seed(0)  # the initial weights (N(0, 0.02)): the logits stay near the bias
        net = TwoStreamGenerator(**{**TINY_NET, "mask_activation": activation, "mask_bias": -8.0})
        out = net(torch.randn(2, 100))
        assert 0 <= out.mask.min() <= out.mask.max() <= 1
        clips[activation] = (out.video - out.background).abs().max().item()
    assert clips["hard_sigmoid"] == 0.0 < clips["sigmoid"]


def test_the_mask_is_in_the_unit_interval_with_one_channel() -> None:
    net = tiny_generator()
    mask = net(torch.randn(4, 100) * 5).mask
    assert mask.shape == (4, 8, 1, 32, 32)
    assert mask.min() >= 0 and mask.max() <= 1
    assert mask.min() < 0.1 and mask.max() > 0.9  # a sigmoid, not a clamp of a narrow range
    # the paper's initialisation opens the mask halfway; a negative mask_bias starts it closed
    torch.manual_seed(0)
    for bias, expected in ((0.0, 0.5), (-2.0, 0.1192)):
        fresh = TwoStreamGenerator(**TINY_NET, mask_bias=bias).eval()
        assert fresh(torch.randn(4, 100)).mask.mean().item() == pytest.approx(expected, abs=0.01)


def test_the_clip_is_m_f_plus_one_minus_m_b() -> None:
    net = tiny_generator()
    out = net(torch.randn(2, 100))
    expected = out.mask * out.foreground + (1 - out.mask) * out.background
    torch.testing.assert_close(out.video, expected, rtol=0, atol=1e-6)
    # A mask forced to 0 shows the background alone, forced to 1 the foreground alone.
    head = net.mask_head[0]
    for bias, stream in ((-1e4, "background"), (1e4, "foreground")):
        with torch.no_grad():
            head.bias.fill_(bias)
        out = net(torch.randn(2, 100))
        torch.testing.assert_close(out.video, getattr(out, stream), rtol=0, atol=1e-6)


def test_paper_size_networks_have_the_papers_layers_and_these_parameter_counts() -> None:
    generator, discriminator = TwoStreamGenerator(), ClipDiscriminator()
    # G: 2D 100 -> 512 (4x4) -> 256 -> 128 -> 64 -> 3; 3D 100 -> 512 (2x4x4) -> ... -> 64
    convs2d = [m for m in generator.background if isinstance(m, torch.nn.ConvTranspose2d)]
    assert [(c.in_channels, c.out_channels) for c in convs2d] == [
        (100, 512), (512, 256), (256, 128), (128, 64), (64, 3),
    ]  # fmt: skip
    convs3d = [m for m in generator.foreground if isinstance(m, torch.nn.ConvTranspose3d)]
    assert [(c.in_channels, c.out_channels) for c in convs3d] == [
        (100, 512), (512, 256), (256, 128), (128, 64),
    ]  # fmt: skip
    assert convs3d[0].kernel_size == (2, 4, 4)
    assert generator.video_head[0].out_channels == 3 and generator.mask_head[0].out_channels == 1
    # D: 3 -> 64 -> 128 -> 256 -> 512, BatchNorm on all but the first, 2-way output
    convs = [m for m in discriminator.features if isinstance(m, torch.nn.Conv3d)]
    assert [(c.in_channels, c.out_channels) for c in convs] == [
        (3, 64), (64, 128), (128, 256), (256, 512),
    ]  # fmt: skip
    norms = [m for m in discriminator.features if isinstance(m, torch.nn.BatchNorm3d)]
    assert len(norms) == 3 and isinstance(discriminator.features[1], torch.nn.LeakyReLU)
    assert discriminator.features[1].negative_slope == 0.2
    assert discriminator.head.out_channels == 2
    count = lambda module: sum(p.numel() for p in module.parameters())  # noqa: E731
    assert count(generator) == 16_243_463
    assert count(discriminator) == 11_056_962
    with torch.no_grad():
        clip = generator.eval()(torch.randn(1, 100)).video
        assert clip.shape == (1, 32, 3, 64, 64)
        assert discriminator.eval()(clip).shape == (1, 2)


@pytest.mark.parametrize(
    ("frames", "size", "seed"),
    [
        (16, 64, (1, 4, 4)),
        (8, 64, (1, 4, 4)),
        (7, 32, (7, 4, 4)),
        (32, 128, (1, 4, 4)),
        (12, [32, 64], (3, 4, 8)),
    ],
)
def test_other_clip_lengths_and_frame_sizes_are_built(frames: int, size, seed) -> None:
    generator = TwoStreamGenerator(frames, size, base_channels=4, max_channels=8)
    discriminator = ClipDiscriminator(frames, size, base_channels=4, max_channels=8)
    assert generator.plan.seed == seed
    height, width = (size, size) if isinstance(size, int) else size
    with torch.no_grad():
        clip = generator.eval()(torch.randn(2, 100)).video
        assert clip.shape == (2, frames, 3, height, width)
        assert discriminator.eval()(clip).shape == (2, 2)


def test_a_clip_length_the_networks_were_not_built_for_is_refused_in_one_sentence() -> None:
    discriminator = ClipDiscriminator(8, 32, base_channels=4, max_channels=8)
    with pytest.raises(ConfigError) as error:
        discriminator(torch.zeros(2, 16, 3, 32, 32))
    message = str(error.value)
    assert "\n" not in message and message.endswith(".")
    assert "built for clips of 8 frames at 32x32" in message and "data.num_frames" in message


def test_frame_sizes_that_do_not_double_from_4x4_are_refused_in_one_sentence() -> None:
    for size in (48, 4, [32, 36]):
        with pytest.raises(ConfigError, match=r"data.height and data.width") as error:
            TwoStreamGenerator(8, size)
        assert "\n" not in str(error.value)


def test_class_conditioning_reaches_both_networks() -> None:
    generator = tiny_generator(num_classes=4)
    torch.manual_seed(1)
    discriminator = perturbed(ClipDiscriminator(**{**TINY_NET, "num_classes": 4}))
    z = torch.randn(2, 100)
    first, second = generator(z, torch.tensor([0, 0])), generator(z, torch.tensor([3, 3]))
    assert not torch.allclose(first.video, second.video)
    clip = first.video
    assert not torch.allclose(
        discriminator(clip, torch.tensor([0, 0])), discriminator(clip, torch.tensor([3, 3]))
    )
    with pytest.raises(ConfigError, match="class-conditional"):
        generator(z)


# --------------------------------------------------------------------------- the losses


def tiny_task(num_classes: int = 0, **changes: object) -> VganTask:
    torch.manual_seed(0)
    net = {
        "_target_": "videogen.models.vgan.TwoStreamGenerator",
        **TINY_NET,
        "num_classes": num_classes,
    }
    discriminator = {"_target_": "videogen.models.vgan.ClipDiscriminator", "base_channels": 8}
    return VganTask(net=net, discriminator=discriminator, **changes)


def test_the_paper_config_weights_the_mask_l1_by_0_1_in_the_generator_loss() -> None:
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name="train", overrides=["model=vgan"])
    assert cfg.model.mask_weight == 0.1
    assert cfg.optimizer.lr == 2e-4 and list(cfg.optimizer.betas) == [0.5, 0.999]
    assert cfg.model.motion_weight == 0.0  # the paper's loss has no motion term
    task = tiny_task(mask_weight=cfg.model.mask_weight, motion_weight=cfg.model.motion_weight)
    logits = torch.randn(4, 2)
    mask = torch.rand(4, 8, 1, 32, 32, requires_grad=True)
    foreground = torch.rand(4, 8, 3, 32, 32) * 2 - 1  # moving everywhere
    losses = task.generator_losses(logits, two_stream_output(foreground, mask))
    torch.testing.assert_close(losses["g_loss"], losses["g_adversarial"] + 0.1 * mask.mean())
    torch.testing.assert_close(losses["mask_l1"], mask.abs().mean())
    # the mask's gradient is the L1 term's alone: 0.1 / (number of mask values) everywhere
    losses["g_loss"].backward()
    torch.testing.assert_close(mask.grad, torch.full_like(mask, 0.1 / mask.numel()))


def two_stream_output(foreground: torch.Tensor, mask: torch.Tensor) -> TwoStreamOutput:
    """G's output for this foreground and mask over a still background (the first frame)."""
    background = foreground[:, :1].detach().expand_as(foreground)
    return TwoStreamOutput(
        compose_masked(mask, foreground, background), foreground, background, mask
    )


def test_the_motion_term_opens_the_mask_where_the_clip_moves() -> None:
    """motion_weight x the change outside the mask: 0 under a fully open mask, else the change
    weighted by 1 - mask. Its gradient opens a half-closed mask where the clip changes (and
    only there; the change of m f + (1 - m) b taken whole would close it, as it shrinks with m)
    and stills the foreground where the mask is not open."""
    from videogen.metrics.motion import motion_outside_mask

    task = tiny_task(mask_weight=0.0, motion_weight=2.0)
    foreground = torch.zeros(1, 3, 3, 4, 4)
    foreground[:, 1, :, 0, 0] = 1.0  # one pixel flashes in the middle frame
    for value in (1.0, 0.5):
        output = two_stream_output(foreground, torch.full((1, 3, 1, 4, 4), value))
        losses = task.generator_losses(torch.randn(1, 2), output)
        motion = losses["motion_outside_mask"]
        # 2 steps x 3 channels x |change| (1 - value) x (1 - value), over 2 steps of 16 pixels
        assert motion.item() == pytest.approx(2 * 3 * (1 - value) ** 2 / 32)
        torch.testing.assert_close(motion, motion_outside_mask(output.video, output.mask))
        torch.testing.assert_close(losses["g_loss"], losses["g_adversarial"] + 2.0 * motion)
    mask = torch.full((1, 3, 1, 4, 4), 0.2, requires_grad=True)
    moving = foreground.clone().requires_grad_()
    losses = task.generator_losses(torch.randn(1, 2), two_stream_output(moving, mask))
    losses["g_loss"].backward()
    step = -mask.grad[0, :, 0]  # the direction a descent step moves each mask value
    assert (step[:, 0, 0] > 0).all() and (step.flatten(1)[:, 1:] == 0).all()
    # a descent step shrinks the flash of the foreground
    assert -moving.grad[0, 1, :, 0, 0].sum() < 0


def test_the_two_way_softmax_loss_is_a_binary_cross_entropy_of_the_logit_difference() -> None:
    logits = torch.randn(6, 2)
    for target in (0, 1):
        expected = F.binary_cross_entropy_with_logits(
            real_logit(logits), torch.full((6,), float(target))
        )
        torch.testing.assert_close(softmax_gan_loss(logits, target), expected)
    task = tiny_task()
    real, fake = torch.randn(4, 2), torch.randn(4, 2)
    torch.testing.assert_close(
        task.discriminator_loss(real, fake),
        softmax_gan_loss(real, 1) + softmax_gan_loss(fake, 0),
    )


def test_motion_counts_inside_the_mask_of_either_frame() -> None:
    video = torch.zeros(1, 3, 1, 4, 4)
    mask = torch.zeros(1, 3, 1, 4, 4)
    video[0, 1:, 0, 0, 0] = 1.0  # a pixel lights up at t = 1 and stays (change 1 at step 0)
    video[0, 2, 0, 3, 3] = 2.0  # another lights up at t = 2 (change 2 at step 1)
    mask[0, 1, 0, 0, 0] = 0.9  # only the first is masked (in frame 1)
    inside, total = motion_inside_mask(video, mask)
    assert total.item() == 3.0 and inside.item() == 1.0


def test_the_task_builds_the_discriminator_for_the_generators_clips() -> None:
    task = tiny_task()
    plan = task.discriminator.plan
    assert (plan.num_frames, plan.height, plan.width) == (8, 32, 32)
    clips = task.sample_clips(None, 3, generator=torch.Generator().manual_seed(0))
    again = task.sample_clips(None, 3, generator=torch.Generator().manual_seed(0))
    assert clips.shape == (3, 8, 3, 32, 32) and torch.equal(clips, again)
    assert clips.min() >= 0 and clips.max() <= 1
    panels = task.sample_panels(None, 2, generator=torch.Generator().manual_seed(0))
    assert list(panels.videos) == ["generated", "background", "foreground", "mask"]
    pair = task.sample_clips(None, 2, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(panels.videos["generated"], pair)  # the same draw
    assert panels.videos["mask"].shape == (2, 8, 1, 32, 32)
    with pytest.raises(ConfigError, match="unconditional"):
        task.sample_clips(torch.tensor([0]), 1)


def test_validation_panels_show_real_clips_beside_the_streams_of_clips_for_their_labels() -> None:
    task = tiny_task(num_classes=8)
    assert task.discriminator.num_classes == 8  # the discriminator follows the generator
    video = torch.randint(0, 256, (2, 8, 3, 32, 32), dtype=torch.uint8)
    batch = {"video": video, "label": torch.tensor([1, 6])}
    panels = task.generation_panels(batch).videos
    assert list(panels) == ["real", "generated", "background", "foreground", "mask"]
    torch.testing.assert_close(panels["real"], video.float() / 255, rtol=0, atol=1e-6)
    generator = torch.Generator().manual_seed(task.sample_seed)
    expected = task.sample_clips(torch.tensor([1, 6]), 2, generator=generator)
    torch.testing.assert_close(panels["generated"], expected)
    with pytest.raises(ConfigError, match="no labels"):
        task.generation_panels({"video": video})


# --------------------------------------------------------------------------- the CLI


@pytest.fixture(scope="module")
def vgan_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("vgan")
    result = run_cli("videogen", *VGAN, *QUICK_TEST, f"hydra.run.dir={run_dir}", cwd=run_dir)
    assert_ok(result)
    return run_dir


def test_training_logs_both_players_and_the_streams(vgan_run: Path) -> None:
    metrics = metrics_of(vgan_run)
    for name in ("g_loss", "d_loss", "g_adversarial", "mask_l1", "mask_mean", "d_real", "d_fake"):
        assert torch.isfinite(torch.tensor(metrics[f"train/{name}"])), name
    for stream in ("background", "foreground"):
        assert -1 <= metrics[f"train/{stream}_mean"] <= 1 and metrics[f"train/{stream}_std"] > 0
    assert 0 < metrics["train/mask_mean"] < 1
    assert metrics["train/mask_l1"] == pytest.approx(metrics["train/mask_mean"])
    assert 0 <= metrics["test/motion_in_mask"] <= 1 and metrics["test/motion"] > 0
    checkpoint = read_checkpoint(vgan_run / "checkpoints" / "last.ckpt")
    # two optimisers (G, D), each stepped on both batches
    states = checkpoint["optimizer_states"]
    assert len(states) == 2 and all(int(s["state"][0]["step"]) == 2 for s in states)
    assert any(key.startswith("discriminator.") for key in checkpoint["state_dict"])


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")
def test_evaluate_judges_the_clips_and_reports_fvd(
    vgan_run: Path, judge_run: Path, tmp_path: Path
) -> None:
    detector = write_tiny_detector(tmp_path / "i3d_torchscript.pt")
    result = run_cli(
        "videogen.evaluate",
        f"ckpt_path={vgan_run / 'checkpoints' / 'last.ckpt'}",
        f"model.judge_ckpt={judge_run / 'checkpoints' / 'best.ckpt'}",
        f"model.fvd_network_path={detector}",
        "model.fvd.frames=8",
        "model.fvd.resolution=32",
        *QUICK_TEST,
        "data.test_size=16",
        "data.batch_size=8",
        f"hydra.run.dir={tmp_path}",
        cwd=tmp_path,
    )
    assert_ok(result)
    metrics = metrics_of(tmp_path)
    assert 0.0 <= metrics["test/judge_acc"] <= 1.0
    assert metrics["test/judge_fd"] > 0
    assert metrics["test/generated_clips"] == 16  # 2 per class, 8 classes
    assert metrics["test/fvd"] > 0 and metrics["test/fvd_generated_clips"] == 16
    assert 0 <= metrics["test/motion_in_mask"] <= 1
    record = json.loads((tmp_path / "fvd_protocol.json").read_text())
    assert record["sampling"]["generator"].startswith("one forward pass")


def test_generate_writes_each_clip_beside_its_streams(vgan_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "videos"
    args = [
        f"ckpt_path={vgan_run / 'checkpoints' / 'last.ckpt'}",
        "num_videos=3",
        "labels=[2,5]",
        "formats=[gif]",
        f"output_dir={out}",
        f"hydra.run.dir={tmp_path}",
    ]
    result = run_cli("videogen.generate", *args, cwd=tmp_path)
    assert_ok(result)
    said = result.stdout + result.stderr
    assert "drawn in one pass" in said and "sampler=" not in said  # no diffusion settings
    names = sorted(p.name for p in out.iterdir())
    assert names == [
        "clip_000_class2.gif",
        "clip_001_class5.gif",
        "clip_002_class2.gif",
        "grid.gif",
    ]
    with Image.open(out / "clip_000_class2.gif") as clip:
        # generated | background | foreground | mask, 32 px frames enlarged 4x (min_height 128)
        assert clip.size == (4 * 128 + 3 * GAP, 128)
        assert clip.n_frames == 8
    with Image.open(out / "grid.gif") as grid:
        assert grid.size == (2 * 128 + GAP, 2 * 128 + GAP)  # the generated clips alone


def test_evaluate_refuses_a_clip_length_the_model_was_not_built_for(
    vgan_run: Path, tmp_path: Path
) -> None:
    result = run_cli(
        "videogen.evaluate",
        f"ckpt_path={vgan_run / 'checkpoints' / 'last.ckpt'}",
        "data.num_frames=4",
        "data.test_size=4",
        f"hydra.run.dir={tmp_path}",
        cwd=tmp_path,
    )
    assert_one_sentence_error(result, "built for clips of 8 frames at 32x32", "data.num_frames")


def test_a_run_resumes_with_both_optimisers_and_its_step(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    common = [*VGAN, "test_after_fit=false", f"hydra.run.dir={run_dir}"]
    assert_ok(run_cli("videogen", *common, cwd=tmp_path))
    before = read_checkpoint(run_dir / "checkpoints" / "last.ckpt")
    assert_ok(run_cli("videogen", *common, "trainer.max_epochs=2", "ckpt_path=last", cwd=tmp_path))
    after = read_checkpoint(run_dir / "checkpoints" / "last.ckpt")
    # each batch steps two optimisers: 2 batches are 4 optimiser steps, 4 batches 8
    assert (before["global_step"], after["global_step"]) == (4, 8)
    assert [int(s["state"][0]["step"]) for s in after["optimizer_states"]] == [4, 4]
    assert after["epoch"] == 1
    weights = before["state_dict"]
    assert any(not torch.equal(weights[k], after["state_dict"][k]) for k in weights)

"""vid2vid's sequential generator as plain tensors: the composition formula with a known flow
and mask, single-image mode, history padding, the foreground branch, coarse to fine and the
semantic inputs."""

from __future__ import annotations

import pytest
import torch

from videogen.models.vid2vid.generator import SequentialGenerator, boundaries, compose

TINY = dict(
    num_classes=4, base_channels=8, num_downsampling=2, num_res_blocks=2, num_local_res_blocks=1
)


pytestmark = pytest.mark.usefixtures("one_intra_op_thread")


def random_maps(batch: int = 2, frames: int = 4, size: int = 16) -> torch.Tensor:
    torch.manual_seed(0)
    return torch.randint(0, 4, (batch, frames, size, size))


def test_compose_with_zero_mask_and_a_translation_reproduces_the_shifted_previous_frame() -> None:
    torch.manual_seed(0)
    previous = torch.rand(1, 3, 16, 16)
    flow = torch.zeros(1, 2, 16, 16)
    flow[:, 0] = 2.0  # every output pixel samples 2 pixels to its right
    flow[:, 1] = -1.0  # ... and one row up
    hallucinated = torch.rand(1, 3, 16, 16)
    frame = compose(previous, flow, torch.zeros(1, 1, 16, 16), hallucinated)
    # Away from the borders (where sampling clamps), x_t(y, x) = x_{t-1}(y - 1, x + 2).
    torch.testing.assert_close(frame[..., 1:, :-2], previous[..., :-1, 2:])
    # m = 1 ignores the previous frame entirely; m = 0.5 is the average of the two.
    assert torch.equal(
        compose(previous, flow, torch.ones(1, 1, 16, 16), hallucinated), hallucinated
    )
    half = compose(previous, flow, torch.full((1, 1, 16, 16), 0.5), hallucinated)
    torch.testing.assert_close(
        half[..., 1:, :-2], 0.5 * (previous[..., :-1, 2:] + hallucinated[..., 1:, :-2])
    )


def test_forward_composes_its_own_flow_mask_and_hallucination() -> None:
    generator = SequentialGenerator(**TINY).eval()
    seg = random_maps()
    labels = generator.semantic_input(seg)
    previous = torch.rand(2, 2, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        out = generator(labels[:, :3], previous)
    assert out.frame.shape == (2, 3, 16, 16)
    assert out.flow.shape == (2, 2, 16, 16) and out.mask.shape == (2, 1, 16, 16)
    assert out.mask.min() >= 0 and out.mask.max() <= 1
    torch.testing.assert_close(
        out.frame, compose(previous[:, -1], out.flow, out.mask, out.hallucinated)
    )
    # The flow head starts at zero: an untrained generator warps nothing.
    assert out.flow.abs().max() == 0


def test_single_image_mode_makes_the_first_frame_from_the_hallucination_alone() -> None:
    generator = SequentialGenerator(**TINY).eval()
    labels = generator.semantic_input(random_maps())
    with torch.no_grad():
        first = generator(labels[:, :3], None)
    assert torch.equal(first.frame, first.hallucinated)
    assert torch.equal(first.mask, torch.ones_like(first.mask))


def test_rollout_feeds_back_its_outputs_and_pads_missing_history() -> None:
    torch.manual_seed(0)
    generator = SequentialGenerator(**TINY).eval()
    labels = generator.semantic_input(random_maps(frames=5))
    with torch.no_grad():
        outputs = generator.rollout(labels)
        assert len(outputs) == 5
        # Frame 1 sees frames [0, 0] (padded) and labels [0, 0, 1]; frame 3 sees frames [1, 2].
        again = generator(labels[:, [0, 0, 1]], torch.stack([outputs[0].frame] * 2, 1))
        torch.testing.assert_close(outputs[1].frame, again.frame)
        third = generator(
            labels[:, [1, 2, 3]], torch.stack([outputs[1].frame, outputs[2].frame], 1)
        )
        torch.testing.assert_close(outputs[3].frame, third.frame)
        # Continuing from a history gives the same frames as one long rollout.
        history = torch.stack([outputs[1].frame, outputs[2].frame], 1)
        rest = generator.rollout(labels[:, 1:], previous=history)
    assert len(rest) == 2
    torch.testing.assert_close(rest[0].frame, outputs[3].frame)
    torch.testing.assert_close(rest[1].frame, outputs[4].frame)


def test_without_previous_frames_it_is_a_per_frame_generator() -> None:
    generator = SequentialGenerator(**{**TINY, "num_previous_frames": 0}).eval()
    assert generator.flow_head is None and generator.levels[0].frame_encoder is None
    seg = random_maps()
    labels = generator.semantic_input(seg)
    with torch.no_grad():
        outputs = generator.rollout(labels)
        alone = generator(labels[:, 2:3], None)
    # Frame 2 of the video equals frame 2 made on its own: no temporal dependence at all.
    torch.testing.assert_close(outputs[2].frame, alone.frame)


def test_foreground_classes_come_from_their_own_branch() -> None:
    generator = SequentialGenerator(**{**TINY, "foreground_classes": [1, 2]}).eval()
    seg = random_maps()
    labels = generator.semantic_input(seg)
    foreground = generator.foreground_mask(seg)
    assert torch.equal(foreground[:, :, 0].bool(), (seg == 1) | (seg == 2))
    with torch.no_grad():
        everywhere = generator(labels[:, :3], None, torch.ones_like(foreground[:, 0]))
        nowhere = generator(labels[:, :3], None, torch.zeros_like(foreground[:, 0]))
        mixed = generator(labels[:, :3], None, foreground[:, 2])
    fg = foreground[:, 2].bool().expand_as(mixed.frame)
    assert torch.equal(mixed.frame[fg], everywhere.frame[fg])
    assert torch.equal(mixed.frame[~fg], nowhere.frame[~fg])
    assert not torch.allclose(everywhere.frame, nowhere.frame)


def test_a_local_enhancer_starts_from_the_coarser_generator() -> None:
    torch.manual_seed(0)
    coarse = SequentialGenerator(**TINY, num_spatial_scales=1)
    fine = SequentialGenerator(**{**TINY, "base_channels": 8}, num_spatial_scales=2)
    copied = fine.load_coarser(coarse.state_dict())
    assert copied and all(name.startswith("levels.0.") for name in copied)
    for name, value in coarse.levels[0].state_dict().items():
        assert torch.equal(fine.levels[0].state_dict()[name], value)
    labels = fine.semantic_input(random_maps(size=32))
    with torch.no_grad():
        out = fine(labels[:, :3], torch.zeros(2, 2, 3, 32, 32))
    assert out.frame.shape == (2, 3, 32, 32)
    wider = SequentialGenerator(**{**TINY, "base_channels": 16}, num_spatial_scales=2)
    with pytest.raises(ValueError, match="does not match"):
        wider.load_coarser(coarse.state_dict())


def test_frame_sizes_that_cannot_be_halved_are_refused() -> None:
    generator = SequentialGenerator(**TINY, num_spatial_scales=2)
    labels = generator.semantic_input(random_maps(size=12))
    with pytest.raises(ValueError, match="divisible by 8"):
        generator(labels[:, :3], None)


def test_semantic_input_is_one_hot_with_instance_edges_and_style_features() -> None:
    generator = SequentialGenerator(**{**TINY, "feature_channels": 3})
    seg = torch.tensor([[[0, 1], [255, 3]]])  # 255: Cityscapes' ignore id
    instance = torch.tensor([[[5, 5], [5, 7]]])
    features = torch.full((1, 3, 2, 2), 0.25)
    inputs = generator.semantic_input(seg, instance, features)
    assert inputs.shape == (1, 4 + 1 + 3, 2, 2)
    assert inputs[0, :4, 0, 1].tolist() == [0, 1, 0, 0]
    assert inputs[0, :4, 1, 0].sum() == 0  # ignored pixels have no class
    # Edges come from the instance map: only pixel (1, 1) (instance 7) and its neighbours.
    assert inputs[0, 4].tolist() == [[0, 1], [1, 1]]
    assert torch.equal(inputs[0, 5:], features[0])


def test_boundaries_mark_both_sides_of_every_edge() -> None:
    ids = torch.tensor([[1, 1, 2], [1, 1, 2], [3, 3, 3]])
    assert boundaries(ids).int().tolist() == [[0, 1, 1], [1, 1, 1], [1, 1, 1]]


def test_foreground_pixels_are_hallucinated_even_where_the_background_is_warped() -> None:
    generator = SequentialGenerator(**{**TINY, "foreground_classes": [1]}).eval()
    seg = random_maps()
    labels = generator.semantic_input(seg)
    foreground = generator.foreground_mask(seg)[:, 2]
    previous = torch.rand(2, 2, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        out = generator(labels[:, :3], previous, foreground)
        everywhere = generator(labels[:, :3], previous, torch.ones_like(foreground))
    fg = foreground.bool().expand_as(out.frame)
    assert torch.equal(out.frame[fg], everywhere.frame[fg])  # h_F, whatever the flow says
    # Background: the usual composition of the warped previous frame and h.
    background = compose(previous[:, -1], out.flow, out.mask, out.hallucinated)
    torch.testing.assert_close(out.frame[~fg], background[~fg])

"""vid2vid discriminators, losses and the instance feature encoder as plain tensors: output
shapes, what the discriminators see, loss values on known inputs, instance averaging and the
per-class feature mixture."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
import torchvision

from videogen.errors import ConfigError
from videogen.models import losses
from videogen.models.losses import (
    VGGPerceptualLoss,
    discriminator_loss,
    feature_matching_loss,
    gan_loss,
    masked_l1,
)
from videogen.models.vid2vid import (
    ClassFeatureMixture,
    InstanceFeatureEncoder,
    MultiscaleDiscriminator,
    VideoDiscriminator,
    clip_start_indices,
    instance_features,
    temporal_stride,
)
from videogen.models.vid2vid.encoder import instance_average

TINY_D = dict(base_channels=4, num_layers=2)


pytestmark = pytest.mark.usefixtures("one_intra_op_thread")


def logits_size(size: int, num_layers: int) -> int:
    """PatchGAN logits size: 4x4 convs padded by 2, so each stride-2 conv gives size // 2 + 1
    and each of the two stride-1 convs adds one."""
    for _ in range(num_layers):
        size = size // 2 + 1
    return size + 2


# --------------------------------------------------------------------------- discriminators


def patch_discriminator(in_channels: int, **options) -> torch.nn.Module:
    """The PatchGAN vid2vid builds: one scale of its multi-scale discriminator."""
    return MultiscaleDiscriminator(in_channels, num_scales=1, **options).scales[0]


def test_patch_discriminator_returns_every_block_with_logits_last() -> None:
    torch.manual_seed(0)
    outputs = patch_discriminator(3, **TINY_D)(torch.randn(2, 3, 32, 32))
    assert [tuple(o.shape) for o in outputs] == [
        (2, 4, 17, 17),
        (2, 8, 9, 9),
        (2, 16, 10, 10),
        (2, 1, logits_size(32, 2), logits_size(32, 2)),
    ]


def test_gan_weight_init_and_norm_choice() -> None:
    torch.manual_seed(0)
    disc = patch_discriminator(3, base_channels=64, num_layers=3, norm="batch")
    first = disc.blocks[0][0]
    assert first.weight.std().item() == pytest.approx(0.02, rel=0.1)
    assert torch.all(first.bias == 0)
    norm = disc.blocks[1][1]
    assert isinstance(norm, torch.nn.BatchNorm2d)
    assert norm.weight.mean().item() == pytest.approx(1.0, abs=0.01)
    assert 0 < norm.weight.std().item() < 0.05
    assert len(patch_discriminator(3, norm="none", **TINY_D)(torch.randn(1, 3, 32, 32))) == 4
    with pytest.raises(ConfigError, match=r"image_discriminator\.norm.* must be one of"):
        MultiscaleDiscriminator(3, norm="group")


def test_multiscale_discriminator_halves_the_input_per_scale() -> None:
    torch.manual_seed(0)
    outputs = MultiscaleDiscriminator(3, num_scales=2, **TINY_D)(torch.randn(1, 3, 64, 64))
    assert len(outputs) == 2 and all(len(scale) == 4 for scale in outputs)
    assert tuple(outputs[0][0].shape[-2:]) == (33, 33)
    assert tuple(outputs[1][0].shape[-2:]) == (17, 17)
    assert outputs[0][-1].shape[-1] == logits_size(64, 2) == 19
    assert outputs[1][-1].shape[-1] == logits_size(32, 2) == 11


def video_inputs(batch: int = 1, size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(batch, 3, 3, size, size), torch.randn(batch, 2, 2, size, size) * 10


def test_video_discriminator_sees_frames_and_flows() -> None:
    torch.manual_seed(0)
    disc = VideoDiscriminator(3, frames_per_clip=3, num_temporal_scales=2, num_scales=2, **TINY_D)
    assert disc.in_channels == 3 * 3 + 2 * 2 == 13
    assert all(d.scales[0].blocks[0][0].in_channels == 13 for d in disc.temporal_scales)
    frames, flows = video_inputs()
    outputs = disc(frames, flows, temporal_scale=1)
    assert len(outputs) == 2 and tuple(outputs[0][-1].shape) == (1, 1, 11, 11)
    changed = flows.clone()
    changed[:, 1] += torch.randn_like(changed[:, 1]) * 10
    assert not torch.allclose(disc(frames, changed, 1)[0][-1], outputs[0][-1])
    # Each temporal scale has its own weights.
    assert not torch.allclose(disc(frames, flows, 0)[0][-1], outputs[0][-1])


def test_video_discriminator_shape_errors_say_what_is_wrong() -> None:
    disc = VideoDiscriminator(3, frames_per_clip=3, num_temporal_scales=1, num_scales=1, **TINY_D)
    frames, flows = video_inputs()
    with pytest.raises(ValueError, match=r"flows must be \(1, 2, 2, 32, 32\)"):
        disc(frames, torch.randn(1, 3, 2, 32, 32), 0)
    with pytest.raises(ValueError, match=r"frames must be \(B, 3, 3, H, W\)"):
        disc(frames[:, :2], flows, 0)
    with pytest.raises(ValueError, match=r"temporal_scale must be in \[0, 1\)"):
        disc(frames, flows, 1)


def test_temporal_strides_and_clip_starts() -> None:
    assert [temporal_stride(s) for s in range(3)] == [1, 3, 9]
    assert clip_start_indices(7, 3, 1) == [0, 1, 2, 3, 4]
    assert clip_start_indices(7, 3, 3) == [0]
    assert clip_start_indices(7, 3, 9) == []
    assert clip_start_indices(6, 3, 3) == []


# --------------------------------------------------------------------------- adversarial losses


def constant_outputs(*values: float) -> list[list[torch.Tensor]]:
    """One scale per value: a dummy feature, then constant logits of that value."""
    return [[torch.randn(1, 2, 4, 4), torch.full((1, 1, 4, 4), v)] for v in values]


def test_lsgan_loss_on_constant_logits() -> None:
    assert gan_loss(constant_outputs(1.0, 1.0), real=True).item() == 0.0
    assert gan_loss(constant_outputs(0.0, 0.0), real=True).item() == 1.0
    assert gan_loss(constant_outputs(0.0), real=False).item() == 0.0
    # Averaged over scales: one perfect scale, one off by 1.
    assert gan_loss(constant_outputs(1.0, 0.0), real=True).item() == pytest.approx(0.5)
    assert gan_loss(constant_outputs(3.0), real=False, for_discriminator=False).item() == 9.0


def test_hinge_loss_on_constant_logits() -> None:
    half, low = constant_outputs(0.5), constant_outputs(-2.0)
    assert gan_loss(half, real=True, mode="hinge").item() == pytest.approx(0.5)
    assert gan_loss(half, real=False, mode="hinge").item() == pytest.approx(1.5)
    assert gan_loss(low, real=True, mode="hinge").item() == pytest.approx(3.0)
    assert gan_loss(low, real=False, mode="hinge").item() == 0.0
    generator = gan_loss(half, real=True, mode="hinge", for_discriminator=False)
    assert generator.item() == pytest.approx(-0.5)
    with pytest.raises(ValueError, match="real=True"):
        gan_loss(half, real=False, mode="hinge", for_discriminator=False)
    with pytest.raises(ValueError, match="must be one of"):
        gan_loss(half, real=True, mode="wgan")


def test_gan_loss_takes_logits_one_block_list_or_one_list_per_scale() -> None:
    logits = torch.full((1, 1, 4, 4), 0.5)
    per_scale = gan_loss(constant_outputs(0.5), real=True)
    assert gan_loss(logits, real=True).item() == per_scale.item() == pytest.approx(0.25)
    assert gan_loss(constant_outputs(0.5)[0], real=True).item() == pytest.approx(0.25)
    # non_saturating: binary cross-entropy with logits; log(2) at a logit of 0.
    zero = torch.zeros(1, 1, 2, 2)
    assert gan_loss(zero, real=True, mode="non_saturating").item() == pytest.approx(0.6931, 1e-3)
    # The discriminator's loss is the mean of its real and fake losses.
    fake, real = constant_outputs(1.0), constant_outputs(0.0)
    assert discriminator_loss(fake, real).item() == pytest.approx(1.0)
    assert discriminator_loss(real, fake).item() == 0.0


def test_feature_matching_averages_layers_then_scales_and_spares_real() -> None:
    real = [
        [torch.ones(1, 2, 4, 4), torch.full((1, 2, 2, 2), 3.0), torch.full((1, 1, 2, 2), 99.0)],
        [torch.full((1, 2, 2, 2), 4.0), torch.zeros(1, 1, 1, 1)],
    ]
    for scale in real:
        for tensor in scale:
            tensor.requires_grad_(True)
    fake = [[torch.zeros_like(t, requires_grad=True) for t in scale] for scale in real]
    loss = feature_matching_loss(fake, real)
    # Scale 0: mean(1, 3) = 2 (logits ignored); scale 1: 4; mean over scales 3.
    assert loss.item() == pytest.approx(3.0)
    loss.backward()
    assert all(t.grad is None for scale in real for t in scale)
    assert fake[0][0].grad is not None and fake[0][-1].grad is None
    same = feature_matching_loss(real, real)
    assert same.item() == 0.0


def test_masked_l1_ignores_masked_out_pixels() -> None:
    prediction = torch.zeros(2, 3, 4, 4)
    target = torch.ones(2, 3, 4, 4)
    mask = torch.zeros(2, 1, 4, 4)
    mask[..., :2] = 1
    assert masked_l1(prediction, target, mask).item() == pytest.approx(0.5)
    target[..., 2:] = 100.0
    assert masked_l1(prediction, target, mask).item() == pytest.approx(0.5)
    assert masked_l1(prediction, target, mask[:, 0]).item() == pytest.approx(0.5)


# --------------------------------------------------------------------------- perceptual loss


@pytest.fixture(scope="module")
def vgg_weights(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, torch.Tensor]]:
    """A randomly initialised VGG19 state dict on disk: the features plus a stray classifier
    key, as in a full vgg19 state dict (the real classifier is 400 MB and never used)."""
    torch.manual_seed(0)
    state = {
        f"features.{k}": v for k, v in torchvision.models.vgg19().features.state_dict().items()
    }
    state["classifier.6.bias"] = torch.zeros(1000)
    path = tmp_path_factory.mktemp("vgg") / "vgg19.pth"
    torch.save(state, path)
    return path, state


@pytest.fixture(scope="module")
def perceptual(vgg_weights: tuple[Path, dict[str, torch.Tensor]]) -> VGGPerceptualLoss:
    loss = VGGPerceptualLoss.from_path(str(vgg_weights[0]))
    assert loss is not None
    return loss


def test_perceptual_loss_is_skipped_with_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger=losses.__name__):
        assert VGGPerceptualLoss.from_path(None) is None
    assert len(caplog.records) == 1
    assert "model.vgg_weights_path" in caplog.records[0].getMessage()


def test_perceptual_loss_with_a_missing_file_is_a_config_error(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "vgg19.pth"
    with pytest.raises(ConfigError, match="nowhere"):
        VGGPerceptualLoss.from_path(str(missing))


def test_perceptual_loss_with_a_foreign_state_dict_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(1)}, path)
    with pytest.raises(ConfigError, match="is not a VGG19 state dict"):
        VGGPerceptualLoss.from_path(str(path))


def test_perceptual_loss_loads_the_file_and_is_frozen(
    perceptual: VGGPerceptualLoss, vgg_weights: tuple[Path, dict[str, torch.Tensor]]
) -> None:
    state = vgg_weights[1]
    assert torch.equal(perceptual.slices[0][0].weight, state["features.0.weight"])
    assert torch.equal(perceptual.slices[4][-2].weight, state["features.28.weight"])
    assert all(not p.requires_grad for p in perceptual.parameters())
    perceptual.train()
    assert not perceptual.training


def test_perceptual_loss_is_zero_only_for_identical_images(perceptual: VGGPerceptualLoss) -> None:
    torch.manual_seed(0)
    real = torch.rand(1, 3, 32, 32) * 2 - 1
    assert perceptual(real, real).item() == 0.0
    fake = (real + 0.3 * torch.randn_like(real)).requires_grad_(True)
    loss = perceptual(fake, real)
    assert loss.item() > 0
    loss.backward()
    assert fake.grad is not None and fake.grad.abs().sum() > 0
    gray = real[:, :1]
    assert perceptual(gray, gray).item() == 0.0
    assert perceptual(gray.flip(-1), gray).item() > 0


# --------------------------------------------------------------------------- instance encoder


def random_instances(generator: torch.Generator) -> torch.Tensor:
    """(2, 6, 5) instance map with Cityscapes-like ids, some shared between the two images."""
    ids = torch.tensor([0, 7, 26001, 26002])
    return ids[torch.randint(0, 4, (2, 6, 5), generator=generator)]


def test_instance_average_matches_a_loop_reference() -> None:
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(2, 3, 6, 5, generator=generator)
    instance = random_instances(generator)
    expected = torch.empty_like(features)
    for b in range(2):
        for identity in instance[b].unique():
            mask = instance[b] == identity
            expected[b][:, mask] = features[b][:, mask].mean(dim=1, keepdim=True)
    assert torch.allclose(instance_average(features, instance), expected, atol=1e-6)


def test_encoder_output_is_constant_within_instances() -> None:
    torch.manual_seed(0)
    encoder = InstanceFeatureEncoder(3, 3, base_channels=4, num_downsampling=2)
    instance = torch.zeros(2, 16, 16, dtype=torch.long)
    instance[:, :8] = 1
    instance[1, :, 12:] = 5
    output = encoder(torch.randn(2, 3, 16, 16), instance)
    assert tuple(output.shape) == (2, 3, 16, 16)
    assert output.abs().max() <= 1
    for b in range(2):
        for identity in instance[b].unique():
            values = output[b][:, instance[b] == identity]
            assert torch.allclose(values, values[:, :1].expand_as(values))
    with pytest.raises(ConfigError, match="must be multiples of 4"):
        encoder(torch.randn(1, 3, 18, 16), torch.zeros(1, 18, 16, dtype=torch.long))


def test_instance_features_one_row_per_instance_with_majority_class() -> None:
    instance = torch.tensor([[[1, 1, 2, 2]], [[1, 1, 1, 1]]])
    segmentation = torch.tensor([[[3, 3, 5, 5]], [[5, 5, 0, 5]]])
    feature_map = torch.arange(8.0).view(2, 1, 1, 4)
    features, classes = instance_features(feature_map, segmentation, instance)
    assert features.squeeze(1).tolist() == [0.5, 2.5, 5.5]
    assert classes.tolist() == [3, 5, 5]


# --------------------------------------------------------------------------- feature mixture

CLUSTERS = {0: [(-2.0, -2.0), (3.0, 1.0)], 1: [(0.0, 4.0), (4.0, 0.0)]}


@pytest.fixture(scope="module")
def mixture() -> ClassFeatureMixture:
    """Classes 0 and 1 fitted on two tight clusters each; class 2 never seen."""
    generator = torch.Generator().manual_seed(0)
    rows, labels = [], []
    for label, centres in CLUSTERS.items():
        for centre in centres:
            rows.append(torch.tensor(centre) + 0.1 * torch.randn(200, 2, generator=generator))
            labels.append(torch.full((200,), label))
    model = ClassFeatureMixture(num_classes=3, feature_channels=2, num_components=2)
    model.fit(torch.cat(rows), torch.cat(labels), generator=torch.Generator().manual_seed(1))
    return model


def test_mixture_recovers_the_cluster_means(mixture: ClassFeatureMixture) -> None:
    assert mixture.fitted.tolist() == [True, True, False]
    for label, centres in CLUSTERS.items():
        order = mixture.means[label, :, 0].argsort()
        assert torch.allclose(mixture.means[label, order], torch.tensor(centres), atol=0.1)
        assert torch.allclose(mixture.weights[label], torch.tensor([0.5, 0.5]), atol=0.01)
        assert torch.allclose(mixture.variances[label], torch.full((2, 2), 0.01), atol=0.005)


def test_mixture_samples_one_vector_per_instance(mixture: ClassFeatureMixture) -> None:
    segmentation = torch.zeros(1, 8, 8, dtype=torch.long)
    segmentation[:, :, 4:] = 1
    segmentation[:, 4:, 4:] = 2
    instance = torch.zeros(1, 8, 8, dtype=torch.long)
    instance[:, :4, 4:] = 1
    instance[:, 4:, :4] = 2
    instance[:, 4:, 4:] = 3
    sampled = mixture.sample(segmentation, instance, torch.Generator().manual_seed(0))
    assert tuple(sampled.shape) == (1, 2, 8, 8)
    for identity, label in [(0, 0), (1, 1), (2, 0), (3, 2)]:
        values = sampled[0][:, instance[0] == identity]
        assert torch.equal(values, values[:, :1].expand_as(values))
        if label == 2:
            assert torch.all(values == 0)
            continue
        distance = (torch.tensor(CLUSTERS[label]) - values[:, 0]).norm(dim=1).min()
        assert distance < 0.6


def test_mixture_with_fewer_points_than_components() -> None:
    model = ClassFeatureMixture(num_classes=1, feature_channels=3, num_components=4)
    model.fit(torch.tensor([[0.1, 0.2, 0.3]]), torch.tensor([0]))
    assert model.weights[0].tolist() == [1.0, 0.0, 0.0, 0.0]
    assert torch.allclose(model.means[0, 0], torch.tensor([0.1, 0.2, 0.3]))
    assert torch.all(model.variances[0, 0] >= 1e-4)


def test_mixture_buffers_round_trip_through_the_state_dict(mixture: ClassFeatureMixture) -> None:
    state = mixture.state_dict()
    assert set(state) == {"means", "variances", "weights", "fitted"}
    restored = ClassFeatureMixture(num_classes=3, feature_channels=2, num_components=2)
    restored.load_state_dict(state)
    for name, value in state.items():
        assert torch.equal(getattr(restored, name), value)

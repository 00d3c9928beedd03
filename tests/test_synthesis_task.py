"""The vid2vid task in-process: what D_V is shown, truncated back-propagation, the sequence
schedule, the NaN guard and style sampling."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch
from hydra.utils import instantiate

from videogen.errors import CheckpointError, ConfigError
from videogen.models.vid2vid import reference_flows
from videogen.tasks.synthesis import SequenceBuffers, SynthesisTask

pytestmark = pytest.mark.usefixtures("one_intra_op_thread")


def tiny_task(**options) -> SynthesisTask:
    net = {
        "_target_": "videogen.models.vid2vid.generator.SequentialGenerator",
        "num_classes": 4,
        "base_channels": 8,
        "num_downsampling": 2,
        "num_res_blocks": 2,
        **options.pop("net", {}),
    }
    small_d = {"base_channels": 8, "num_layers": 2}
    return SynthesisTask(
        net=net,
        image_discriminator={
            "_target_": "videogen.models.vid2vid.discriminators.MultiscaleDiscriminator",
            **small_d,
        },
        video_discriminator={
            "_target_": "videogen.models.vid2vid.discriminators.VideoDiscriminator",
            **small_d,
        },
        feature_encoder={
            "_target_": "videogen.models.vid2vid.encoder.InstanceFeatureEncoder",
            "base_channels": 4,
            "num_downsampling": 2,
        },
        optimizer={"_target_": "torch.optim.Adam", "_partial_": True, "lr": 1e-3},
        perceptual_weight=0.0,
        **options,
    )


def synthetic_batch(frames: int = 7, batch: int = 2) -> dict[str, torch.Tensor]:
    datamodule = instantiate(
        {
            "_target_": "videogen.data.synthetic.SyntheticVideoDataModule",
            "num_frames": frames,
            "batch_size": batch,
            "train_size": batch,
            "val_size": batch,
            "test_size": batch,
        }
    )
    datamodule.setup("fit")
    return next(iter(datamodule.train_dataloader()))


def test_the_video_discriminator_sees_real_and_fake_clips_with_the_same_reference_flow() -> None:
    task = tiny_task()
    batch = synthetic_batch(frames=7)
    real = batch["video"].float() / 127.5 - 1
    buffers = SequenceBuffers(real, task.estimator)
    labels, foreground = task.conditions(batch, real, sample=False)
    outputs = task.net.rollout(labels, foreground)
    fake = torch.stack([out.frame for out in outputs], 1)

    seen: list[tuple[torch.Tensor, torch.Tensor, int]] = []
    forward = task.video_discriminator.forward

    def spy(frames: torch.Tensor, flows: torch.Tensor, temporal_scale: int):
        seen.append((frames, flows, temporal_scale))
        return forward(frames, flows, temporal_scale)

    task.video_discriminator.forward = spy
    task.generator_losses(outputs[4:], 4, labels, fake, buffers)
    # Scale 0 (stride 1): clips starting at 2, 3, 4; scale 1 (stride 3): the clip 0, 3, 6.
    assert [s for _, _, s in seen] == [0, 0, 1, 1]
    for (fake_clips, fake_flows, _), (real_clips, real_flows, _) in (seen[:2], seen[2:]):
        assert torch.equal(fake_flows, real_flows)  # the same conditioning flow...
        assert not torch.equal(fake_clips, real_clips)  # ...for different frames
    expected = reference_flows((real + 1) / 2, task.estimator, 3)[:, [0, 3]]
    torch.testing.assert_close(seen[2][1], expected)
    assert seen[0][0].shape == (3 * 2, 3, 3, 32, 32)  # three clips of a batch of two


def test_training_steps_every_optimiser_once_per_chunk() -> None:
    task = tiny_task(frames_per_step=2, num_frames_start=4, num_frames_total=4)
    datamodule = instantiate(
        {
            "_target_": "videogen.data.synthetic.SyntheticVideoDataModule",
            "num_frames": 6,
            "batch_size": 2,
            "train_size": 2,
            "val_size": 2,
            "test_size": 2,
        }
    )
    trainer = pl.Trainer(
        accelerator="cpu",
        max_steps=-1,
        max_epochs=1,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    before = {k: v.clone() for k, v in task.net.state_dict().items()}
    trainer.fit(task, datamodule=datamodule)
    # A 4-frame sequence in chunks of 2: two updates each of G and D_I, and one of D_V (the
    # first chunk holds no 3-frame clip).
    assert trainer.global_step == 2 + 2 + 1
    assert trainer.callback_metrics["train/sequence_length"] == 4
    changed = [k for k, v in task.net.state_dict().items() if not torch.equal(v, before[k])]
    assert changed and task.skipped_steps == 0


def test_sequences_double_every_few_epochs_up_to_the_limit_and_the_clip() -> None:
    task = tiny_task(num_frames_start=2, num_frames_total=12, grow_every_epochs=2)
    lengths = [task.sequence_length(frames=30, epoch=e) for e in range(8)]
    assert lengths == [2, 2, 4, 4, 8, 8, 12, 12]
    assert task.sequence_length(frames=5, epoch=6) == 5


def test_a_non_finite_loss_skips_the_update_and_is_counted() -> None:
    task = tiny_task()
    optimizer = torch.optim.SGD(task.net.parameters(), lr=1.0)
    before = {k: v.clone() for k, v in task.net.state_dict().items()}
    assert task.step(optimizer, torch.tensor(float("nan"))) is False
    assert task.step(optimizer, torch.tensor(float("inf"))) is False
    assert task.skipped_steps == 2
    assert all(torch.equal(v, before[k]) for k, v in task.net.state_dict().items())


def test_styles_sampled_from_the_mixture_are_constant_per_instance() -> None:
    task = tiny_task(net={"feature_channels": 3})
    batch = synthetic_batch(frames=2)
    real = batch["video"].float() / 127.5 - 1
    labels, _ = task.conditions(batch, real, sample=False)
    task.remember_styles(batch, labels)
    task.on_validation_epoch_start()  # fits the per-class mixtures
    assert task.style_mixture.fitted[1:].any()
    sampled, _ = task.conditions(batch, None, sample=True)
    features = sampled[:, :, -3:]
    instance = batch["instance"]
    for b in range(2):
        for t in range(2):
            for k in instance[b, t].unique():
                values = features[b, t][:, instance[b, t] == k]
                assert torch.allclose(values, values[:, :1].expand_as(values))


def test_a_model_without_previous_frames_has_no_video_discriminator() -> None:
    task = tiny_task(net={"num_previous_frames": 0})
    assert task.video_discriminator is None
    optimizers, _ = task.configure_optimizers()
    assert len(optimizers) == 2


def test_the_paper_config_builds_the_official_sizes_on_cityscapes(compose_train) -> None:
    cfg = compose_train("model=vid2vid", "data=cityscapes")
    with torch.device("meta"):  # shapes only: the 290M parameters are never allocated
        task = instantiate(cfg.model, _recursive_=False)
    generator = task.net
    # 19 Cityscapes train ids + the instance-edge channel, for L + 1 = 3 frames.
    assert generator.label_channels == 20
    assert generator.levels[0].label_encoder[0][1].in_channels == 3 * 20
    assert generator.levels[0].frame_encoder[0][1].in_channels == 2 * 3
    assert generator.levels[0].trunk[0].body[1].out_channels == 128 * 2**3
    # D_I sees the semantic map and the frame; D_V 3 frames and their 2 flows.
    assert task.image_discriminator.scales[0].blocks[0][0].in_channels == 20 + 3
    assert task.video_discriminator.in_channels == 3 * 3 + 2 * 2
    assert task.weights == {
        "feature_matching": 10.0,
        "perceptual": 10.0,
        "flow": 10.0,
        "warp": 10.0,
        "mask": 1.0,
    }


@pytest.mark.parametrize(
    ("recorded", "key", "scales", "message"),
    [
        (
            "videogen.tasks.prediction.AutoencoderTask",
            "num_spatial_scales",
            1,
            "belongs to the task AutoencoderTask",
        ),
        (
            "videogen.tasks.synthesis.SynthesisTask",
            "num_spatial_scales",
            2,
            "the coarser run must have fewer",
        ),
        # A checkpoint written before the rename stores the old name.
        (
            "videogen.tasks.synthesis.SynthesisTask",
            "n_scales_spatial",
            2,
            "the coarser run must have fewer",
        ),
    ],
)
def test_a_coarse_checkpoint_must_be_a_coarser_vid2vid(
    tmp_path, recorded: str, key: str, scales: int, message: str
) -> None:
    path = tmp_path / "coarse.ckpt"
    torch.save(
        {
            "state_dict": {},
            "hyper_parameters": {"net": {key: scales}},
            "videogen": {"task": recorded},
        },
        path,
    )
    with pytest.raises((CheckpointError, ConfigError), match=message):
        tiny_task(net={"num_spatial_scales": 2}, coarse_ckpt=str(path))

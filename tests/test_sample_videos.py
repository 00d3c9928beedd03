"""Sample videos in the loggers: when they are logged, what they show, and how each logger
gets them (TensorBoard event files read back, wandb media files decoded)."""

from __future__ import annotations

import io
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import av
import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from PIL import Image
from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger
from pytorch_lightning.plugins.precision import Precision
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.conftest import tiny_latte_net
from tests.test_synthesis_task import synthetic_batch, tiny_task
from videogen.callbacks import sample_videos
from videogen.callbacks.sample_videos import (
    SampleVideoLogger,
    VideoSample,
    first_examples,
    video_writer,
)
from videogen.data.synthetic import SyntheticVideoDataModule
from videogen.errors import ConfigError
from videogen.tasks.classification import ClassificationTask
from videogen.tasks.prediction import AutoencoderTask, PredictionTask
from videogen.utils.video_io import GAP

pytestmark = pytest.mark.usefixtures("one_intra_op_thread")

VIT = {
    "_target_": "videogen.models.vit.FrameViT",
    "num_classes": 8,
    "img_size": 32,
    "patch_size": 8,
    "embed_dim": 16,
    "depth": 1,
    "num_heads": 2,
}
OPTIMIZER = {"_target_": "torch.optim.AdamW", "_partial_": True, "lr": 1e-3}
AUTOENCODER = {
    "_target_": "videogen.models.vptr.autoencoder.VPTRAutoencoder",
    "in_channels": 3,
    "img_size": [32, 32],
    "base_channels": 8,
    "feature_dim": 16,
    "num_downsampling": 2,
    "num_res_blocks": 1,
}
NAR = {
    "_target_": "videogen.models.vptr.nar.VPTRNAR",
    "encoder_depth": 1,
    "decoder_depth": 1,
    "num_heads": 2,
    "window_size": 4,
    "drop_rate": 0.0,
    "drop_path_rate": 0.0,
    "context_frames": 2,
    "future_frames": 2,
}
DIRECTIONS = [
    "east",
    "north-east",
    "north",
    "north-west",
    "west",
    "south-west",
    "south",
    "south-east",
]


class NamedSyntheticData(SyntheticVideoDataModule):
    """Synthetic video whose classes have names, as Kinetics' have."""

    classes = DIRECTIONS


def gif_frames(data: bytes) -> list[np.ndarray]:
    with Image.open(io.BytesIO(data)) as gif:
        frames = []
        for index in range(gif.n_frames):
            gif.seek(index)
            frames.append(np.asarray(gif.convert("RGB")))
    return frames


def is_red(pixel: np.ndarray) -> bool:
    return bool(pixel[0] > 200 and pixel[1] < 60 and pixel[2] < 60)


def as_frames(video: torch.Tensor) -> np.ndarray:
    """uint8 (T, C, H, W) -> (T, H, W, C), how side_by_side lays out frames."""
    return video.permute(0, 2, 3, 1).numpy()


# --------------------------------------------------------------------------- a real run


def fit_with_tensorboard(tmp_path: Path, every_n_epochs: int) -> EventAccumulator:
    torch.manual_seed(0)
    task = ClassificationTask(net=VIT, optimizer=OPTIMIZER)
    data = NamedSyntheticData(
        num_frames=4, train_size=8, val_size=4, test_size=4, batch_size=4, seed=3
    )
    logger = TensorBoardLogger(tmp_path, name="tb", version=0)
    trainer = pl.Trainer(
        max_epochs=2,
        limit_train_batches=2,
        limit_val_batches=1,
        num_sanity_val_steps=1,  # the sanity check must not log
        logger=logger,
        callbacks=[SampleVideoLogger(every_n_epochs=every_n_epochs, num_videos=2, fps=5)],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(task, datamodule=data)
    logger.experiment.flush()
    events = EventAccumulator(logger.log_dir, size_guidance={"images": 0, "tensors": 0})
    events.Reload()
    return events


@pytest.mark.parametrize(("every_n_epochs", "steps"), [(1, [2, 4]), (2, [4])])
def test_tensorboard_gets_the_first_validation_clips_on_due_epochs_only(
    tmp_path: Path, every_n_epochs: int, steps: list[int]
) -> None:
    events = fit_with_tensorboard(tmp_path, every_n_epochs)
    assert sorted(t for t in events.Tags()["images"] if t.startswith("val/samples")) == [
        "val/samples/0",
        "val/samples/1",
    ]
    val = NamedSyntheticData(num_frames=4, val_size=4, seed=3).make_dataset("val")
    for index in range(2):
        images = events.Images(f"val/samples/{index}")
        assert [image.step for image in images] == steps
        frames = gif_frames(images[-1].encoded_image_string)
        assert len(frames) == 4 and frames[0].shape == (64, 64, 3)  # 32 px enlarged to 64
        # The clip is shown denormalised: close to the data's own pixels (GIF palette aside).
        expected = as_frames(val[index]["video"])[0].repeat(2, axis=0).repeat(2, axis=1)
        assert np.abs(frames[0].astype(int) - expected).mean() < 12
    [tag] = [t for t in events.Tags()["tensors"] if t.startswith("val/samples/captions")]
    captions = events.Tensors(tag)
    assert [c.step for c in captions] == steps
    text = captions[-1].tensor_proto.string_val[0].decode()
    for index in range(2):
        assert f"example {index}: predicted " in text
        assert f"true {DIRECTIONS[int(val[index]['label'])]}" in text


# --------------------------------------------------------------------------- schedule and ranks


class RecordingLogger:
    """Stands for a logger that takes videos; records what it was given."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, list[VideoSample], int]] = []


def record(
    logger: RecordingLogger, key: str, samples: list[VideoSample], step: int, *_: Any
) -> None:
    logger.calls.append((key, samples, step))


def fake_trainer(loggers: list[Any], rank_zero: bool = True, sanity: bool = False) -> Any:
    return SimpleNamespace(
        is_global_zero=rank_zero,
        sanity_checking=sanity,
        loggers=loggers,
        global_step=7,
        precision_plugin=Precision(),
        datamodule=None,
    )


def validation_run(callback: SampleVideoLogger, trainer: Any, task: Any, batch: dict) -> None:
    """The hooks of one validation run of two batches, as Lightning calls them."""
    callback.on_validation_epoch_start(trainer, task)
    for batch_idx in range(2):
        callback.on_validation_batch_end(trainer, task, None, batch, batch_idx)
    callback.on_validation_epoch_end(trainer, task)


@pytest.fixture
def recording(monkeypatch: pytest.MonkeyPatch) -> RecordingLogger:
    monkeypatch.setattr(sample_videos, "VIDEO_WRITERS", ((RecordingLogger, record),))
    return RecordingLogger()


@pytest.fixture
def classifier_batch() -> tuple[ClassificationTask, dict[str, torch.Tensor]]:
    torch.manual_seed(0)
    task = ClassificationTask(net=VIT)
    batch = {"video": torch.randn(4, 4, 3, 32, 32), "label": torch.arange(4)}
    return task, batch


def test_rank_zero_logs_every_n_runs_in_eval_mode_and_restores_training(
    recording: RecordingLogger, classifier_batch: tuple
) -> None:
    task, batch = classifier_batch
    task.train()
    modes: list[bool] = []
    task.net.register_forward_hook(lambda module, args, out: modes.append(module.training))
    callback = SampleVideoLogger(every_n_epochs=2, num_videos=3, min_height=0)
    trainer = fake_trainer([recording])

    validation_run(callback, fake_trainer([recording], sanity=True), task, batch)
    validation_run(callback, trainer, task, batch)
    assert recording.calls == [] and callback.batch is None  # sanity check and run 1: nothing kept
    assert callback.validation_runs == 1
    validation_run(callback, trainer, task, batch)
    assert len(recording.calls) == 1
    key, samples, step = recording.calls[0]
    assert key == "val/samples" and step == 7 and len(samples) == 3
    assert samples[0].frames.shape == (4, 32, 32, 3) and samples[0].frames.dtype == np.uint8
    assert modes == [False] and task.training  # one eval forward; training mode restored
    predicted = task.eval()(batch["video"][:3]).argmax(-1)
    assert [s.caption for s in samples] == [
        f"example {i}: predicted {int(predicted[i])}, true {i}" for i in range(3)
    ]
    assert callback.batch is None  # nothing held between runs

    restored = SampleVideoLogger()
    restored.load_state_dict(callback.state_dict())
    assert restored.validation_runs == 2


def test_other_ranks_and_loggers_without_videos_do_nothing(
    recording: RecordingLogger, classifier_batch: tuple
) -> None:
    task, batch = classifier_batch
    for trainer in (
        fake_trainer([recording], rank_zero=False),
        fake_trainer([CSVLogger("unused")]),
        fake_trainer([]),
    ):
        callback = SampleVideoLogger(every_n_epochs=1)
        validation_run(callback, trainer, task, batch)
        assert callback.validation_runs == 1  # every rank keeps the same count
        assert not callback.due and callback.batch is None
    disabled = SampleVideoLogger(every_n_epochs=0)
    validation_run(disabled, fake_trainer([recording]), task, batch)
    assert recording.calls == []


def test_only_the_first_examples_are_kept_as_cpu_copies() -> None:
    video = torch.randn(8, 2, 3, 4, 4, requires_grad=True) * 1
    kept = first_examples({"video": video, "label": torch.arange(8), "names": list("abcdefgh")}, 2)
    assert kept is not None
    assert kept["video"].shape[0] == 2 and not kept["video"].requires_grad
    assert kept["video"].untyped_storage().size() == 2 * 2 * 3 * 4 * 4 * 4  # not the whole batch
    assert kept["label"].tolist() == [0, 1] and kept["names"] == ["a", "b"]
    assert first_examples(torch.zeros(2), 1) is None


def test_bad_settings_are_one_sentence() -> None:
    with pytest.raises(ConfigError, match="every_n_epochs"):
        SampleVideoLogger(every_n_epochs=-1)
    with pytest.raises(ConfigError, match="video_format"):
        SampleVideoLogger(video_format="webm")


# --------------------------------------------------------------------------- what each task shows


def render(task: pl.LightningModule, batch: dict[str, torch.Tensor]) -> list[VideoSample]:
    callback = SampleVideoLogger(min_height=0)
    return callback.render(fake_trainer([]), task, first_examples(batch, 2))


def test_prediction_shows_truth_and_prediction_with_generated_frames_framed() -> None:
    torch.manual_seed(0)
    task = PredictionTask(net=NAR, autoencoder=AUTOENCODER)
    batch = synthetic_batch(frames=4, batch=3)
    samples = render(task, batch)
    assert len(samples) == 2 and samples[0].caption.startswith("example 0: truth | prediction")
    frames = samples[1].frames
    assert frames.shape == (4, 32, 2 * 32 + GAP, 3)
    truth = as_frames(batch["video"][1])
    np.testing.assert_array_equal(frames[:, :, :32], truth)
    assert (frames[:, :, 32 : 32 + GAP] == 255).all()
    prediction = frames[:, :, 32 + GAP :]
    np.testing.assert_array_equal(prediction[:2], truth[:2])  # context frames, as given
    assert [is_red(prediction[t, 0, 16]) for t in range(4)] == [False, False, True, True]


def test_autoencoder_shows_truth_and_reconstruction() -> None:
    torch.manual_seed(0)
    task = AutoencoderTask(net=AUTOENCODER, gan_weight=0)
    samples = render(task, synthetic_batch(frames=2, batch=2))
    assert samples[0].frames.shape == (2, 32, 2 * 32 + GAP, 3)
    assert "truth | reconstruction" in samples[0].caption


def test_synthesis_shows_labels_output_and_truth() -> None:
    torch.manual_seed(0)
    palette = SyntheticVideoDataModule.palette  # the data's own class colours
    task = tiny_task(palette=[list(colour) for colour in palette])
    batch = synthetic_batch(frames=2, batch=2)
    batch["segmentation"][:, :, :2, :2] = 255  # ignored pixels are drawn black
    samples = render(task, batch)
    assert "labels | output | truth" in samples[0].caption
    frames = samples[0].frames
    assert frames.shape == (2, 32, 3 * 32 + 2 * GAP, 3)
    colours = np.array([*palette, *[(0, 0, 0)] * 252], np.uint8)[batch["segmentation"][0]]
    np.testing.assert_array_equal(frames[:, :, :32], colours)
    np.testing.assert_array_equal(frames[:, :, -32:], as_frames(batch["video"][0]))
    output = frames[:, :, 32 + GAP : 64 + GAP]
    assert all(is_red(output[t, 0, 16]) for t in range(2))  # every frame is generated


def test_diffusion_shows_real_clips_beside_clips_sampled_for_their_labels() -> None:
    from videogen.tasks.diffusion import DiffusionTask

    torch.manual_seed(0)
    net = tiny_latte_net()
    task = DiffusionTask(net=net, diffusion={"num_steps": 10}, sample_steps=3)
    batch = synthetic_batch(frames=2, batch=2)
    samples = render(task, batch)
    assert "real | generated" in samples[0].caption
    frames = samples[0].frames
    assert frames.shape == (2, 32, 2 * 32 + GAP, 3)
    np.testing.assert_array_equal(frames[:, :, :32], as_frames(batch["video"][0]))
    generated = frames[:, :, 32 + GAP :]
    assert not np.array_equal(generated, frames[:, :, :32])
    assert all(is_red(generated[t, 0, 16]) for t in range(2))  # every frame is generated


# --------------------------------------------------------------------------- wandb


@pytest.mark.parametrize("video_format", ["gif", "mp4"])
def test_wandb_gets_encoded_videos_with_captions(tmp_path: Path, video_format: str) -> None:
    from pytorch_lightning.loggers import WandbLogger

    logger = WandbLogger(offline=True, save_dir=str(tmp_path))
    logged: list[tuple[dict, int | None]] = []
    logger.log_metrics = lambda metrics, step=None: logged.append((metrics, step))  # type: ignore[method-assign]
    frames = np.zeros((6, 16, 24, 3), dtype=np.uint8)
    frames[:, :, :, 0] = np.arange(6).reshape(6, 1, 1) * 40  # a different red every frame
    samples = [VideoSample(frames, "example 0: a"), VideoSample(frames, "example 1: b")]

    writer = video_writer(logger)
    assert writer is not None
    writer(logger, "val/samples", samples, 12, 4, video_format)

    [(metrics, step)] = logged
    videos = metrics["val/samples"]
    assert step == 12 and [v._caption for v in videos] == ["example 0: a", "example 1: b"]
    assert all(v._format == video_format for v in videos)
    path = videos[0]._path
    if video_format == "gif":
        with Image.open(path) as gif:
            assert gif.n_frames == 6 and gif.info["duration"] == 250
    else:
        with av.open(path) as container:
            stream = container.streams.video[0]
            assert stream.average_rate == 4
            assert sum(1 for _ in container.decode(stream)) == 6


def test_the_default_callbacks_config_adds_the_logger(compose_train) -> None:
    cfg = compose_train()
    assert list(cfg.callbacks)[-1] == "sample_videos"
    callback = instantiate(cfg.callbacks.sample_videos)
    assert isinstance(callback, SampleVideoLogger)
    assert (callback.every_n_epochs, callback.num_videos, callback.fps) == (5, 4, 4)

"""The FVD protocol (metrics/fvd.py) with a random-weight TorchScript stand-in for I3D: the
distance, the preprocessing the detector gets, the record a run leaves, and the diffusion task's
test reporting test/fvd under the protocol."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from tests.conftest import tiny_latte_net
from videogen.errors import ConfigError
from videogen.metrics.fvd import (
    FVDDetector,
    FVDProtocol,
    balanced_subset,
    draw_real_clips,
    mp4_round_trip,
    preprocess_clips,
    read_fvd_record,
    write_fvd_record,
)
from videogen.metrics.synthesis import frechet_distance
from videogen.tasks.diffusion import DiffusionTask

pytestmark = [
    pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning"),
    pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning"),
    pytest.mark.usefixtures("one_intra_op_thread"),
]


class TinyVideoNet(torch.nn.Module):
    """A random-weight video network with the TorchScript I3D's call signature: (B, 3, T, H, W)
    values in [0, 255] (rescale=True) -> (B, 8) features."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv3d(3, 8, kernel_size=3, stride=(1, 2, 2))

    def forward(
        self,
        x: torch.Tensor,
        rescale: bool = False,
        resize: bool = False,
        return_features: bool = False,
    ) -> torch.Tensor:
        if rescale:
            x = x / 127.5 - 1
        return torch.tanh(self.conv(x)).mean(dim=(2, 3, 4))


class PlainVideoNet(torch.nn.Module):
    """A detector that takes no keyword arguments."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3, 4))


def write_tiny_detector(path: Path) -> Path:
    """Save a random-weight TinyVideoNet as a TorchScript file at `path`."""
    torch.manual_seed(0)
    torch.jit.script(TinyVideoNet()).save(str(path))
    return path


@pytest.fixture(scope="module")
def detector_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_detector(tmp_path_factory.mktemp("detector") / "tiny_i3d.pt")


def small_protocol(path: Path, **changes: object) -> FVDProtocol:
    """The default protocol on small clips: 4 frames at 16 x 16."""
    return FVDProtocol(detector_path=str(path), frames=4, resolution=16, **changes)  # type: ignore[arg-type]


def smooth_clips(count: int, seed: int) -> torch.Tensor:
    """(count, 4, 3, 16, 16) clips in [0.2, 0.6]: low-resolution noise, upsampled."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(count * 4, 3, 4, 4, generator=generator)
    clips = F.interpolate(coarse, size=(16, 16), mode="bilinear", align_corners=False)
    return 0.2 + 0.4 * clips.view(count, 4, 3, 16, 16)


def test_identical_sets_are_at_distance_zero_and_a_larger_shift_is_further(
    detector_file: Path,
) -> None:
    detector = FVDDetector(small_protocol(detector_file))
    real = smooth_clips(64, seed=1)
    features = detector.features(real)
    assert features.shape == (64, 8) and features.dtype == torch.float64
    assert abs(frechet_distance(features, detector.features(real.clone()))) < 1e-6
    near = frechet_distance(features, detector.features(real + 0.05))
    far = frechet_distance(features, detector.features(real + 0.2))
    assert 0 < near < far
    # a different draw of the same distribution is closer than a shifted one
    other = frechet_distance(features, detector.features(smooth_clips(64, seed=2)))
    assert other < far


def test_the_record_reads_back_with_the_detector_files_hash(
    detector_file: Path, tmp_path: Path
) -> None:
    expected = hashlib.sha256(detector_file.read_bytes()).hexdigest()
    detector = FVDDetector(small_protocol(detector_file, real_sampling="per_class"))
    assert detector.sha256 == expected == detector.protocol.detector_sha256
    record = detector.record(generated_clips=100, real_clips=90, fvd=12.5, samples=101)
    path = write_fvd_record(record, tmp_path)
    assert path.name == "fvd_protocol.json"
    read = read_fvd_record(tmp_path)
    assert read == record and read_fvd_record(path) == record
    assert read["protocol"]["detector_sha256"] == expected
    assert (read["generated_clips"], read["real_clips"], read["fvd"]) == (100, 90, 12.5)
    assert FVDProtocol.from_dict(read["protocol"]) == detector.protocol
    # the defaults round-trip too, and say what they are in one line
    default = FVDProtocol()
    assert FVDProtocol.from_dict(default.to_dict()) == default
    description = default.describe()
    assert "16 frames" in description and "2048 generated / 2048 real" in description
    assert "short side to 224 + centre crop" in description and "\n" not in description
    # a pinned hash is checked
    pinned = small_protocol(detector_file, detector_sha256=expected.upper())
    assert FVDDetector(pinned).sha256 == expected


def test_preprocessing_gives_the_detector_the_stated_resolution_and_range() -> None:
    clips = torch.zeros(2, 20, 3, 48, 64)
    clips[:, :, :, :, :6] = 1.0  # a white band on the left edge, outside the centre square
    clips[1] = 1.0
    inputs = preprocess_clips(clips, FVDProtocol())
    assert inputs.shape == (2, 3, 16, 224, 224)  # BCTHW, the first 16 frames
    assert inputs.min() >= 0 and inputs.max() <= 255
    assert inputs[0].max() == 0  # the band was cropped away (short side 224, centre crop)
    assert torch.allclose(inputs[1], torch.tensor(255.0))
    stretched = preprocess_clips(
        clips, FVDProtocol(resize="stretch", value_range=(-1.0, 1.0), layout="BTCHW")
    )
    assert stretched.shape == (2, 16, 3, 224, 224)
    assert stretched[0].min() == -1 and stretched[0].max() > 0.999  # the band is kept
    assert torch.allclose(stretched[1], torch.tensor(1.0))
    # 8-bit quantisation before anything else; greyscale becomes RGB
    grey = torch.full((1, 16, 1, 224, 224), 0.5012)
    quantised = preprocess_clips(grey, FVDProtocol())
    assert quantised.shape == (1, 3, 16, 224, 224)
    assert torch.allclose(quantised, torch.tensor(128.0))
    unquantised = preprocess_clips(grey, FVDProtocol(quantize=False))
    assert torch.allclose(unquantised, torch.tensor(0.5012 * 255))
    with pytest.raises(ConfigError, match="model.fvd.frames=16, but these clips have 8 frames"):
        preprocess_clips(torch.rand(1, 8, 3, 16, 16), FVDProtocol())


def test_mp4_round_trip_keeps_the_shape_and_changes_pixels_a_little() -> None:
    clips = smooth_clips(1, seed=3)
    decoded = mp4_round_trip(clips)
    assert decoded.shape == clips.shape
    difference = (decoded - clips).abs()
    assert 0 < difference.mean() < 0.03


def test_real_clips_are_drawn_per_class_or_uniformly() -> None:
    labels = torch.tensor([0] * 10 + [1] * 3 + [2] * 7)
    per_class = draw_real_clips(labels, 20, 7, "per_class", seed=0)
    assert torch.bincount(labels[per_class]).tolist() == [3, 2, 2]  # 7 = 3 + 2 + 2
    assert torch.equal(per_class, per_class.sort().values)
    short = draw_real_clips(labels, 20, 12, "per_class", seed=0)
    assert torch.bincount(labels[short]).tolist() == [4, 3, 4]  # class 1 has only 3
    uniform = draw_real_clips(labels, 20, 7, "uniform", seed=0)
    assert len(uniform) == 7 and len(set(uniform.tolist())) == 7
    assert torch.equal(uniform, draw_real_clips(labels, 20, 7, "uniform", seed=0))
    assert draw_real_clips(None, 5, 7, "uniform", seed=0).tolist() == [0, 1, 2, 3, 4]
    # a subset of class-ordered generated clips takes the classes in turn
    generated = torch.arange(3).repeat_interleave(4)
    subset = balanced_subset(generated, 12, 7)
    assert torch.bincount(generated[subset]).tolist() == [3, 2, 2]


def test_bad_detectors_and_settings_are_one_sentence(detector_file: Path, tmp_path: Path) -> None:
    def one_sentence(error: pytest.ExceptionInfo) -> str:
        message = str(error.value)
        assert "\n" not in message and message.endswith(".")
        return message

    with pytest.raises(ConfigError) as missing:
        FVDDetector(small_protocol(tmp_path / "i3d_torchscript.pt"))
    assert "i3d_torchscript.pt does not exist" in one_sentence(missing)
    with pytest.raises(ConfigError) as pinned:
        FVDDetector(small_protocol(detector_file, detector_sha256="0" * 64))
    assert "not the pinned model.fvd.detector_sha256" in one_sentence(pinned)
    plain = tmp_path / "plain.pt"
    torch.jit.script(PlainVideoNet()).save(str(plain))
    with pytest.raises(ConfigError) as arguments:
        FVDDetector(small_protocol(plain))
    assert "takes no keyword argument rescale, resize, return_features" in one_sentence(arguments)
    assert FVDDetector(small_protocol(plain, detector_kwargs={})).features(
        smooth_clips(2, seed=0)
    ).shape == (2, 3)
    with pytest.raises(ConfigError) as resize:
        FVDProtocol.from_dict({"resize": "squash"})
    assert "model.fvd.resize='squash' is not one of" in one_sentence(resize)
    with pytest.raises(ConfigError) as unknown:
        FVDProtocol.from_dict({"clips": 10})
    assert "unknown FVD protocol keys ['clips']" in one_sentence(unknown)


def tiny_diffusion_task(detector: Path, num_classes: int = 2, **fvd: object) -> DiffusionTask:
    net = tiny_latte_net(num_frames=4, img_size=[16, 16], num_classes=num_classes)
    return DiffusionTask(
        net=net,
        diffusion={"num_steps": 10},
        sample_steps=2,
        samples_per_class=4,
        sample_batch_size=8,
        fvd_network_path=str(detector),
        fvd={"frames": 4, "resolution": 16, **fvd},
    )


def quiet_trainer(root: Path) -> pl.Trainer:
    return pl.Trainer(
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        default_root_dir=str(root),
    )


def test_the_diffusion_test_reports_fvd_under_the_protocol_and_records_it(
    detector_file: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    torch.manual_seed(0)
    task = tiny_diffusion_task(detector_file, generated_clips=6, real_clips=5)
    clips = smooth_clips(12, seed=4) * 2 - 1  # the task's signed pixel range
    labels = [0] * 8 + [1] * 4
    data = [{"video": clip, "label": label} for clip, label in zip(clips, labels, strict=True)]
    trainer = quiet_trainer(tmp_path)
    with caplog.at_level(logging.INFO, logger="videogen.tasks.diffusion"):
        [metrics] = trainer.test(task, DataLoader(data, batch_size=4), verbose=False)
    # 8 samples (4 per class), 6 of them scored, 3 of each class; real: 3 + 2 of 12
    assert metrics["test/generated_clips"] == 8
    assert metrics["test/fvd_generated_clips"] == 6 and metrics["test/fvd_real_clips"] == 5
    assert metrics["test/fvd"] > 0
    sha = hashlib.sha256(detector_file.read_bytes()).hexdigest()
    assert f"sha256 {sha}" in caplog.text
    assert "FVD: 6 generated clips, the protocol's count (of the 8 the test samples)" in caplog.text
    record = read_fvd_record(tmp_path)
    assert record["protocol"]["detector_sha256"] == sha
    assert record["protocol"]["real_sampling"] == "per_class"  # "auto" on labelled data
    assert (record["generated_clips"], record["real_clips"], record["samples"]) == (6, 5, 8)
    assert record["test_clips"] == 12
    assert record["fvd"] == pytest.approx(metrics["test/fvd"])
    # fewer samples than the protocol asks for: all of them count, and the log says so
    caplog.clear()
    task.fvd = {**task.fvd, "generated_clips": 2048}
    with caplog.at_level(logging.INFO, logger="videogen.tasks.diffusion"):
        [metrics] = trainer.test(task, DataLoader(data, batch_size=4), verbose=False)
    assert metrics["test/fvd_generated_clips"] == 8
    assert "fewer than the protocol's 2048: set model.samples_per_class=1024" in caplog.text
    assert read_fvd_record(tmp_path)["generated_clips"] == 8


def test_unlabelled_real_clips_are_drawn_uniformly(
    detector_file: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    torch.manual_seed(0)
    data = [{"video": clip} for clip in smooth_clips(10, seed=5) * 2 - 1]
    task = tiny_diffusion_task(detector_file, num_classes=0, real_clips=6)
    [metrics] = quiet_trainer(tmp_path).test(task, DataLoader(data, batch_size=5), verbose=False)
    assert metrics["test/fvd_generated_clips"] == 4 and metrics["test/fvd_real_clips"] == 6
    assert read_fvd_record(tmp_path)["protocol"]["real_sampling"] == "uniform"  # "auto"
    # per class asked for on data without labels: uniform, with a warning, and recorded so
    task.fvd = {**task.fvd, "real_sampling": "per_class"}
    with caplog.at_level(logging.WARNING, logger="videogen.tasks.diffusion"):
        [metrics] = quiet_trainer(tmp_path).test(
            task, DataLoader(data, batch_size=5), verbose=False
        )
    assert "the test data has no labels" in caplog.text
    assert metrics["test/fvd_real_clips"] == 6
    assert read_fvd_record(tmp_path)["protocol"]["real_sampling"] == "uniform"


def test_a_model_with_shorter_clips_than_the_protocol_is_one_sentence(detector_file: Path) -> None:
    task = tiny_diffusion_task(detector_file, frames=16)
    with pytest.raises(ConfigError, match=r"model.fvd.frames=16, but this model makes 4-frame"):
        task.load_fvd_detector()
    with pytest.raises(ConfigError, match="model.fvd.real_sampling='everything'"):
        tiny_diffusion_task(detector_file, real_sampling="everything")

"""Classification task pieces: contract check, schedules, checkpoint identity."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from videogen.data.synthetic import SyntheticVideoDataModule
from videogen.errors import CheckpointError, ConfigError, IncompatibleDataError
from videogen.tasks.classification import ClassificationTask
from videogen.tasks.schedules import warmup_cosine

NET = {
    "_target_": "videogen.models.vit.FrameViT",
    "num_classes": 8,
    "img_size": 32,
    "patch_size": 8,
    "embed_dim": 32,
    "depth": 1,
    "num_heads": 2,
}
OPTIMIZER = {"_target_": "torch.optim.AdamW", "_partial_": True, "lr": 1e-3}


class LabelOnlyDataModule(SyntheticVideoDataModule):
    """A datamodule that delivers no labels (like a dataset without annotations)."""

    provides = frozenset({"video", "video_index", "view_index"})


class OtherTask(ClassificationTask):
    """Stands for a different task family in the checkpoint-identity test."""


def test_incompatible_data_is_refused_naming_both_sides() -> None:
    task = ClassificationTask(net=NET)
    with pytest.raises(IncompatibleDataError) as info:
        task.check_data(LabelOnlyDataModule(), data_name="unlabelled", model_name="vit")
    message = str(info.value)
    assert "'vit'" in message and "'unlabelled'" in message and "label" in message
    task.check_data(
        SyntheticVideoDataModule(), data_name="synthetic", model_name="vit"
    )  # compatible: no error


def test_warmup_then_cosine_schedule() -> None:
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = warmup_cosine(
        optimizer, total_steps=100, steps_per_epoch=10, warmup_epochs=1, min_lr_ratio=0.1
    )
    lrs = []
    for _ in range(100):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(
        1.0
    )  # linear warm-up over 10 steps
    assert lrs[10] == pytest.approx(1.0)
    assert lrs[55] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:], strict=False))
    assert lrs[-1] == pytest.approx(0.1, abs=1e-3)


def fit_tiny(task: ClassificationTask, tmp_path: Path) -> Path:
    datamodule = SyntheticVideoDataModule(train_size=8, val_size=4, test_size=4, batch_size=4)
    trainer = pl.Trainer(
        max_steps=1,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(task, datamodule=datamodule)
    path = tmp_path / "task.ckpt"
    trainer.save_checkpoint(path)
    return path


def test_checkpoint_loads_with_no_other_argument(tmp_path: Path) -> None:
    task = ClassificationTask(net=NET, optimizer=OPTIMIZER)
    path = fit_tiny(task, tmp_path)
    restored = ClassificationTask.load_from_checkpoint(path)
    video = torch.randn(2, 8, 3, 32, 32)
    torch.testing.assert_close(restored.eval()(video), task.eval()(video))


def test_checkpoint_of_another_task_says_which_task(tmp_path: Path) -> None:
    path = fit_tiny(OtherTask(net=NET, optimizer=OPTIMIZER), tmp_path)
    with pytest.raises(CheckpointError, match="belongs to the task OtherTask"):
        ClassificationTask.load_from_checkpoint(path)


def test_foreign_and_corrupt_files_are_one_sentence(tmp_path: Path) -> None:
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {}, "epoch": 0}, foreign)
    with pytest.raises(CheckpointError, match="not written by videogen"):
        ClassificationTask.load_from_checkpoint(foreign)
    corrupt = tmp_path / "corrupt.ckpt"
    corrupt.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(CheckpointError, match="is not a Lightning checkpoint"):
        ClassificationTask.load_from_checkpoint(corrupt)
    with pytest.raises(CheckpointError, match="does not exist"):
        ClassificationTask.load_from_checkpoint(tmp_path / "missing.ckpt")


def test_views_of_one_video_are_averaged_before_the_metric() -> None:
    from videogen.tasks.classification import aggregate_views

    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [0.0, 5.0], [1.0, 0.0]])
    labels = torch.tensor([0, 0, 1, 1])
    video_index = torch.tensor([7, 7, 3, 3])
    scores, video_labels = aggregate_views(logits, labels, video_index, use_softmax=False)
    torch.testing.assert_close(
        scores, torch.tensor([[0.5, 2.5], [1.0, 0.5]])
    )  # videos sorted: 3, 7
    assert video_labels.tolist() == [1, 0]
    soft, _ = aggregate_views(logits, labels, video_index, use_softmax=True)
    torch.testing.assert_close(soft.sum(dim=1), torch.ones(2))


def test_multi_view_test_reports_per_view_and_per_video_accuracy(tmp_path: Path) -> None:
    task = ClassificationTask(net=NET, optimizer=OPTIMIZER)
    datamodule = SyntheticVideoDataModule(
        train_size=8, val_size=4, test_size=6, batch_size=4, test_views=3
    )
    trainer = pl.Trainer(
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    (results,) = trainer.test(task, datamodule=datamodule, verbose=False)
    assert results["test/views_per_video"] == 3.0
    # Recompute the per-video figure by hand from the per-view predictions.
    datamodule.setup("test")
    task.eval()
    logits, labels, videos = [], [], []
    with torch.no_grad():
        for batch in datamodule.test_dataloader():
            logits.append(task(datamodule.to_pixel_range(batch["video"], task.pixel_range)))
            labels.append(batch["label"])
            videos.append(batch["video_index"])
    logits, labels, videos = torch.cat(logits), torch.cat(labels), torch.cat(videos)
    assert len(logits) == 18 and videos.bincount().tolist() == [3] * 6
    per_video = torch.stack([logits[videos == v].mean(0) for v in range(6)]).argmax(1)
    video_labels = torch.stack([labels[videos == v][0] for v in range(6)])
    assert results["test/video_acc"] == pytest.approx(
        (per_video == video_labels).float().mean().item()
    )
    assert results["test/acc"] == pytest.approx((logits.argmax(1) == labels).float().mean().item())


def test_mixup_and_cutmix_mix_whole_clips_and_their_labels() -> None:
    from videogen.tasks.classification import mix_clips

    torch.manual_seed(0)
    video = (
        torch.arange(4, dtype=torch.float32).view(4, 1, 1, 1, 1).expand(4, 3, 2, 8, 8).contiguous()
    )
    labels = torch.tensor([0, 1, 2, 3])
    mixed, targets = mix_clips(video, labels, mixup_alpha=0.4, cutmix_alpha=0.0)
    (lam, first), (rest, second) = targets
    assert lam + rest == pytest.approx(1.0) and torch.equal(first, labels)
    torch.testing.assert_close(mixed[:, 0, 0, 0, 0], lam * labels.float() + rest * second.float())
    mixed, targets = mix_clips(video, labels, mixup_alpha=0.0, cutmix_alpha=1.0)
    (lam, _), (rest, second) = targets
    pasted = mixed != video
    assert torch.equal(pasted[:, :1].expand_as(pasted), pasted), "the same box in every frame"
    changed = (mixed[:, 0, 0] != video[:, 0, 0]).float().mean(dim=(1, 2))
    moved = second != labels
    assert torch.allclose(changed[moved], torch.full_like(changed[moved], rest))


def test_a_task_refuses_a_network_it_cannot_use() -> None:
    from videogen.tasks.prediction import AutoencoderTask

    linear = {"_target_": "torch.nn.Linear", "in_features": 2, "out_features": 2}
    with pytest.raises(ConfigError, match="model.net of AutoencoderTask must be a VPTRAutoencoder"):
        AutoencoderTask(net=linear, gan_weight=0)

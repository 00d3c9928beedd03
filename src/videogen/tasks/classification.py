"""Video classification (ViT per frame, and later ViViT): cross-entropy, top-1/top-5 accuracy."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torchmetrics.classification import MulticlassAccuracy

from videogen.tasks.base import VideoTask


class ClassificationTask(VideoTask):
    """Train a clip classifier `net(video) -> logits` on `video`/`label` batches."""

    requires: ClassVar[frozenset[str]] = frozenset({"video", "label"})

    def __init__(
        self,
        net: dict[str, Any],
        optimizer: dict[str, Any] | None = None,
        scheduler: dict[str, Any] | None = None,
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__(net, optimizer, scheduler)
        self.save_hyperparameters(logger=False)
        self.label_smoothing = label_smoothing
        num_classes = int(net["num_classes"])
        # One metric object per split and k: torchmetrics keeps state across a whole epoch.
        self.accuracy = torch.nn.ModuleDict(
            {
                f"{split}_top{k}": MulticlassAccuracy(
                    num_classes, top_k=min(k, num_classes), average="micro"
                )
                for split in ("train", "val", "test")
                for k in (1, 5)
            }
        )

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        return self.net(video)

    def shared_step(self, batch: dict[str, torch.Tensor], split: str) -> torch.Tensor:
        logits = self(batch["video"])
        labels = batch["label"]
        smoothing = self.label_smoothing if split == "train" else 0.0
        loss = F.cross_entropy(logits, labels, label_smoothing=smoothing)
        top1, top5 = self.accuracy[f"{split}_top1"], self.accuracy[f"{split}_top5"]
        top1(logits, labels)
        top5(logits, labels)
        on_step = split == "train"
        batch_size = labels.shape[0]
        self.log(
            f"{split}/loss",
            loss,
            on_step=on_step,
            on_epoch=True,
            prog_bar=True,
            batch_size=batch_size,
        )
        self.log(
            f"{split}/acc",
            top1,
            on_step=False,
            on_epoch=True,
            prog_bar=split != "train",
            batch_size=batch_size,
        )
        self.log(f"{split}/acc_top5", top5, on_step=False, on_epoch=True, batch_size=batch_size)
        return loss

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self.shared_step(batch, "train")

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self.shared_step(batch, "val")

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self.shared_step(batch, "test")

    def predict_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self(batch["video"]).softmax(dim=-1)

"""Video classification (ViT per frame, ViViT): cross-entropy, top-1/top-5 accuracy.

The test loop is multi-view aware: when a video is seen as several views (temporal clips x
spatial crops, tagged by `video_index`), accuracy is reported per view (`test/acc`) and per
video after averaging the views' logits or softmax scores (`test/video_acc`).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torchmetrics.classification import MulticlassAccuracy

from videogen.errors import ConfigError
from videogen.tasks.base import VideoTask
from videogen.tasks.protocols import LabelledClips

VIEW_AGGREGATIONS = ("mean_logits", "mean_softmax")


def mix_clips(
    video: torch.Tensor, labels: torch.Tensor, mixup_alpha: float, cutmix_alpha: float
) -> tuple[torch.Tensor, list[tuple[float, torch.Tensor]]]:
    """Mixup (blend two clips) or CutMix (paste the same box of another clip into every frame).

    Returns the mixed clips and the (weight, labels) pairs whose weighted losses make the target.
    With both enabled, each batch uses one of the two at random.
    """
    use_cutmix = cutmix_alpha > 0 and (mixup_alpha <= 0 or torch.rand(()) < 0.5)
    alpha = cutmix_alpha if use_cutmix else mixup_alpha
    lam = float(torch.distributions.Beta(alpha, alpha).sample())
    order = torch.randperm(video.shape[0], device=video.device)
    if use_cutmix:
        height, width = video.shape[-2:]
        cut_h, cut_w = int(height * (1 - lam) ** 0.5), int(width * (1 - lam) ** 0.5)
        top, left = (
            int(torch.randint(0, height - cut_h + 1, ())),
            int(torch.randint(0, width - cut_w + 1, ())),
        )
        video = video.clone()
        video[..., top : top + cut_h, left : left + cut_w] = video[order][
            ..., top : top + cut_h, left : left + cut_w
        ]
        lam = 1 - cut_h * cut_w / (height * width)  # the pasted area decides the label weights
    else:
        video = lam * video + (1 - lam) * video[order]
    return video, [(lam, labels), (1 - lam, labels[order])]


def aggregate_views(
    scores: torch.Tensor, labels: torch.Tensor, video_index: torch.Tensor, use_softmax: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Average per-view scores (N, K) over views of the same video -> (V, K) scores, (V,) labels."""
    if use_softmax:
        scores = scores.softmax(dim=-1)
    videos, inverse = torch.unique(video_index, return_inverse=True)
    sums = torch.zeros(len(videos), scores.shape[1], dtype=scores.dtype, device=scores.device)
    sums.index_add_(0, inverse, scores)
    counts = torch.bincount(inverse, minlength=len(videos)).unsqueeze(1)
    video_labels = torch.zeros(len(videos), dtype=labels.dtype, device=labels.device)
    video_labels[inverse] = labels
    return sums / counts, video_labels


class ClassificationTask(VideoTask, LabelledClips):
    """Train a clip classifier `net(video) -> logits` on `video`/`label` batches."""

    requires: ClassVar[frozenset[str]] = frozenset({"video", "label"})
    # Options that may be changed on a trained model (evaluate / generate overrides).
    runtime_options: ClassVar[tuple[str, ...]] = ("view_aggregation",)

    def __init__(
        self,
        net: dict[str, Any],
        optimizer: dict[str, Any] | None = None,
        lr_scheduler: dict[str, Any] | None = None,
        label_smoothing: float = 0.0,
        view_aggregation: str = "mean_logits",
        mixup_alpha: float = 0.0,
        cutmix_alpha: float = 0.0,
    ) -> None:
        # Checked before the network is built: unlabelled data (num_classes 0) would otherwise
        # surface as torchmetrics' ValueError about its own argument.
        if int(net.get("num_classes", 0)) < 2:
            raise ConfigError(
                f"a classifier needs at least 2 classes, got model.net.num_classes="
                f"{net.get('num_classes', 0)} (from data.num_classes): use labelled data, e.g. "
                "data.class_folders=true with data.num_classes=<number of class folders>."
            )
        super().__init__(net, optimizer, lr_scheduler)
        self.save_hyperparameters(logger=False)
        self.label_smoothing = label_smoothing
        self.view_aggregation = view_aggregation
        self.mixup_alpha = mixup_alpha
        self.cutmix_alpha = cutmix_alpha
        self.test_outputs: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
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

    @property
    def view_aggregation(self) -> str:
        """How the views of a test video are combined: "mean_logits" or "mean_softmax"."""
        return self._view_aggregation

    @view_aggregation.setter
    def view_aggregation(self, value: str) -> None:
        if value not in VIEW_AGGREGATIONS:
            raise ConfigError(
                f"model.view_aggregation must be one of {', '.join(VIEW_AGGREGATIONS)}, got "
                f"{value!r}."
            )
        self._view_aggregation = value

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        return self.net(video)

    def shared_step(self, batch: dict[str, torch.Tensor], split: str) -> torch.Tensor | None:
        if "video" not in batch:  # every clip of this batch was unreadable and skipped
            return self.empty_batch_loss() if split == "train" else None
        video, labels = batch["video"], batch["label"]
        if split == "train" and (self.mixup_alpha or self.cutmix_alpha):
            video, mixed = mix_clips(video, labels, self.mixup_alpha, self.cutmix_alpha)
            logits = self(video)
            loss = sum(
                w * F.cross_entropy(logits, y, label_smoothing=self.label_smoothing)
                for w, y in mixed
            )
            self.log(
                "train/loss",
                loss,
                on_step=True,
                on_epoch=True,
                prog_bar=True,
                batch_size=labels.shape[0],
            )
            return loss
        logits = self(video)
        if split == "test" and "video_index" in batch:
            self.test_outputs.append(
                (logits.detach().float(), batch["label"], batch["video_index"])
            )
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
            # Averaged over ranks for evaluation (the monitored metric must agree on every rank);
            # the per-step training value stays local, to spare an all-reduce per step.
            sync_dist=split != "train",
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

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor | None:
        return self.shared_step(batch, "train")

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self.shared_step(batch, "val")

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self.shared_step(batch, "test")

    def on_test_epoch_start(self) -> None:
        self.test_outputs.clear()

    def on_test_epoch_end(self) -> None:
        """Per-video accuracy after averaging the views of each video (gathered over all ranks)."""
        if not self.test_outputs:
            return
        logits, labels, video_index = (
            torch.cat(parts) for parts in zip(*self.test_outputs, strict=True)
        )
        self.test_outputs.clear()
        if self.trainer.world_size > 1:
            logits, labels, video_index = (
                self.all_gather(t).flatten(0, 1) for t in (logits, labels, video_index)
            )
        scores, video_labels = aggregate_views(
            logits, labels, video_index, self.view_aggregation == "mean_softmax"
        )
        num_classes = scores.shape[1]
        for k, name in ((1, "test/video_acc"), (5, "test/video_acc_top5")):
            top = scores.topk(min(k, num_classes), dim=1).indices
            accuracy = (top == video_labels.unsqueeze(1)).any(dim=1).float().mean()
            self.log(name, accuracy, sync_dist=False, rank_zero_only=True)
        self.log("test/views_per_video", labels.numel() / video_labels.numel(), rank_zero_only=True)

    def predict_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self(batch["video"]).softmax(dim=-1)

    @torch.no_grad()
    def labelled_clips(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch's clips (B, T, C, H, W), as the model received them (standardised), and
        the predicted class of each (B,): what the sample-video callback shows."""
        video = batch["video"]
        return video, self(video).argmax(dim=-1)

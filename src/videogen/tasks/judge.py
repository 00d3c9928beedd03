"""A trained videogen classifier as the judge of generated clips: its accuracy on the class
each clip was conditioned on, and the Fréchet distance between its pre-logit features of
generated and of real clips. Offline: the judge is a checkpoint of this project."""

from __future__ import annotations

from pathlib import Path

import torch

from videogen.errors import ConfigError
from videogen.tasks.base import CHECKPOINT_KEY, read_checkpoint


class Judge:
    """A classification checkpoint's network, fed clips the way its training data fed it.

    Not an `nn.Module` attribute of the task that uses it: its weights are not the task's (not
    trained, averaged or saved with it).
    """

    def __init__(self, path: str | Path) -> None:
        from videogen.tasks.classification import ClassificationTask

        checkpoint = read_checkpoint(path)
        config = (checkpoint.get(CHECKPOINT_KEY) or {}).get("config") or {}
        data = config.get("data") or {}
        if "mean" not in data or "std" not in data:
            raise ConfigError(
                f"model.judge_ckpt={path} records no data normalisation (data.mean / data.std): "
                "give a classifier checkpoint written by `python -m videogen`."
            )
        self.task = ClassificationTask.load_from_checkpoint(path).eval()
        self.net = self.task.net
        self.mean = torch.tensor(data["mean"], dtype=torch.float32).view(1, 1, -1, 1, 1)
        self.std = torch.tensor(data["std"], dtype=torch.float32).view(1, 1, -1, 1, 1)
        self.path = str(path)
        self.clip_shape = (data.get("num_frames"), data.get("height"), data.get("width"))

    def check(self, clips: torch.Tensor) -> None:
        frames, height, width = self.clip_shape
        shape = (clips.shape[1], clips.shape[3], clips.shape[4])
        if None not in self.clip_shape and shape != (frames, height, width):
            raise ConfigError(
                f"the judge model.judge_ckpt={self.path} classifies clips of {frames} frames at "
                f"{height}x{width}, but this model makes {shape[0]} frames at {shape[1]}x"
                f"{shape[2]}: judge with a classifier trained on clips of that size."
            )

    @torch.no_grad()
    def __call__(self, clips: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits (B, classes) and pre-logit features (B, D) of clips (B, T, C, H, W) in [0, 1]
        (a per-frame classifier's frame features averaged over the clip)."""
        self.check(clips)
        self.net.to(clips.device)
        video = (clips.float() - self.mean.to(clips.device)) / self.std.to(clips.device)
        features = self.net.forward_features(video)
        logits = self.net.forward_head(features).float()
        pooled = features.mean(dim=1) if features.dim() == 3 else features
        return logits, pooled.float()

"""Something-Something-v2 as distributed (`data=ssv2`).

`{root}/{labels_file}` maps templates to class indices ({"Approaching something with your camera":
"0", ...}); `{root}/something-something-v2-{train,validation}.json` list items with `id` and
`template` ("Putting [something] on [something]"); videos are `{root}/{video_dir}/{id}.webm`
(VP9, 12 fps). Template brackets are removed before the label lookup.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from videogen.data.clips import VideoFileDataModule, VideoSample
from videogen.errors import ConfigError

LAYOUT_HELP = (
    "expected {root}/something-something-v2-labels.json, {root}/something-something-v2-{train,validation}.json "
    "and videos {root}/20bn-something-something-v2/<id>.webm; set data.root=/path/to/ssv2"
)


def template_to_label(template: str) -> str:
    """'Putting [something] on [something]' -> 'Putting something on something'."""
    return template.replace("[", "").replace("]", "")


class SomethingSomethingV2DataModule(VideoFileDataModule):
    """`data=ssv2`: 174 classes of template actions, webm videos."""

    def __init__(
        self,
        root: str,
        num_classes: int = 174,
        labels_file: str = "something-something-v2-labels.json",
        annotations: Mapping[str, str] | None = None,
        video_dir: str = "20bn-something-something-v2",
        video_suffix: str = ".webm",
        **options: Any,
    ) -> None:
        super().__init__(root, num_classes, **options)
        self.labels_file = labels_file
        self.annotations = dict(
            annotations
            or {
                "train": "something-something-v2-train.json",
                "val": "something-something-v2-validation.json",
                "test": "something-something-v2-validation.json",
            }
        )
        self.video_dir = video_dir
        self.video_suffix = video_suffix  # .mp4 after `python -m videogen.prepare`

    def annotation_files(self, split: str) -> list[Path]:
        return [
            p
            for p in (self.root / self.labels_file, self.root / self.annotations[split])
            if p.is_file()
        ]

    def index_settings(self) -> dict[str, Any]:
        return {
            "root": str(self.root),
            "labels": self.labels_file,
            "annotations": self.annotations,
            "video_dir": self.video_dir,
            "video_suffix": self.video_suffix,
        }

    def build_samples(self, split: str) -> list[VideoSample]:
        labels_path, items_path = self.root / self.labels_file, self.root / self.annotations[split]
        for path in (labels_path, items_path):
            if not path.is_file():
                raise ConfigError(f"Something-Something-v2 file {path} is missing: {LAYOUT_HELP}.")
        labels = {name: int(index) for name, index in json.loads(labels_path.read_text()).items()}
        if len(labels) != self.num_classes:
            raise ConfigError(
                f"{labels_path} names {len(labels)} classes but data.num_classes is {self.num_classes}: "
                f"set data.num_classes={len(labels)}."
            )
        samples = []
        for item in json.loads(items_path.read_text()):
            label = template_to_label(item["template"])
            if label not in labels:
                raise ConfigError(
                    f"{items_path}: item {item['id']} has template {label!r}, which {labels_path.name} lacks."
                )
            samples.append(
                VideoSample(
                    str(self.root / self.video_dir / f"{item['id']}{self.video_suffix}"),
                    labels[label],
                )
            )
        return samples

"""The state-dict layout (keys and shapes) of the Lightning task of every model config.

`task_layouts()` composes each config in `LAYOUTS` as `python -m videogen` would and builds the
whole task on the meta device (shapes only: paper sizes cost nothing). The recorded layout of an
earlier commit lives in tests/data/state_dict_layout.json; tests/test_state_dict_layout.py checks
that today's code still builds it. Regenerate the file (only when a layout change is meant to
break old checkpoints) with `python -m tests.state_dict_layout`.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig
from torch.overrides import TorchFunctionMode

from videogen.config import CONFIG_DIR
from videogen.tasks.base import VideoTask
from videogen.utils.build import container, task_class

LAYOUT_FILE = Path(__file__).resolve().parent / "data" / "state_dict_layout.json"

VIVIT_VARIANTS = (
    "spatio_temporal",
    "factorised_encoder",
    "factorised_self_attention",
    "factorised_dot_product",
)

# Layout name -> the train-config overrides that build it, each on its intended data: the
# experiment config where one exists, the paper datasets for the paper-size models.
LAYOUTS: dict[str, list[str]] = {
    "vit": ["experiment=vit_synthetic"],  # default synthetic data: 8 x 3 x 32 x 32, 8 classes
    "vit_b16": ["model=vit_b16", "data=kinetics"],  # 224 x 224 frames, 400 classes
    "vivit": ["experiment=vivit_b_k400"],  # 32 x 3 x 224 x 224, 400 classes
    "vivit_tiny": ["model=vivit_tiny"],  # default synthetic data
    "vptr_ae": ["model=vptr_ae", "data=moving_mnist"],  # 20 x 1 x 64 x 64 (10 + 10 frames)
    "vptr_ae_tiny": ["experiment=vptr_synthetic_ae"],
    "vptr_far": ["model=vptr_far", "data=moving_mnist"],
    "vptr_far_tiny": ["experiment=vptr_synthetic_far"],
    "vptr_nar": ["model=vptr_nar", "data=moving_mnist"],
    "vptr_nar_tiny": ["experiment=vptr_synthetic_nar"],
    "vid2vid": ["model=vid2vid", "data=cityscapes"],  # 19 classes, 128 x 256 frames
    "vid2vid_tiny": ["experiment=vid2vid_synthetic"],
}
for _base in ("vivit", "vivit_tiny"):
    for _variant in VIVIT_VARIANTS:
        LAYOUTS[f"{_base}.{_variant}"] = [*LAYOUTS[_base], f"model.net.variant={_variant}"]

# Stage-2 VPTR layouts -> the layout of their stage-1 autoencoder (same data).
AUTOENCODER_OF = {
    "vptr_far": "vptr_ae",
    "vptr_nar": "vptr_ae",
    "vptr_far_tiny": "vptr_ae_tiny",
    "vptr_nar_tiny": "vptr_ae_tiny",
}

ABOUT = (
    "The Lightning task state-dict keys and parameter/buffer shapes of every model config "
    "(conf/model/*.yaml, and each ViViT variant of vivit and vivit_tiny) as of commit {commit}, "
    "each built on its intended data by tests/state_dict_layout.py (LAYOUTS names the config "
    "overrides of every entry). Kept so that checkpoints written before the modelling-core "
    "refactor stay loadable: tests/test_state_dict_layout.py checks that the current code still "
    "builds these layouts. Regenerate with `python -m tests.state_dict_layout` only when old "
    "checkpoints are meant to stop loading."
)


class ValuesOnCPU(TorchFunctionMode):
    """Inside `torch.device("meta")`: number ranges made without a device are made on the CPU.

    Networks read values of such ranges while they are built (ViViT's drop-path schedule is
    `torch.linspace(0, rate, depth).tolist()`), which a meta tensor cannot give; everything else
    stays on the meta device, so paper-size networks are never allocated.
    """

    RANGES = (torch.arange, torch.linspace, torch.logspace)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if func in self.RANGES and kwargs.get("device") is None:
            kwargs["device"] = "cpu"
        return func(*args, **kwargs)


def compose_train(overrides: list[str]) -> DictConfig:
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(config_name="train", overrides=overrides)


def build_task(name: str) -> VideoTask:
    """The task of layout `name`, built on the meta device as `python -m videogen` builds it."""
    cfg = compose_train(LAYOUTS[name])
    model = container(cfg.model)
    model.pop("_recursive_", None)
    model.pop("_target_")
    if name in AUTOENCODER_OF:
        # What a reloaded stage-2 checkpoint passes instead of model.autoencoder_ckpt.
        model["autoencoder"] = container(compose_train(LAYOUTS[AUTOENCODER_OF[name]]).model.net)
    with torch.device("meta"), ValuesOnCPU():
        return task_class(cfg)(
            **model,
            optimizer=container(cfg.get("optimizer")),
            lr_scheduler=container(cfg.get("lr_scheduler")),
        )


def layout_of(task: torch.nn.Module) -> dict[str, list[int]]:
    return {key: list(value.shape) for key, value in task.state_dict().items()}


def task_layouts() -> dict[str, dict[str, list[int]]]:
    """{layout name: {state-dict key: shape}} of every entry of LAYOUTS."""
    return {name: layout_of(build_task(name)) for name in sorted(LAYOUTS)}


def model_code_commit() -> str:
    """The short hash of the last commit that changed the code and configs the layouts come from."""
    result = subprocess.run(
        ["git", "log", "-1", "--format=%h", "--", "src", "conf"],
        cwd=Path(__file__).resolve().parents[1],
        capture_output=True,
        text=True,
    )
    return result.stdout.strip() or "unknown"


def to_json(record: dict[str, Any]) -> str:
    """`record` as JSON with sorted keys, one state-dict key and its shape per line."""
    entries = []
    for name, value in sorted(record.items()):
        if isinstance(value, dict):
            keys = ",\n".join(
                f"  {json.dumps(key)}: {json.dumps(shape)}" for key, shape in sorted(value.items())
            )
            entries.append(f" {json.dumps(name)}: {{\n{keys}\n }}")
        else:
            entries.append(f" {json.dumps(name)}: {json.dumps(value)}")
    return "{\n" + ",\n".join(entries) + "\n}\n"


def write_layouts(path: Path = LAYOUT_FILE) -> dict[str, Any]:
    record: dict[str, Any] = {"_about": ABOUT.format(commit=model_code_commit()), **task_layouts()}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(to_json(record))
    assert json.loads(path.read_text()) == record
    return record


if __name__ == "__main__":
    written = write_layouts()
    for layout, keys in written.items():
        if layout != "_about":
            print(f"{layout}: {len(keys)} keys")
    print(f"wrote {LAYOUT_FILE}")

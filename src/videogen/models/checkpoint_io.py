"""Reading local weight files (timm / torchvision state dicts or Lightning checkpoints)."""

from __future__ import annotations

from pathlib import Path

import torch

from videogen.errors import CheckpointError


def load_state_dict(path: str | Path, prefix: str = "") -> dict[str, torch.Tensor]:
    """Load a state dict from a `.pth`/`.pt`/`.bin`/`.ckpt` or `.safetensors` file.

    Lightning checkpoints are unwrapped (`state_dict`), and keys starting with `prefix`
    (e.g. "net.") have it removed, so a videogen checkpoint can initialise a bare network.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"weight file {path} does not exist: point pretrained_path at a local file."
        )
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # any decode failure means the file is not a weight file
        raise CheckpointError(
            f"{path} could not be read as a weight file ({type(err).__name__})."
        ) from err
    for key in ("state_dict", "model", "module"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict):
        raise CheckpointError(
            f"{path} holds a {type(state).__name__}, not a state dict of tensors."
        )
    if prefix and any(k.startswith(prefix) for k in state):
        state = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    return state

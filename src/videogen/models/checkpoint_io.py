"""Reading checkpoints and weight files: tensors and plain data only, never code.

Every checkpoint, weight file and sharded checkpoint folder videogen opens is read here.
A `.ckpt` / `.pth` is a pickle, and a pickle can name any Python callable to run while it is
loaded; `torch.load(weights_only=True)` rebuilds only tensors, containers, numbers and strings,
and refuses anything else before calling it. `.safetensors` files hold no code at all.
"""

from __future__ import annotations

import pickle
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from videogen.errors import CheckpointError

# Classes a checkpoint may hold beyond what `weights_only=True` already rebuilds (tensors,
# dtypes, dicts, lists, tuples, OrderedDict, numbers, strings). Checkpoints of every videogen
# task (classification, VPTR autoencoder and FAR / NAR, vid2vid), with 32-true, bf16-mixed and
# 16-mixed precision, end-of-epoch and mid-epoch, hold nothing else: Lightning's loop,
# callback, optimiser and scheduler states and the run config are plain data. Extend this
# only with a class whose unpickling runs no code of the file's choosing.
PLAIN_DATA_CLASSES: tuple[type, ...] = ()


@contextmanager
def plain_data_loading() -> Iterator[None]:
    """`torch.load(weights_only=True)` inside accepts `PLAIN_DATA_CLASSES` (and nothing more).

    A context rather than a global registration: only videogen's own loads are widened.
    Wrap Lightning's loads (`load_from_checkpoint`, `trainer.fit(ckpt_path=...)`) in it too.
    """
    with torch.serialization.safe_globals(list(PLAIN_DATA_CLASSES)):
        yield


def code_refusal(path: Path, names: list[str]) -> CheckpointError:
    """The one sentence for a file whose unpickling would call something."""
    named = f" (it calls {', '.join(names[:3])})" if names else ""
    return CheckpointError(
        f"{path} is not a plain-data checkpoint: it would run code when loaded{named}; "
        "videogen loads only tensors and plain data."
    )


def unsafe_names(path: Path) -> list[str]:
    """The callables a torch zip checkpoint names that `weights_only=True` would refuse."""
    allowed = {f"{cls.__module__}.{cls.__qualname__}" for cls in PLAIN_DATA_CLASSES}
    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception:  # a damaged archive: the refusal still stands, without names
        return []
    return [name for name in names if name not in allowed]


def load_plain(path: str | Path, mmap: bool = False) -> Any:
    """`torch.load` of `path` on the CPU with `weights_only=True` (memory-mapped if `mmap`).

    A torch checkpoint whose pickle would run code raises the one-sentence CheckpointError of
    `code_refusal`, having run nothing; other failures (not a torch file, truncated, ...) raise
    as torch raised them, for the caller to say what it expected the file to be.
    """
    path = Path(path)
    try:
        with plain_data_loading():
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as err:
        # Only a torch archive can be "valid but not plain data"; random bytes also fail the
        # weights-only unpickler, and are reported by the caller as unreadable.
        if "Weights only load failed" in str(err) and zipfile.is_zipfile(path):
            raise code_refusal(path, unsafe_names(path)) from None
        raise


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
            state = load_plain(path)
    except CheckpointError:
        raise
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


# ------------------------------------------------------------------ sharded checkpoint folders
# Lightning's FSDP strategy (`state_dict_type: sharded`) writes a folder: tensor shards read by
# torch.distributed.checkpoint, its index `.metadata` (a plain pickle, which that reader loads
# with no restriction at all), non-tensor values (optimiser hyper-parameters) pickled inside
# the shards (which that reader unpickles without restriction too), and everything else in
# `meta.pt`. Every part is read here under the same plain-data rules instead.

SHARDED_METADATA = "meta.pt"
SHARD_INDEX = ".metadata"

# What the index of a torch.distributed.checkpoint folder is made of (module -> class names).
SHARD_INDEX_CLASSES: dict[str, set[str]] = {
    "torch.distributed.checkpoint.metadata": {
        "Metadata",
        "MetadataIndex",
        "TensorStorageMetadata",
        "BytesStorageMetadata",
        "ChunkStorageMetadata",
        "TensorProperties",
        "StorageMeta",
        "_MEM_FORMAT_ENCODING",
    },
    "torch.distributed.checkpoint.filesystem": {"_StorageInfo"},
    "torch.serialization": {"_get_layout"},
    "torch": {"Size"},
    "pathlib": {"PosixPath", "WindowsPath"},  # the folder it was saved to
}


class RefusedGlobal(pickle.UnpicklingError):
    """A pickle names a callable outside the allow-list (refused before it is looked up)."""


class ShardIndexUnpickler(pickle.Unpickler):
    """Unpickles a shard index, refusing any global outside `SHARD_INDEX_CLASSES` (and dtypes)."""

    def find_class(self, module: str, name: str) -> Any:
        is_dtype = module == "torch" and isinstance(getattr(torch, name, None), torch.dtype)
        if is_dtype or name in SHARD_INDEX_CLASSES.get(module, ()):
            return super().find_class(module, name)
        raise RefusedGlobal(f"{module}.{name}")


def is_sharded(path: Path) -> bool:
    return path.is_dir() and (path / SHARDED_METADATA).is_file()


def read_shard_index(folder: Path) -> Any:
    """The torch.distributed.checkpoint index of `folder`, unpickled with only its own classes."""
    index = folder / SHARD_INDEX
    try:
        with index.open("rb") as handle:
            return ShardIndexUnpickler(handle).load()
    except RefusedGlobal as err:
        raise code_refusal(index, [str(err)]) from None
    except Exception as err:  # missing, truncated or not a pickle at all
        raise CheckpointError(
            f"{index} could not be read ({type(err).__name__}): the sharded checkpoint is damaged."
        ) from err


def read_shards(folder: Path, keys: dict[str, Any]) -> dict[str, Any]:
    """Values of `keys` (fqn -> a tensor to fill, or None for a pickled value) from the shards.

    Pickled values are unpickled with `weights_only=True`; tensors are read by torch's own
    reader, which also uses `weights_only=True`.
    """
    import torch.distributed.checkpoint as dcp

    class PlainDataLoadPlanner(dcp.DefaultLoadPlanner):
        def load_bytes(self, read_item: Any, value: Any) -> None:
            fqn = read_item.dest_index.fqn
            try:
                with plain_data_loading():
                    self.state_dict[fqn] = torch.load(value, map_location="cpu", weights_only=True)
            except pickle.UnpicklingError:
                raise code_refusal(folder, [f"a value stored under {fqn}"]) from None

    dcp.load(
        keys,
        storage_reader=dcp.FileSystemReader(folder),
        planner=PlainDataLoadPlanner(flatten_state_dict=False),
        no_dist=True,
    )
    return keys


def read_sharded_checkpoint(folder: str | Path, weights: bool = True) -> dict[str, Any]:
    """A sharded checkpoint folder as one Lightning checkpoint dict, every part read as plain data.

    The result holds `meta.pt`'s entries and, if `weights`, the model's tensors as `state_dict`
    (what evaluation needs; optimiser states are checked but left out). With `weights=False`
    the whole folder is still checked, and only `meta.pt`'s entries are returned.
    """
    from torch.distributed.checkpoint.metadata import BytesStorageMetadata, TensorStorageMetadata

    folder = Path(folder)
    index = read_shard_index(folder)
    meta = load_plain(folder / SHARDED_METADATA)
    if not isinstance(meta, dict):
        raise CheckpointError(f"{folder / SHARDED_METADATA} holds no checkpoint entries.")
    entries = index.state_dict_metadata.items()
    pickled = {fqn: None for fqn, entry in entries if isinstance(entry, BytesStorageMetadata)}
    read_shards(folder, pickled)  # refuses a pickled value that would run code
    if not weights:
        return meta
    tensors = {
        fqn: torch.empty(entry.size, dtype=entry.properties.dtype)
        for fqn, entry in entries
        if isinstance(entry, TensorStorageMetadata) and fqn.startswith("model.")
    }
    read_shards(folder, tensors)
    state_dict = {fqn.removeprefix("model."): tensor for fqn, tensor in tensors.items()}
    return {**meta, "state_dict": state_dict}

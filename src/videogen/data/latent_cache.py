"""A folder of VAE latents of a dataset's training clips (`data.latents=DIR`).

`python -m videogen.prepare latents data=... model.vae_path=... data.latents=DIR` encodes every
training clip once and writes, under DIR:

    manifest.json              what the cache was made from: the VAE (a hash of its weights),
                               the data settings, flips, the number of clips per shard
    shard_00000.safetensors    `moments` (n, T, 2c, h, w): the encoder's mean and log-variance
                               per frame, unscaled; `labels` (n,) where the data has classes

Storing the encoder's Gaussian rather than one draw of it keeps what training from videos does:
every epoch draws new latents from it (`FrozenVAE.sample`). Shards are written under a temporary
name and renamed when complete, so an interrupted run resumes at the first missing shard and a
reader never sees half a shard. safetensors holds tensors only: a cache is data, never code.
"""

from __future__ import annotations

import json
import logging
from bisect import bisect_right
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from torch.utils.data import Dataset

from videogen.errors import ConfigError

log = logging.getLogger(__name__)

FORMAT = 1
MANIFEST = "manifest.json"
# What must agree between a cache and the run that reads it (the rest of the manifest describes).
MATCHED_KEYS = ("format", "vae", "data", "flips")


def shard_name(index: int) -> str:
    return f"shard_{index:05d}.safetensors"


def read_manifest(folder: str | Path) -> dict[str, Any]:
    """The manifest of the cache in `folder`, or a ConfigError saying how to make one."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise ConfigError(
            f"data.latents={folder} holds no latent cache ({MANIFEST} is missing): make it with "
            f"`python -m videogen.prepare latents data=... model.vae_path=... data.latents={folder}`."
        )
    try:
        manifest = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ConfigError(
            f"{path} cannot be read ({error}): delete the folder and make the cache again."
        ) from error
    if manifest.get("format") != FORMAT:
        raise ConfigError(
            f"{path} is a latent cache of format {manifest.get('format')!r}, this videogen reads "
            f"format {FORMAT}: make the cache again."
        )
    return manifest


def mismatch(
    cached: dict[str, Any], wanted: dict[str, Any], keys: tuple[str, ...] = MATCHED_KEYS
) -> str | None:
    """A description of the first setting of `keys` where a cache's manifest and a run
    differ, or None."""
    for key in keys:
        have, want = cached.get(key), wanted.get(key)
        if isinstance(have, dict) and isinstance(want, dict):
            for name in sorted(set(have) | set(want)):
                if have.get(name) != want.get(name):
                    return (
                        f"{key}.{name} is {have.get(name)!r} in the cache, {want.get(name)!r} here"
                    )
        elif have != want:
            return f"{key} is {have!r} in the cache, {want!r} here"
    return None


def refuse_mismatch(
    folder: str | Path,
    cached: dict[str, Any],
    wanted: dict[str, Any],
    keys: tuple[str, ...] = MATCHED_KEYS,
) -> None:
    """One sentence when the cache in `folder` was made from other settings of `keys` than
    `wanted`."""
    difference = mismatch(cached, wanted, keys)
    if difference is not None:
        raise ConfigError(
            f"the latent cache data.latents={folder} was made from other settings ({difference}): "
            "use the settings it was made with, or make a new cache in another folder."
        )


class LatentCacheDataset(Dataset):
    """The cached clips of a complete cache: items `latents` (T, 2c, h, w) float32 moments and,
    where the data has classes, `label`. Shards are opened lazily (memory-mapped), per worker."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        manifest = read_manifest(folder)
        missing = [name for name in manifest["shards"] if not (self.folder / name).is_file()]
        if not manifest.get("complete") or missing:
            raise ConfigError(
                f"the latent cache data.latents={folder} is incomplete ({len(missing)} of "
                f"{len(manifest['shards'])} shards missing): run the same `python -m "
                "videogen.prepare latents ...` command again to finish it."
            )
        self.shards = [self.folder / name for name in manifest["shards"]]
        self.counts = [int(count) for count in manifest["counts"]]
        self.starts = [sum(self.counts[:i]) for i in range(len(self.counts))]
        self.handles: dict[int, Any] = {}

    def __len__(self) -> int:
        return sum(self.counts)

    def handle(self, shard: int) -> Any:
        if shard not in self.handles:
            self.handles[shard] = safe_open(str(self.shards[shard]), framework="pt")
        return self.handles[shard]

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for a cache of {len(self)} clips")
        shard = bisect_right(self.starts, index) - 1
        row = index - self.starts[shard]
        reader = self.handle(shard)
        item = {"latents": reader.get_slice("moments")[row : row + 1][0].float()}
        names = reader.keys()  # a safetensors reader has no `in`
        if "labels" in names:
            item["label"] = reader.get_slice("labels")[row : row + 1][0].long()
        return item

    def __getstate__(self) -> dict[str, Any]:
        # Open shard handles do not cross into worker processes; each worker opens its own.
        return {**self.__dict__, "handles": {}}

"""`python -m videogen.prepare latents data=... model.vae_path=DIR data.latents=CACHE`: encode
every training clip of a dataset once with a frozen VAE, into a latent cache (the format:
videogen/data/latent_cache.py). Train from it with the same overrides plus `model=latte ...`:
the training step then runs no VAE.

Which clips: one per training video, the clip and crop that evaluation takes (the centre ones),
and its mirror image too when the data flips (`data.flip`), so the two orientations training sees
are both there. Random temporal offsets, scale jitter and colour jitter are not in the cache: a
run from the cache trains on the centre clips only (the log says so). Rendered data (synthetic)
is cached clip for clip.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from safetensors.torch import save_file
from torch.utils.data import DataLoader, Subset

from videogen.data.base import VideoDataModule, scale_uint8
from videogen.data.latent_cache import (
    FORMAT,
    MANIFEST,
    read_manifest,
    refuse_mismatch,
    shard_name,
)
from videogen.errors import ConfigError, DataError
from videogen.prepare import file_progress, written_atomically
from videogen.tasks.frozen_vae import FrozenVAE, vae_config_from_folder
from videogen.utils.build import build_datamodule
from videogen.utils.cli import print_metrics

log = logging.getLogger(__name__)

DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}


def cache_settings(datamodule: VideoDataModule, vae: FrozenVAE, dtype: str) -> dict[str, Any]:
    """What a cache records about its making (checked against every later run and resume)."""
    return {
        "format": FORMAT,
        "vae": {
            "fingerprint": vae.fingerprint(),
            "latent_channels": vae.latent_channels,
            "scaling_factor": vae.scaling_factor,
        },
        "data": datamodule.cache_record(),
        "flips": datamodule.cache_flips(),
        "dtype": dtype,
    }


def clip_batches(
    datamodule: VideoDataModule, indices: list[int], batch_size: int, workers: int
) -> Iterator[dict[str, Any]]:
    """The source clips `indices` of the cache, in order, in batches (unreadable ones skipped
    and counted under "bad_videos")."""
    dataset = Subset(datamodule.cache_source(), indices)
    loader = DataLoader(
        dataset, batch_size=batch_size, num_workers=workers, collate_fn=datamodule.collate_fn()
    )
    yield from loader


@torch.no_grad()
def encode_shard(
    datamodule: VideoDataModule,
    vae: FrozenVAE,
    indices: list[int],
    cfg: DictConfig,
    device: torch.device,
) -> tuple[dict[str, torch.Tensor], int]:
    """The shard of source clips `indices`: moments (and labels), the flipped copies after the
    originals; and how many source clips could not be read."""
    moments, labels, bad = [], [], 0
    for batch in clip_batches(datamodule, indices, cfg.batch_size, datamodule.num_workers):
        bad += len(batch.get("bad_videos", []))
        if "video" not in batch:
            continue
        video = scale_uint8(batch["video"].to(device), "signed")
        views = [video, video.flip(-1)] if datamodule.cache_flips() else [video]
        for view in views:
            moments.append(vae.moments(view).to("cpu", DTYPES[cfg.dtype]))
            if "label" in batch:
                labels.append(batch["label"].long())
    if not moments:
        return {}, bad
    # Originals then mirror images within each batch; order does not matter to training.
    shard = {"moments": torch.cat(moments).contiguous()}
    if labels:
        shard["labels"] = torch.cat(labels)
    return shard, bad


def make_latent_cache(cfg: DictConfig) -> dict[str, float]:
    """Write (or finish) the cache `cfg.data.latents` of `cfg.data`'s training clips."""
    folder = cfg.data.get("latents")
    if not folder:
        raise ConfigError("set data.latents=<folder> to say where the latent cache is written.")
    if not cfg.model.get("vae_path"):
        raise ConfigError(
            "set model.vae_path=<folder of a diffusers AutoencoderKL> to encode the clips with."
        )
    if cfg.dtype not in DTYPES:
        raise ConfigError(f"dtype={cfg.dtype!r} is not one of {', '.join(DTYPES)}.")
    folder = Path(folder)
    datamodule = build_datamodule(cfg)
    datamodule.latents = None  # it reads the videos here, not a cache
    if datamodule.channels != 3:
        raise ConfigError(
            f"the VAE encodes RGB frames, but data.channels is {datamodule.channels}."
        )
    device = torch.device(
        "cuda"
        if cfg.device == "auto" and torch.cuda.is_available()
        else "cpu"
        if cfg.device == "auto"
        else cfg.device
    )
    vae_path = str(cfg.model.vae_path)
    vae = FrozenVAE(vae_config_from_folder(vae_path), vae_path, cfg.model.vae_chunk_size)
    vae = vae.to(device)
    vae.latent_size(datamodule.height, datamodule.width)  # refuses sizes it does not divide
    settings = cache_settings(datamodule, vae, cfg.dtype)
    if (folder / MANIFEST).is_file():
        previous = read_manifest(folder)
        refuse_mismatch(folder, previous, settings)
        if previous.get("clips_per_shard") != cfg.clips_per_shard:
            raise ConfigError(
                f"{folder} was started with clips_per_shard={previous.get('clips_per_shard')}: "
                "resume with that value, or make a new cache in another folder."
            )
    total = len(datamodule.cache_source())
    per_shard = int(cfg.clips_per_shard)
    starts = list(range(0, total, per_shard))
    names = [shard_name(i) for i in range(len(starts))]
    manifest = {**settings, "clips_per_shard": per_shard, "source_clips": total}
    folder.mkdir(parents=True, exist_ok=True)
    write_manifest(folder, {**manifest, "complete": False, "shards": names})
    if datamodule.cache_flips():
        log.info("data.flip is on: each clip is cached with its mirror image.")
    counts = {"source clips": total, "shards": len(names), "written": 0, "resumed": 0, "bad": 0}
    shard_counts: list[int] = []
    with file_progress() as progress:
        task = progress.add_task("encoding clips", total=total)
        for name, start in zip(names, starts, strict=True):
            path = folder / name
            indices = list(range(start, min(start + per_shard, total)))
            if path.is_file():
                shard_counts.append(stored_count(path))
                counts["resumed"] += 1
            else:
                shard, bad = encode_shard(datamodule, vae, indices, cfg, device)
                counts["bad"] += bad
                if not shard:
                    raise DataError(
                        f"no clip of {name} (source clips {indices[0]}-{indices[-1]}) could be "
                        "read: fix the videos and run the command again."
                    )
                with written_atomically(path) as partial:
                    save_file(shard, str(partial))
                shard_counts.append(shard["moments"].shape[0])
                counts["written"] += 1
            progress.advance(task, len(indices))
    write_manifest(folder, {**manifest, "complete": True, "shards": names, "counts": shard_counts})
    counts["cached clips"] = sum(shard_counts)
    print_metrics({k: float(v) for k, v in counts.items()}, title=f"latent cache {folder}")
    return counts


def stored_count(path: Path) -> int:
    """The number of clips in a finished shard (read from its header, no tensor loaded)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as reader:
        return int(reader.get_slice("moments").get_shape()[0])


def write_manifest(folder: Path, manifest: dict[str, Any]) -> None:
    with written_atomically(folder / MANIFEST) as partial:
        partial.write_text(json.dumps(manifest, indent=2, sort_keys=True))

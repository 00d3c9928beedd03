"""The latent cache: `python -m videogen.prepare latents` writes it (resumable, atomic, with a
manifest), `data.latents=DIR` trains from it with no VAE in the training step and the same
losses as from videos, and a cache made from other settings or another VAE is refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import (
    FAST_RUN,
    assert_ok,
    assert_one_sentence_error,
    run_cli,
    tiny_latte_net,
    write_tiny_vae,
)
from videogen.data.base import scale_uint8
from videogen.data.latent_cache import LatentCacheDataset
from videogen.data.synthetic import SyntheticVideoDataModule
from videogen.errors import ConfigError
from videogen.tasks.diffusion import DiffusionTask

pytestmark = pytest.mark.usefixtures("one_thread_per_cli_run")

# 10 training clips of 8 x 32 x 32 in shards of 4: two full shards and one of 2.
DATA = ["data=synthetic", "data.train_size=10", "data.max_objects=1"]
PREPARE = [*DATA, "clips_per_shard=4", "batch_size=3", "dtype=float32"]
LATTE = ["model=latte_tiny", "model.net.depth=2", "model.net.embed_dim=32"]


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(VAE folder, cache folder) made through the CLI."""
    root = tmp_path_factory.mktemp("cache")
    write_tiny_vae(root / "vae")
    result = run_cli(
        "videogen.prepare",
        "latents",
        *PREPARE,
        f"model.vae_path={root / 'vae'}",
        f"data.latents={root / 'latents'}",
        f"hydra.run.dir={root / 'run'}",
        cwd=root,
    )
    assert_ok(result)
    return root / "vae", root / "latents"


def test_the_cache_holds_every_training_clip_with_a_manifest(cache: tuple[Path, Path]) -> None:
    _, folder = cache
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["complete"] and manifest["counts"] == [4, 4, 2]
    assert manifest["data"]["train_size"] == 10 and manifest["flips"] is False
    assert len(manifest["vae"]["fingerprint"]) == 64
    shard = load_file(str(folder / "shard_00000.safetensors"))
    # the tiny VAE halves 32 x 32 frames into 4 latent channels: mean and log-variance
    assert shard["moments"].shape == (4, 8, 8, 16, 16) and shard["labels"].shape == (4,)
    dataset = LatentCacheDataset(folder)
    assert len(dataset) == 10
    labels = [int(dataset[i]["label"]) for i in range(10)]
    expected = SyntheticVideoDataModule(train_size=10, max_objects=1).make_dataset("train")
    assert labels == [int(expected[i]["label"]) for i in range(10)]
    assert not list(folder.glob("*.partial"))


def test_an_interrupted_cache_resumes_where_it_stopped(cache: tuple[Path, Path], tmp_path) -> None:
    vae, folder = cache
    copy = tmp_path / "latents"
    copy.mkdir()
    for path in folder.iterdir():
        copy.joinpath(path.name).write_bytes(path.read_bytes())
    before = load_file(str(copy / "shard_00001.safetensors"))
    (copy / "shard_00001.safetensors").unlink()  # killed while writing the second shard
    with pytest.raises(ConfigError, match="incomplete"):
        LatentCacheDataset(copy)  # the manifest says complete, but a shard is gone
    args = [*PREPARE, f"model.vae_path={vae}", f"data.latents={copy}"]
    result = run_cli(
        "videogen.prepare", "latents", *args, f"hydra.run.dir={tmp_path}", cwd=tmp_path
    )
    assert_ok(result)
    assert "resumed" in result.stdout
    after = load_file(str(copy / "shard_00001.safetensors"))
    torch.testing.assert_close(after["moments"], before["moments"])
    assert len(LatentCacheDataset(copy)) == 10


def test_training_from_the_cache_gives_the_losses_of_training_from_videos(
    cache: tuple[Path, Path],
) -> None:
    vae, folder = cache
    task = DiffusionTask(
        net=tiny_latte_net(
            num_frames=8, patch_size=4, embed_dim=32, img_size=32, learn_sigma=False
        ),
        vae_path=str(vae),
    )
    videos = SyntheticVideoDataModule(train_size=10, max_objects=1).dataset("train")
    cached = SyntheticVideoDataModule(train_size=10, max_objects=1, latents=str(folder))
    cached = cached.dataset("train")
    rows = range(4)
    video_batch = {
        "video": scale_uint8(torch.stack([videos[i]["video"] for i in rows]), "signed"),
        "label": torch.stack([videos[i]["label"] for i in rows]),
    }
    cache_batch = {
        "latents": torch.stack([cached[i]["latents"] for i in rows]),
        "label": torch.stack([cached[i]["label"] for i in rows]),
    }
    torch.manual_seed(3)
    from_videos = task.diffusion_loss(video_batch, drop_labels=True)["loss"]
    task.vae.vae.encode = None  # the cached path must not run the encoder
    torch.manual_seed(3)
    from_cache = task.diffusion_loss(cache_batch, drop_labels=True)["loss"]
    torch.testing.assert_close(from_cache, from_videos, rtol=1e-4, atol=1e-6)
    torch.manual_seed(4)
    assert not torch.allclose(task.diffusion_loss(cache_batch)["loss"], from_videos)


def test_a_latte_trains_from_the_cache_through_the_cli(cache: tuple[Path, Path], tmp_path) -> None:
    vae, folder = cache
    overrides = [*LATTE, *FAST_RUN, *DATA, "data.batch_size=4", "model.sample_steps=2"]
    result = run_cli(
        "videogen",
        *overrides,
        "model.samples_per_class=2",
        f"model.vae_path={vae}",
        f"data.latents={folder}",
        f"hydra.run.dir={tmp_path}",
        cwd=tmp_path,
    )
    assert_ok(result)
    assert "Training from the latent cache" in result.stdout + result.stderr
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert 0 < metrics["test/loss"] < 10


@pytest.mark.parametrize(
    ("override", "fragment"),
    [
        ("data.speed=3.0", "data.speed is 2.0 in the cache, 3.0 here"),
        ("data.num_frames=4", "data.num_frames is 8 in the cache, 4 here"),
    ],
)
def test_a_cache_of_other_data_is_refused(
    cache: tuple[Path, Path], tmp_path, override: str, fragment: str
) -> None:
    vae, folder = cache
    result = run_cli(
        "videogen",
        *LATTE,
        *FAST_RUN,
        *DATA,
        override,
        f"model.vae_path={vae}",
        f"data.latents={folder}",
        f"hydra.run.dir={tmp_path}",
        cwd=tmp_path,
    )
    assert_one_sentence_error(result, f"data.latents={folder}", fragment)


def test_a_cache_of_another_vae_is_refused(cache: tuple[Path, Path], tmp_path) -> None:
    _, folder = cache
    other = tmp_path / "other_vae"
    write_tiny_vae(other, seed=1)
    result = run_cli(
        "videogen",
        *LATTE,
        *FAST_RUN,
        *DATA,
        f"model.vae_path={other}",
        f"data.latents={folder}",
        f"hydra.run.dir={tmp_path}",
        cwd=tmp_path,
    )
    assert_one_sentence_error(result, "made with another VAE")

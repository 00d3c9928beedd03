"""Files from elsewhere: checkpoints and weight files are read as tensors and plain data only,
a stored config builds only allow-listed classes, and a checkpoint a training run cannot
continue from (missing, corrupt, foreign, another model, a finished run) is one sentence."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from timm.models.vision_transformer import VisionTransformer

from tests.conftest import FAST_RUN, assert_ok, assert_one_sentence_error, run_cli
from videogen.errors import CheckpointError
from videogen.models.build import build_network
from videogen.models.checkpoint_io import load_state_dict
from videogen.tasks.base import read_checkpoint
from videogen.utils.stored_targets import check_stored_targets, overridden_keys

pytestmark = pytest.mark.usefixtures("one_thread_per_cli_run")

PLAIN_DATA = "is not a plain-data checkpoint"


class WritesMarker:
    """Unpickling this object runs a shell command that creates `marker`."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def train(run_dir: Path, *overrides: str):
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_cli("videogen", *FAST_RUN, *overrides, f"hydra.run.dir={run_dir}", cwd=run_dir)


@pytest.fixture(scope="module")
def vit_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished tiny per-frame ViT run (classification) with best.ckpt and last.ckpt."""
    run_dir = tmp_path_factory.mktemp("vit")
    assert_ok(train(run_dir, "model=vit", "test_after_fit=false"))
    return run_dir


@pytest.fixture(scope="module")
def ae_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny VPTR autoencoder checkpoint (another task than the ViT's)."""
    run_dir = tmp_path_factory.mktemp("ae")
    assert_ok(train(run_dir, "model=vptr_ae_tiny", "test_after_fit=false"))
    return run_dir / "checkpoints" / "best.ckpt"


def plain(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def with_payload(source: Path, target: Path, marker: Path) -> Path:
    """`source` re-saved with an object whose unpickling would create `marker`."""
    checkpoint = plain(source)
    checkpoint["videogen"]["note"] = WritesMarker(marker)
    target.parent.mkdir(parents=True, exist_ok=True)
    torch.save(checkpoint, target)
    return target


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    return tmp_path / "code-ran"


def test_the_payload_would_run_if_the_file_were_unpickled_as_before(
    vit_run: Path, tmp_path: Path, marker: Path
) -> None:
    path = with_payload(vit_run / "checkpoints" / "best.ckpt", tmp_path / "evil.ckpt", marker)
    torch.load(path, map_location="cpu", weights_only=False)  # what the old loaders did
    assert marker.exists()
    marker.unlink()
    with pytest.raises(CheckpointError, match=f"{PLAIN_DATA}.*calls posix.system"):
        read_checkpoint(path)
    assert not marker.exists()


# --------------------------------------------------------------- code in a checkpoint is refused


def test_evaluate_and_generate_refuse_a_checkpoint_that_would_run_code(
    vit_run: Path, tmp_path: Path, marker: Path
) -> None:
    path = with_payload(vit_run / "checkpoints" / "best.ckpt", tmp_path / "evil.ckpt", marker)
    for module in ("videogen.evaluate", "videogen.generate"):
        result = run_cli(module, f"ckpt_path={path}", f"hydra.run.dir={tmp_path}", cwd=tmp_path)
        assert_one_sentence_error(result, str(path), PLAIN_DATA)
    assert not marker.exists()


def test_training_refuses_a_ckpt_path_that_would_run_code(
    vit_run: Path, tmp_path: Path, marker: Path
) -> None:
    path = with_payload(vit_run / "checkpoints" / "last.ckpt", tmp_path / "evil.ckpt", marker)
    result = train(tmp_path / "run", "model=vit", f"ckpt_path={path}")
    assert_one_sentence_error(result, PLAIN_DATA)
    assert not marker.exists()


def test_resume_auto_refuses_a_checkpoint_in_the_folder_that_would_run_code(
    vit_run: Path, tmp_path: Path, marker: Path
) -> None:
    run_dir = tmp_path / "run"
    with_payload(
        vit_run / "checkpoints" / "last.ckpt", run_dir / "checkpoints" / "last.ckpt", marker
    )
    result = train(run_dir, "model=vit", "trainer.max_epochs=2")
    assert_one_sentence_error(result, "last.ckpt", PLAIN_DATA)
    assert not marker.exists()


def test_autoencoder_ckpt_that_would_run_code_is_refused(
    ae_ckpt: Path, tmp_path: Path, marker: Path
) -> None:
    path = with_payload(ae_ckpt, tmp_path / "evil_ae.ckpt", marker)
    result = train(tmp_path / "run", "model=vptr_far_tiny", f"model.autoencoder_ckpt={path}")
    assert_one_sentence_error(result, str(path), PLAIN_DATA)
    assert not marker.exists()


def test_pretrained_weights_that_would_run_code_are_refused(tmp_path: Path, marker: Path) -> None:
    state = {"weight": torch.zeros(2), "extra": WritesMarker(marker)}
    path = tmp_path / "vit.pth"
    torch.save(state, path)
    result = train(tmp_path / "run", "model=vit", f"model.net.pretrained_path={path}")
    assert_one_sentence_error(result, str(path), PLAIN_DATA)
    assert not marker.exists()


def test_a_sharded_checkpoint_folder_whose_index_would_run_code_is_refused(
    tmp_path: Path, marker: Path
) -> None:
    import pickle

    folder = tmp_path / "best.ckpt"
    folder.mkdir()
    torch.save({"state_dict": {}, "epoch": 0}, folder / "meta.pt")
    (folder / ".metadata").write_bytes(pickle.dumps(WritesMarker(marker)))
    with pytest.raises(CheckpointError, match=f"{PLAIN_DATA}.*posix.system"):
        read_checkpoint(folder)
    assert not marker.exists()


# ------------------------------------------------------------ stored configs build allow-listed


def with_config_target(source: Path, target: Path, key: str, marker: Path) -> Path:
    """`source` with the node at the dotted `key` of its stored run config (and, for model.net,
    the network of its hyper-parameters) replaced by a call of os.system creating `marker`."""
    checkpoint = plain(source)
    call = {"_target_": "os.system", "_args_": [f"touch {marker}"]}
    node = checkpoint["videogen"]["config"]
    for part in key.split("."):
        node = node[part]
    node.clear()
    node.update(call)
    if key == "model.net":  # what load_from_checkpoint would build the network from
        checkpoint["hyper_parameters"]["net"] = dict(call)
    torch.save(checkpoint, target)
    return target


@pytest.mark.parametrize("key", ["data", "model.net"])
def test_a_stored_config_naming_os_system_is_refused_naming_the_key(
    key: str, vit_run: Path, tmp_path: Path, marker: Path
) -> None:
    path = with_config_target(
        vit_run / "checkpoints" / "best.ckpt", tmp_path / "edited.ckpt", key, marker
    )
    for module in ("videogen.evaluate", "videogen.generate"):
        result = run_cli(module, f"ckpt_path={path}", f"hydra.run.dir={tmp_path}", cwd=tmp_path)
        assert_one_sentence_error(result, f"{key}._target_='os.system'", "does not build")
    assert not marker.exists()


def test_the_hyper_parameters_are_checked_as_well(vit_run: Path, tmp_path: Path) -> None:
    checkpoint = plain(vit_run / "checkpoints" / "best.ckpt")
    checkpoint["hyper_parameters"]["optimizer"]["_target_"] = "os.system"
    path = tmp_path / "edited.ckpt"
    torch.save(checkpoint, path)
    from videogen.tasks.classification import ClassificationTask

    with pytest.raises(CheckpointError, match=r"hyper-parameters.*optimizer._target_='os.system'"):
        ClassificationTask.load_from_checkpoint(path)


def test_the_allow_list_follows_the_path_to_what_it_names() -> None:
    allowed = {
        "data": {"_target_": "videogen.data.synthetic.SyntheticVideoDataModule"},
        "trainer": {
            "_target_": "pytorch_lightning.Trainer",
            "strategy": {
                "_target_": "pytorch_lightning.strategies.FSDPStrategy",
                "auto_wrap_policy": ["timm.models.vision_transformer.Block"],
            },
        },
        "optimizer": {"_target_": "torch.optim.AdamW", "_partial_": True},
        "lr_scheduler": {"_target_": "videogen.tasks.schedules.warmup_cosine", "_partial_": True},
        "logger": {"csv": {"_target_": "pytorch_lightning.loggers.CSVLogger"}},
    }
    check_stored_targets(allowed, "test config")
    # Starts inside videogen, resolves to torch.load; a videogen function that writes files;
    # a policy entry outside the networks.
    for key, bad in (
        ("data._target_", {"data": {"_target_": "videogen.tasks.base.torch.load"}}),
        ("data._target_", {"data": {"_target_": "videogen.utils.video_io.write_video"}}),
        (
            "trainer.strategy.auto_wrap_policy[0]",
            {"trainer": {"strategy": {"auto_wrap_policy": ["subprocess.Popen"]}}},
        ),
    ):
        with pytest.raises(CheckpointError, match=f"names {re.escape(key)}="):
            check_stored_targets(bad, "test config")
    # What the command line replaces (`data._target_=...`, `~data`) is the user's own choice.
    check_stored_targets({"data": {"_target_": "os.system"}}, "x", overridden_keys(["~data"]))
    check_stored_targets(
        {"data": {"_target_": "os.system"}}, "x", overridden_keys(["data._target_=my.Data"])
    )
    with pytest.raises(CheckpointError):
        check_stored_targets(
            {"data": {"_target_": "os.system"}}, "x", overridden_keys(["data.root=/d"])
        )


# ---------------------------------------------------- what training ckpt_path= and resume accept


def test_training_ckpt_path_missing_corrupt_or_foreign_is_one_sentence(
    vit_run: Path, ae_ckpt: Path, tmp_path: Path
) -> None:
    missing = tmp_path / "missing.ckpt"
    corrupt = tmp_path / "corrupt.ckpt"
    corrupt.write_bytes(os.urandom(4096))
    cases = [
        (missing, "does not exist"),
        (corrupt, "is not a Lightning checkpoint"),
        (ae_ckpt, "AutoencoderTask there, ClassificationTask here"),
    ]
    for index, (path, fragment) in enumerate(cases):
        run_dir = tmp_path / f"run{index}"
        result = train(run_dir, "model=vit", f"ckpt_path={path}")
        assert_one_sentence_error(result, str(path), fragment)
        assert not (run_dir / "checkpoints").exists()  # nothing was trained


def test_resume_auto_into_a_folder_of_another_model_names_what_differs(
    vit_run: Path, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(vit_run / "checkpoints", run_dir / "checkpoints")
    result = train(run_dir, "model=vivit_tiny", "trainer.max_epochs=2")
    assert_one_sentence_error(
        result,
        "was written by model=vit, data=synthetic, not this run's model=vivit_tiny",
        "model.net._target_=videogen.models.vit.FrameViT there, videogen.models.vivit.ViViT here",
        "resume=never",
    )
    # The clip length is part of the data, and the network's shape follows it.
    result = train(run_dir, "model=vit", "trainer.max_epochs=2", "data.height=16")
    assert_one_sentence_error(result, "data.height=32 there, 16 here")


def test_resume_auto_into_a_finished_run_says_how_to_go_on(vit_run: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(vit_run / "checkpoints", run_dir / "checkpoints")
    # Where the data lives and how fast it is read may change on resume: only "finished" is said.
    result = train(run_dir, "model=vit", "data.num_workers=1", "data.batch_size=8")
    assert_one_sentence_error(
        result,
        "finished run (epoch 1 of trainer.max_epochs=1)",
        "trainer.max_epochs",
        "resume=never",
    )
    assert not (run_dir / "metrics.json").exists()  # the old run's metrics are not reported


# ------------------------------------------------------------------------- safetensors weights


def test_safetensors_weights_load_like_the_pth_file(tmp_path: Path) -> None:
    dims = dict(patch_size=4, embed_dim=32, depth=2, num_heads=2)
    source = VisionTransformer(img_size=16, num_classes=5, in_chans=3, **dims)
    state = {k: v.contiguous() for k, v in source.state_dict().items()}
    torch.save(state, tmp_path / "vit.pth")
    save_file(state, str(tmp_path / "vit.safetensors"))
    from_pth = load_state_dict(tmp_path / "vit.pth")
    from_safetensors = load_state_dict(tmp_path / "vit.safetensors")
    assert from_pth.keys() == from_safetensors.keys() == state.keys()
    for key, value in from_pth.items():
        torch.testing.assert_close(from_safetensors[key], value, rtol=0, atol=0)

    def vit(path: Path) -> torch.nn.Module:
        return build_network(
            {
                "_target_": "videogen.models.vit.FrameViT",
                "num_classes": 5,
                "img_size": 16,
                "pretrained_path": str(path),
                **dims,
            }
        )

    def vivit(path: Path | None) -> torch.nn.Module:
        return build_network(
            {
                "_target_": "videogen.models.vivit.ViViT",
                "num_classes": 5,
                "num_frames": 2,
                "img_size": 16,
                "variant": "spatio_temporal",
                "tubelet_size": (1, 4, 4),
                "pretrained_path": str(path) if path else None,
                **{k: v for k, v in dims.items() if k != "patch_size"},
            }
        )

    qkv = "blocks.1.attn.qkv.weight"
    for build in (vit, vivit):
        from_pth = build(tmp_path / "vit.pth").state_dict()
        from_safetensors = build(tmp_path / "vit.safetensors").state_dict()
        for key, value in from_pth.items():
            torch.testing.assert_close(from_safetensors[key], value, rtol=0, atol=0)
        # The weights came from the file, not from a (seeded) fresh initialisation.
        name = qkv if build is vivit else f"vit.{qkv}"
        torch.testing.assert_close(from_safetensors[name], state[qkv], rtol=0, atol=0)
    assert not torch.equal(vivit(None).state_dict()[qkv], state[qkv])

"""Multi-process training and the trainer configs: DDP on the CPU, FSDP wrapping, SLURM, wandb."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pytorch_lightning.plugins.environments import SLURMEnvironment
from pytorch_lightning.strategies import DDPStrategy, FSDPStrategy

from tests.conftest import REPO_ROOT, assert_ok, run_cli
from videogen.models.layers import Block
from videogen.models.vptr.vidhrformer import VidHRFormerBlock
from videogen.utils.build import build_loggers, build_task, build_trainer, strategy_from

pytestmark = pytest.mark.usefixtures("one_thread_per_cli_run")

DATA = ["data.train_size=32", "data.val_size=16", "data.test_size=16"]


def train(run_dir: Path, *overrides: str) -> dict[str, float]:
    result = run_cli(
        "videogen",
        "model=vit",
        "trainer.max_epochs=1",
        "test_after_fit=false",
        "logger=csv",
        *DATA,
        f"hydra.run.dir={run_dir}",
        *overrides,
        cwd=REPO_ROOT,
    )
    assert_ok(result)
    return json.loads((run_dir / "metrics.json").read_text())


def test_two_ddp_processes_match_one_process_with_twice_the_batch(tmp_path: Path) -> None:
    two = train(tmp_path / "ddp", "trainer=ddp_cpu", "trainer.devices=2", "data.batch_size=4")
    one = train(tmp_path / "one", "trainer=cpu", "data.batch_size=8")
    # Same clips per step (one permutation dealt across ranks), gradients averaged by DDP.
    assert two["val/loss"] == pytest.approx(one["val/loss"], rel=1e-4)
    assert two["val/acc"] == pytest.approx(one["val/acc"])
    log = (tmp_path / "ddp" / "train.log").read_text()
    assert "Global batch 8: data.batch_size 4 per device x 2 device(s) x 1 node(s)" in log
    # Only rank zero writes the run's files.
    assert sorted(p.name for p in (tmp_path / "ddp").glob("*.log")) == ["train.log"]


def test_fsdp_config_wraps_each_transformer_block(compose_train) -> None:
    cfg = compose_train("trainer=fsdp")
    strategy = strategy_from(cfg.trainer.strategy)  # the Trainer itself needs a GPU for FSDP
    assert isinstance(strategy, FSDPStrategy)
    policy = strategy.kwargs["auto_wrap_policy"]
    assert Block in policy._module_classes and VidHRFormerBlock in policy._module_classes
    assert cfg.trainer.precision == "bf16-mixed"


def test_ddp_config_is_one_process_per_device_without_unused_parameter_search(
    compose_train,
) -> None:
    cfg = compose_train("trainer=ddp_cpu", "trainer.devices=2", "trainer.compile=true")
    # `compile` is ours, not a Trainer argument; the default classifier uses all its parameters.
    trainer = build_trainer(cfg, [], [], task=build_task(cfg))
    assert isinstance(trainer.strategy, DDPStrategy)
    assert trainer.num_devices == 2 and trainer.world_size == 2
    assert trainer.strategy._ddp_kwargs.get("find_unused_parameters") is False


def test_under_slurm_lightning_does_not_requeue(
    compose_train, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in {
        "SLURM_NTASKS": "1",
        "SLURM_JOB_NAME": "train",
        "SLURM_JOB_ID": "42",
        "SLURM_PROCID": "0",
        "SLURM_LOCALID": "0",
        "SLURM_NODEID": "0",
        "SLURM_NODELIST": "node1",
    }.items():
        monkeypatch.setenv(key, value)
    trainer = build_trainer(compose_train("trainer=cpu"), [], [])
    environment = trainer._accelerator_connector.cluster_environment
    assert isinstance(environment, SLURMEnvironment)
    assert environment.auto_requeue is False  # submitit is the one owner of requeueing


def test_wandb_run_id_survives_a_resume_in_the_same_folder(
    compose_train, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    cfg = compose_train("logger=wandb", "logger.wandb.offline=true")
    first = build_loggers(cfg.logger)[0]
    again = build_loggers(cfg.logger)[0]
    other = compose_train("logger=wandb", "logger.wandb.offline=true")
    other.paths.output_dir = str(tmp_path / "elsewhere")
    elsewhere = build_loggers(other.logger)[0]
    assert first._wandb_init["id"] == again._wandb_init["id"]
    assert first._wandb_init["resume"] == "allow"
    assert elsewhere._wandb_init["id"] != first._wandb_init["id"]


def test_a_sharded_fsdp_checkpoint_folder_loads_for_evaluation(
    compose_train, tmp_path: Path
) -> None:
    import torch
    import torch.distributed.checkpoint as dcp

    from videogen.evaluate import load_task, stored_run_config
    from videogen.tasks.base import CHECKPOINT_KEY, task_id
    from videogen.utils.build import build_task, run_config_for_checkpoint

    cfg = compose_train("model=vit")
    task = build_task(cfg)
    # Lightning's FSDP layout: weights (and optimiser state) as torch.distributed.checkpoint
    # shards under "model", everything else in meta.pt.
    folder = tmp_path / "checkpoints" / "best.ckpt"
    dcp.save({"model": task.state_dict()}, checkpoint_id=folder, no_dist=True)
    meta = {
        "epoch": 0,
        "global_step": 0,
        "pytorch-lightning_version": "2.6.0",
        "hyper_parameters": dict(task.hparams),
        CHECKPOINT_KEY: {"task": task_id(type(task)), "config": run_config_for_checkpoint(cfg)},
    }
    torch.save(meta, folder / "meta.pt")

    assert stored_run_config(str(folder))["model"]["_target_"] == cfg.model._target_
    loaded, _ = load_task(str(folder))
    for name, value in task.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], value), name

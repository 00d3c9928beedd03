"""Optimisers: parameter groups with and without weight decay, and checkpoints written before
them (one group per optimiser; the learning-rate schedule still named `scheduler`)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from torch import nn

from tests.conftest import FAST_RUN, assert_ok, run_cli
from tests.test_tasks import NET
from videogen.data.synthetic import SyntheticVideoDataModule
from videogen.tasks.base import VideoTask
from videogen.tasks.classification import ClassificationTask
from videogen.tasks.legacy import split_optimizer_state, upgrade_config
from videogen.tasks.param_groups import clean_name, find_weight_decay_exempt
from videogen.utils.build import build_task
from videogen.utils.resume import check_start_checkpoint

ADAMW = {"_target_": "torch.optim.AdamW", "_partial_": True, "lr": 0.1, "weight_decay": 0.05}
SCHEDULE = {"_target_": "videogen.tasks.schedules.warmup_cosine", "_partial_": True}


def tiny_task(compose_train, model: str) -> VideoTask:
    """The task of a model preset, without its learning-rate schedule (no trainer here)."""
    task = build_task(compose_train(f"model={model}"))
    task.lr_scheduler_config = None
    return task


def groups_of(optimizer: torch.optim.Optimizer) -> tuple[set[int], set[int]]:
    """(ids of the parameters with weight decay, ids of those without)."""
    decay, no_decay = optimizer.param_groups
    return {id(p) for p in decay["params"]}, {id(p) for p in no_decay["params"]}


# --------------------------------------------------------------------------- the two groups


def test_a_vivit_trains_biases_norms_and_embeddings_without_weight_decay(compose_train) -> None:
    task = tiny_task(compose_train, "vivit_tiny")
    optimizer = task.configure_optimizers()
    assert len(optimizer.param_groups) == 2
    assert [group["weight_decay"] for group in optimizer.param_groups] == [0.05, 0.0]
    decay, no_decay = groups_of(optimizer)
    trainable = {id(p) for p in task.parameters() if p.requires_grad}
    assert decay | no_decay == trainable and not decay & no_decay

    net = task.net
    exempt = [net.pos_embed, net.cls_token]
    weights = []
    for module in net.modules():
        if isinstance(module, nn.LayerNorm):
            exempt += [module.weight, module.bias]
        elif isinstance(module, (nn.Linear, nn.Conv2d, nn.Conv3d)):
            weights.append(module.weight)
            exempt += [module.bias] if module.bias is not None else []
    exempt += [p for name, p in net.named_parameters() if name.endswith(".bias")]
    assert len(weights) > 10 and any(isinstance(m, nn.Conv3d) for m in net.modules())
    assert all(id(p) in no_decay for p in exempt)
    assert all(id(p) in decay for p in weights)


def test_one_adamw_step_on_zero_gradients_decays_weights_but_not_positions(
    compose_train,
) -> None:
    task = tiny_task(compose_train, "vivit_tiny")
    task.optimizer_config = ADAMW
    optimizer = task.configure_optimizers()
    linear = task.net.head
    assert isinstance(linear, nn.Linear)
    pos_embed, weight = task.net.pos_embed.detach().clone(), linear.weight.detach().clone()
    assert pos_embed.abs().sum() > 0  # initialised non-zero: a decay would move it
    for param in task.parameters():
        param.grad = torch.zeros_like(param)
    optimizer.step()
    # AdamW with a zero gradient moves a parameter by its decay only: p * (1 - lr * wd).
    torch.testing.assert_close(task.net.pos_embed.detach(), pos_embed, rtol=0, atol=0)
    torch.testing.assert_close(linear.weight.detach(), weight * (1 - 0.1 * 0.05))
    assert linear.weight.norm() < weight.norm()


def test_optimisers_without_weight_decay_still_build(compose_train) -> None:
    task = tiny_task(compose_train, "vivit_tiny")
    task.optimizer_config = {"_target_": "torch.optim.SGD", "_partial_": True, "lr": 0.1}
    optimizer = task.configure_optimizers()
    assert isinstance(optimizer, torch.optim.SGD)
    assert [group["weight_decay"] for group in optimizer.param_groups] == [0, 0.0]
    assert all(group["params"] for group in optimizer.param_groups)


def test_each_gan_player_gets_grouped_optimisers(compose_train) -> None:
    task = tiny_task(compose_train, "vptr_ae_tiny")
    assert task.discriminator is not None
    (adam_g, adam_d), _ = task.configure_optimizers()  # the preset's Adam: no weight decay
    assert [g["weight_decay"] for g in adam_d.param_groups] == [0, 0.0]
    task.optimizer_config = ADAMW
    (generator, discriminator), schedulers = task.configure_optimizers()
    assert schedulers == []
    for optimizer, module in ((generator, task.net), (discriminator, task.discriminator)):
        assert [group["weight_decay"] for group in optimizer.param_groups] == [0.05, 0.0]
        decay, no_decay = groups_of(optimizer)
        assert decay | no_decay == {id(p) for p in module.parameters()}
        convs = [m.weight for m in module.modules() if isinstance(m, nn.Conv2d)]
        assert convs and all(id(w) in decay for w in convs)
        vectors = [p for p in module.parameters() if p.ndim == 1]
        assert vectors and all(id(p) in no_decay for p in vectors)


def test_no_weight_decay_names_are_found_on_every_submodule_and_survive_wrapping() -> None:
    class Tokens(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.token = nn.Parameter(torch.zeros(1, 1, 4))
            self.proj = nn.Linear(4, 4)

        def no_weight_decay(self) -> set[str]:
            return {"token", "missing_token"}

    outer = nn.Module()
    outer.inner = nn.Sequential(Tokens())
    exempt = find_weight_decay_exempt(outer)
    assert exempt == {"inner.0.token", "inner.0.proj.bias"}
    # FSDP, activation checkpointing and torch.compile insert segments into the names.
    wrapped = "inner._fsdp_wrapped_module.0._checkpoint_wrapped_module.token"
    assert clean_name(wrapped) in exempt


# --------------------------------------------------------- checkpoints from before the groups


def old_optimizer_states(
    parameter_sets: list[list[nn.Parameter]], optimizer_config: dict
) -> tuple[list[dict], dict[int, torch.Tensor]]:
    """What the code before parameter groups saved: one optimiser (one group) per parameter
    set, stepped once with a different constant gradient per parameter; and the `exp_avg` each
    parameter (by id) got."""
    states, expected = [], {}
    options = {k: v for k, v in optimizer_config.items() if not k.startswith("_")}
    optimizer_cls = (
        torch.optim.AdamW if "AdamW" in optimizer_config["_target_"] else torch.optim.Adam
    )
    count = 0
    for params in parameter_sets:
        optimizer = optimizer_cls(params, **options)
        for param in params:
            count += 1
            param.grad = torch.full_like(param, float(count))
        optimizer.step()
        for param in params:
            expected[id(param)] = optimizer.state[param]["exp_avg"].clone()
            param.grad = None
        states.append(copy.deepcopy(optimizer.state_dict()))
    return states, expected


@pytest.mark.parametrize("model", ["vivit_tiny", "vptr_ae_tiny"])
def test_an_old_one_group_optimiser_state_lands_on_the_same_parameters(
    compose_train, model: str
) -> None:
    task = tiny_task(compose_train, model)
    task.optimizer_config = ADAMW
    # The parameter lists the optimisers were given before parameter groups.
    if model == "vptr_ae_tiny":
        old_sets = [list(task.net.parameters()), list(task.discriminator.parameters())]
    else:
        old_sets = [[p for p in task.parameters() if p.requires_grad]]
    states, expected = old_optimizer_states(old_sets, ADAMW)
    assert all(len(state["param_groups"]) == 1 for state in states)
    checkpoint = {"optimizer_states": states, "lr_schedulers": []}
    task.split_old_optimizer_states(checkpoint)

    built = task.configure_optimizers()
    optimizers = built[0] if isinstance(built, tuple) else [built]
    assert len(optimizers) == len(states)
    for optimizer, state in zip(optimizers, checkpoint["optimizer_states"], strict=True):
        optimizer.load_state_dict(state)
        assert [group["weight_decay"] for group in optimizer.param_groups] == [0.05, 0.0]
        for group in optimizer.param_groups:
            assert group["lr"] == ADAMW["lr"]
            for param in group["params"]:
                torch.testing.assert_close(optimizer.state[param]["exp_avg"], expected[id(param)])
    assert sum(len(p) for p in old_sets) == len(expected)


def test_a_state_already_in_two_groups_is_left_as_it_is() -> None:
    state = {"state": {}, "param_groups": [{"params": [0]}, {"params": [1]}]}
    assert split_optimizer_state(state, [False, True]) is state
    one_group = {"state": {}, "param_groups": [{"params": [0, 1, 2]}]}
    assert split_optimizer_state(one_group, [False, True]) is one_group  # another count


def fit(
    task: ClassificationTask,
    tmp_path: Path,
    steps: int,
    ckpt_path: Path | None = None,
    callbacks: list[pl.Callback] | None = None,
) -> pl.Trainer:
    trainer = pl.Trainer(
        max_steps=steps,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        callbacks=callbacks,
    )
    data = SyntheticVideoDataModule(train_size=8, val_size=4, test_size=4, batch_size=4)
    trainer.fit(task, datamodule=data, ckpt_path=ckpt_path)
    return trainer


def to_old_layout(checkpoint: dict, task: VideoTask) -> dict[str, torch.Tensor]:
    """Rewrite a classifier checkpoint as the code before parameter groups and before the
    `lr_scheduler` name wrote it: hyper-parameter and run-config group `scheduler`, one
    optimiser group over the trainable parameters in `task.parameters()` order, the schedule's
    per-group entries for one group. Returns the `exp_avg` each parameter (by name) has there."""
    hparams = checkpoint["hyper_parameters"]
    hparams["scheduler"] = hparams.pop("lr_scheduler")
    config = checkpoint["videogen"].setdefault("config", {"lr_scheduler": hparams["scheduler"]})
    config["scheduler"] = config.pop("lr_scheduler")
    params = [p for p in task.parameters() if p.requires_grad]
    (state,), expected = old_optimizer_states([params], hparams["optimizer"])
    assert len(state["param_groups"]) == 1 and len(state["param_groups"][0]["params"]) == len(
        params
    )
    checkpoint["optimizer_states"] = [state]
    (schedule,) = checkpoint["lr_schedulers"]
    for key in ("base_lrs", "_last_lr", "lr_lambdas"):
        schedule[key] = schedule[key][:1]
    names = {id(p): name for name, p in task.named_parameters()}
    return {names[key]: value for key, value in expected.items()}


@pytest.fixture
def old_checkpoint(tmp_path: Path) -> tuple[Path, dict[str, torch.Tensor]]:
    """A classifier checkpoint as written before parameter groups and the `lr_scheduler` name:
    hyper-parameter and run-config group `scheduler`, one optimiser group over the trainable
    parameters (as `task.parameters()` lists them), its schedule's state for one group; and the
    `exp_avg` each parameter (by name) had."""
    task = ClassificationTask(net=NET, optimizer=ADAMW, lr_scheduler=SCHEDULE)
    trainer = fit(task, tmp_path, steps=1)
    path = tmp_path / "old.ckpt"
    trainer.save_checkpoint(path)
    checkpoint = torch.load(path, weights_only=True)
    expected = to_old_layout(checkpoint, task)
    torch.save(checkpoint, path)
    return path, expected


def test_a_checkpoint_from_before_the_rename_loads_with_its_schedule(old_checkpoint) -> None:
    path, _ = old_checkpoint
    task = ClassificationTask.load_from_checkpoint(path)
    assert task.lr_scheduler_config == SCHEDULE
    assert task.hparams["lr_scheduler"] == SCHEDULE and "scheduler" not in task.hparams
    # The mapping itself, for code that builds a task from stored hyper-parameters.
    old = {"net": NET, "optimizer": ADAMW, "scheduler": SCHEDULE}
    assert ClassificationTask(**upgrade_config(old)).lr_scheduler_config == SCHEDULE
    # A config written since keeps both names as they are.
    assert upgrade_config({"lr_scheduler": None, "scheduler": 1}) == {
        "lr_scheduler": None,
        "scheduler": 1,
    }


class RecordOptimiserState(pl.Callback):
    """The first optimiser's exp_avg per parameter name as training starts (state restored)."""

    def __init__(self) -> None:
        self.exp_avg: dict[str, torch.Tensor] = {}

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        optimizer = trainer.optimizers[0]
        for name, param in pl_module.named_parameters():
            if param in optimizer.state:
                self.exp_avg[name] = optimizer.state[param]["exp_avg"].clone()


def test_a_run_resumes_from_a_checkpoint_from_before_parameter_groups(
    old_checkpoint, tmp_path: Path
) -> None:
    path, expected = old_checkpoint
    task = ClassificationTask(net=NET, optimizer=ADAMW, lr_scheduler=SCHEDULE)
    record = RecordOptimiserState()
    trainer = fit(task, tmp_path / "resumed", steps=2, ckpt_path=path, callbacks=[record])
    assert trainer.global_step == 2  # one more step: the optimiser and its schedule stepped
    assert record.exp_avg.keys() == expected.keys()
    for name, value in expected.items():
        torch.testing.assert_close(record.exp_avg[name], value, msg=name)
    decay, no_decay = trainer.optimizers[0].param_groups
    assert (decay["weight_decay"], no_decay["weight_decay"]) == (0.05, 0.0)
    assert decay["lr"] == no_decay["lr"]  # both groups follow the schedule


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread_per_cli_run")
def test_a_run_checkpoint_from_before_the_rename_evaluates_and_may_resume(
    tmp_path: Path, compose_train
) -> None:
    """Through the CLI: a run's checkpoint rewritten to the old layout (run-config group and
    hyper-parameter `scheduler`, one optimiser group)."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    overrides = [*FAST_RUN, "model=vit"]
    result = run_cli(
        "videogen", *overrides, "test_after_fit=false", f"hydra.run.dir={run_dir}", cwd=run_dir
    )
    assert_ok(result)
    last = run_dir / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(last, weights_only=True)
    to_old_layout(checkpoint, ClassificationTask.load_from_checkpoint(last))
    assert "scheduler" in checkpoint["videogen"]["config"]
    old = tmp_path / "old.ckpt"
    torch.save(checkpoint, old)

    evaluated = tmp_path / "evaluated"
    result = run_cli(
        "videogen.evaluate", f"ckpt_path={old}", f"hydra.run.dir={evaluated}", cwd=tmp_path
    )
    assert_ok(result)
    assert (evaluated / "metrics.json").exists()
    # A run may continue from it: the check before training compares the model and data only,
    # and the optimiser state is converted on load (tested above).
    cfg = compose_train(*overrides, "trainer.max_epochs=2")
    choices = {"model": "vit", "data": "synthetic"}
    check_start_checkpoint(str(old), cfg, ClassificationTask, choices, found=False)

"""What every videogen task shares: config-built parts, the batch contract, checkpoint identity."""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from pytorch_lightning.utilities.rank_zero import rank_zero_only
from torch import nn

from videogen.data.base import scale_uint8
from videogen.errors import CheckpointError, ConfigError, IncompatibleDataError
from videogen.models.build import build_network, restoring_from_checkpoint
from videogen.models.checkpoint_io import (
    is_sharded,
    load_plain,
    plain_data_loading,
    read_sharded_checkpoint,
)
from videogen.tasks.legacy import (
    split_optimizer_state,
    split_scheduler_state,
    upgrade_config,
    upgrade_state_dict,
)
from videogen.tasks.param_groups import (
    DECAY_GROUP,
    NO_DECAY_GROUP,
    clean_name,
    find_weight_decay_exempt,
    split_by_weight_decay,
)
from videogen.utils.stored_targets import check_stored_targets

log = logging.getLogger(__name__)

# Key under which a checkpoint records which task wrote it and the run's whole config.
CHECKPOINT_KEY = "videogen"


def task_id(cls: type) -> str:
    """The import path that names a task class, e.g. videogen.tasks.classification.ClassificationTask."""
    return f"{cls.__module__}.{cls.__qualname__}"


def consolidated(path: Path) -> Path:
    """A sharded (FSDP, `state_dict_type: sharded`) checkpoint folder as one ordinary checkpoint
    file beside it, `<folder>.consolidated.ckpt` (its weights and entries, every part read as
    plain data), written on first use (and when the folder is newer). Other paths are returned
    as they are."""
    if not is_sharded(path):
        return path
    target = path.with_name(path.name + ".consolidated.ckpt")
    if not target.exists() or target.stat().st_mtime < path.stat().st_mtime:
        torch.save(read_sharded_checkpoint(path), target)
    return target


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a Lightning checkpoint on the CPU, or raise a one-sentence CheckpointError naming `path`.

    Tensors and plain data only (`weights_only=True`): a file whose unpickling would run code is
    refused before anything of it runs.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist: give the path of a .ckpt file.")
    path = consolidated(path)
    if path.is_dir():
        raise CheckpointError(
            f"checkpoint {path} is a folder: give the path of a .ckpt file inside it."
        )
    try:
        # Memory-mapped: checking which task wrote a checkpoint reads no weights from disk.
        checkpoint = load_plain(path, mmap=True)
    except CheckpointError:
        raise
    except Exception as err:  # pickle, zip and EOF errors all mean "not a checkpoint"
        raise CheckpointError(
            f"{path} is not a Lightning checkpoint (it could not be loaded)."
        ) from err
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise CheckpointError(f"{path} is not a Lightning checkpoint (it has no state_dict).")
    return checkpoint


def checkpoint_task(checkpoint: dict[str, Any], path: str | Path) -> str:
    """The task id recorded in a videogen checkpoint."""
    meta = checkpoint.get(CHECKPOINT_KEY)
    if not isinstance(meta, dict) or "task" not in meta:
        raise CheckpointError(
            f"{path} is a Lightning checkpoint but was not written by videogen (no task recorded)."
        )
    return meta["task"]


def read_task_network(
    path: str | Path | None, task_cls: type, config_key: str, hint: str
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The hyper-parameters and the network weights (`net.` stripped) of a checkpoint that
    `task_cls` wrote, for a task that starts from another run (`config_key` names the setting;
    `hint` says how to make such a checkpoint). Anything else is refused with one sentence."""
    if not path:
        raise ConfigError(f"{config_key} is not set: {hint}.")
    checkpoint = read_checkpoint(path)
    recorded = checkpoint_task(checkpoint, path)
    if recorded != task_id(task_cls):
        raise CheckpointError(
            f"{config_key}={path} belongs to the task {recorded.rsplit('.', 1)[-1]}, not "
            f"{task_cls.__name__}: {hint}."
        )
    hparams = upgrade_config(checkpoint["hyper_parameters"])
    check_stored_targets(hparams, f"the config stored in {config_key}={path}")
    state = upgrade_state_dict(task_cls.__name__, checkpoint["state_dict"])
    weights = {k.removeprefix("net."): v for k, v in state.items() if k.startswith("net.")}
    return hparams, weights


# Optimisers with a fused CUDA implementation (one kernel for all parameters) that the
# configs use; `fused=True` is numerically the same update, with far fewer kernel launches.
FUSED_OPTIMIZERS: tuple[type[torch.optim.Optimizer], ...] = (torch.optim.Adam, torch.optim.AdamW)


def use_fused_optimizer(
    optimizer_cls: Any, config: Mapping[str, Any] | None, device: torch.device
) -> bool:
    """Whether to build `optimizer_cls` with `fused=True`: Adam or AdamW over parameters on CUDA,
    unless the optimiser config chose an implementation itself (`fused` or `foreach` set)."""
    config = config or {}
    chosen = config.get("fused") is not None or config.get("foreach") is not None
    return (
        isinstance(optimizer_cls, type)
        and issubclass(optimizer_cls, FUSED_OPTIMIZERS)
        and torch.device(device).type == "cuda"
        and not chosen
    )


def use_channels_last(option: bool | None, device: torch.device) -> bool:
    """Whether to keep conv weights in `torch.channels_last`: `option`, or (None) on CUDA."""
    return torch.device(device).type == "cuda" if option is None else bool(option)


def to_channels_last(module: nn.Module) -> nn.Module:
    """Store `module`'s 4D parameters (2D conv weights) in `torch.channels_last`, in place.

    A 2D convolution computes in the memory format of its weight, so its outputs follow (NHWC,
    what tensor cores want) with the same values. Other parameters and all buffers are left as
    they are: `module.to(memory_format=torch.channels_last)` would refuse a Conv3d's 5D weight.
    The parameters stay the same objects, so optimisers and state-dict keys are unaffected.
    """
    for param in module.parameters():
        if param.dim() == 4:
            param.data = param.data.contiguous(memory_format=torch.channels_last)
    return module


class VideoTask(pl.LightningModule):
    """Base LightningModule: builds its network and optimiser from configs and stamps checkpoints.

    Subclasses set `requires` (batch keys they read). The network config is kept in the
    hyper-parameters, so `Task.load_from_checkpoint(path)` needs no other argument. Each
    optimiser has two parameter groups: the optimiser config's weight decay for weight matrices
    and kernels, none for biases, norms and what the networks list in `no_weight_decay()`
    (tasks/param_groups.py).
    """

    requires: ClassVar[frozenset[str]] = frozenset({"video"})
    # The range the task wants `video` in; the datamodule delivers it (see PIXEL_RANGES in
    # data/base.py): "standardized" ((x - mean) / std of the data), "unit" ([0, 1]) or
    # "signed" ([-1, 1]).
    pixel_range: ClassVar[str] = "standardized"
    # What the network must be (a class or a runtime-checkable Protocol); None: anything.
    network_type: ClassVar[type | None] = None
    # Hyper-parameters that evaluate / generate may change on a trained task (model.<name>=...).
    runtime_options: ClassVar[tuple[str, ...]] = ()
    # Convolutional tasks set this from their `channels_last` option: True / False, or None for
    # "on when running on CUDA". `setup` converts the task's conv weights accordingly.
    channels_last: bool | None = False
    # Whether DDP must look, at every backward pass, for trainable parameters the loss did not
    # use (rather than wait for their gradients forever). The search costs a walk over the
    # autograd graph per backward, so only tasks whose losses skip some of their parameters set
    # it (the GAN tasks: each player's update leaves the others' weights out); the trainer takes
    # it from the task unless `trainer.strategy.find_unused_parameters` is set.
    find_unused_parameters: bool = False
    # Names of the parameters that train without weight decay, found by `setup` on the task as
    # built, before a strategy wraps it (FSDP flattens every parameter to one dimension).
    weight_decay_exempt_names: frozenset[str] | None = None

    def __init__(
        self,
        net: dict[str, Any],
        optimizer: dict[str, Any] | None,
        lr_scheduler: dict[str, Any] | None,
    ) -> None:
        super().__init__()
        # Built (and started from `net.pretrained_path`, unless a checkpoint is being restored)
        # by the one network builder.
        self.net: nn.Module = build_network(net)
        if self.network_type is not None and not isinstance(self.net, self.network_type):
            raise ConfigError(
                f"model.net of {type(self).__name__} must be a {self.network_type.__name__}, "
                f"got {type(self.net).__name__}: set model.net._target_ to one."
            )
        self.optimizer_config = optimizer
        self.lr_scheduler_config = lr_scheduler
        # The whole run config and the config-group options it was composed from (`model`,
        # `data`), set by the train entry point, travel in every checkpoint.
        self.run_config: dict[str, Any] | None = None
        self.run_choices: dict[str, str] | None = None

    @classmethod
    def check_data(
        cls, datamodule: pl.LightningDataModule | type, data_name: str, model_name: str
    ) -> None:
        """Refuse, before any work (the network is not even built), data that lacks a key this task reads."""
        provides = getattr(datamodule, "provides", frozenset())
        missing = sorted(cls.requires - provides)
        if missing:
            raise IncompatibleDataError(
                f"model '{model_name}' needs the batch keys {missing}, which data '{data_name}' does "
                f"not provide (it provides {sorted(provides)}); pick a dataset that has them."
            )

    def weight_decay_exempt(self) -> frozenset[str]:
        """Names of the parameters that train without weight decay (see tasks/param_groups.py),
        as `setup` found them, or found now if it has not run."""
        if self.weight_decay_exempt_names is not None:
            return self.weight_decay_exempt_names
        return find_weight_decay_exempt(self)

    def optimizer_parameter_sets(self) -> list[list[tuple[str, nn.Parameter]]]:
        """The named parameters of each optimiser, in the order they are given to it (names as
        `self.named_parameters()` gives them): here one optimiser over every trainable parameter;
        the GAN tasks have one per player."""
        return [[(name, p) for name, p in self.named_parameters() if p.requires_grad]]

    def build_optimizer(
        self, named_parameters: Sequence[tuple[str, nn.Parameter]]
    ) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler | None]:
        """The configured optimiser over `named_parameters` and its per-step scheduler (None if
        unset).

        Two parameter groups: first those that take the optimiser config's `weight_decay` (or
        the optimiser's default), then those in `weight_decay_exempt()` with weight decay 0.
        Names are the task's (`self.named_parameters()`); each group keeps their order.
        """
        if self.optimizer_config is None:
            raise ValueError(
                "no optimizer config given: set optimizer=adamw (or another) to train."
            )
        factory = instantiate(self.optimizer_config)
        optimizer_cls = factory.func if isinstance(factory, functools.partial) else factory
        named_parameters = list(named_parameters)
        decay, no_decay = split_by_weight_decay(named_parameters, self.weight_decay_exempt())
        params = decay + no_decay
        device = params[0].device if params else torch.device("cpu")
        options = (
            {"fused": True}
            if use_fused_optimizer(optimizer_cls, self.optimizer_config, device)
            else {}
        )
        optimizer = factory(
            [
                {"params": decay, "name": DECAY_GROUP},
                {"params": no_decay, "weight_decay": 0.0, "name": NO_DECAY_GROUP},
            ],
            **options,
        )
        players = ", ".join(dict.fromkeys(clean_name(n).split(".")[0] for n, _ in named_parameters))
        rank_zero_only(log.info)(
            "%s over %s: %d tensors (%s values) with weight_decay=%s, %d tensors (%s values) "
            "without",
            type(optimizer).__name__,
            players or "no parameters",
            len(decay),
            f"{sum(p.numel() for p in decay):,}",
            optimizer.param_groups[0].get("weight_decay"),
            len(no_decay),
            f"{sum(p.numel() for p in no_decay):,}",
        )
        if not self.lr_scheduler_config:
            return optimizer, None
        total = int(self.trainer.estimated_stepping_batches)
        epochs = (
            self.trainer.max_epochs
            if self.trainer.max_epochs and self.trainer.max_epochs > 0
            else 1
        )
        scheduler = instantiate(self.lr_scheduler_config)(
            optimizer, total_steps=total, steps_per_epoch=total / epochs
        )
        return optimizer, scheduler

    def setup(self, stage: str) -> None:
        """Before the trainer moves the task to its device (moves keep the memory format),
        wraps it in its strategy and builds the optimisers: conv weights to channels_last if
        `channels_last` says so; which parameters take no weight decay."""
        device = self._trainer.strategy.root_device if self._trainer is not None else self.device
        if use_channels_last(self.channels_last, device):
            to_channels_last(self)
        self.weight_decay_exempt_names = find_weight_decay_exempt(self)

    def build_optimizers(
        self, parameter_sets: Sequence[Sequence[tuple[str, nn.Parameter]]]
    ) -> tuple[list, list]:
        """Manual optimisation (GANs): one optimiser per set of named parameters, and their
        per-step schedulers in Lightning's form; step them with `step_schedulers`."""
        optimizers, schedulers = [], []
        for named_parameters in parameter_sets:
            optimizer, scheduler = self.build_optimizer(named_parameters)
            optimizers.append(optimizer)
            if scheduler is not None:
                schedulers.append({"scheduler": scheduler, "interval": "step"})
        return optimizers, schedulers

    def batch_video(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The batch's video in this task's `pixel_range`: as the datamodule delivers it, or,
        for a uint8 batch made by hand, scaled here (unit and signed ranges)."""
        video = batch["video"]
        return scale_uint8(video, self.pixel_range) if video.dtype == torch.uint8 else video

    @property
    def attached_datamodule(self) -> Any:
        """The datamodule of the trainer this task runs under, or None when used on its own."""
        return getattr(self.trainer, "datamodule", None) if self._trainer else None

    @property
    def distributed(self) -> bool:
        """Whether this task trains in several processes (DDP, FSDP)."""
        return self._trainer is not None and self.trainer.world_size > 1

    def any_rank(self, flag: bool) -> bool:
        """Whether `flag` holds on this rank or any other (one small all-reduce under DDP; in
        one process no tensor is made, so no device sync either)."""
        if not self.distributed:
            return flag
        count = torch.tensor(float(flag), device=self.device)
        return bool(self.trainer.strategy.reduce(count, reduce_op="sum"))

    def empty_batch_loss(self) -> torch.Tensor | None:
        """What automatic optimisation returns for a batch whose clips were all unreadable: None
        (skip the step) in one process; under DDP a zero loss, so that this rank still joins the
        gradient all-reduce the other ranks wait in."""
        return self.zero_loss() if self.distributed else None

    def finite_on_every_rank(self, loss: torch.Tensor) -> bool:
        """Whether `loss` is finite on this rank and on every other one.

        Under DDP each backward pass all-reduces gradients, so a rank that skips an update on
        its own leaves the others waiting in that all-reduce: whether to skip is decided by all
        ranks together (skip if any rank's loss is non-finite), with one small all-reduce.
        """
        return not self.any_rank(bool((~torch.isfinite(loss.detach())).any()))

    def zero_loss(self) -> torch.Tensor:
        """A loss of zero that reaches every trainable parameter (each gets a zero gradient).

        What a rank with nothing to learn from (every clip of its batch unreadable) returns under
        DDP: it still takes part in the gradient all-reduce that every other rank is waiting in,
        adding nothing to the averaged gradient, and no rank needs to ask the others first.
        """
        params = [p for p in self.parameters() if p.requires_grad]
        return torch.stack([p.sum() for p in params]).sum() * 0.0

    def step_schedulers(self) -> None:
        """Advance every learning-rate scheduler by one step (manual optimisation)."""
        schedulers = self.lr_schedulers()
        for scheduler in schedulers if isinstance(schedulers, list) else [schedulers]:
            if scheduler is not None:
                scheduler.step()

    def configure_optimizers(self) -> Any:
        """The optimisers of `optimizer_parameter_sets()`: one in Lightning's dict form, or for
        manual optimisation (GANs) the lists of `build_optimizers`."""
        parameter_sets = self.optimizer_parameter_sets()
        if not self.automatic_optimization:
            return self.build_optimizers(parameter_sets)
        (named_parameters,) = parameter_sets
        optimizer, scheduler = self.build_optimizer(named_parameters)
        if scheduler is None:
            return optimizer
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Map the keys of a checkpoint written in an earlier layout (tasks/legacy.py), both
        for `load_from_checkpoint` and for resuming a fit."""
        checkpoint["state_dict"] = upgrade_state_dict(type(self).__name__, checkpoint["state_dict"])
        self.split_old_optimizer_states(checkpoint)

    def split_old_optimizer_states(self, checkpoint: dict[str, Any]) -> None:
        """Resuming from before parameter groups: each optimiser state of one group becomes the
        two groups `build_optimizer` makes, and its scheduler's per-group entries follow.

        The old group listed the parameters in the order `optimizer_parameter_sets()` gives
        them, which is the order they were given to the old optimiser.
        """
        states = checkpoint.get("optimizer_states")
        if not states:
            return
        parameter_sets = self.optimizer_parameter_sets()
        if len(states) != len(parameter_sets):
            return
        exempt = self.weight_decay_exempt()
        schedulers = checkpoint.get("lr_schedulers") or []
        for index, (state, named_parameters) in enumerate(zip(states, parameter_sets, strict=True)):
            split = split_optimizer_state(
                state, [clean_name(name) in exempt for name, _ in named_parameters]
            )
            if split is state:
                continue
            states[index] = split
            if len(schedulers) == len(states):
                schedulers[index] = split_scheduler_state(schedulers[index])
            rank_zero_only(log.info)(
                "Optimiser %d of the checkpoint has one parameter group: split into one with "
                "weight decay (%d tensors) and one without (%d).",
                index,
                len(split["param_groups"][0]["params"]),
                len(split["param_groups"][1]["params"]),
            )

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        meta = checkpoint.setdefault(CHECKPOINT_KEY, {})
        meta["task"] = task_id(type(self))
        if self.run_config is not None:
            meta["config"] = self.run_config
        if self.run_choices is not None:
            meta["choices"] = self.run_choices

    @classmethod
    def load_from_checkpoint(
        cls, checkpoint_path: str | Path, *args: Any, **kwargs: Any
    ) -> VideoTask:  # type: ignore[override]
        """Load a checkpoint of this task; a file of another task or no checkpoint at all says so."""
        checkpoint = read_checkpoint(checkpoint_path)
        recorded = checkpoint_task(checkpoint, checkpoint_path)
        if recorded != task_id(cls):
            raise CheckpointError(
                f"{checkpoint_path} belongs to the task {recorded.rsplit('.', 1)[-1]} ({recorded}), "
                f"not {cls.__name__}; load it with that task or evaluate it with videogen.evaluate."
            )
        # The network, discriminators and optimiser are rebuilt from the stored hyper-parameters
        # (old names mapped); every weight comes from the checkpoint, so no start-from file
        # (pretrained weights, another run's checkpoint) is opened.
        hparams = upgrade_config(checkpoint.get("hyper_parameters") or {})
        check_stored_targets(hparams, f"the hyper-parameters stored in {checkpoint_path}")
        kwargs = {**hparams, **kwargs}
        kwargs.setdefault("map_location", "cpu")
        with plain_data_loading(), restoring_from_checkpoint():
            return super().load_from_checkpoint(
                consolidated(Path(checkpoint_path)), *args, weights_only=True, **kwargs
            )

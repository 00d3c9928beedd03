"""What a config read from a checkpoint may instantiate.

`python -m videogen.evaluate ckpt_path=...` builds the data, trainer and loggers from the run
config stored in the checkpoint, and `Task.load_from_checkpoint` rebuilds the network from the
stored hyper-parameters. A `_target_` there is a call Hydra makes, so a file from elsewhere
could name any callable (`_target_: os.system`). Every `_target_` of a stored config is checked
against the allow-list below before anything is built; the user's own command line and config
files are not restricted.
"""

from __future__ import annotations

import inspect
from collections.abc import Collection, Iterator
from typing import Any

from hydra.utils import get_object

from videogen.errors import CheckpointError

# Module prefixes (of the import path and of the class it resolves to) that stored `_target_`s
# may name: they are everything `conf/` instantiates apart from Hydra's own launchers and
# sweepers, which live under the `hydra` key that a checkpoint never carries.
TARGET_MODULES = (
    # videogen's tasks (and their schedule functions), networks, datamodules and callbacks;
    # not videogen.utils / videogen.prepare, whose functions write files.
    "videogen.tasks.",
    "videogen.models.",
    "videogen.data.",
    "videogen.callbacks.",
    # Optimisers and learning-rate schedulers (torch.optim.lr_scheduler).
    "torch.optim.",
    # The Trainer and the parts its config names: strategies, loggers, callbacks, plugins
    # (cluster environments, precision), profilers, accelerators.
    "pytorch_lightning.trainer.",
    "pytorch_lightning.strategies.",
    "pytorch_lightning.loggers.",
    "pytorch_lightning.callbacks.",
    "pytorch_lightning.plugins.",
    "pytorch_lightning.profilers.",
    "pytorch_lightning.accelerators.",
    "lightning.pytorch.trainer.",
    "lightning.pytorch.strategies.",
    "lightning.pytorch.loggers.",
    "lightning.pytorch.callbacks.",
    "lightning.pytorch.plugins.",
    "lightning.pytorch.profilers.",
    "lightning.pytorch.accelerators.",
    "lightning_fabric.plugins.",  # where pytorch_lightning.plugins' environments are defined
)
# The Trainer is named from the package top (`pytorch_lightning.Trainer`).
TARGET_NAMES = frozenset({"pytorch_lightning.Trainer", "lightning.pytorch.Trainer"})
# Functions (not classes) a stored config may name: the `_partial_` schedules.
FUNCTION_MODULES = ("videogen.tasks.schedules",)
# FSDP wrapping / activation-checkpointing policies are class paths that are only imported and
# compared with isinstance: the transformer blocks of videogen's and timm's networks.
POLICY_MODULES = ("videogen.models.", "timm.models.", "torch.nn.")
POLICY_KEYS = ("auto_wrap_policy", "activation_checkpointing_policy")


def within(path: str, prefixes: Collection[str]) -> bool:
    return any(path.startswith(prefix) for prefix in prefixes)


def resolves_within(path: str, prefixes: Collection[str], functions: Collection[str]) -> bool:
    """Whether `path` names a class defined under `prefixes` (or a function of `functions`).

    The path is resolved only when it starts with an allowed prefix (so only trusted modules are
    imported), and what it resolves to is checked too: an attribute chain such as
    `videogen.tasks.base.torch.load` starts well but ends somewhere else.
    """
    if not (path in TARGET_NAMES or within(path, prefixes)):
        return False
    try:
        target = get_object(path)
    except Exception:  # not importable: nothing to allow
        return False
    module = getattr(target, "__module__", None) or ""
    if inspect.isclass(target):
        return within(module + ".", prefixes)
    return inspect.isfunction(target) and module in functions


def targets_in(node: Any, key: str = "") -> Iterator[tuple[str, Any, Collection[str]]]:
    """(key path, named path, allowed prefixes) of every `_target_` and FSDP policy in `node`."""
    if isinstance(node, dict):
        for name, value in node.items():
            path = f"{key}.{name}" if key else str(name)
            if name == "_target_":
                yield path, value, TARGET_MODULES
            elif name in POLICY_KEYS and isinstance(value, (list, tuple)):
                for index, item in enumerate(value):
                    yield f"{path}[{index}]", item, POLICY_MODULES
            else:
                yield from targets_in(value, path)
    elif isinstance(node, (list, tuple)):
        for index, item in enumerate(node):
            yield from targets_in(item, f"{key}[{index}]")


def check_stored_targets(
    config: Any, where: str, overridden: Collection[str] | None = None
) -> None:
    """Refuse, in one sentence naming the key and the target, a stored config (plain dicts and
    lists) that names something outside the allow-list; `where` says what holds the config.

    `overridden`: for a config the command line can override (evaluate, generate), the keys it
    sets or deletes; they (and keys under them) are skipped, and the sentence says so.
    """
    if isinstance(config, dict) and "defaults" in config:
        # A composed config has no defaults list; one in a file would steer Hydra's composition.
        raise CheckpointError(
            f"{where} has a Hydra defaults list, which a saved run config never has: "
            "videogen does not compose configs from a file it did not write."
        )
    for key, target, prefixes in targets_in(config):
        if any(
            key == done or key.startswith((done + ".", done + "[")) for done in overridden or ()
        ):
            continue
        functions = FUNCTION_MODULES if prefixes is TARGET_MODULES else ()
        if not (isinstance(target, str) and resolves_within(target, prefixes, functions)):
            replace = (
                f"; to use another, give {key}=... on the command line"
                if overridden is not None
                else ""
            )
            raise CheckpointError(
                f"{where} names {key}={target!r}, which videogen does not build from a file "
                "(a stored config may only name videogen's own classes, torch.optim optimisers "
                f"and schedulers and Lightning trainer parts): nothing was loaded or run{replace}."
            )


def overridden_keys(argv: Collection[str]) -> set[str]:
    """Config keys the command line sets or deletes (`key=...`, `+key=...`, `~key`)."""
    keys = set()
    for arg in argv:
        key, sep, _ = arg.partition("=")
        if sep or arg.startswith("~"):
            keys.add(key.lstrip("+~"))
    return keys

"""Building networks from their configs: the one place where pretrained weights are loaded.

Constructors only build (and initialise) a network. A `net` config may add `pretrained_path`
(a local weight file) and the options of the network's `load_pretrained_state` method (its
`pretrained_options`, e.g. ViViT's `tubelet_init`); `build_network` reads the file with the one
weight reader (`checkpoint_io.load_state_dict`) and hands the tensors to the network.

When a task is rebuilt from its own checkpoint, the checkpoint holds every weight: inside
`restoring_from_checkpoint()` no pretrained file (nor any other checkpoint a task would start
from) is opened, so such a checkpoint loads on a machine that lacks those files.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from hydra.utils import get_class, instantiate
from torch import nn

from videogen.errors import ConfigError
from videogen.models.checkpoint_io import load_state_dict

log = logging.getLogger(__name__)

PRETRAINED_KEY = "pretrained_path"

_restoring: ContextVar[bool] = ContextVar("restoring_from_checkpoint", default=False)


@contextmanager
def restoring_from_checkpoint() -> Iterator[None]:
    """While open, networks and tasks are being rebuilt from a checkpoint that holds all weights."""
    token = _restoring.set(True)
    try:
        yield
    finally:
        _restoring.reset(token)


def is_restoring() -> bool:
    """Whether a checkpoint is being loaded (start-from weights must not be read)."""
    return _restoring.get()


def weight_options(config: Mapping[str, Any]) -> tuple[str, ...]:
    """The keys of `config` that concern pretrained weights rather than the network's shape."""
    target = config.get("_target_")
    network_cls = get_class(target) if isinstance(target, str) else None
    return (PRETRAINED_KEY, *getattr(network_cls, "pretrained_options", ()))


def build_network(config: Mapping[str, Any]) -> nn.Module:
    """Instantiate the network of `config` and load its `pretrained_path`, if any."""
    config = dict(config)
    options = {key: config.pop(key) for key in weight_options(config) if key in config}
    path = options.pop(PRETRAINED_KEY, None)
    network = instantiate(config)
    if path and not is_restoring():
        loader = getattr(network, "load_pretrained_state", None)
        if loader is None:
            raise ConfigError(
                f"model.net.{PRETRAINED_KEY}={path} is set, but {type(network).__name__} cannot "
                "start from pretrained weights: remove the key."
            )
        loader(load_state_dict(path, prefix="net."), **options)
        log.info("Started %s from %s", type(network).__name__, path)
    return network

"""Which parameters train without weight decay, as timm decides it.

Weight decay pulls every weight towards zero. For a weight matrix that is regularisation; for a
bias, a norm's gain or a learned position / token embedding it is a pull towards a meaningless
value (a gain of 0, no position), so those take none: every parameter of at most one dimension,
and every parameter a module names in its `no_weight_decay()` (timm's convention: a method
returning names relative to that module, e.g. {"pos_embed", "cls_token"}). Every module that
defines the method is asked, and its names are prefixed with its path.
"""

from __future__ import annotations

from collections.abc import Iterable

from torch import nn

# Path segments that wrappers insert into parameter names: FSDP, activation checkpointing and
# torch.compile. Names are compared with these removed, so that a rule found on the plain task
# still applies once a strategy has wrapped it.
WRAPPER_SEGMENTS = frozenset({"_fsdp_wrapped_module", "_checkpoint_wrapped_module", "_orig_mod"})


def clean_name(name: str) -> str:
    """`name` without the path segments that wrappers insert (`net._fsdp_wrapped_module.x` -> `net.x`)."""
    return ".".join(part for part in name.split(".") if part not in WRAPPER_SEGMENTS)


def listed_no_weight_decay(module: nn.Module) -> set[str]:
    """Names (relative to `module`, wrapper segments removed) that `module` or any module under
    it lists in its `no_weight_decay()`. Names of parameters that do not exist are kept: they
    match nothing (timm's ViT lists `dist_token` whether or not it has one)."""
    names = set()
    for prefix, submodule in module.named_modules():
        listed = getattr(submodule, "no_weight_decay", None)
        if callable(listed):
            names.update(f"{prefix}.{name}" if prefix else name for name in listed())
    return {clean_name(name) for name in names}


def find_weight_decay_exempt(module: nn.Module) -> frozenset[str]:
    """Names (as `clean_name` gives them) of the parameters of `module` that take no weight
    decay: those of at most one dimension and those listed by a `no_weight_decay()`.

    Find them on the module as built: FSDP flattens every parameter it wraps to one dimension.
    """
    listed = listed_no_weight_decay(module)
    exempt = set()
    for name, param in module.named_parameters():
        name = clean_name(name)
        if param.ndim <= 1 or name in listed:
            exempt.add(name)
    return frozenset(exempt)


# Parameter-group names (the learning-rate monitor logs `lr-<Optimizer>/<name>`).
DECAY_GROUP = "decay"
NO_DECAY_GROUP = "no_decay"


def split_by_weight_decay(
    named_parameters: Iterable[tuple[str, nn.Parameter]], exempt: frozenset[str]
) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(with weight decay, without) of `named_parameters`, each in the order given."""
    decay, no_decay = [], []
    for name, param in named_parameters:
        (no_decay if clean_name(name) in exempt else decay).append(param)
    return decay, no_decay

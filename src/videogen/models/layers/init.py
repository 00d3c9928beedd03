"""Weight initialisation schemes by name, so a family says which one it uses in one word."""

from __future__ import annotations

from torch import nn

CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.ConvTranspose3d)
NORMS_WITH_SCALE = (nn.BatchNorm2d, nn.BatchNorm3d, nn.InstanceNorm2d, nn.InstanceNorm3d)


def vit_init(module: nn.Module) -> None:
    """timm's ViT: linear weights ~ truncated N(0, 0.02), biases 0, LayerNorm 1 and 0, position
    embeddings (`*pos_embed`) ~ truncated N(0, 0.02) and class tokens (`*cls_token`) ~ N(0, 1e-6)."""
    for layer in module.modules():
        if isinstance(layer, nn.Linear):
            nn.init.trunc_normal_(layer.weight, std=0.02)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
        elif isinstance(layer, nn.LayerNorm) and layer.elementwise_affine:
            nn.init.ones_(layer.weight)
            nn.init.zeros_(layer.bias)
    for name, param in module.named_parameters():
        if name.endswith("pos_embed"):
            nn.init.trunc_normal_(param, std=0.02)
        elif name.endswith("cls_token"):
            nn.init.normal_(param, std=1e-6)
    # adaLN-Zero: a conditioned block starts as the identity (its gates are zero).
    for name, param in module.named_parameters():
        if "adaLN_modulation" in name:
            nn.init.zeros_(param)


def xavier_init(module: nn.Module) -> None:
    """Xavier-uniform for every linear and 2D conv weight (VPTR); norms and biases as built."""
    for layer in module.modules():
        if isinstance(layer, (nn.Linear, nn.Conv2d)):
            nn.init.xavier_uniform_(layer.weight)


def zero_initialised(name: str) -> bool:
    """Whether DiT starts the parameter called `name` at zero: adaLN modulations, output layer."""
    return (
        "adaLN_modulation" in name
        or "temporal_modulation" in name
        or name.startswith("final_layer.linear.")
    )


def dit_init(module: nn.Module) -> None:
    """DiT / Latte: Xavier-uniform linear and patch-embedding weights (the patch projection seen
    as a linear map), biases 0, timestep and label embeddings ~ N(0, 0.02), and every adaLN
    modulation and conditioned output layer zero (each conditioned block starts as the
    identity, the model's output at 0)."""
    for layer in module.modules():
        if isinstance(layer, nn.Linear):
            nn.init.xavier_uniform_(layer.weight)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
        elif isinstance(layer, CONVS[:3]):
            nn.init.xavier_uniform_(layer.weight.view(layer.weight.shape[0], -1))
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
        elif isinstance(layer, nn.Embedding):
            nn.init.normal_(layer.weight, std=0.02)
    for name, param in module.named_parameters():
        if name.startswith("t_embedder.") and name.endswith("weight"):
            nn.init.normal_(param, std=0.02)
        elif zero_initialised(name):
            nn.init.zeros_(param)


def gan_init(module: nn.Module) -> None:
    """pix2pix / DCGAN: conv weights ~ N(0, 0.02), biases 0, norm scales ~ N(1, 0.02)."""
    for layer in module.modules():
        if isinstance(layer, CONVS):
            nn.init.normal_(layer.weight, 0.0, 0.02)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
        elif isinstance(layer, NORMS_WITH_SCALE) and layer.affine:
            nn.init.normal_(layer.weight, 1.0, 0.02)
            nn.init.zeros_(layer.bias)


INIT_SCHEMES = {"vit": vit_init, "xavier": xavier_init, "gan": gan_init, "dit": dit_init}


def init_weights(module: nn.Module, scheme: str) -> None:
    """Initialise `module` in place with the scheme called `scheme` (see INIT_SCHEMES)."""
    if scheme not in INIT_SCHEMES:
        raise ValueError(f"unknown init scheme {scheme!r}: choose one of {sorted(INIT_SCHEMES)}.")
    INIT_SCHEMES[scheme](module)

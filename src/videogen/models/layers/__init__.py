"""The one layer library every model family is built from.

A family (`models/vit.py`, `models/vivit.py`, `models/vptr/`, `models/vid2vid/`, ...) imports
from here, from `models/losses.py` and from `models/checkpoint_io.py`, never from another family
(tests/test_import_rules.py holds that rule). Parameter names follow timm where a layer has a timm
counterpart (`norm1`, `attn.qkv`, `attn.proj`, `mlp.fc1`, `patch_embed.proj`, ...), so ViT
weights load key for key.
"""

from videogen.models.layers.attention import (
    Attention,
    CrossAttention,
    FactorisedDotProductAttention,
    Grid,
    KeyValueCache,
)
from videogen.models.layers.blocks import (
    Block,
    ConditionedOutput,
    FactorisedSelfAttentionBlock,
    modulate,
)
from videogen.models.layers.checkpointing import run_blocks
from videogen.models.layers.conv import (
    NORMS,
    PatchDiscriminator,
    ResidualBlock,
    check_norm,
    conv_norm_act,
    norm_layer,
)
from videogen.models.layers.embeddings import (
    LabelEmbedding,
    PatchEmbedding,
    TimestepEmbedding,
    TubeletEmbedding,
    check_patch_grid,
    sincos_1d,
    sincos_2d,
    timestep_features,
    unpatchify,
)
from videogen.models.layers.init import INIT_SCHEMES, init_weights
from videogen.models.layers.mlp import Mlp
from videogen.models.layers.norms import FrameLayerNorm, batchnorms, kept_batchnorm_statistics
from videogen.models.layers.ops import compose_masked, pixel_grid, warp

__all__ = [
    "INIT_SCHEMES",
    "NORMS",
    "Attention",
    "Block",
    "ConditionedOutput",
    "CrossAttention",
    "FactorisedDotProductAttention",
    "FactorisedSelfAttentionBlock",
    "FrameLayerNorm",
    "Grid",
    "KeyValueCache",
    "LabelEmbedding",
    "Mlp",
    "PatchDiscriminator",
    "PatchEmbedding",
    "ResidualBlock",
    "TimestepEmbedding",
    "TubeletEmbedding",
    "batchnorms",
    "check_norm",
    "check_patch_grid",
    "compose_masked",
    "conv_norm_act",
    "init_weights",
    "kept_batchnorm_statistics",
    "modulate",
    "norm_layer",
    "pixel_grid",
    "run_blocks",
    "sincos_1d",
    "sincos_2d",
    "timestep_features",
    "unpatchify",
    "warp",
]

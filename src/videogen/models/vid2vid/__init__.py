"""vid2vid (Wang et al., 2018): semantic-map video to photorealistic video.

The family's public names, the ones tasks use; its modules are its internals.
"""

from videogen.models.vid2vid.discriminators import (
    MultiscaleDiscriminator,
    VideoDiscriminator,
    clip_start_indices,
    temporal_stride,
)
from videogen.models.vid2vid.encoder import (
    ClassFeatureMixture,
    InstanceFeatureEncoder,
    instance_features,
)
from videogen.models.vid2vid.flow import (
    FlowEstimator,
    build_flow_estimator,
    flow_confidence,
    reference_flows,
)
from videogen.models.vid2vid.generator import GeneratedFrame, SequentialGenerator

__all__ = [
    "ClassFeatureMixture",
    "FlowEstimator",
    "GeneratedFrame",
    "InstanceFeatureEncoder",
    "MultiscaleDiscriminator",
    "SequentialGenerator",
    "VideoDiscriminator",
    "build_flow_estimator",
    "clip_start_indices",
    "flow_confidence",
    "instance_features",
    "reference_flows",
    "temporal_stride",
]

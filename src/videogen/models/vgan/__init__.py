"""VGAN (Vondrick et al., 2016): the two-stream video generator and its 3D discriminator.

The family's public names, the ones tasks use; its modules are its internals.
"""

from videogen.models.vgan.discriminator import FAKE, REAL, ClipDiscriminator, real_logit
from videogen.models.vgan.generator import TwoStreamGenerator, TwoStreamOutput
from videogen.models.vgan.sizes import ClipPlan, plan_clip

__all__ = [
    "FAKE",
    "REAL",
    "ClipDiscriminator",
    "ClipPlan",
    "TwoStreamGenerator",
    "TwoStreamOutput",
    "plan_clip",
    "real_logit",
]

"""VPTR video prediction (Ye & Bilodeau): a frame autoencoder and transformers on its features.

The family's public names, the ones tasks use; its modules are its internals.
"""

from videogen.models.vptr.autoencoder import PatchDiscriminator, VPTRAutoencoder
from videogen.models.vptr.far import VPTRFAR, Refine
from videogen.models.vptr.nar import VPTRNAR

__all__ = ["PatchDiscriminator", "Refine", "VPTRAutoencoder", "VPTRFAR", "VPTRNAR"]

"""videogen: a PyTorch Lightning + Hydra framework for video models."""

__version__ = "0.1.0"

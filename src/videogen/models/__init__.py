"""Plain torch networks: they know tensors only (no Lightning, no Hydra)."""

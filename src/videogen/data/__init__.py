"""Datamodules that share one batch contract (see `videogen.data.base`)."""

"""Metrics shared by the tasks (frame quality, per-timestep curves)."""

"""LightningModules: training logic, losses, metrics and optimisers of each task family."""

"""The transformer feed-forward network."""

from __future__ import annotations

import torch
from torch import nn


class Mlp(nn.Module):
    """Two linear layers with GELU between (timm names `fc1`, `fc2`).

    Dropout follows the activation and, with `output_dropout` (timm, ViT), the output as well.
    """

    def __init__(
        self, dim: int, hidden_dim: int, drop_rate: float = 0.0, output_dropout: bool = True
    ) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.drop1 = nn.Dropout(drop_rate)
        self.fc2 = nn.Linear(hidden_dim, dim)
        self.drop2 = nn.Dropout(drop_rate) if output_dropout else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop2(self.fc2(self.drop1(self.act(self.fc1(x)))))

"""Small torch models shared by tests (imported by tests only, never by ensemble_stats)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


class TableModel(nn.Module):
    """Returns a table of values set from outside, whatever the input (to test exact round trips)."""

    def __init__(self, n_points: int, output_size: int):
        super().__init__()
        self.table = nn.Parameter(torch.zeros(n_points, output_size, dtype=torch.float32))

    def set(self, values: np.ndarray) -> None:
        with torch.no_grad():
            self.table.copy_(torch.as_tensor(values))

    def forward(self, x):
        return self.table.clone()


class Shallow(nn.Module):
    def __init__(self, d: int, width: int, gamma: float):
        super().__init__()
        self.hidden = nn.Linear(d, width, bias=False)
        self.out = nn.Linear(width, 1, bias=False)
        nn.init.normal_(self.hidden.weight)
        nn.init.uniform_(self.out.weight, -1.0, 1.0)
        self.scale = width**-gamma

    def forward(self, x):
        return self.scale * self.out(torch.tanh(self.hidden(x)))

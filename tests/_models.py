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


def sgd_in_block_order(model: nn.Module, opt, data, cfg, steps: int, data_seed: int, dtype, penalty=None) -> None:
    """Train one member alone with ``opt`` on the block trainer's minibatches (same order, same loss), in train
    mode; ``penalty(model)`` is added to each step's loss (e.g. the 2-norm regularizer)."""
    x, y = torch.tensor(data.x_train, dtype=dtype), torch.tensor(data.y_train, dtype=dtype)
    labels = torch.tensor(data.labels_train) if data.labels_train is not None else None
    n, bs = len(x), cfg.batch_size or len(x)
    per_epoch = -(-n // bs)
    gen = torch.Generator().manual_seed(data_seed)
    order = torch.arange(n)
    model.train()
    for k in range(steps):
        i = (k % per_epoch) * bs
        if cfg.batch_size and i == 0 and cfg.shuffle:
            order = torch.randperm(n, generator=gen)
        idx = order[i : i + bs]
        opt.zero_grad()
        out = model(x[idx])
        if cfg.loss == "mse":
            loss = 0.5 * ((out - y[idx]) ** 2).mean()
        else:
            loss = nn.functional.cross_entropy(out, labels[idx])
        if penalty is not None:
            loss = loss + penalty(model)
        loss.backward()
        opt.step()

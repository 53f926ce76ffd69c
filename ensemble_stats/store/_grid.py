"""The evaluation grid: fixed inputs and targets on which every run's outputs are recorded."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .. import schema
from ..errors import ValidationError


def _readonly(a: np.ndarray) -> np.ndarray:
    a = np.array(a, dtype=np.float64, copy=True, order="C")
    a.setflags(write=False)
    return a


@dataclass(frozen=True, eq=False)
class EvalGrid:
    """A frozen, validated evaluation grid.

    Parameters
    ----------
    x : array, dims (point, feature)
        Grid inputs; stored as float64.
    target : array, dims (point, output) or (point,)
        Targets on the grid (one-hot rows for classification); 1-D means one output.

    Attributes
    ----------
    hash : str
        Content hash of (x, target); a store refuses writes from a collector whose grid differs.
    """

    x: np.ndarray
    target: np.ndarray
    hash: str = field(init=False)

    def __post_init__(self):
        problems = []
        for name, a in (("x", self.x), ("target", self.target)):
            if np.iscomplexobj(a):
                raise ValidationError(
                    f"{name} is complex; a grid is real: pass the real inputs and targets.", "EvalGrid"
                )
        try:
            x = np.asarray(self.x, dtype=np.float64)
            target = np.asarray(self.target, dtype=np.float64)
        except (TypeError, ValueError) as e:
            raise ValidationError(f"x and target must be numeric arrays ({e}).", "EvalGrid") from None
        if target.ndim == 1:
            target = target[:, None]
        if x.ndim != 2:
            problems.append(f"x has shape {x.shape}; expected 2-D (point, feature). Reshape 1-D inputs to (-1, 1).")
        if target.ndim != 2:
            problems.append(f"target has shape {target.shape}; expected (point,) or (point, output).")
        if x.ndim >= 1 and target.ndim >= 1 and x.shape[0] != target.shape[0]:
            problems.append(f"x has {x.shape[0]} points but target has {target.shape[0]} rows; they must match.")
        if x.size == 0:
            problems.append("x is empty; a grid needs at least one point.")
        for name, a in (("x", x), ("target", target)):
            bad = ~np.isfinite(a)
            if bad.any():
                first = tuple(int(i) for i in np.argwhere(bad)[0])
                problems.append(
                    f"{name} has {int(bad.sum())} non-finite value(s) (first at index {first}); "
                    "the grid must be finite: drop or impute those points."
                )
        ValidationError.raise_if(problems, "EvalGrid")
        object.__setattr__(self, "x", _readonly(x))
        object.__setattr__(self, "target", _readonly(target))
        object.__setattr__(self, "hash", schema.grid_hash(self.x, self.target))

    @classmethod
    def from_labels(cls, x, labels, n_classes: int | None = None) -> EvalGrid:
        """Grid for classification: integer ``labels`` (point,) become one-hot targets (point, output)."""
        labels = np.asarray(labels)
        if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
            raise ValidationError(f"labels must be 1-D integers, got dtype {labels.dtype} shape {labels.shape}.")
        k = int(labels.max()) + 1 if n_classes is None else int(n_classes)
        if labels.min() < 0 or labels.max() >= k:
            raise ValidationError(f"labels must lie in [0, {k}), got range [{labels.min()}, {labels.max()}].")
        return cls(x, np.eye(k)[labels])

    @property
    def n_points(self) -> int:
        return self.x.shape[0]

    @property
    def n_features(self) -> int:
        return self.x.shape[1]

    @property
    def output_size(self) -> int:
        return self.target.shape[1]

    def __eq__(self, other) -> bool:
        return isinstance(other, EvalGrid) and other.hash == self.hash

    def __hash__(self) -> int:
        return hash(self.hash)

    def __repr__(self) -> str:
        return f"EvalGrid(points={self.n_points}, features={self.n_features}, outputs={self.output_size}, hash={self.hash[:15]}…)"

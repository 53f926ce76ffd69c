"""Windows of the fused SGD step replayed as one CUDA graph: one launch for many steps.

A small block on a GPU is launch-bound: a step is a few dozen kernels of microseconds each, and the host takes
longer to launch them than the GPU to run them. A window runs ``steps`` fused steps that read their minibatch
indices from a device buffer (staged once per window) and write their losses into a (steps, B) buffer, reading
nothing back. The first window runs eagerly on a side stream (it trains, and warms cuBLAS up as a capture needs),
then is captured; every later full window between two records replays the capture. On the CPU the window runs
eagerly, the same code the tests compare with the step-by-step loop.
"""

from __future__ import annotations

import warnings

import torch

from ensemble_stats.errors import EnsembleStatsWarning


class Batches:
    """The minibatch indices of every step: a new order per epoch from ``gen`` (``shuffle``), else the data order.

    ``device_rows(k)`` gives step ``k``'s indices on the device (the epoch's order is copied there once), and
    ``host_rows(k, m)`` those of steps k .. k+m-1 as a (m, batch) host tensor; both draw the same orders, so any
    mix of the two calls in step order sees the same batches.
    """

    def __init__(self, n: int, batch_size: int, steps_per_epoch: int, shuffle: bool, gen, dev: torch.device):
        self.n, self.batch, self.per_epoch, self.shuffle, self.gen, self.dev = (
            n, batch_size, steps_per_epoch, shuffle, gen, dev,
        )  # fmt: skip
        self.order = torch.arange(n)
        self._on_dev: torch.Tensor | None = None

    def _start(self, k: int) -> int:
        i = (k % self.per_epoch) * self.batch
        if i == 0 and self.shuffle:
            self.order = torch.randperm(self.n, generator=self.gen)
            self._on_dev = None
        return i

    def device_rows(self, k: int) -> torch.Tensor:
        i = self._start(k)
        if self._on_dev is None:
            self._on_dev = self.order.to(self.dev)
        return self._on_dev[i : i + self.batch]

    def host_rows(self, k: int, m: int) -> torch.Tensor:
        rows = []
        for step in range(k, k + m):
            i = self._start(step)
            rows.append(self.order[i : i + self.batch])
        return torch.stack(rows)

    @property
    def full(self) -> bool:
        """Whether every batch has ``batch`` points (the data divide into batches), as a window's buffer needs."""
        return self.n % self.batch == 0


class StepWindow:
    """``steps`` fused SGD steps of an engine's members, as one CUDA graph where ``capture`` (else eagerly).

    Only for the fused step with every member live (``MLPEngine.fast``): a member whose loss turns non-finite
    inside the window keeps stepping (with non-finite parameters, touching no other member); the caller finds it
    from the returned losses.
    """

    def __init__(self, engine, x, y, labels, batch_size: int | None, steps: int, capture: bool):
        self.engine, self.x, self.y, self.labels, self.steps = engine, x, y, labels, steps
        B, dev = engine.params["C"].shape[0], x.device
        self.capture = capture
        self.idx = host = None
        if batch_size is not None:
            self.idx = torch.zeros((steps, batch_size), dtype=torch.long, device=dev)
            host = torch.empty((steps, batch_size), dtype=torch.long, pin_memory=capture)
        self._host = host
        self._staged = torch.cuda.Event() if capture else None  # the host buffer's last copy has landed
        self.losses = torch.empty((steps, B), dtype=x.dtype, device=dev)
        self.graph: torch.cuda.CUDAGraph | None = None

    def _body(self) -> None:
        for j in range(self.steps):
            if self.idx is None:
                xb, yb, lb = self.x, self.y, self.labels
            else:
                i = self.idx[j]
                xb, yb, lb = self.x[i], self.y[i], self.labels[i] if self.labels is not None else None
            losses, _ = self.engine.step(xb, yb, lb, None, every_alive=True, defer=True)
            self.losses[j].copy_(losses)

    def run(self, rows: torch.Tensor | None) -> torch.Tensor:
        """Run the window on ``rows`` (steps, batch), its minibatch indices on the host; return its losses (steps, B)."""
        if self.idx is not None:
            if self._staged is not None:
                self._staged.synchronize()  # the previous window's copy from the pinned buffer is done
            self._host.copy_(rows)
            self.idx.copy_(self._host, non_blocking=True)
            if self._staged is not None:
                self._staged.record()
        if not self.capture:
            self._body()
        elif self.graph is None:
            self._warm_up_and_capture()
        else:
            self.graph.replay()
            self.engine.replayed()
        return self.losses.clone()

    def _warm_up_and_capture(self) -> None:
        """Run this window eagerly on a side stream (its steps are trained), then capture it for the next ones."""
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            self._body()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph):
                self._body()  # recorded, not run
        except RuntimeError as e:  # an op that cannot be captured: the eager window is as exact, only slower
            warnings.warn(
                f"the trainer's step could not be captured as a CUDA graph ({str(e).splitlines()[0]}); training "
                "goes on with one launch per kernel.",
                EnsembleStatsWarning,
                stacklevel=2,
            )
            self.capture = False
            return
        self.graph = graph

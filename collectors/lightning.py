"""Record a Lightning training run into an ensemble store: :class:`OutputCollectorCallback`.

Needs ``lightning`` (``pip install 'ensemble-stats[lightning]'``). The callback owns an
:class:`~collectors.OutputCollector` for one run (gamma, width, seed, extra coordinates): it records the
``LightningModule``'s outputs on the store's grid after every scheduled optimizer step
(``trainer.global_step``), writes its position into Lightning checkpoints, and continues from one when
``trainer.fit(..., ckpt_path=...)`` resumes, so no record is lost or taken twice. With ``log=True`` it also
sends each record's scalars (losses, accuracy, declared metrics) to the trainer's loggers at the record's step.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch

from ensemble_stats.errors import RunExistsError, ValidationError, require
from ensemble_stats.store import EnsembleStore

from ._collector import OutputCollector

__all__ = ["OutputCollectorCallback"]

pl = require("lightning.pytorch", "collectors.lightning (the Lightning callback)")


class OutputCollectorCallback(pl.Callback):
    """A Lightning callback that records one run's outputs on the store's schedule.

    Parameters
    ----------
    store
        An :class:`~collectors.EnsembleStore`.
    gamma, width, seed
        The run; extra sweep dims (e.g. ``data_seed=1``) are keyword arguments.
    steps_per_epoch
        For stores whose time units are ``"epoch"``: optimizer steps per epoch. Default: read from the trainer
        (training batches per epoch divided by ``accumulate_grad_batches``).
    loss_fn, metrics, background
        As for :class:`~collectors.OutputCollector`.
    log
        Send every record's scalars (``test_loss``, ``accuracy`` and the ``metrics``) to the trainer's loggers
        (TensorBoard, CSV, W&B, ...) as ``<log_prefix><name>`` at the record's optimizer step.
    log_prefix
        Prefix of the logged names (default ``"grid/"``: the values are on the store's evaluation grid).

    Notes
    -----
    Records are taken in ``on_train_batch_end`` when ``trainer.global_step`` (optimizer steps so far) is a
    scheduled step, and step 0 (or the resumed step) in ``on_train_start``. A fresh ``fit`` refuses a run that
    already has records (:class:`~ensemble_stats.errors.RunExistsError`); resuming from a checkpoint that holds
    this callback's state re-opens the run where the checkpoint left it (records after it are rewritten
    identically).
    The run's write lock is held from ``on_train_start`` to ``teardown``.
    """

    def __init__(
        self,
        store: EnsembleStore,
        *,
        gamma: float,
        width: int,
        seed: int,
        steps_per_epoch: int | None = None,
        loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
        metrics: Callable[[torch.nn.Module], Mapping[str, float]] | None = None,
        background: bool = False,
        log: bool = False,
        log_prefix: str = "grid/",
        **extra_coords: Any,
    ):
        super().__init__()
        self.store = store
        self.run = dict(gamma=gamma, width=width, seed=seed, **extra_coords)
        store.run_index(gamma, width, seed, **extra_coords)  # an unknown run is refused now, not mid-fit
        self.steps_per_epoch = steps_per_epoch
        self._options = dict(loss_fn=loss_fn, metrics=metrics, background=background)
        self.log, self.log_prefix = bool(log), str(log_prefix)
        self.collector: OutputCollector | None = None
        self._restored: dict[str, Any] | None = None  # from a checkpoint, for the next fit
        self._last: dict[str, Any] = {}  # the state at the end of the last fit, for a checkpoint saved after it

    @property
    def state_key(self) -> str:
        """The key of this callback's state in a checkpoint: one per run (gamma, width, seed, ...)."""
        return self._generate_state_key(**{k: self.run[k] for k in sorted(self.run)})

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        """Return the collector's state (its records flushed first), saved in Lightning checkpoints."""
        if self.collector is None:
            return dict(self._last)
        return self.collector.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Keep a checkpoint's state for the next fit (Lightning calls this before training resumes)."""
        self._restored = dict(state_dict)

    # ------------------------------------------------------------------ hooks
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Open the run's collector (resumed from the checkpoint's state) and record step 0 when scheduled."""
        # here, not in on_fit_start: the loop's step count is restored and the batches per epoch are known
        spe = self.steps_per_epoch
        if spe is None and self.store.spec.time_units == "epoch":
            batches = trainer.num_training_batches
            if not isinstance(batches, int) or batches < 1:
                raise ValidationError(
                    "the store records by epoch and the trainer's batches per epoch are unknown (an iterable "
                    "dataset?): pass steps_per_epoch= to OutputCollectorCallback."
                )
            spe = max(1, batches // trainer.accumulate_grad_batches)
        resume = bool(self._restored)
        try:
            self.collector = OutputCollector(
                self.store, steps_per_epoch=spe, resume=resume, **self._options, **self.run
            )
        except RunExistsError as e:
            raise RunExistsError(
                f"{str(e).split(';')[0]}; to continue it, resume the fit from the checkpoint that holds this "
                "callback's state (trainer.fit(module, loader, ckpt_path=...), e.g. a ModelCheckpoint(save_last=True)"
                "'s last.ckpt), or record another seed."
            ) from None
        if resume:
            self.collector.load_state_dict(self._restored)
        if self.collector.step != trainer.global_step:
            raise ValidationError(
                f"the collector is at optimizer step {self.collector.step} but the trainer at "
                f"{trainer.global_step}: resume from the checkpoint that holds this callback's state."
            )
        self._maybe_record(trainer, pl_module)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch, batch_idx) -> None:
        """Record the model when the trainer's optimizer step is a scheduled record."""
        self._maybe_record(trainer, pl_module)

    def _maybe_record(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.collector is not None and not self.collector.done:
            self.collector.on_step(pl_module, trainer.global_step)
        self._send_to_loggers(trainer)

    def _send_to_loggers(self, trainer: pl.Trainer) -> None:
        if not self.log or self.collector is None:
            return
        taken = self.collector.taken
        while taken:
            step, scalars = taken.popleft()
            values = {f"{self.log_prefix}{k}": v for k, v in scalars.items()}
            for logger in trainer.loggers:
                logger.log_metrics(values, step=step)

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Flush the records, keep the state for a checkpoint saved after the fit, and release the run's lock."""
        if self.collector is not None:
            try:
                self._last = self.collector.state_dict()  # waits for background records
                self._send_to_loggers(trainer)
            finally:
                try:
                    self.collector.close()  # releases the run's lock even if the last flush failed
                finally:
                    self.collector, self._restored = None, None

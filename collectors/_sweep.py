"""The sweep runner: (width, seed block[, data seed]) cells as Dask tasks, resumable and idempotent.

Each task trains its block vectorised over seeds x gammas (:func:`train_block`) and writes through the
collectors; a complete block is skipped, so rerunning the same command resumes a sweep, and Dask running a
task twice changes nothing. No scheduler of our own: a LocalCluster by default, or any Dask cluster.
"""

from __future__ import annotations

import functools
import itertools
import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from ensemble_stats import schema
from ensemble_stats.errors import ConfigError, SpecMismatchError, SweepError, ValidationError
from ensemble_stats.store import EnsembleStore, corruption_error, has_group, location, sweep_partial_files

from ._config import SweepSpec, config_differences
from ._ntk import NTKCollector
from ._records import BlockCollector


@dataclass
class SweepReport:
    """Outcome of :func:`run_sweep`.

    ``diverged``: one dict per diverged member (gamma, width, seed, the extra sweep dims, and the optimizer step at which it
    diverged).
    """

    store: str
    cells: int
    skipped: int
    trained: int
    records: int
    seconds: float
    diverged: list = field(default_factory=list)


def _model_attrs(spec: SweepSpec, data, model_factory=None) -> dict:
    arch = spec.train.architecture(data.d_in, data.output_size, spec.widths[0], spec.gammas[0])
    if model_factory is not None:
        fn = getattr(model_factory, "func", model_factory)  # a functools.partial names its function
        name = f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', type(fn).__name__)}"
        return {
            "architecture": f"model_factory {name}",
            "lr_rule": "the module's learning_rates(alpha, layer_alpha), else alpha for every parameter",
            **{k: v for k, v in spec.train.describe().items() if k not in ("init", "lr_rule")},
            "data": data.describe(),
            "time": f"t = k / N_L ({spec.time_units})",
        }
    return {
        **arch.describe(),
        **spec.train.describe(),
        **({"alpha": f"swept: see the {schema.ALPHA} coordinate"} if spec.alphas else {}),
        "data": data.describe(),
        "time": f"t = k / N_L ({spec.time_units})",
    }


def _check_config(store: EnsembleStore, spec: SweepSpec, path) -> None:
    stored = store.attrs.get(schema.ATTR_CONFIG)
    if stored is None:
        raise SpecMismatchError(f"{path} is an ensemble store that no sweep config created; use a new --store path.")
    try:
        diffs = config_differences(json.loads(stored), spec.canonical())
    except (TypeError, ValueError):
        diffs = ["the stored config is not valid JSON"]
    if diffs:
        hint = "Use a new --store path for a different sweep."
        if not store.array(schema.WRITTEN)[...].any():
            hint += " (This store holds no records yet: delete it to start over with the new config.)"
        raise SpecMismatchError([*diffs, hint], f"{path} holds a different sweep")


TRAIN_SET_LIMIT = 64 << 20
"""The training set is stored beside the records when it takes at most this many bytes (float64)."""


def prepare_store(spec: SweepSpec, path: str | os.PathLike, model_factory=None) -> EnsembleStore:
    """Create the sweep's store, or open it if it holds the same config; a different config is refused.

    Everything that can be checked without training is checked before the store is created (data options,
    sizes against memory and disk, each width's recording schedule), so a config that cannot run leaves no
    store behind. The config is compared after creation too: of two runs with different configs racing to
    create one path, the one that loses the race is refused rather than writing into the other's store.
    """
    path = location(path, "--store")
    if has_group(path):
        store = EnsembleStore.open(path)
        _check_config(store, spec, path)
        return store
    data = spec.load_data()
    problems = spec.check(data, None if isinstance(path, str) else path)
    if problems:
        raise ConfigError(problems, "config")
    extra = {k: list(v) for k, v in spec.extra_dims().items()} or None
    train_bytes = data.x_train.nbytes + data.y_train.nbytes
    keep_train = train_bytes <= TRAIN_SET_LIMIT
    store = EnsembleStore.create(
        path,
        data.grid,
        gammas=spec.gammas,
        widths=spec.widths,
        seeds=spec.seeds,
        times=spec.times,
        time_units=spec.time_units,
        extra_dims=extra,
        dtype="float64" if spec.train.dtype == "float64" else "float32",
        antithetic=spec.train.antithetic,
        seed_chunk=spec.seed_block,  # one task writes one whole seed block: it owns those chunks
        model=_model_attrs(spec, data, model_factory),
        train=(data.x_train, data.y_train) if keep_train else None,
        ntk_points=spec.ntk_grid(data.grid.n_points),
        layers=spec.layers(data) or None,
        metrics=spec.metrics() or None,
        **{
            schema.ATTR_CONFIG: spec.to_json(),
            schema.ATTR_TRAIN_SET: "stored as x_train, y_train"
            if keep_train
            else f"not stored: {train_bytes / 2**20:.0f} MiB exceeds {TRAIN_SET_LIMIT >> 20} MiB; reload it from the config",
        },
    )
    _check_config(store, spec, path)
    return store


@functools.cache
def _tune_allocator() -> bool:
    """Undo, in this worker process, the malloc setting that Dask's nanny exports to workers.

    ``MALLOC_TRIM_THRESHOLD_=65536`` (distributed's default pre-spawn environment) also freezes glibc's mmap
    threshold at 128 KiB, so every multi-MB tensor of a training step is mmapped and unmapped again: measured
    2.3x slower training. Workers of a cluster started elsewhere have it too, hence a runtime fix here.
    """
    import ctypes
    import ctypes.util
    import sys

    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
        m_trim_threshold, m_mmap_threshold = -1, -3
        return bool(libc.mallopt(m_mmap_threshold, 32 << 20) and libc.mallopt(m_trim_threshold, 256 << 20))
    except (OSError, AttributeError):  # not glibc
        return False


@functools.lru_cache(maxsize=4)
def _data_for(spec_json: str):
    return SweepSpec.from_json(spec_json).load_data()


class Cell(NamedTuple):
    """One Dask task of a sweep: a seed block at one width, at one value of each extra sweep dim."""

    width: int
    seeds: tuple[int, ...]
    coords: tuple[tuple[str, float], ...] = ()
    """(dim, value) of each extra sweep dim (``alpha``, ``data_seed``), in the store's order."""

    def name(self) -> str:
        return ", ".join(
            [f"width={self.width}", f"seeds={self.seeds[0]}..{self.seeds[-1]}", *(f"{k}={v:g}" for k, v in self.coords)]
        )


PROGRESS_TOPIC = "ensemble-stats-cell-progress"
"""Prefix of the Dask event topic (one per ``run_sweep`` call) on which running cells report their progress."""


class CellProgress(BlockCollector):
    """Report a cell's progress from inside its task: ``{"cell": key, "fraction": steps done / steps}``.

    Sent as a Dask event on ``topic`` at most every ``every`` seconds, so ``run_sweep``'s bar moves during long
    cells rather than only when one ends. Outside a Dask worker it does nothing.
    """

    def __init__(self, topic: str, key: str, every: float = 0.5):
        self.topic, self.key, self.every = topic, key, float(every)
        self._total, self._last = 1, 0.0

    def on_block_start(self, block) -> None:
        self._total = max(1, int(block.schedule[-1]))

    def on_train_step(self, step: int, losses) -> None:
        now = time.monotonic()
        if now - self._last >= self.every:
            self._last = now
            self._send(min(1.0, step / self._total))

    def _send(self, fraction: float) -> None:
        from distributed import get_worker

        try:
            worker = get_worker()
        except ValueError:  # not in a Dask task
            return
        worker.log_event(self.topic, {"cell": self.key, "fraction": float(fraction)})


def run_cell(
    store_path: str,
    spec_json: str,
    device: str,
    cell: Cell,
    threads: int = 1,
    collectors=None,
    model_factory=None,
    progress: tuple[str, str] | None = None,
) -> dict:
    """One task: train one :class:`Cell` into the store. Idempotent.

    ``collectors``: a picklable callable returning further :class:`BlockCollector` s for this cell (fresh ones per
    cell), or None. ``model_factory``: see :func:`run_sweep`. ``progress``: (topic, key) to report progress on
    (:class:`CellProgress`).
    """
    from dataclasses import replace

    import torch

    from ._trainer import train_block

    _tune_allocator()
    torch.set_num_threads(threads)
    spec = SweepSpec.from_json(spec_json, device)
    store = EnsembleStore.open(store_path)
    _check_config(store, spec, store_path)  # never train one config into another's store
    if str(spec.train.device).startswith("cuda"):
        dev = torch.device(spec.train.device)
        ValidationError.raise_if(
            gpu_fit_problems(
                spec.cell_bytes(_data_for(spec_json)),
                torch.cuda.get_device_properties(dev).total_memory,
                f"{torch.cuda.get_device_name(dev)} (CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')})",
            ),
            f"cell {cell.name()}",
        )
    extra = dict(cell.coords)
    config = replace(spec.train, alpha=float(extra[schema.ALPHA])) if schema.ALPHA in extra else spec.train
    res = train_block(
        store,
        _data_for(spec_json),
        width=cell.width,
        gammas=spec.gammas,
        seeds=cell.seeds,
        config=config,
        data_seed=int(extra.get(schema.DATA_SEED, spec.data_seed)),
        extra_coords=extra,
        collectors=[
            *((NTKCollector(every=spec.ntk_every),) if store.spec.field_shapes else ()),
            *(collectors() if collectors is not None else ()),
            *((CellProgress(*progress),) if progress is not None else ()),
        ],
        model_factory=model_factory,
    )
    return {
        "skipped": res.skipped,
        "records": 0 if res.skipped else res.members * len(spec.times),
        "diverged": [
            {schema.GAMMA: g, schema.WIDTH: cell.width, schema.SEED: s, **dict(cell.coords), "step": k}
            for (g, s), k in res.diverged.items()
        ],
        "seconds": res.seconds,
    }


def _cells(spec: SweepSpec) -> list[Cell]:
    extra = spec.extra_dims()
    combos = list(itertools.product(*([(k, v) for v in vals] for k, vals in extra.items())))
    return [Cell(w, b, c) for w, b in spec.blocks() for c in combos]


def pending_cells(store: EnsembleStore, spec: SweepSpec) -> list[Cell]:
    """Return the sweep's cells that are not complete in ``store``.

    A commit mark that cannot be read is corruption (``run --repair`` rewrites it).
    """
    try:
        return [c for c in _cells(spec) if not _complete(store, spec, c)]
    except Exception as e:  # noqa: BLE001 - a checksum failure deep in zarr: name the damaged files
        raise corruption_error(store.path, e) from None


def _complete(store: EnsembleStore, spec: SweepSpec, cell: Cell) -> bool:
    extra = spec.extra_dims()
    si = [spec.seeds.index(s) for s in cell.seeds]
    index = (
        slice(None),
        spec.widths.index(cell.width),
        slice(si[0], si[-1] + 1),
        *(extra[k].index(v) for k, v in cell.coords),
    )
    return bool(np.all(store.array(schema.WRITTEN)[index]))


GPU = "GPU"
"""The Dask worker resource of one GPU: a cell on a GPU asks for one, so no two cells share a device."""


def gpu_devices(gpus: int | str, visible: Sequence[str] | None = None) -> list[str]:
    """Return the GPUs a sweep's workers take, one worker each.

    Parameters
    ----------
    gpus : ``"all"`` or a number N >= 1 (the first N visible GPUs)
    visible : the GPUs this process may use, by ``CUDA_VISIBLE_DEVICES`` entry; default: that variable's
        entries when it is set, else ``0 .. torch.cuda.device_count() - 1``

    Returns
    -------
    list of str : each worker's ``CUDA_VISIBLE_DEVICES`` value
    """
    if visible is None:
        env = os.environ.get("CUDA_VISIBLE_DEVICES")
        if env is not None:
            visible = [v.strip() for v in env.split(",") if v.strip()]
        else:
            import torch

            visible = [str(i) for i in range(torch.cuda.device_count())]
    visible = list(visible)
    if gpus == "all":
        n = len(visible)
    elif isinstance(gpus, int) and not isinstance(gpus, bool) and gpus >= 1:
        n = gpus
    else:
        raise ValidationError(f"gpus must be 'all' or a number >= 1, got {gpus!r}.")
    if not visible:
        raise ValidationError(
            "gpus: no GPU is visible to this process (CUDA_VISIBLE_DEVICES or torch.cuda.device_count()); run on a "
            "machine with GPUs, or drop --gpus to train on the CPU."
        )
    if n > len(visible):
        raise ValidationError(
            f"gpus = {gpus!r} asks for {n} GPUs but {len(visible)} are visible ({', '.join(visible)}); ask for at "
            f"most {len(visible)} or 'all'."
        )
    return visible[:n]


def gpu_fit_problems(need: int, device_memory: int, device: str) -> list[str]:
    """List why one cell (``need`` bytes, :meth:`SweepSpec.cell_bytes`) cannot fit the GPU it is given alone."""
    if device_memory and need > 0.9 * device_memory:
        return [
            f"one cell needs about {need / 1e9:.3g} GB and {device} has {device_memory / 1e9:.3g} GB: a cell never "
            "shares a GPU, and this one does not fit one. Lower [sweep].seed_block or the widths."
        ]
    return []


def local_cluster(workers: int = 2, gpus: Sequence[str] | None = None):
    """Return the sweep's own Dask cluster.

    Worker processes on this machine, every port (the scheduler's, the workers' and the unauthenticated
    dashboard's) bound to 127.0.0.1 only. With ``gpus`` (the devices of :func:`gpu_devices`): one worker per
    GPU instead, each seeing only its own (``CUDA_VISIBLE_DEVICES``) and offering one :data:`GPU` resource.
    """
    import logging
    import signal
    import threading

    from dask.distributed import LocalCluster, Nanny, Scheduler, SpecCluster

    # Workers are started with SIGINT ignored (inherited across exec): a Ctrl-C at the terminal reaches the whole
    # process group, and only this process should act on it, closing the cluster in order, not each worker
    # dying with a traceback of its own.
    main = threading.current_thread() is threading.main_thread()
    old = signal.signal(signal.SIGINT, signal.SIG_IGN) if main else None
    try:
        if gpus:
            return SpecCluster(
                workers={
                    f"gpu-{d}": {
                        "cls": Nanny,
                        "options": {
                            "nthreads": 1,
                            "host": "127.0.0.1",
                            "env": {"CUDA_VISIBLE_DEVICES": d},
                            "resources": {GPU: 1},
                            "silence_logs": logging.CRITICAL,
                        },
                    }
                    for d in gpus
                },
                scheduler={"cls": Scheduler, "options": {"host": "127.0.0.1", "dashboard_address": "127.0.0.1:0"}},
                silence_logs=logging.CRITICAL,
            )
        return LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address="127.0.0.1:0",
            silence_logs=logging.CRITICAL,  # tasks cancelled by an interrupt are expected, not warnings for the user
        )
    finally:
        if main:
            signal.signal(signal.SIGINT, old)


def _check_gpu_workers(client) -> None:
    """Refuse a cluster none of whose workers offers a :data:`GPU`: its cells would wait for ever."""
    workers = client.scheduler_info().get("workers", {})
    if not any(w.get("resources", {}).get(GPU, 0) >= 1 for w in workers.values()):
        raise ValidationError(
            f"gpus: none of the cluster's {len(workers)} workers offers the resource {GPU!r}, so no cell could start. "
            f"Start one worker per GPU with it: CUDA_VISIBLE_DEVICES=i dask worker ADDRESS --nthreads 1 "
            f"--resources {GPU}=1 (docs/gpu.md)."
        )


def _watch(client, futures: dict, report: SweepReport, failures: dict, total: int, progress, topic: str) -> None:
    """Wait for the cells, collecting their results into ``report`` / ``failures``, and show progress.

    Running cells report the fraction of their steps done (:class:`CellProgress`); the shown count of cells done
    includes those fractions.
    """
    from dask.distributed import wait
    from tqdm.auto import tqdm

    running: dict[str, float] = {}

    def on_event(event) -> None:
        msg = event[1]
        running[msg["cell"]] = float(msg["fraction"])

    show = progress if callable(progress) else None
    bar = tqdm(
        total=total,
        initial=report.skipped,
        desc="cells",
        unit="cell",
        disable=progress is not True,
        dynamic_ncols=True,
        bar_format="{l_bar}{bar}| {n:.1f}/{total} [{elapsed}<{remaining}{postfix}]",
    )
    if progress:
        client.subscribe_topic(topic, on_event)
    finished = 0
    try:
        with bar:
            pending = set(futures)
            while pending:
                try:
                    done, pending = wait(pending, timeout=0.5, return_when="FIRST_COMPLETED")
                except TimeoutError:  # none finished in the last half second: show the running cells' progress
                    done = set()
                for fut in done:
                    cell, key = futures[fut]
                    running.pop(key, None)
                    finished += 1
                    try:
                        out = fut.result()
                    except Exception as e:  # noqa: BLE001 - a failed cell is reported, the others go on
                        failures[cell.name()] = f"{type(e).__name__}: {e}"
                    else:
                        report.trained += 0 if out["skipped"] else 1
                        report.records += out["records"]
                        report.diverged += out["diverged"]
                live = [f for k, f in running.items() if k in {futures[p][1] for p in pending}]
                value = report.skipped + finished + sum(live)
                bar.n = value
                bar.set_postfix(records=report.records, failed=len(failures), refresh=False)
                bar.refresh()
                if show is not None:
                    show(value, total)
    finally:
        if progress:
            client.unsubscribe_topic(topic)


def run_sweep(
    config,
    store,
    client=None,
    *,
    workers: int | None = None,
    device: str | None = None,
    progress=True,
    threads_per_worker: int = 1,
    repair: bool = False,
    collectors=None,
    model_factory=None,
    gpus: int | str | None = None,
) -> SweepReport:
    """Run (or resume) a sweep on a Dask cluster.

    Parameters
    ----------
    config : SweepSpec, a path to a TOML file, TOML text, or the TOML's tables as a dict
    store : path of the store (created if absent; must hold the same config if present)
    client : dask.distributed.Client, optional
        Use this cluster. Default: a LocalCluster of ``workers`` processes (default 2), closed at the end.
    device : override the config's device ("cpu" or "cuda")
    progress : bool or callable
        True: a progress bar on stderr (cells done / total, counting the steps done inside running cells; records
        written; ETA) and the Dask dashboard's address when the sweep starts its own cluster. A callable
        ``progress(cells_done, cells_total)`` is called instead at every update (``cells_done`` a float).
    repair : verify the store first and un-commit every record it flags (corrupt, missing or misplaced chunks),
        so that their cells are retrained and rewritten
    collectors : a callable returning further :class:`BlockCollector` s, called in every cell's task (on the worker;
        so it must be picklable, e.g. a module-level function or a class): each receives that block's hooks
    model_factory : ``make_model(seed, width, gamma) -> nn.Module``, picklable (a module-level function, a
        class, or a ``functools.partial`` of one): train its modules instead of the config's ScaledMLP (see
        :func:`train_block`). Its qualified name is stored in the model attrs; the config's [model] table then
        only names the run.
    gpus : ``"all"`` or a number N: train on GPUs, one cell per GPU at a time (the device becomes ``"cuda"``).
        With the sweep's own cluster: one worker per GPU, each seeing only its own (:func:`gpu_devices`; the
        first N of ``CUDA_VISIBLE_DEVICES``). With ``client``: its workers must offer the resource ``GPU``
        (``dask worker ... --resources GPU=1``, one worker per GPU, e.g. a SLURM job per GPU); cells ask for one.

    Raises
    ------
    SweepError
        Listing every failed cell; all other cells are complete in the store.
    """
    from dask.distributed import Client

    t0 = time.perf_counter()
    spec = SweepSpec.parse(config)
    if gpus is not None:
        if device not in (None, "cuda"):
            raise ValidationError(f"gpus={gpus!r} trains on GPUs; device={device!r} contradicts it: drop one.")
        if workers and client is None:
            raise ValidationError("give gpus (one worker per GPU) or workers (CPU worker processes), not both.")
        device = "cuda"
        devices = gpu_devices(gpus) if client is None else None
        if client is not None:
            _check_gpu_workers(client)
    if device is not None:
        spec = spec.with_device(device)
    st = prepare_store(spec, store, model_factory)
    if repair:
        st.repair()
    cells = _cells(spec)
    todo = pending_cells(st, spec)
    report = SweepReport(str(st.path), len(cells), len(cells) - len(todo), 0, 0, 0.0)
    if todo:
        own = client is None
        cluster = (local_cluster(gpus=devices) if gpus is not None else local_cluster(workers or 2)) if own else None
        client = Client(cluster) if own else client
        if own and progress is True and cluster.dashboard_link:
            import sys

            print(f"Dask dashboard: {cluster.dashboard_link}", file=sys.stderr)
        failures = {}
        try:
            spec_json = spec.to_json()
            run_id = f"{os.getpid()}-{time.time_ns()}"
            futures = {
                client.submit(
                    run_cell,
                    # a URL as it is; a local path made absolute: workers may run in another working directory
                    st.path if isinstance(st.path, str) else str(st.path.absolute()),
                    spec_json,
                    spec.train.device,
                    cell,
                    threads_per_worker,
                    collectors,
                    model_factory,
                    (f"{PROGRESS_TOPIC}-{run_id}", str(i)) if progress else None,
                    key=f"cell-{i}-{run_id}",
                    pure=False,
                    retries=1,
                    resources={GPU: 1} if gpus is not None else None,
                ): (cell, str(i))
                for i, cell in enumerate(todo)
            }
            _watch(client, futures, report, failures, len(cells), progress, f"{PROGRESS_TOPIC}-{run_id}")
        finally:
            if own:
                client.close()
                cluster.close()
        if not isinstance(st.path, str):  # object storage has no partial files: its puts are atomic
            sweep_partial_files(st.path)
        if failures:
            raise SweepError(failures, len(cells))
    report.seconds = time.perf_counter() - t0
    return report

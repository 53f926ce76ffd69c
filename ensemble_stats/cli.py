"""The ``ensemble-stats`` command line."""

from __future__ import annotations

import contextlib
import sys
import traceback
import warnings
from pathlib import Path

import click

from .errors import EnsembleStatsError


class _Group(click.Group):
    """Turns toolkit errors into clear lines on stderr and a non-zero exit (traceback only with --debug).

    Ctrl-C exits 130 with one line; every command leaves stores and outputs consistent when interrupted.
    """

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            click.echo(
                "interrupted: stopped; stores and outputs are consistent. Rerun the same command to resume.", err=True
            )
            sys.exit(130)
        except (EnsembleStatsError, OSError) as e:
            if ctx.obj and ctx.obj.get("debug"):
                traceback.print_exc()
            click.echo(f"error: {_one_per_line(e)}", err=True)
            sys.exit(2)


def _one_per_line(e: BaseException) -> str:
    """Return the message with one problem per line (continuation lines indented)."""
    text = str(e) if isinstance(e, EnsembleStatsError) else f"{type(e).__name__}: {e}"
    lines = [ln.rstrip() for ln in text.splitlines() if ln.strip()]
    return "\n".join([lines[0], *(ln if ln.startswith("  ") else "  " + ln for ln in lines[1:])]) if lines else text


@click.group(cls=_Group)
@click.option("--debug", is_flag=True, help="Show tracebacks for errors.")
@click.version_option(package_name="ensemble-stats")
@click.pass_context
def main(ctx, debug):
    """Statistics of trained-network ensembles across width, normalization and time."""
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug


@main.command()
@click.argument("store", type=click.Path())
@click.option("--verify", is_flag=True, help="Read every chunk; report corrupt, missing, misplaced and partial files.")
@click.option("--clean", is_flag=True, help="With --verify, remove stray partial files of writers that are gone.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (es.store_summary, plus 'problems').")
def info(store, verify, clean, as_json):
    """Dims, completeness per (gamma, width) cell, diverged runs."""
    from ._info import format_info, store_summary
    from .errors import ValidationError
    from .store import open_ensemble, verify_store

    if clean and not verify:
        raise ValidationError("--clean removes what --verify finds: give both (info STORE --verify --clean).")
    problems = verify_store(store, clean=clean) if verify else []
    try:
        ds = open_ensemble(store)
        summary = store_summary(ds) if as_json else format_info(ds)
    except Exception as e:
        if not problems:
            raise
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        summary = f"info: the store cannot be summarised until it is repaired ({first[:300]})"
        summary = {"store": str(store), "error": summary} if as_json else summary
    if as_json:
        if verify:
            summary["problems"] = [str(p) for p in problems]
        _echo_json(summary)
        if problems:
            sys.exit(1)
        return
    click.echo(summary)
    if verify:
        click.echo(f"verify: {len(problems)} problem(s)")
        for p in problems:
            click.echo(f"  {p}")
        if problems:
            sys.exit(1)


@main.command()
@click.argument("config", type=click.Path())
@click.option(
    "--store", required=True, type=click.Path(), help="Store path (created, or resumed if it holds this config)."
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=None,
    help="Worker processes of the local Dask cluster (default 2).",
)
@click.option("--scheduler", default=None, help="Address of an existing Dask scheduler to join instead.")
@click.option("--scheduler-file", type=click.Path(), default=None, help="Scheduler file of an existing cluster.")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default=None, help="Override the config's device.")
@click.option(
    "--gpus",
    default=None,
    metavar="all|N",
    help="Train on GPUs, one cell per GPU at a time: 'all' or the first N visible (one worker each; with "
    "--scheduler, workers that offer the resource GPU=1).",
)
@click.option("--repair", is_flag=True, help="Verify the store first and retrain every cell with damaged records.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
def run(config, store, workers, scheduler, scheduler_file, device, gpus, repair, no_progress):
    """Run or resume the sweep described by CONFIG (TOML) into STORE."""
    from collectors import run_sweep  # lazy: only run/demo need torch

    from .errors import ValidationError

    if workers and (scheduler or scheduler_file):
        raise ValidationError("give either --workers (a local cluster) or --scheduler (an existing one), not both.")
    if gpus is not None and gpus != "all":
        if not gpus.isdigit() or int(gpus) < 1:
            raise ValidationError(f"--gpus {gpus}: give 'all' or a number of GPUs >= 1.")
        gpus = int(gpus)
    with _terminate_cleanly():
        client = _client(scheduler, scheduler_file)
        try:
            rep = run_sweep(
                config, store, client, workers=workers, device=device, progress=not no_progress, repair=repair,
                gpus=gpus,
            )  # fmt: skip
        finally:
            if client is not None:
                client.close()
    click.echo(
        f"sweep complete: {rep.cells} cells ({rep.skipped} skipped as complete, {rep.trained} trained), "
        f"{rep.records} records, {len(rep.diverged)} diverged runs, {rep.seconds:.1f} s -> {rep.store}"
    )


@main.command()
@click.option("--out", type=click.Path(), default="demo-out", show_default=True, help="Output directory.")
@click.option("--workers", type=click.IntRange(min=1), default=2, show_default=True)
@click.option("--no-progress", is_flag=True)
def demo(out, workers, no_progress):
    """Run the main job: a small real sweep (teacher task, 5 gammas x 5 widths x 64 seeds), fit and decompose."""
    from collectors import run_demo

    with _terminate_cleanly():
        run_demo(out, workers=workers, progress=not no_progress, echo=click.echo)


@main.command("report")
@click.argument("store", nargs=-1, required=True, type=click.Path())
@click.option("--out", required=True, type=click.Path(), help="Directory for the figures and index.html.")
def report_cmd(store, out):
    """Figures (PNG) and a self-contained index.html for STORE."""
    from ._report import _check_report_target, report
    from .store import open_ensemble

    _check_report_target(out)
    _refuse_store_paths(out, store)
    with _reading(store):
        index = report(open_ensemble(list(store)), out, progress=lambda s: click.echo(f"  {s} ...", err=True))
    click.echo(f"report: {index}")


class _Terminated(Exception):
    pass


def _terminate_cleanly():
    """SIGTERM becomes an exception in the main thread, so clusters close and the store stays consistent."""
    import contextlib
    import signal

    @contextlib.contextmanager
    def guard():
        def handler(signum, frame):
            raise _Terminated()

        old = signal.signal(signal.SIGTERM, handler)
        try:
            yield
        except _Terminated:
            click.echo("terminated: stopped cleanly; rerun the same command to resume.", err=True)
            sys.exit(143)
        finally:
            signal.signal(signal.SIGTERM, old)

    return guard()


RESULT_ATTR = "ensemble_stats_result"
"""Attribute naming the command that wrote a result; only such a result may be replaced by ``--out``."""


def _refuse_store_paths(out: str, stores) -> str | Path:
    """Return the canonical ``--out``, refused when it is, holds or lies inside an input store, or is a store."""
    from .errors import ValidationError
    from .store import is_store, location, same_or_nested

    target = location(out, "--out")
    for st in stores:
        source = location(st)
        if same_or_nested(target, source):
            where = "the input store itself" if target == source else "inside the input store, or a folder holding it"
            raise ValidationError(
                f"--out {out} resolves to {target}, {where} ({source}); writing there would destroy it: choose a "
                "path outside every input store."
            )
    if is_store(target):
        raise ValidationError(
            f"--out {out} resolves to {target}, an ensemble store; results never replace a store: choose another path."
        )
    return target


def _check_out(out: str, stores, command: str) -> str | Path:
    """Return the canonical result path of ``command``.

    Refused when it is not a .zarr/.nc path, or when it would replace anything but an earlier result of the same
    command (a store, a foreign file or folder).
    """
    from .errors import ValidationError
    from .store import local_store_path, remote_exists

    target = _refuse_store_paths(out, stores)
    if not str(target).endswith((".zarr", ".nc")):
        raise ValidationError(f"--out {out} resolves to {target}: use a path ending in .zarr or .nc.")
    if isinstance(target, str):
        if target.endswith(".zarr"):
            local_store_path(target, "--out")  # refused with the reason: a folder of objects is not atomic there
        if not remote_exists(target, ""):
            return target
    elif not (target.exists() or target.is_symlink()):
        return target
    previous = _result_kind(target)
    if previous != command:
        what = f"a result of `ensemble-stats {previous}`" if previous else "not a result of ensemble-stats"
        raise ValidationError(
            f"--out {out} resolves to {target}, which exists and is {what}; `{command} --out` replaces only its own "
            "earlier results, whole: choose a new path (or move that one away yourself)."
        )
    return target


def _result_kind(target) -> str | None:
    import xarray as xr

    kwargs = {"engine": "zarr", "consolidated": False} if str(target).endswith(".zarr") else {}
    try:
        if isinstance(target, str):  # a .nc object: read it through fsspec
            import fsspec

            with (
                fsspec.open(target, "rb") as f,
                xr.open_dataset(f) as old,
            ):
                return old.attrs.get(RESULT_ATTR)
        with xr.open_dataset(target, **kwargs) as old:
            return old.attrs.get(RESULT_ATTR)
    except Exception:  # noqa: BLE001 - unreadable: not a result of ours
        return None


def _write(ds, out: str, stores, command: str) -> None:
    """Write a result Dataset as .zarr or .nc by extension, whole: a kill leaves the previous result or this one.

    The target is checked again right before it is replaced (the computation may have taken long). A .nc
    result may go to object storage (uploaded as one object); computing first also lets netCDF be written
    from a distributed cluster.
    """
    from .store import atomic_output

    ds = ds.compute()
    ds.attrs.update(_provenance(stores, command))
    target = _check_out(out, stores, command)
    with atomic_output(target, single_file=str(target).endswith(".nc")) as tmp:
        if str(target).endswith(".zarr"):  # written whole, never appended: consolidated metadata cannot go stale
            with warnings.catch_warnings():  # zarr notes that consolidation is not (yet) in its v3 spec
                warnings.filterwarnings("ignore", message="Consolidated metadata", category=UserWarning)
                ds.to_zarr(tmp, mode="w-", consolidated=True)
        else:
            ds.to_netcdf(tmp)


def _provenance(stores, command: str) -> dict:
    """CF-style global attributes tracing a result to its stores.

    ``Conventions``, a ``history`` line (date, package version, command), and each source store's path,
    ``store_id`` and config hash.
    """
    import shlex

    import zarr

    from . import schema
    from ._provenance import CONVENTIONS, config_hash, history_line
    from .store import location

    paths, ids, configs = [], [], []
    for st in stores:
        where = location(st)
        attrs = zarr.open_group(str(where), mode="r", zarr_format=3).attrs.asdict()
        paths.append(str(where))
        ids.append(str(attrs.get(schema.ATTR_STORE_ID, "none")))
        configs.append(config_hash(attrs.get(schema.ATTR_CONFIG)))
    return {
        RESULT_ATTR: command,
        "Conventions": CONVENTIONS,
        "history": history_line(shlex.join(["ensemble-stats", *sys.argv[1:]])),
        "source_stores": "; ".join(paths),
        "source_store_ids": "; ".join(ids),
        "source_config_hashes": "; ".join(configs),
    }


def _client(scheduler: str | None, scheduler_file: str | None = None):
    """Join an existing Dask cluster if asked; otherwise the threaded scheduler does the work in-process."""
    from .errors import ValidationError

    if scheduler and scheduler_file:
        raise ValidationError("give --scheduler ADDRESS or --scheduler-file FILE, not both.")
    if not scheduler and not scheduler_file:
        return None
    from dask.distributed import Client

    if scheduler_file and not Path(scheduler_file).is_file():
        raise ValidationError(f"--scheduler-file {scheduler_file} does not exist; start the scheduler with it first.")
    if scheduler and (scheduler.endswith(".json") or Path(scheduler).is_file()):
        raise ValidationError(f"--scheduler {scheduler} is a file; pass it as --scheduler-file {scheduler}.")
    target = scheduler or scheduler_file
    if scheduler_file:
        import json

        try:
            scheduler = json.loads(Path(scheduler_file).read_text())["address"]
            if not isinstance(scheduler, str):
                raise TypeError
        except (OSError, ValueError, KeyError, TypeError):
            raise ValidationError(
                f"--scheduler-file {scheduler_file} is not a Dask scheduler file (JSON with an 'address'); pass "
                "the file written by `dask scheduler --scheduler-file FILE` or Client.write_scheduler_file."
            ) from None
    try:
        return Client(scheduler, timeout="10s")
    except (OSError, TimeoutError, ValueError, TypeError, KeyError) as e:
        raise ValidationError(
            f"cannot reach the Dask scheduler {target} within 10 s ({type(e).__name__}: {str(e).splitlines()[0][:200]}); "
            "check the address (tcp://HOST:PORT) or the scheduler file, and that the scheduler is running."
        ) from None


@contextlib.contextmanager
def _reading(stores):
    """Turn errors raised while reading stores into one corruption error naming the damaged files.

    A checksum failure deep in Dask is explained by verification; anything it does not explain is raised as it was.
    """
    try:
        yield
    except EnsembleStatsError:
        raise
    except Exception as e:
        from .store import corruption_error

        for st in stores:
            err = corruption_error(st, e)
            if err.problems and not str(err.problems[0]).startswith("reading failed"):
                raise err from None
        raise


def _echo_json(obj) -> None:
    """One JSON object on stdout (NaN as null, numpy scalars as numbers), for scripts."""
    import json
    import math

    def clean(v):
        if isinstance(v, dict):
            return {str(k): clean(x) for k, x in v.items()}
        if isinstance(v, list | tuple):
            return [clean(x) for x in v]
        if hasattr(v, "item"):
            v = v.item()
        return None if isinstance(v, float) and not math.isfinite(v) else v

    click.echo(json.dumps(clean(obj)))


def _rows(res, names) -> list[dict]:
    """Return the records of ``names`` over every coordinate combination of a small result (for --json)."""
    frame = res[list(names)].to_dataframe().reset_index()
    return [{k: v for k, v in row.items() if k in (*res.dims, *names)} for row in frame.to_dict("records")]


def _table_over_extra(res, ds, echo=True):
    """Results for the printed table: extra sweep dims (e.g. data_seed) averaged, with a note saying so."""
    extra = [d for d in ds.attrs.get("extra_dims", ()) if d in res.dims]
    if extra:
        if echo:
            click.echo(f"(table averaged over {', '.join(extra)}; the written result keeps them)")
        return res.mean(extra)
    return res


@main.command()
@click.argument("store", nargs=-1, required=True, type=click.Path())
@click.option("--out", required=True, type=click.Path(), help="Result path (.zarr or .nc).")
@click.option("--quantity", type=click.Choice(["mean", "variance"]), default="variance", show_default=True)
@click.option(
    "--terms", default="theory", show_default=True, help="'theory', 'leading', 'free' or comma-separated exponents."
)
@click.option(
    "--readout",
    type=click.Choice(["symmetric", "skewed"]),
    default=None,
    help="Readout law that sets the theory's exponents (default: from the store's config; docs/theory.md §1.4).",
)
@click.option("--width-min", type=int, default=None, help="Use only widths N >= this.")
@click.option("--scheduler", default=None, help="Address of an existing Dask scheduler.")
@click.option("--scheduler-file", type=click.Path(), default=None, help="Scheduler file of an existing cluster.")
@click.option(
    "--json", "as_json", is_flag=True, help="Print one JSON object (cells fitted, the rate per gamma and time)."
)
def fit(store, out, quantity, terms, readout, width_min, scheduler, scheduler_file, as_json):
    """Fit the asymptotic expansion in N pointwise; for the variance also the pooled log-log rate.

    Prints the fit's table per gamma at the last time (exponents, median coefficients, cells fitted) and, for
    ``--quantity variance``, the rate of the variance beside the theory's 1 - 2 gamma.
    """
    from ._assess import expansion_table, rate_table
    from ._fit import fit_expansion, fit_rate
    from ._select import time_units
    from .errors import ValidationError
    from .store import open_ensemble

    _check_out(out, store, "fit")
    if terms not in ("theory", "leading", "free"):
        try:
            terms = [float(t) for t in terms.split(",")]
        except ValueError:
            from .errors import FitError

            raise FitError(
                f"--terms {terms!r}: use 'theory', 'leading', 'free' or comma-separated numbers like 0,0.25."
            ) from None
    client = _client(scheduler, scheduler_file)
    try:
        with _reading(store):
            ds = open_ensemble(list(store))
            res = fit_expansion(ds, quantity=quantity, terms=terms, width_min=width_min, readout=readout).compute()
            rate = None
            if quantity == "variance":
                try:  # the rate compares widths at one scaled time; epoch- and step-indexed stores are selected
                    at = "record" if time_units(ds) == "scaled" else "common"
                    rate = fit_rate(ds, quantity="variance", width_min=width_min, at=at).compute()
                except ValidationError:
                    if not as_json:
                        click.echo(
                            "(the widths share no scaled time t = k / N: the rate compares them record by record)"
                        )
                    rate = fit_rate(ds, quantity="variance", width_min=width_min, at="record").compute()
        ok = int((res["status"] == 0).sum())
        if ok == 0:
            import numpy as np

            from ._np_fit import STATUS
            from .errors import FitError

            codes, counts = np.unique(res["status"].values, return_counts=True)
            why = ", ".join(f"{STATUS.get(int(c), c)}: {n}" for c, n in zip(codes, counts, strict=True))
            hint = {
                "no_residual_dof": f"{ds.sizes['width']} widths determine the terms (and a free exponent) exactly, "
                "leaving no residual to scale the standard errors: add a width or use fewer terms",
                "too_few_widths": "the cells have fewer usable widths than terms: add widths or use fewer terms",
            }.get(STATUS.get(int(codes[np.argmax(counts)]), ""), "check the widths and terms")
            raise FitError(
                f"fit_expansion({quantity}, terms={terms}) fitted none of {res['status'].size} cells ({why}): "
                f"{hint}. Nothing was written to {out}."
            )
        _write(res, out, store, "fit")
        if as_json:
            summary = {
                "out": str(out),
                "quantity": quantity,
                "terms": terms,
                "readout_law": res.attrs["readout_law"],
                "readout_law_source": res.attrs["readout_law_source"],
                "cells": int(res["status"].size),
                "cells_fitted": ok,
            }
            if rate is not None:
                summary["rate"] = _rows(rate, ["slope", "slope_lo", "slope_hi", "theory", "n_widths", "n_seeds"])
            _echo_json(summary)
            return
        click.echo(
            f"fit_expansion({quantity}, terms={terms}, readout law {res.attrs['readout_law']} from "
            f"{res.attrs['readout_law_source']}): {ok} of {res['status'].size} cells fitted -> {out}"
        )
        click.echo(expansion_table(_table_over_extra(res, ds)))
        if rate is not None:
            click.echo(rate_table(_table_over_extra(rate, ds, echo=False)))
    finally:
        if client is not None:
            client.close()


@main.command()
@click.argument("store", nargs=-1, required=True, type=click.Path())
@click.option("--out", required=True, type=click.Path(), help="Result path (.zarr or .nc).")
@click.option("--scheduler", default=None, help="Address of an existing Dask scheduler.")
@click.option("--scheduler-file", type=click.Path(), default=None, help="Scheduler file of an existing cluster.")
@click.option(
    "--json", "as_json", is_flag=True, help="Print one JSON object (the last time's rows per gamma and width)."
)
def decompose(store, out, scheduler, scheduler_file, as_json):
    """Bias^2 / variance / MSE against the target per (gamma, width, time), with seed-jackknife CIs."""
    from ._stats import bias_variance
    from .store import open_ensemble

    _check_out(out, store, "decompose")
    client = _client(scheduler, scheduler_file)
    try:
        with _reading(store):
            ds = open_ensemble(list(store))
            res = bias_variance(ds).compute()
        _write(res, out, store, "decompose")
        last = _table_over_extra(res.isel(time=-1), ds, echo=not as_json)
        if as_json:
            names = ["mse", "bias2", "variance", "variance_lo", "variance_hi", "n_seeds"]
            _echo_json({"out": str(out), "time": float(last.time), "rows": _rows(last, names)})
            return
        click.echo(f"bias-variance decomposition -> {out}; at the last time (t = {float(last.time):g}):")
        click.echo(f"{'gamma':>7} {'width':>7} {'mse':>10} {'bias2':>10} {'variance':>10} {'seeds':>6}")
        for g in last["gamma"].values:
            for w in last["width"].values:
                r = last.sel(gamma=g, width=w)
                click.echo(
                    f"{g:>7.3f} {int(w):>7d} {float(r.mse):>10.4g} {float(r.bias2):>10.4g} {float(r.variance):>10.4g} {int(r.n_seeds):>6d}"
                )
    finally:
        if client is not None:
            client.close()


if __name__ == "__main__":  # pragma: no cover
    main()

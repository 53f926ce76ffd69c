"""The ``ensemble-stats`` command line."""

from __future__ import annotations

import sys
import traceback

import click

from .errors import EnsembleStatsError


class _Group(click.Group):
    """Turns toolkit errors into one line on stderr and a non-zero exit (traceback only with --debug)."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except (EnsembleStatsError, FileNotFoundError) as e:
            if ctx.obj and ctx.obj.get("debug"):
                traceback.print_exc()
            msg = str(e).replace("\n", " ")
            click.echo(f"error: {msg}", err=True)
            sys.exit(2)


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
@click.option("--verify", is_flag=True, help="Read every chunk; report corrupt, missing and stray partial files.")
@click.option("--clean", is_flag=True, help="With --verify, remove stray partial files after reporting them.")
def info(store, verify, clean):
    """Dims, completeness per (gamma, width) cell, diverged runs."""
    from ._info import format_info
    from ._open import open_ensemble
    from ._verify import verify_store

    problems = verify_store(store, clean=clean) if verify else []
    click.echo(format_info(open_ensemble(store)))
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
@click.option("--workers", type=int, default=None, help="Worker processes of the local Dask cluster (default 2).")
@click.option("--scheduler", default=None, help="Address of an existing Dask scheduler to join instead.")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default=None, help="Override the config's device.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
def run(config, store, workers, scheduler, device, no_progress):
    """Run or resume the sweep described by CONFIG (TOML) into STORE."""
    from collectors._sweep import run_sweep  # lazy: only run/demo need torch

    if workers and scheduler:
        from .errors import ValidationError

        raise ValidationError("give either --workers (a local cluster) or --scheduler (an existing one), not both.")
    with _terminate_cleanly():
        client = _client(scheduler)
        try:
            rep = run_sweep(config, store, client, workers=workers, device=device, progress=not no_progress)
        finally:
            if client is not None:
                client.close()
    click.echo(
        f"sweep complete: {rep.cells} cells ({rep.skipped} skipped as complete, {rep.trained} trained), "
        f"{rep.records} records, {len(rep.diverged)} diverged runs, {rep.seconds:.1f} s -> {rep.store}"
    )


@main.command()
@click.option("--out", type=click.Path(), default="demo-out", show_default=True, help="Output directory.")
@click.option("--workers", type=int, default=2, show_default=True)
@click.option("--no-progress", is_flag=True)
def demo(out, workers, no_progress):
    """The main job: a small real sweep (teacher task, 5 gammas x 5 widths x 64 seeds), fit and decompose."""
    from collectors._demo import run_demo

    with _terminate_cleanly():
        run_demo(out, workers=workers, progress=not no_progress, echo=click.echo)


@main.command("report")
@click.argument("store", nargs=-1, required=True, type=click.Path())
@click.option("--out", required=True, type=click.Path(), help="Directory for the figures and index.html.")
def report_cmd(store, out):
    """Figures (PNG) and a self-contained index.html for STORE."""
    from ._open import open_ensemble
    from ._report import report

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


def _check_out(out: str) -> None:
    from .errors import ValidationError

    if not out.endswith((".zarr", ".nc")):
        raise ValidationError(f"--out {out}: use a path ending in .zarr or .nc.")


def _write(ds, out: str) -> None:
    """Write a result Dataset as .zarr or .nc by extension."""
    if out.endswith(".zarr"):
        ds.to_zarr(out, mode="w", consolidated=False)
    else:
        ds.to_netcdf(out)


def _client(scheduler: str | None):
    """Join an existing Dask cluster if asked; otherwise the threaded scheduler does the work in-process."""
    if not scheduler:
        return None
    from dask.distributed import Client

    return Client(scheduler)


@main.command()
@click.argument("store", nargs=-1, required=True, type=click.Path())
@click.option("--out", required=True, type=click.Path(), help="Result path (.zarr or .nc).")
@click.option("--quantity", type=click.Choice(["mean", "variance"]), default="variance", show_default=True)
@click.option("--terms", default="theory", show_default=True, help="'theory', 'free' or comma-separated exponents.")
@click.option("--width-min", type=int, default=None, help="Use only widths N >= this.")
@click.option("--scheduler", default=None, help="Address of an existing Dask scheduler.")
def fit(store, out, quantity, terms, width_min, scheduler):
    """Fit the asymptotic expansion in N pointwise, and the pooled log-log rate."""
    from ._fit import fit_expansion, fit_rate
    from ._open import open_ensemble

    _check_out(out)
    if terms not in ("theory", "free"):
        try:
            terms = [float(t) for t in terms.split(",")]
        except ValueError:
            from .errors import FitError

            raise FitError(f"--terms {terms!r}: use 'theory', 'free' or comma-separated numbers like 0,0.25.") from None
    client = _client(scheduler)
    try:
        ds = open_ensemble(list(store))
        res = fit_expansion(ds, quantity=quantity, terms=terms, width_min=width_min)
        _write(res, out)
        rate = fit_rate(ds, quantity="variance", width_min=width_min).compute()
        ok = int((res["status"] == 0).sum())
        click.echo(f"fit_expansion({quantity}, terms={terms}): {ok} of {res['status'].size} cells fitted -> {out}")
        click.echo("variance rate, pooled over the grid (slope of log Var vs log N) at the last time:")
        last = rate.isel({"time": -1}) if "time" in rate.dims else rate
        click.echo(f"{'gamma':>7} {'slope':>8} {'95% CI':>18} {'theory':>7}")
        for g in last["gamma"].values:
            r = last.sel(gamma=g)
            click.echo(
                f"{g:>7.3f} {float(r.slope):>8.3f}   [{float(r.slope_lo):6.3f}, {float(r.slope_hi):6.3f}] {float(r.theory):>7.3f}"
            )
    finally:
        if client is not None:
            client.close()


@main.command()
@click.argument("store", nargs=-1, required=True, type=click.Path())
@click.option("--out", required=True, type=click.Path(), help="Result path (.zarr or .nc).")
@click.option("--scheduler", default=None, help="Address of an existing Dask scheduler.")
def decompose(store, out, scheduler):
    """Bias^2 / variance / MSE against the target per (gamma, width, time), with seed-jackknife CIs."""
    from ._open import open_ensemble
    from ._stats import bias_variance

    _check_out(out)
    client = _client(scheduler)
    try:
        res = bias_variance(open_ensemble(list(store)))
        _write(res, out)
        last = res.isel(time=-1).compute()
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

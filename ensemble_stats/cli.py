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


if __name__ == "__main__":  # pragma: no cover
    main()

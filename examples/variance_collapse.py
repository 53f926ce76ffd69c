"""The parameter-free variance collapse: N^(2 gamma - 1) * Var / Var K_t across gamma and N (docs/theory.md §1.6, 9.3).

Trains the circle task (one hidden tanh layer, full-batch GD, theory init) for gamma in {0.625, 0.75, 0.875}
and N in {128, 256, 512}, 96 seeds, then plots the ratio with its confidence interval against t (``ensemble_stats.plot.collapse``).
Run: python examples/variance_collapse.py --out demo-out   (about a minute on 2 cores)
"""

import argparse
from pathlib import Path

import ensemble_stats as es
from collectors import EnsembleStore, TrainConfig, teacher, train_block
from ensemble_stats import plot


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    data = teacher()
    gammas, widths, seeds = [0.625, 0.75, 0.875], [128, 256, 512], list(range(96))
    times = [0.0, 0.25, 0.5, 0.75, 1.0]
    store = EnsembleStore.create(
        out / "collapse.zarr",
        data.grid,
        gammas=gammas,
        widths=widths,
        seeds=seeds,
        times=times,
        seed_chunk=96,
        train=(data.x_train, data.y_train),
    )
    for w in widths:
        train_block(store, data, width=w, gammas=gammas, seeds=seeds, config=TrainConfig())
    r = es.compare_to_theory(es.open_ensemble(store.path)).compute()  # the kernel limit from the stored training set
    plot.collapse(r).savefig(out / "variance_collapse.png", dpi=120)
    print(r.ratio.sel(time=1.0).round(3).to_pandas())
    print(f"figure: {out / 'variance_collapse.png'}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=Path("demo-out"))
    main(ap.parse_args().out)

"""Assessment: does the theory hold here? Comparisons with intervals, verdicts, and the tables that report them.

Every comparison returns an estimate with its interval; a verdict is a count of cases whose interval decides a
claim (:class:`Verdict`). Seed-paired comparisons use common random numbers: the trainer gives every gamma of a
sweep the same initial weights for one seed.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import xarray as xr
from scipy import stats

from . import schema
from ._stats import _check_ci, seed_mean
from ._ufunc import apply_ufunc
from .errors import ValidationError

__all__ = [
    "OUTCOMES",
    "Verdict",
    "anova_effects",
    "covers",
    "format_table",
    "interval",
    "paired_difference",
    "plateau",
    "rate_table",
    "ratio_interval",
    "seed_bootstrap",
    "trend",
    "verdict",
]

OUTCOMES = ("holds", "does not hold", "inconclusive", "true by construction", "not tested")
"""The verdict vocabulary: every case agrees, no case agrees, or mixed / undecided cases / none; and for claims
with no case that is evidence: every case holds by construction (at t = 0 by the init law, or by common random
numbers), or the claim's premise is not reached (e.g. the nets did not train as far as the claim is about)."""


@dataclass(frozen=True)
class Verdict:
    """The outcome of a claim tested in several cases: ``holds`` only if every case agrees.

    Cases true by construction and cases whose premise is not reached are reported beside the others and never
    counted as evidence: the outcome is decided by the rest.

    Attributes
    ----------
    agree, disagree, undecided : number of cases for, against, and that could not be decided
    by_construction : cases that hold by construction (reported, not evidence)
    not_tested : cases whose premise is not reached (reported, not evidence)
    """

    agree: int
    disagree: int
    undecided: int = 0
    by_construction: int = 0
    not_tested: int = 0

    @property
    def cases(self) -> int:
        """The cases that are evidence: agreeing, disagreeing and undecided."""
        return self.agree + self.disagree + self.undecided

    @property
    def outcome(self) -> str:
        """One of :data:`OUTCOMES`.

        Over the cases that are evidence: ``"holds"`` if all agree, ``"does not hold"`` if none does, else
        ``"inconclusive"`` (mixed or any undecided). Without such cases: ``"not tested"`` if any premise was not
        reached, ``"true by construction"`` if every case holds by construction, else ``"inconclusive"``.
        """
        if self.cases == 0:
            if self.not_tested:
                return "not tested"
            return "true by construction" if self.by_construction else "inconclusive"
        if self.undecided:
            return "inconclusive"
        if self.disagree == 0:
            return "holds"
        return "does not hold" if self.agree == 0 else "inconclusive"

    def __str__(self) -> str:
        aside = "".join(
            f"; {n} {what}"
            for n, what in ((self.by_construction, "true by construction"), (self.not_tested, "not tested"))
            if n
        )
        if self.cases == 0 and aside:
            return f"{self.outcome} ({aside[2:]})"
        return f"{self.outcome} ({self.agree} of {self.cases} cases{aside})"

    def markdown(self) -> str:
        """Return the outcome in bold, as the studies' documents write it."""
        return f"**{self.outcome}**"


def _as_cases(cases) -> list:
    if isinstance(cases, xr.DataArray):
        return cases.values.ravel().tolist()
    if cases is None or isinstance(cases, bool | np.bool_):
        return [cases]
    return list(cases)


def verdict(
    cases: Iterable[bool | None] | xr.DataArray | bool | None,
    *,
    by_construction: Iterable[bool] | xr.DataArray | None = None,
    not_tested: Iterable[bool] | xr.DataArray | None = None,
) -> Verdict:
    """Count cases into a :class:`Verdict`: ``True`` agrees, ``False`` disagrees, ``None`` / NaN is undecided.

    A boolean DataArray (e.g. from :func:`covers`) counts every element; a single bool or None is one case.

    Parameters
    ----------
    cases : booleans (``None`` for an undecided case), a boolean or float DataArray (NaN undecided), or one case
    by_construction : per case, whether it holds by construction (at t = 0 by the init law, or by common random
        numbers): such a case is counted apart and is no evidence; a case that fails is counted as failing
    not_tested : per case, whether the claim's premise is not reached: counted apart, no evidence

    Returns
    -------
    Verdict : the counts of agreeing, disagreeing and undecided cases and the outcome they support

    Examples
    --------
    >>> import ensemble_stats as es
    >>> v = es.verdict([True, True, False, None])
    >>> v
    Verdict(agree=2, disagree=1, undecided=1, by_construction=0, not_tested=0)
    >>> print(v)
    inconclusive (2 of 4 cases)
    >>> print(es.verdict([True, True, True], by_construction=[True, True, False]))
    holds (1 of 1 cases; 2 true by construction)
    >>> print(es.verdict([False, None], not_tested=[True, True]))
    not tested (2 not tested)
    """
    cases = _as_cases(cases)
    trivial = _as_cases(by_construction) if by_construction is not None else [False] * len(cases)
    untested = _as_cases(not_tested) if not_tested is not None else [False] * len(cases)
    if not len(trivial) == len(untested) == len(cases):
        raise ValidationError(
            f"verdict: {len(cases)} cases but {len(trivial)} by_construction and {len(untested)} not_tested flags; "
            "give one flag per case."
        )
    agree = disagree = undecided = n_trivial = n_untested = 0
    for c, t, u in zip(cases, trivial, untested, strict=True):
        undecided_case = c is None or (isinstance(c, float) and np.isnan(c))
        if bool(u):
            n_untested += 1
        elif bool(t) and not undecided_case and bool(c):
            n_trivial += 1
        elif undecided_case:
            undecided += 1
        elif bool(c):
            agree += 1
        else:
            disagree += 1
    return Verdict(agree, disagree, undecided, n_trivial, n_untested)


def covers(
    res: xr.Dataset,
    value: float | xr.DataArray | str = "theory",
    *,
    var: str = "slope",
    nan: str = "false",
    margin: float | None = None,
) -> xr.DataArray:
    """Whether ``value`` lies in the interval ``[var_lo, var_hi]`` of a result.

    With ``margin`` the question becomes equivalence (two one-sided tests at the interval's level): True where
    the whole interval lies within ``value +- margin``, False where it lies wholly outside that band (the
    difference exceeds the margin), undecided where it straddles a band edge: the interval is too wide to tell.

    Parameters
    ----------
    res : a result with ``{var}_lo`` and ``{var}_hi`` (e.g. :func:`fit_rate`'s ``slope``)
    value : a number, a DataArray, or the name of a variable of ``res`` (default ``"theory"``)
    var : the estimate whose interval is read
    nan : ``"false"`` (default): a case without an interval (NaN bounds or value) is False, and so is an
        undecided equivalence; ``"undecided"``: those cases are NaN, which :func:`verdict` counts as undecided
        (the result is then float: 1.0, 0.0 or NaN)
    margin : the equivalence margin (>= 0, in the units of ``var``), or None for plain coverage

    Returns
    -------
    DataArray over the broadcast dims of the interval and ``value``: bool, or float with ``nan="undecided"``

    Examples
    --------
    >>> import ensemble_stats as es
    >>> from ensemble_stats.testing import synthetic_ensemble
    >>> ds = synthetic_ensemble(gammas=[0.75], widths=[64, 256, 1024], n_seeds=8, seed=0)
    >>> rate = es.fit_rate(ds, quantity="variance")
    >>> es.covers(rate, -0.5).dims
    ('gamma', 'time')
    >>> bool(es.covers(rate, 0.0).any())  # a width-independent variance is refuted
    False
    >>> es.covers(rate, -0.5, margin=10.0).values.tolist()  # equivalent within a (very) wide margin
    [[True, True, True]]
    >>> es.covers(rate.where(rate.time > 0), nan="undecided").values.tolist()  # no interval at t = 0: undecided
    [[nan, 1.0, 1.0]]
    """
    if nan not in ("false", "undecided"):
        raise ValidationError(f"covers(nan={nan!r}): use 'false' or 'undecided'.")
    if margin is not None and not (np.isfinite(margin) and margin >= 0):
        raise ValidationError(f"covers(margin={margin!r}): give a finite margin >= 0, or None for plain coverage.")
    v = res[value] if isinstance(value, str) else value
    lo, hi = res[f"{var}_lo"], res[f"{var}_hi"]
    known = lo.notnull() & hi.notnull() & (v.notnull() if isinstance(v, xr.DataArray) else bool(np.isfinite(v)))
    if margin is None:
        yes, decided = (lo <= v) & (v <= hi), known
    else:
        yes = (v - margin <= lo) & (hi <= v + margin)
        decided = known & (yes | (hi < v - margin) | (v + margin < lo))
    name = value if isinstance(value, str) else "value"
    what = f"inside the interval of {var}" if margin is None else f"within {margin:g} of the interval of {var}"
    out = yes.where(decided) if nan == "undecided" else yes & decided
    out.attrs["long_name"] = f"{name} {what}"
    return out


def paired_difference(a: xr.DataArray, b: xr.DataArray, *, ci: float = 0.95) -> xr.Dataset:
    """Seed mean of ``a - b`` over paired seeds (common random numbers), with its Student-t interval.

    ``a`` and ``b`` must carry the same ``seed`` coordinate: seed i of one is paired with seed i of the other.
    Pairing removes the noise the two share (the initial weights, when ``a`` and ``b`` are two gammas of one
    sweep), so the interval is narrower than that of two independent means.

    Parameters
    ----------
    a, b : DataArrays with a common ``seed`` dim and coordinate (and any other dims, broadcast)
    ci : level of the interval

    Returns
    -------
    :func:`seed_mean`'s Dataset (``mean``, ``stderr``, ``mean_lo``, ``mean_hi``, ``n_seeds``, ``ci_status``)

    Examples
    --------
    >>> import numpy as np, xarray as xr
    >>> import ensemble_stats as es
    >>> rng = np.random.default_rng(0)
    >>> a = xr.DataArray(rng.normal(size=16) + 1.0, dims="seed")
    >>> d = es.paired_difference(a, a - 1.0)  # the same seeds: the difference is exactly 1
    >>> float(d["mean"]), float(d.stderr)
    (1.0, 0.0)
    """
    for name, da in (("a", a), ("b", b)):
        if schema.SEED not in da.dims:
            raise ValidationError(f"paired_difference: {name} has dims {list(da.dims)}; both need a 'seed' dim.")
    if not np.array_equal(a[schema.SEED].values, b[schema.SEED].values):
        raise ValidationError(
            "paired_difference: a and b have different seed coordinates; a pairing needs the same seeds in the "
            "same order (select them with .sel(seed=...))."
        )
    a, b = xr.align(a, b, join="exact", exclude=[d for d in set(a.dims) ^ set(b.dims)])
    diff = a - b
    diff.attrs = {"long_name": f"paired difference of {a.attrs.get('long_name', a.name)}"}
    return seed_mean(diff, ci=ci)


def seed_bootstrap(
    stat: Callable,
    data,
    *,
    dim: str = schema.SEED,
    n_boot: int = 200,
    ci: float = 0.95,
    seed: int = 0,
) -> xr.Dataset:
    """Percentile interval of any statistic by resampling whole seeds with replacement.

    Each resample draws as many seeds as there are, with replacement; a seed drawn twice enters as two seeds
    (relabelled 0, 1, ...), so a statistic that uses seed as a factor (e.g. :func:`anova_effects` with a seed
    block) sees independent units. Seeds are the independent units of an ensemble: this interval makes no
    assumption about what happens within a seed (grid points, widths, gammas sharing initial weights).

    Parameters
    ----------
    stat : ``stat(data) -> float or array`` (an array keeps its shape: one interval per element)
    data : a Dataset or DataArray with ``dim``, or a pandas DataFrame with a ``dim`` column
    dim : the unit of resampling
    n_boot : the number of resamples
    ci : level of the percentile interval
    seed : the resampling generator's seed (the interval is reproducible)

    Returns
    -------
    Dataset with ``estimate`` (``stat`` on ``data``), ``estimate_lo``, ``estimate_hi`` and ``replicates``
    (``stat`` on each resample, dim ``resample`` first)

    Examples
    --------
    >>> import numpy as np, xarray as xr
    >>> import ensemble_stats as es
    >>> acc = xr.DataArray(np.random.default_rng(0).normal(0.9, 0.01, 16), dims="seed")
    >>> b = es.seed_bootstrap(lambda d: float(d.mean()), acc)
    >>> bool(b.estimate_lo < 0.9 < b.estimate_hi), b.sizes["resample"]
    (True, 200)
    """
    if not 0 < ci < 1:
        raise ValidationError(f"seed_bootstrap: ci={ci} must lie strictly between 0 and 1, e.g. 0.95.")
    if int(n_boot) < 2:
        raise ValidationError(f"seed_bootstrap: n_boot={n_boot}; give at least 2 resamples (hundreds for 95%).")
    resample, n = _resampler(data, dim)
    if n < 2:
        raise ValidationError(f"seed_bootstrap: {n} {dim}(s) in the data; resampling needs at least 2.")
    rng = np.random.default_rng(seed)
    reps = np.stack([np.asarray(stat(resample(rng.choice(n, size=n, replace=True))), dtype=np.float64)
                     for _ in range(int(n_boot))])  # fmt: skip
    q = round(100 * (1 - ci) / 2, 10)  # 2.5 exactly for ci = 0.95
    lo, hi = np.percentile(reps, [q, 100 - q], axis=0)
    dims = [f"dim_{k}" for k in range(reps.ndim - 1)]
    out = xr.Dataset(
        {
            "estimate": (dims, np.asarray(stat(data), dtype=np.float64)),
            "estimate_lo": (dims, lo),
            "estimate_hi": (dims, hi),
            "replicates": (["resample", *dims], reps),
        },
        attrs={"ci": ci, "n_boot": int(n_boot), "method": f"percentile bootstrap over whole {dim}s"},
    )
    for name, what in (
        ("estimate", "the statistic on the data"),
        ("estimate_lo", f"lower {ci:.0%} seed-bootstrap bound of the statistic"),
        ("estimate_hi", f"upper {ci:.0%} seed-bootstrap bound of the statistic"),
        ("replicates", f"the statistic on each resample of the {dim}s"),
    ):
        out[name].attrs["long_name"] = what
    return out


def _resampler(data, dim: str):
    """``resample(indices)`` building the data of the seeds at those positions (relabelled 0..n-1), and n."""
    if isinstance(data, xr.Dataset | xr.DataArray):
        if dim not in data.dims:
            raise ValidationError(f"seed_bootstrap: the data has dims {list(data.dims)}; it needs {dim!r}.")
        return (lambda pick: data.isel({dim: pick}).assign_coords({dim: np.arange(len(pick))})), data.sizes[dim]
    columns = getattr(data, "columns", None)
    if columns is None or dim not in columns:
        raise ValidationError(
            f"seed_bootstrap: expected an xarray object with a {dim!r} dim or a DataFrame with a {dim!r} column, "
            f"got {type(data).__name__}."
        )
    import pandas as pd

    labels = data[dim].unique()
    rows = {s: data[data[dim] == s] for s in labels}
    return (lambda pick: pd.concat([rows[labels[j]].assign(**{dim: i}) for i, j in enumerate(pick)])), len(labels)


def ratio_interval(num: xr.Dataset, den: xr.Dataset, *, var: str = "variance", ci: float = 0.95) -> xr.Dataset:
    """Return the ratio of two independent positive estimates and its interval, on the log scale.

    Each input's ``{var}_lo`` / ``{var}_hi`` interval (at level ``ci``) gives its log-scale standard error
    ``log(hi / lo) / (2 z)``; the two are added in quadrature (independent ensembles).

    Parameters
    ----------
    num, den : results with ``{var}``, ``{var}_lo`` and ``{var}_hi`` (e.g. two :func:`bias_variance` selections)
    var : the estimate's name
    ci : the level of the inputs' intervals and of the ratio's

    Returns
    -------
    Dataset with ``ratio``, ``ratio_lo``, ``ratio_hi`` over the broadcast dims of the inputs

    Examples
    --------
    >>> import ensemble_stats as es
    >>> from ensemble_stats.testing import synthetic_ensemble
    >>> ds = synthetic_ensemble(gammas=[0.75], widths=[64, 256, 1024], n_seeds=8, seed=0)
    >>> bv = es.bias_variance(ds).sel(gamma=0.75, time=1.0)
    >>> r = es.ratio_interval(bv.sel(width=64), bv.sel(width=1024))  # Var(N=64) / Var(N=1024), theory 4
    >>> bool(r.ratio_lo < 4 < r.ratio_hi)
    True
    """
    _check_ci(ci, "auto")
    z = stats.norm.ppf(0.5 + ci / 2)
    with np.errstate(invalid="ignore", divide="ignore"):
        se_n = np.log(num[f"{var}_hi"] / num[f"{var}_lo"]) / (2 * z)
        se_d = np.log(den[f"{var}_hi"] / den[f"{var}_lo"]) / (2 * z)
        ratio = num[var] / den[var]
        se = np.hypot(se_n, se_d)
    out = xr.Dataset({"ratio": ratio, "ratio_lo": ratio * np.exp(-z * se), "ratio_hi": ratio * np.exp(z * se)})
    out["ratio"].attrs["long_name"] = f"ratio of the {var}s"
    schema.label_bounds(out, "ratio", ci, "the ratio (log scale)")
    out.attrs.update({"ci": ci, "method": "log-scale standard errors from each interval, added in quadrature"})
    return out


def trend(a: xr.DataArray, dim: str = schema.GAMMA, *, ci: float = 0.95) -> xr.Dataset:
    """Test whether ``a`` rises along ``dim``, by paired-over-seeds differences.

    The differences are taken between neighbours along ``dim`` and from the first to the last value.

    Parameters
    ----------
    a : DataArray with ``dim`` and ``seed`` (e.g. the final test accuracy, dims gamma, seed, ...)
    dim : the ordered dim (default ``gamma``)

    Returns
    -------
    Dataset over the other dims with ``rise`` / ``rise_lo`` / ``rise_hi`` (last minus first along ``dim``,
    paired), ``drops`` (neighbour steps whose interval lies below 0), ``increasing`` (no significant drop and a
    significant rise), ``spearman`` (rank correlation of the seed means with ``dim``'s values).

    Examples
    --------
    >>> import ensemble_stats as es
    >>> from ensemble_stats.testing import synthetic_ensemble
    >>> ds = synthetic_ensemble(gammas=[0.75], widths=[64, 256, 1024], n_seeds=8, seed=0)
    >>> acc = ds.prediction.isel(time=-1, point=0, output=0).squeeze("gamma", drop=True)
    >>> t = es.trend(acc, "width")  # the seed-level outputs do not rise with N here
    >>> bool(t.increasing), bool(t.rise_lo < 0 < t.rise_hi)
    (False, True)
    """
    if dim not in a.dims or a.sizes[dim] < 2:
        raise ValidationError(f"trend: '{a.name}' needs at least 2 values along '{dim}', has dims {dict(a.sizes)}.")
    first, last = a.isel({dim: 0}, drop=True), a.isel({dim: -1}, drop=True)
    rise = paired_difference(last, first, ci=ci)
    steps = paired_difference(
        a.isel({dim: slice(1, None)}).drop_vars(dim), a.isel({dim: slice(None, -1)}).drop_vars(dim), ci=ci
    )
    drops = (steps["mean_hi"] < 0).sum(dim)
    means = a.mean(schema.SEED)
    rho = apply_ufunc(
        lambda m: _spearman(a[dim].values, m),
        means,
        input_core_dims=[[dim]],
        vectorize=True,
        dask="parallelized",
        output_dtypes=[np.float64],
    )
    out = xr.Dataset(
        {
            "rise": rise["mean"],
            "rise_lo": rise["mean_lo"],
            "rise_hi": rise["mean_hi"],
            "drops": drops,
            "increasing": (drops == 0) & (rise["mean_lo"] > 0),
            "spearman": rho,
        }
    )
    what = a.attrs.get("long_name", a.name)
    out["rise"].attrs["long_name"] = f"last minus first {dim} of {what}, paired over seeds"
    schema.label_bounds(out, "rise", ci, "the rise")
    out["drops"].attrs["long_name"] = f"neighbouring {dim} steps with a significant drop"
    out["increasing"].attrs["long_name"] = f"no significant drop and a significant rise along {dim}"
    out["spearman"].attrs["long_name"] = f"Spearman rank correlation of the seed means with {dim}"
    out.attrs.update({"ci": ci, "dim": dim, "method": "paired Student t over seeds"})
    return out


def plateau(
    a: xr.DataArray, dim: str = schema.TIME, *, tol: float = 0.01, window: float = 0.2, ci: float = 0.95
) -> xr.Dataset:
    """Find when ``a`` stopped changing, decided with intervals.

    The first ``dim`` value from which the seed mean stays within ``tol`` of its final value.

    At each recorded t, the change still to come ``a(end) - a(t)`` is paired over seeds (:func:`paired_difference`);
    t is *flat* when that difference's interval lies inside [-tol, tol]. The plateau starts at the first t from which
    every later record is flat, and counts as reached only if it lasts at least the last ``window`` fraction of the
    recorded span (a curve that is still moving at the end is flat only at its last record).

    Parameters
    ----------
    a : DataArray with ``dim`` and ``seed`` (e.g. the training accuracy, dims gamma, width, seed, time)
    dim : the ordered dim (default ``time``)
    tol : the change that still counts as flat, in the units of ``a`` (0.01: one point of accuracy)
    window : the fraction of the recorded span the plateau must cover, in [0, 1)

    Returns
    -------
    Dataset over the other dims: ``plateau_time`` (NaN where not reached), ``reached``, ``value`` (the seed mean at
    ``plateau_time``), ``gain`` / ``gain_lo`` / ``gain_hi`` (the change from ``plateau_time`` to the end, paired)

    Examples
    --------
    >>> import numpy as np, xarray as xr
    >>> import ensemble_stats as es
    >>> t = np.linspace(0, 10, 21)
    >>> rng = np.random.default_rng(0)
    >>> loss = xr.DataArray(np.exp(-t)[None, :] + 0.001 * rng.normal(size=(8, 21)), dims=("seed", "time"),
    ...                     coords={"time": t})
    >>> p = es.plateau(loss, "time", tol=0.05)
    >>> float(p.plateau_time), bool(p.reached)
    (3.5, True)
    """
    problems = []
    if dim not in a.dims or schema.SEED not in a.dims:
        problems.append(f"'{a.name}' has dims {list(a.dims)}; it needs '{dim}' and '{schema.SEED}'")
    if not (np.isfinite(tol) and tol > 0):
        problems.append(f"tol = {tol!r}: a positive change in the units of '{a.name}'")
    if not (0 <= window < 1):
        problems.append(f"window = {window!r}: a fraction of the recorded span in [0, 1)")
    if problems:
        raise ValidationError("plateau: " + "; ".join(problems) + ".")
    coord = a[dim].astype(np.float64)
    change = paired_difference(a.isel({dim: -1}, drop=True), a.drop_vars(dim).assign_coords({dim: coord}), ci=ci)
    # every seed changing by the same amount (an accuracy saturated at 1, the last record) has a zero standard
    # error and no Student-t interval: the interval is then the point itself
    exact = change["stderr"] == 0
    lo, hi = (xr.where(exact, change["mean"], change[k]) for k in ("mean_lo", "mean_hi"))
    flat = ((lo >= -tol) & (hi <= tol)).astype(np.int8)
    # flat from t onwards: a cumulative product taken from the end
    onwards = flat.isel({dim: slice(None, None, -1)}).cumprod(dim).isel({dim: slice(None, None, -1)}) > 0
    t0, t1 = float(coord[0]), float(coord[-1])
    first = coord.where(onwards).min(dim)
    reached = first <= t1 - window * (t1 - t0)
    at = coord == first

    def at_plateau(v: xr.DataArray) -> xr.DataArray:
        return v.where(at).max(dim).where(reached)

    out = xr.Dataset(
        {
            "plateau_time": first.where(reached),
            "reached": reached,
            "value": at_plateau(a.mean(schema.SEED).assign_coords({dim: coord})),
            "gain": at_plateau(change["mean"]),
            "gain_lo": at_plateau(lo),
            "gain_hi": at_plateau(hi),
        }
    )
    what = a.attrs.get("long_name") or a.name or "the variable"
    out["plateau_time"].attrs["long_name"] = f"first {dim} from which {what} stays within {tol:g} of its end value"
    out["reached"].attrs["long_name"] = f"the plateau covers at least the last {window:.0%} of the recorded {dim}s"
    out["value"].attrs["long_name"] = f"seed mean of {what} at the plateau"
    out["gain"].attrs["long_name"] = f"change of {what} from the plateau to the end, paired over seeds"
    schema.label_bounds(out, "gain", ci, "the gain")
    out.attrs.update({"ci": ci, "dim": dim, "tol": tol, "window": window, "method": "paired Student t over seeds"})
    return out


def _spearman(x, y) -> float:
    ok = np.isfinite(y)
    if ok.sum() < 2 or np.ptp(y[ok]) == 0:
        return np.nan
    return float(stats.spearmanr(x[ok], y[ok]).statistic)


# ------------------------------------------------------------------------------------------------ tables
def format_table(header: Sequence[str], rows: Sequence[Sequence], fmt: str = "text", caption: str = "") -> str:
    """Render a table as aligned ``"text"``, ``"markdown"`` or ``"html"`` (cells escaped).

    Parameters
    ----------
    header : column names
    rows : one sequence of cells per row (numbers are shown as given; format them first for fixed decimals)
    fmt : ``"text"`` (aligned columns), ``"markdown"`` or ``"html"``
    caption : a title line (text, markdown) or ``<caption>`` (html)

    Returns
    -------
    str

    Examples
    --------
    >>> import ensemble_stats as es
    >>> print(es.format_table(["gamma", "slope"], [[0.75, -0.5]]))
    gamma  slope
     0.75   -0.5
    >>> print(es.format_table(["gamma", "slope"], [[0.75, -0.5]], fmt="markdown"))
    | gamma | slope |
    |---|---|
    | 0.75 | -0.5 |
    """
    cells = [[str(c) for c in r] for r in rows]
    if fmt == "markdown":
        out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        return "\n".join(out + ["| " + " | ".join(r) + " |" for r in cells])
    if fmt == "html":
        cap = f"<caption>{html.escape(caption)}</caption>" if caption else ""
        head = "<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>"
        body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in cells)
        return f"<table>{cap}{head}{body}</table>"
    if fmt != "text":
        raise ValidationError(f"fmt={fmt!r}: use 'text', 'markdown' or 'html'.")
    widths = [max(len(str(h)), *(len(r[i]) for r in cells)) for i, h in enumerate(header)]
    lines = [caption] if caption else []
    lines.append("  ".join(str(h).rjust(w) for h, w in zip(header, widths, strict=True)))
    lines += ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(lines)


def interval(m, lo, hi, digits: int = 3) -> str:
    """``"m [lo, hi]"`` with ``digits`` decimals.

    Parameters
    ----------
    m, lo, hi : the estimate and its interval's bounds (floats, or 0-d arrays)
    digits : decimals shown

    Returns
    -------
    str

    Examples
    --------
    >>> import ensemble_stats as es
    >>> es.interval(0.5, 0.4, 0.6, 2)
    '0.50 [0.40, 0.60]'
    """
    return f"{float(m):.{digits}f} [{float(lo):.{digits}f}, {float(hi):.{digits}f}]"


def rate_table(rate: xr.Dataset, *, fit: xr.Dataset | None = None, fmt: str = "text", time: int = -1) -> str:
    """Return the table of fitted rates per gamma: slope, interval, theory, whether the interval covers it.

    Parameters
    ----------
    rate : :func:`fit_rate` result (dims gamma, [time]); extra dims must be reduced first
    fit : optional :func:`fit_expansion` result: adds the median leading coefficient and the cells fitted
    fmt : ``"text"``, ``"markdown"`` or ``"html"``
    time : index along ``time`` of the row shown (default the last)

    Examples
    --------
    >>> import ensemble_stats as es
    >>> from ensemble_stats.testing import synthetic_ensemble
    >>> ds = synthetic_ensemble(gammas=[0.75], widths=[64, 256, 1024], n_seeds=8, seed=0)
    >>> print(es.rate_table(es.fit_rate(ds, quantity="variance")).splitlines()[0])
    slope of log variance vs log N, pooled over point and output at t = 1
    """
    r = rate.isel({schema.TIME: time}) if schema.TIME in rate.dims else rate
    extra = [d for d in r.dims if d != schema.GAMMA]
    if extra:
        raise ValidationError(f"rate_table: reduce the dims {extra} first (e.g. .mean() or .sel()); one row per gamma.")
    level = float(rate.attrs.get("ci", 0.95))
    header = ["gamma", "slope", f"{level:.0%} CI", "theory", "inside"]
    if fit is not None:
        header += ["median leading coefficient", "cells fitted"]
    rows = []
    inside = covers(r)
    for g in r[schema.GAMMA].values:
        s = r.sel({schema.GAMMA: g})
        row = [
            f"{g:g}",
            f"{float(s.slope):.3f}",
            f"[{float(s.slope_lo):.3f}, {float(s.slope_hi):.3f}]",
            f"{float(s.theory):.3f}",
            "yes" if bool(inside.sel({schema.GAMMA: g})) else "no",
        ]
        if fit is not None:
            f = fit.sel({schema.GAMMA: g}).compute()
            row += [f"{float(f.coef.isel(term=0).median()):.4g}", f"{100 * float((f.status == 0).mean()):.0f}%"]
        rows.append(row)
    at = f" at t = {float(r[schema.TIME]):g}" if schema.TIME in r.coords else ""
    at += "".join(f", {d} = {float(r[d]):g}" for d in schema.SETTING_DIMS if d in r.coords and r[d].ndim == 0)
    what = rate.attrs.get("quantity", "variance")
    caption = f"slope of log {what} vs log N, pooled over {rate.attrs.get('pooled_over', 'the grid').replace(',', ' and ')}{at}"
    return format_table(header, rows, fmt, caption)


def expansion_table(fit: xr.Dataset, *, fmt: str = "text", time: int = -1) -> str:
    """Return the table of a pointwise expansion fit per gamma: each term's exponent and median coefficient.

    Parameters
    ----------
    fit : :func:`fit_expansion` result (dims gamma, [time], grid dims, term); extra sweep dims must be reduced
        first
    fmt : ``"text"``, ``"markdown"`` or ``"html"``
    time : index along ``time`` of the row shown (default the last)

    Returns
    -------
    str
        One row per gamma: the exponents p of the terms N^(-p), the median over the grid of each coefficient and
        of its |coef| / stderr, the cells fitted and the median chi^2/dof.

    Examples
    --------
    >>> import ensemble_stats as es
    >>> from ensemble_stats.testing import synthetic_ensemble
    >>> ds = synthetic_ensemble(gammas=[0.75], widths=[64, 128, 256, 1024], n_seeds=8, seed=0)
    >>> print(es.expansion_table(es.fit_expansion(ds, quantity="mean", terms=[0, 0.5])).splitlines()[0])
    fit of the mean: sum_k c_k N^(-p_k) per grid value at t = 1
    """
    f = (fit.isel({schema.TIME: time}) if schema.TIME in fit.dims else fit).compute()  # medians need the values
    grid = [d for d in f["status"].dims if d in (schema.POINT, schema.OUTPUT)]
    extra = [d for d in f["status"].dims if d not in (schema.GAMMA, *grid)]
    if extra:
        raise ValidationError(
            f"expansion_table: reduce the dims {extra} first (e.g. .mean() or .sel()); one row per gamma."
        )
    header = ["gamma", "exponents p", "median c_k", "median |c_k| / stderr", "cells fitted", "median chi2/dof"]
    rows = []
    for g in f[schema.GAMMA].values:
        s = f.sel({schema.GAMMA: g})
        ok = s["status"] == 0
        p = s["exponent"]
        p = p.median(grid) if any(d in p.dims for d in grid) else p
        on = np.isfinite(p.values)
        coef = s["coef"].where(ok).median(grid).values[on]
        z = (abs(s["coef"]) / s["stderr"]).where(ok).median(grid).values[on]
        rows.append(
            [
                f"{g:g}",
                ", ".join(f"{v:.3g}" for v in p.values[on]),
                ", ".join(f"{v:.4g}" for v in coef),
                ", ".join(f"{v:.3g}" for v in z),
                f"{int(ok.sum())} of {ok.size}",
                f"{float(s['chi2_dof'].where(ok).median()):.3g}",
            ]
        )
    at = f" at t = {float(f[schema.TIME]):g}" if schema.TIME in f.coords else ""
    caption = f"fit of the {fit.attrs.get('quantity', 'mean')}: sum_k c_k N^(-p_k) per grid value{at}"
    return format_table(header, rows, fmt, caption)


def anova_effects(frame, response: str, factors: Sequence[str]) -> dict[str, float]:
    """Partial eta^2 and p-value per factor from a type-II ANOVA (statsmodels), additive model.

    Parameters
    ----------
    frame : pandas DataFrame with one row per observation
    response : the column explained; factors : categorical columns (e.g. gamma_1, gamma_2, gamma_3, seed)

    Returns
    -------
    dict with ``factor`` -> partial eta^2 = SS_factor / (SS_factor + SS_residual) and ``p_factor`` -> p-value

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> import ensemble_stats as es
    >>> rng = np.random.default_rng(0)
    >>> frame = pd.DataFrame({"gamma": np.repeat([0.5, 1.0], 40), "seed": np.tile(np.arange(40), 2)})
    >>> frame["accuracy"] = 0.8 + 0.1 * (frame.gamma == 1.0) + 0.01 * rng.normal(size=80)
    >>> effects = es.anova_effects(frame, "accuracy", ["gamma"])
    >>> effects["gamma"] > 0.9, effects["p_gamma"] < 1e-6
    (True, True)
    """
    import statsmodels.formula.api as smf
    from statsmodels.stats.anova import anova_lm

    model = smf.ols(f"{response} ~ " + " + ".join(f"C({f})" for f in factors), data=frame).fit()
    table = anova_lm(model, typ=2)
    resid = table.loc["Residual", "sum_sq"]
    out = {}
    for f in factors:
        ss = table.loc[f"C({f})", "sum_sq"]
        out[f] = float(ss / (ss + resid))
        out[f"p_{f}"] = float(table.loc[f"C({f})", "PR(>F)"])
    return out

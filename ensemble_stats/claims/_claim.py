"""A claim tested on stores, and the one Markdown writer of the studies' documents."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import xarray as xr

from .._assess import Verdict, format_table


@dataclass(frozen=True)
class Claim:
    """A claim of a paper (or of the theory), decided on one or more stores.

    Attributes
    ----------
    label : how the document names it, e.g. ``"Verdict 2"``
    question : the claim as a question, e.g. ``"does the ratio collapse to 1 for every gamma?"``
    verdict : the outcome over the cases (:func:`ensemble_stats.verdict`); None for an observation that states no
        verdict (the question, if any, is then a bold head)
    summary : what the verdict rests on, in a sentence or two (the numbers it counts)
    cases : the cases judged, one per element of the dim ``case``: their estimates, intervals and decisions
    columns, rows : the table a document shows (headers, and rows of formatted cells); empty for none
    figures : ``(alt text, file name)`` of the figures drawn (in ``opts["figdir"]``), shown after the table
    preamble : a paragraph before the verdict (what the study measured, shared by the claims that follow)
    notes : a paragraph after the verdict, before the table (what the reader needs to read the table)
    more_tables : further ``(columns, rows)`` tables, shown after the first
    postscript : a paragraph after the tables and figures
    joiner : what separates the verdict from the summary (``": "``; ``" "`` when the summary qualifies the verdict,
        e.g. ``"overall: ..."``)
    """

    label: str
    question: str
    verdict: Verdict | None
    summary: str
    cases: xr.Dataset = field(default_factory=xr.Dataset)
    columns: tuple[str, ...] = ()
    rows: tuple[tuple[str, ...], ...] = ()
    figures: tuple[tuple[str, str], ...] = ()
    preamble: str = ""
    notes: str = ""
    more_tables: tuple[tuple[tuple[str, ...], tuple[tuple[str, ...], ...]], ...] = ()
    postscript: str = ""
    joiner: str = ": "

    @property
    def holds(self) -> bool | None:
        """True when the claim holds, False when it does not, None when the verdict is inconclusive."""
        return None if self.verdict is None else {"holds": True, "does not hold": False}.get(self.verdict.outcome)


def to_markdown(claims: Sequence[Claim], *, figure_dir: str = "") -> list[str]:
    r"""Return the lines of a document section that states each claim, its verdict, table and figures.

    Parameters
    ----------
    claims : the claims, in the order they are written
    figure_dir : the prefix of the figures' links (e.g. ``"experiments/"``: where the document finds them)

    Examples
    --------
    >>> from ensemble_stats import verdict
    >>> from ensemble_stats.claims import Claim, to_markdown
    >>> c = Claim("Verdict", "is the sky blue?", verdict([True, True]), "in 2 of 2 looks",
    ...           columns=("look", "colour"), rows=(("1", "blue"), ("2", "blue")))
    >>> print("\n".join(to_markdown([c])))
    **Verdict: is the sky blue?** **holds**: in 2 of 2 looks
    <BLANKLINE>
    | look | colour |
    |---|---|
    | 1 | blue |
    | 2 | blue |
    """
    lines: list[str] = []
    for c in claims:
        if c.preamble:
            lines += [c.preamble, ""]
        lines.append(_head(c))
        if c.notes:
            lines += ["", c.notes]
        for columns, rows in ((c.columns, c.rows), *c.more_tables):
            if columns:
                lines += ["", format_table(list(columns), [list(r) for r in rows], "markdown")]
        if c.figures:  # one block: a figure per line
            lines += ["", *(f"![{alt}]({figure_dir}{name})" for alt, name in c.figures)]
        if c.postscript:
            lines += ["", c.postscript]
        lines.append("")
    return lines[:-1]


def _head(c: Claim) -> str:
    """Write the claim's first line: the bold question and the verdict, or an observation's text."""
    if c.verdict is None:
        return f"**{c.question}** {c.summary}" if c.question else c.summary
    return f"**{f'{c.label}: ' if c.label else ''}{c.question}** {c.verdict.markdown()}{c.joiner}{c.summary}"


def sci(m, lo, hi) -> str:
    """``"m [lo, hi]"`` in 3 significant digits, for quantities spanning decades."""
    return f"{float(m):.3g} [{float(lo):.3g}, {float(hi):.3g}]"


def yes_no(case: bool | None) -> str:
    """How a table shows a case: ``"yes"``, ``"no"``, or ``"-"`` when undecided."""
    return "-" if case is None else ("yes" if case else "no")


def save_figure(fig, opts: Mapping, name: str) -> str:
    """Save a figure into ``opts["figdir"]`` (and close it); return its file name."""
    import matplotlib.pyplot as plt

    fig.savefig(Path(opts["figdir"]) / name, dpi=100)
    plt.close(fig)
    return name

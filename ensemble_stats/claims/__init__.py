"""The seed papers' claims as functions of stores, so that a paper's claim can be decided on your own store.

Each study is a module with one function, ``claims(stores, opts) -> list[Claim]``: ``stores`` maps names to
store paths (the study's variants), ``opts`` holds the study's analysis options and, to draw figures,
``figdir``. A :class:`Claim` carries the question, the :class:`~ensemble_stats.Verdict`, the cases judged (a
Dataset with a ``case`` dim) and the table a document shows; :func:`to_markdown` writes claims as the
studies' documents do. Torch-free; matplotlib is imported only when a figure is drawn.

>>> import ensemble_stats as es
>>> sorted(es.claims.STUDIES)
['anchor', 'catapult', 'clt', 'collapse', 'conditioning', 'deep', 'expansion', 'lazy', 'rates', 'shallow']

``es.claims.collapse.claims({"default": "my.zarr"}, {})`` decides the collapse claim on ``my.zarr``.
"""

from . import anchor, catapult, clt, collapse, conditioning, deep, expansion, lazy, rates, shallow
from ._claim import Claim, to_markdown

STUDIES = {
    "anchor": anchor,
    "catapult": catapult,
    "clt": clt,
    "collapse": collapse,
    "conditioning": conditioning,
    "deep": deep,
    "expansion": expansion,
    "lazy": lazy,
    "rates": rates,
    "shallow": shallow,
}
"""Study name -> its module (each with ``claims(stores, opts)``)."""

__all__ = [
    "STUDIES",
    "Claim",
    "anchor",
    "catapult",
    "clt",
    "collapse",
    "conditioning",
    "deep",
    "expansion",
    "lazy",
    "rates",
    "to_markdown",
]

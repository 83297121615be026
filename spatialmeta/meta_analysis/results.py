"""The one result model of the meta-analysis engine: a small base and one number formatter.

Every result (:class:`~spatialmeta.meta_analysis.pool.PoolResult`, the diagnostics, the
bias tests, subgroups, intervals) is a frozen dataclass on :class:`Result`, which gives
``to_dict`` (plain Python values for JSON: numpy to lists, NaN to None, nested results to
their dicts, ``zval`` named ``tval`` under a Knapp-Hartung test), ``__str__`` (the
``summary``), and the hooks ``summary``/``to_frame`` each result fills in. Numbers and
p-values in every printed summary go through :func:`fmt_num` and :func:`fmt_p`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any, ClassVar

import numpy as np

from spatialmeta.meta_analysis._common import plain

__all__ = ["Count", "Flag", "Pooled", "Prediction", "Result", "Value", "fmt_num", "fmt_p"]

# A per-meta-analysis field: a Python scalar for one meta-analysis, an array of the batch
# shape (with a trailing coefficient or point axis where the field has one) otherwise.
Value = float | np.ndarray
Count = int | np.ndarray
Flag = bool | np.ndarray


def _float(x: Any) -> float:
    try:
        return float(x)
    except (TypeError, ValueError):
        return math.nan


def fmt_num(x: Any, digits: int = 4) -> str:
    """``x`` with ``digits`` decimals (metafor's ``formatC(x, digits, format = "f")``);
    ``"NA"`` for None, NaN or a non-number.

    >>> fmt_num(0.123456), fmt_num(float("nan")), fmt_num(2, 2)
    ('0.1235', 'NA', '2.00')
    """
    v = _float(x)
    return "NA" if not math.isfinite(v) else f"{v:.{digits}f}"


def fmt_p(p: Any, *, eq: bool = False, style: str = "metafor") -> str:
    """A p-value as the summaries print it: 4 decimals, or below ``0.0001`` as a bound.

    ``style="metafor"`` follows metafor's print methods (``<.0001``; with ``eq``: ``=
    0.0123`` / ``< .0001``, to follow "p-val"); ``style="report"`` is the Markdown reports'
    (``< 0.0001``; with ``eq``: ``= 0.0123`` / ``< 0.0001``, to follow "p").

    >>> fmt_p(0.01234), fmt_p(1e-7), fmt_p(1e-7, eq=True), fmt_p(0.5, eq=True)
    ('0.0123', '<.0001', '< .0001', '= 0.5000')
    >>> fmt_p(1e-7, style="report"), fmt_p(float("nan"), eq=True)
    ('< 0.0001', '= NA')
    """
    if style not in ("metafor", "report"):
        raise ValueError(f"`style` must be 'metafor' or 'report'; got {style!r}.")
    v = _float(p)
    if not math.isfinite(v):
        return "= NA" if eq else "NA"
    if v >= 1e-4:
        return f"= {v:.4f}" if eq else f"{v:.4f}"
    if style == "report":
        return "< 0.0001"
    return "< .0001" if eq else "<.0001"


class Result:
    """Base of the engine's frozen result dataclasses.

    Class attributes: ``_dict_fields`` (the fields of ``to_dict``, in order; None: every
    field) and ``_dict_skip`` (fields left out, e.g. a fit the result carries).
    """

    _dict_fields: ClassVar[tuple[str, ...] | None] = None
    _dict_skip: ClassVar[tuple[str, ...]] = ()

    def to_dict(self) -> dict[str, Any]:
        """Plain Python values (floats, ints, bools, nested lists); NaN becomes None."""
        names = self._dict_fields or tuple(f.name for f in fields(self))  # type: ignore[arg-type]
        knha = getattr(self, "test", None) == "knha"
        out: dict[str, Any] = {}
        for name in names:
            if name in self._dict_skip:
                continue
            key = "tval" if (name == "zval" and knha) else name
            out[key] = plain(getattr(self, name), tuples=True, nested=(Result,))
        return out

    def summary(self) -> str:  # pragma: no cover - every result defines it
        raise NotImplementedError(f"{type(self).__name__} has no summary")

    def to_frame(self):  # pragma: no cover - every tabular result defines it
        raise NotImplementedError(f"{type(self).__name__} has no table form")

    def __str__(self) -> str:
        return self.summary()


@dataclass(frozen=True, eq=False)
class Prediction(Result):
    """Predicted effects with confidence and prediction intervals (metafor's ``predict``).

    Each field has the batch shape of the model, followed by the ``q`` points predicted
    (none for an intercept-only model's pooled estimate). The prediction interval is NaN
    for common-effect models.
    """

    pred: Value
    se: Value
    ci_lb: Value
    ci_ub: Value
    pi_lb: Value
    pi_ub: Value
    level: float = 95.0

    def to_frame(self):
        """One row per predicted point (and batch row)."""
        import pandas as pd

        cols = ("pred", "se", "ci_lb", "ci_ub", "pi_lb", "pi_ub")
        return pd.DataFrame({c: np.ravel(getattr(self, c)) for c in cols})

    def summary(self) -> str:
        """metafor's ``print.list.rma`` of ``predict``: one line per point."""
        frame = self.to_frame()
        head = f"{'pred':>8} {'se':>8} {'ci.lb':>8} {'ci.ub':>8} {'pi.lb':>8} {'pi.ub':>8}"
        lines = [head]
        for row in frame.itertuples(index=False):
            lines.append(" ".join(f"{fmt_num(v):>8}" for v in row))
        return "\n".join(lines)


@dataclass(frozen=True, eq=False)
class Pooled(Result):
    """The fields of a pooled estimate, shared by every result that pools.

    :class:`~spatialmeta.meta_analysis.pool.PoolResult` (one per meta-analysis) and
    :class:`~spatialmeta.meta_analysis.subgroups.SubgroupResult` (one per subgroup) both
    carry them, in metafor's names: the estimate with ``se``, its test (``zval`` is a t
    value under Knapp-Hartung) and interval, ``tau2`` with ``se_tau2``, ``I2``, ``H2``,
    Cochran's ``QE`` with ``QEp``, the prediction interval, ``k`` and ``converged``.
    """

    estimate: Value
    se: Value
    zval: Value
    pval: Value
    ci_lb: Value
    ci_ub: Value
    tau2: Value
    se_tau2: Value
    I2: Value
    H2: Value
    QE: Value
    QEp: Value
    pi_lb: Value
    pi_ub: Value
    k: Count
    converged: Flag

"""Q-profile confidence intervals for tau^2, tau, I^2 and H^2, as metafor's ``confint()``.

The interval collects the tau^2 values at which the generalized Q statistic
``Q(tau2) = Y'P(tau2)Y`` lies between the ``alpha/2`` and ``1 - alpha/2``
quantiles of a chi-square on ``k - p`` df (Viechtbauer, 2007). ``Q`` decreases
in tau^2, so each bound is a single root; all rows of a batch are bracketed on
``[0, max(100, 10 tau2)]`` and solved together by Brent's method, step for
step as R's ``uniroot`` (tolerance ``eps^0.25``, at most 1000 iterations).

References
----------
Viechtbauer, W. (2007). Confidence intervals for the amount of heterogeneity
in meta-analysis. *Statistics in Medicine*, 26(1), 37-52. doi:10.1002/sim.2514
Brent, R. P. (1973). *Algorithms for Minimization without Derivatives*, ch. 4.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from spatialmeta.meta_analysis import estimators as est
from spatialmeta.meta_analysis import regression
from spatialmeta.meta_analysis.estimators import FIXED_METHODS
from spatialmeta.meta_analysis.pool import PoolResult, pool
from spatialmeta.meta_analysis.results import Result
from spatialmeta.meta_analysis.spec import FitSpec

__all__ = ["Tau2Interval", "confint_tau2"]

_CI_MAXITER = 1000  # metafor's confint() control: maxiter = 1000
_TRIPLES = ("tau2", "tau", "I2", "H2")
_LABELS = {"tau2": "tau^2", "tau": "tau", "I2": "I^2(%)", "H2": "H^2"}


@dataclass(frozen=True, eq=False)
class Tau2Interval(Result):
    """Q-profile intervals (metafor's ``confint(res)$random``) for each meta-analysis.

    Fields are Python scalars for a single meta-analysis and arrays of the
    batch shape otherwise. ``lb_sign``/``ub_sign`` are metafor's markers:
    ``"<"`` when the bound is below the search interval's lower end (0),
    ``">"`` when it is above ``tau2_max``, ``""`` otherwise. ``ci_null`` is
    True when both bounds fall below 0 (the interval is the null/empty set and
    is reported as ``[0, 0]``). ``converged`` is False where Brent's method
    did not meet its tolerance within 1000 iterations for some bound.
    """

    tau2: Any
    tau2_lb: Any
    tau2_ub: Any
    tau: Any
    tau_lb: Any
    tau_ub: Any
    I2: Any
    I2_lb: Any
    I2_ub: Any
    H2: Any
    H2_lb: Any
    H2_ub: Any
    lb_sign: Any
    ub_sign: Any
    ci_null: Any
    converged: Any
    tau2_max: Any
    level: float
    method: str

    @property
    def batch_shape(self) -> tuple[int, ...]:
        """Shape of the batch; ``()`` for a single meta-analysis."""
        return np.shape(self.tau2)

    def to_frame(self) -> pd.DataFrame:
        """One row per meta-analysis."""
        cols = {
            f.name: np.asarray(getattr(self, f.name)).reshape(-1)
            for f in fields(self)
            if f.name not in ("level", "method")
        }
        frame = pd.DataFrame(cols)
        frame["level"] = self.level
        if len(self.batch_shape) > 1:
            frame.index = pd.MultiIndex.from_tuples(list(np.ndindex(*self.batch_shape)))
        return frame

    def summary(self) -> str:
        """A table that reads like metafor's ``print(confint(res))``."""
        if not self.batch_shape:
            return _summary_one(self)
        blocks = []
        for index in np.ndindex(*self.batch_shape):
            one = Tau2Interval(
                **{
                    f.name: _item(getattr(self, f.name), index)
                    for f in fields(self)
                    if f.name not in ("level", "method")
                },
                level=self.level,
                method=self.method,
            )
            head = f"Row {index if len(index) > 1 else index[0]}:"
            blocks.append(head + "\n" + _summary_one(one))
        return "\n".join(blocks)

    def __str__(self) -> str:
        return self.summary()


def _item(value, index):
    x = np.asarray(value)[index]
    return x.item() if hasattr(x, "item") else x


def _summary_one(r: Tau2Interval) -> str:
    rows = [["", "estimate", "ci.lb", "ci.ub"]]
    for name in _TRIPLES:
        est_, lb, ub = (getattr(r, name + s) for s in ("", "_lb", "_ub"))
        rows.append(
            [
                _LABELS[name],
                _f4(est_),
                r.lb_sign + _f4(lb),
                r.ub_sign + _f4(ub),
            ]
        )
    widths = [max(len(row[c]) for row in rows) for c in range(4)]
    lines = [""]
    for row in rows:
        cells = [row[0].ljust(widths[0])] + [
            x.rjust(w) for x, w in zip(row[1:], widths[1:], strict=True)
        ]
        lines.append(" ".join(cells))
    if r.ci_null:
        lines += [
            "",
            "The upper and lower CI bounds for tau^2 both fall below 0.",
            "The CIs are therefore equal to the null/empty set.",
        ]
    lines.append("")
    return "\n".join(lines)


def _f4(x) -> str:
    return "NA" if x is None or np.isnan(x) else f"{x:.4f}"


def confint_tau2(res, vi=None, *, level: float | None = None, **kwargs) -> Tau2Interval:
    """Q-profile confidence interval for tau^2, with tau, I^2 and H^2, as ``confint(res)``.

    Parameters
    ----------
    res : PoolResult or array_like
        A random-effects fit from :func:`~spatialmeta.meta_analysis.pool` (with
        or without moderators, batched or not), or effect sizes ``yi`` to be
        fitted first with ``pool(yi, vi, **kwargs)``.
    vi : array_like, optional
        Sampling variances when ``res`` holds effect sizes.
    level : float, optional
        Confidence level in percent; defaults to the fit's level.
    **kwargs
        Passed to :func:`pool` when ``res`` holds effect sizes (``mods``,
        ``method``, ...).

    Returns
    -------
    Tau2Interval
        Estimates and bounds for tau^2, tau, I^2 (percent) and H^2, with
        metafor's bound markers. I^2 and H^2 bounds are
        ``100 tau2 / (vt + tau2)`` and ``tau2 / vt + 1`` at the tau^2 bounds,
        ``vt`` being the fit's typical within-study variance.

    Raises
    ------
    ValueError
        For a common-effect fit (no tau^2), or an invalid ``level``.

    Notes
    -----
    metafor's conventions: the search interval is ``[0, max(100, 10 tau2)]``;
    when ``Q(0)`` is below the lower critical value both bounds are 0 (the
    null set, ``ci_null``); when ``Q(0)`` is below the upper critical value
    the lower bound is 0; when ``Q`` at the upper end is still above a
    critical value, that bound is the upper end (marked ``">"``). The upper
    bound uses the ``alpha/2`` quantile, the lower bound the ``1 - alpha/2``
    quantile of the chi-square on ``k - p`` df. Rows whose fit did not converge
    still get an interval (it does not depend on the tau^2 estimate but for
    the search interval and the point estimates of I^2 and H^2).

    References
    ----------
    Viechtbauer, W. (2007). Confidence intervals for the amount of
    heterogeneity in meta-analysis. doi:10.1002/sim.2514

    Examples
    --------
    >>> import numpy as np
    >>> yi = np.array([-0.89, -1.59, -1.35, -1.44, -0.22, -0.79, 0.01])
    >>> vi = np.array([0.33, 0.19, 0.42, 0.02, 0.05, 0.01, 0.06])
    >>> ci = confint_tau2(yi, vi, method="REML")
    >>> round(ci.tau2, 4), round(ci.tau2_lb, 4), round(ci.tau2_ub, 4)
    (0.3174, 0.0786, 1.7286)
    >>> round(ci.I2_lb, 2), ci.ci_null
    (63.08, False)
    """
    if isinstance(res, PoolResult):
        if vi is not None or kwargs:
            raise TypeError(
                "confint_tau2(res) takes a PoolResult alone; pass effect sizes and pool() "
                "arguments instead to fit first."
            )
    else:
        res = pool(res, vi, **kwargs)
    if res.method in FIXED_METHODS:
        raise ValueError(
            f"the model has no random-effects component (method={res.method!r}), so there is "
            "no tau^2 to profile; refit with a tau^2 estimator such as method='REML'."
        )
    lvl = res.level if level is None else FitSpec.make(level=level, prefix="confint_tau2: ").level
    shape = res.batch_shape
    y = np.asarray(res.yi, dtype=float)
    kmax = y.shape[-1]
    y2 = y.reshape(-1, kmax)
    m = ~np.isnan(y2)
    v2 = np.where(m, np.asarray(res.vi, dtype=float).reshape(-1, kmax), 1.0)
    yz = np.where(m, y2, 0.0)
    k = m.sum(axis=-1)
    p = res.p
    tau2 = np.asarray(res.tau2, dtype=float).reshape(-1)
    vt = np.asarray(res.vt, dtype=float).reshape(-1)
    if res.has_mods:
        X2 = np.asarray(res.X, dtype=float).reshape(-1, kmax, p)
        Q, _ = regression.check_design(X2, m, k, res.coef_names, False, shape)

        def qstat(t, rows):
            return regression._rss(Q[rows], v2[rows], m[rows], yz[rows], t[rows])

    else:

        def qstat(t, rows):
            return est._rss(yz[rows], v2[rows], m[rows], t[rows])

    bounds = _qprofile(qstat, k - p, tau2, lvl)
    lb, ub, lbs, ubs, null, ok, tmax = bounds
    with np.errstate(divide="ignore", invalid="ignore"):
        out = {
            "tau2": tau2,
            "tau2_lb": lb,
            "tau2_ub": ub,
            "tau": np.sqrt(np.where(tau2 >= 0, tau2, np.nan)),
            "tau_lb": np.sqrt(np.where(lb >= 0, lb, np.nan)),
            "tau_ub": np.sqrt(np.where(ub >= 0, ub, np.nan)),
            "I2": np.asarray(res.I2, dtype=float).reshape(-1),
            "I2_lb": 100.0 * lb / (vt + lb),
            "I2_ub": 100.0 * ub / (vt + ub),
            "H2": np.asarray(res.H2, dtype=float).reshape(-1),
            "H2_lb": lb / vt + 1.0,
            "H2_ub": ub / vt + 1.0,
            "lb_sign": lbs,
            "ub_sign": ubs,
            "ci_null": null,
            "converged": ok,
            "tau2_max": tmax,
        }
    if shape:
        out = {key: val.reshape(shape) for key, val in out.items()}
    else:
        out = {key: val[0].item() for key, val in out.items()}
    return Tau2Interval(**out, level=lvl, method=res.method)


def _qprofile(qstat, df, tau2, level):
    """Both bounds for every row; ``qstat(t, rows)`` is Q at ``t[rows]`` for a row mask."""
    n = tau2.size
    alpha = 1.0 - level / 100.0
    dff = df.astype(float)
    crit_u = stats.chi2.isf(alpha / 2.0, dff)
    crit_l = stats.chi2.ppf(alpha / 2.0, dff)
    tmin = np.zeros(n)
    tmax = np.maximum(100.0, 10.0 * tau2)
    every = np.ones(n, dtype=bool)
    q_min = qstat(tmin, every)
    q_max = qstat(tmax, every)
    lb = np.full(n, np.nan)
    ub = np.full(n, np.nan)
    lbs = np.full(n, "", dtype="<U1")
    ubs = np.full(n, "", dtype="<U1")
    ok = np.ones(n, dtype=bool)

    null = q_min < crit_l
    lb[null] = ub[null] = 0.0
    lbs[null] = ubs[null] = "<"
    above = q_max > crit_u  # Q stays above the upper critical value: both bounds at tau2_max
    high = ~null & ~above & (q_max > crit_l)
    ub[high] = tmax[high]
    ubs[high] = ">"
    solve_ub = ~null & ~above & ~high
    lb[above] = ub[above] = tmax[above]
    lbs[above] = ubs[above] = ">"
    zero_lb = ~above & ~null & (q_min < crit_u)
    lb[zero_lb] = 0.0
    solve_lb = ~above & ~null & ~zero_lb
    for rows, crit, target in ((solve_ub, crit_l, ub), (solve_lb, crit_u, lb)):
        if rows.any():
            idx = np.flatnonzero(rows)
            root, conv = _roots(qstat, idx, n, crit, tmax, q_min - crit, q_max - crit)
            target[idx] = root
            ok[idx] &= conv
    return lb, ub, lbs, ubs, null, ok, tmax


def _roots(qstat, idx, n, crit, tmax, f_lo, f_hi):
    """Brent's method on [0, tmax] for the rows ``idx`` at once."""

    def f(x, rows):
        full = np.zeros(n, dtype=bool)
        full[idx[rows]] = True
        xx = np.zeros(n)
        xx[idx] = x
        return qstat(xx, full) - crit[idx[rows]]

    root, conv, _ = est._zeroin(
        f, np.zeros(idx.size), tmax[idx], f_lo[idx], f_hi[idx], maxiter=_CI_MAXITER
    )
    return root, conv

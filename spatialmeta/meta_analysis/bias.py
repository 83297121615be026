"""Publication bias without meta-regression, batched: rank test, trim-and-fill, fail-safe N.

Also the per-study Baujat coordinates (:func:`baujat`) that
:func:`spatialmeta.meta_analysis.bias_plots.baujat_plot` draws. Every function
takes ``(..., k)`` arrays (NaN marks a missing study, so rows may have
different k), works on all rows at once, and returns Python scalars for 1-D
input and arrays of the batch shape otherwise. Conventions follow metafor
3.8 (``ranktest``, ``trimfill.rma.uni``, ``fsn``, ``baujat.rma``).

References
----------
Begg, C. B., & Mazumdar, M. (1994). Operating characteristics of a rank
correlation test for publication bias. *Biometrics*, 50(4), 1088-1101.
doi:10.2307/2533446
Duval, S., & Tweedie, R. (2000). Trim and fill: A simple funnel-plot-based
method of testing and adjusting for publication bias in meta-analysis.
*Biometrics*, 56(2), 455-463. doi:10.1111/j.0006-341X.2000.00455.x
Duval, S., & Tweedie, R. (2000). A nonparametric "trim and fill" method of
accounting for publication bias in meta-analysis. *JASA*, 95(449), 89-98.
doi:10.1080/01621459.2000.10473905
Rosenthal, R. (1979). The file drawer problem and tolerance for null results.
*Psychological Bulletin*, 86(3), 638-641. doi:10.1037/0033-2909.86.3.638
Orwin, R. G. (1983). A fail-safe N for effect size in meta-analysis. *Journal
of Educational Statistics*, 8(2), 157-159. doi:10.3102/10769986008002157
Rosenberg, M. S. (2005). The file-drawer problem revisited: A general weighted
method for calculating fail-safe numbers in meta-analysis. *Evolution*, 59(2),
464-468. doi:10.1111/j.0014-3820.2005.tb01004.x
Baujat, B., Mahe, C., Pignon, J.-P., & Hill, C. (2002). A graphical method for
exploring heterogeneity in meta-analyses. *Statistics in Medicine*, 21(18),
2641-2652. doi:10.1002/sim.1221
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from scipy import stats

from spatialmeta.meta_analysis._common import check_labels, check_studies, read_inputs
from spatialmeta.meta_analysis._common import where as _where
from spatialmeta.meta_analysis.estimators import FIXED_METHODS, _inv, estimate_tau2
from spatialmeta.meta_analysis.fitted import as_fit, fit_spec
from spatialmeta.meta_analysis.pool import PoolResult, pool
from spatialmeta.meta_analysis.regression import _proj as _wls
from spatialmeta.meta_analysis.regression import check_design, estimate_tau2_mods
from spatialmeta.meta_analysis.results import Result

__all__ = [
    "BaujatResult", "FsnResult", "RankTestResult", "TrimFillResult",
    "baujat", "fsn", "ranktest", "trimfill",
]  # fmt: skip

_EPS = float(np.finfo(float).eps)
# Rows of (rows, k, k) pair arrays processed at once: bounds memory to ~32 MB a array.
_PAIR_BUDGET = 1 << 22
# ranktest: exact null distribution of Kendall's statistic up to this k, normal beyond.
EXACT_MAX_K = 500


# --------------------------------------------------------------------------- inputs


def _row_name(shape: tuple[int, ...], flat: int) -> str:
    if not shape:
        return "the data"
    return "row " + _where(np.unravel_index(flat, shape))


@dataclass(frozen=True)
class _Batch:
    y: np.ndarray  # (n, K), NaN where missing
    v: np.ndarray  # (n, K), NaN where missing
    m: np.ndarray  # (n, K) observed
    k: np.ndarray  # (n,)
    shape: tuple[int, ...]
    labels: np.ndarray | None
    measure: str


def _inputs(fname: str, yi, vi, min_k: int, need_vi: bool = True, labels=None) -> _Batch:
    """Read and check ``yi``/``vi`` (or an object with ``.estimates()``) for ``fname``."""
    prefix = f"{fname}: "
    if isinstance(yi, PoolResult):  # refuses what the analysis would drop (moderators, ...)
        as_fit(yi, vi, what=fname, labels=labels)
    y, v, labels, measure, _ = read_inputs(yi, vi, labels, prefix=prefix, need_vi=need_vi)
    if y.ndim == 0:
        raise ValueError(
            f"{fname}: `yi` must have a study axis (shape (..., k)); got the scalar "
            f"{float(y)!r}. Pass all studies of a meta-analysis as one array."
        )
    if v is None:
        v = np.where(np.isnan(y), np.nan, 1.0)
    obs = check_studies(y, v, prefix=prefix, at="for study")
    labels = check_labels(labels, y.shape, prefix=prefix)
    shape = y.shape[:-1]
    kmax = y.shape[-1]
    m = obs.reshape(-1, kmax)
    k = m.sum(axis=-1)
    if (k < min_k).any():
        flat = int(np.argmax(k < min_k))
        raise ValueError(
            f"{fname} needs at least {min_k} studies per meta-analysis, but "
            f"{_row_name(shape, flat)} has k = {int(k[flat])}; add studies or drop that row "
            "(set it to NaN and leave it out of the batch)."
        )
    return _Batch(y.reshape(-1, kmax), v.reshape(-1, kmax), m, k, shape, labels, measure)


def _shaped(x: np.ndarray, shape: tuple[int, ...]) -> Any:
    """Batch-shaped array, or a Python scalar for a single meta-analysis."""
    x = np.asarray(x)
    if shape:
        return x.reshape(shape)
    x = x.reshape(())
    if x.dtype == bool:
        return bool(x)
    if np.issubdtype(x.dtype, np.integer):
        return int(x)
    if x.dtype.kind in "US":
        return str(x)
    return float(x)


def _chunks(n: int, kmax: int):
    """Row slices whose (rows, kmax, kmax) pair arrays stay within the memory budget."""
    step = max(1, _PAIR_BUDGET // max(1, kmax * kmax))
    for lo in range(0, n, step):
        yield slice(lo, min(n, lo + step))


def _wmean_fit(y, v, m, k, method, control=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Intercept-only ``rma.uni`` fit per row: tau2, estimate and convergence.

    Rows with one study get tau2 = 0 (metafor's ``k1`` rule).
    """
    n = y.shape[0]
    tau2 = np.zeros(n)
    conv = np.ones(n, dtype=bool)
    fixed = method in FIXED_METHODS
    multi = k >= 2
    if not fixed and multi.any():
        fit = estimate_tau2(y[multi], v[multi], m[multi], k[multi], method, control=control)
        tau2[multi] = fit.tau2
        conv[multi] = fit.converged
    with np.errstate(divide="ignore", invalid="ignore"):
        w = np.where(m, 1.0 / (np.where(m, v, 1.0) + tau2[:, None]), 0.0)
        beta = _wmean(y, w, m)
    return tau2, beta, conv


def _wmean(y: np.ndarray, w: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Weighted mean per row, computed about the row's first study.

    Shifting makes equal effects give exactly their common value whatever the
    padding or summation order (the rank test and trim-and-fill compare
    effects with this mean for exact equality).
    """
    ref = np.take_along_axis(y, np.argmax(m, axis=-1)[:, None], axis=-1)
    d = np.where(m, y - ref, 0.0)
    return ref[:, 0] + (w * d).sum(axis=-1) / w.sum(axis=-1)


# --------------------------------------------------------------------------- rank test


@dataclass(frozen=True, eq=False)
class RankTestResult(Result):
    """Result of :func:`ranktest` (metafor's ``ranktest`` object).

    ``tau`` is Kendall's tau-b between the standardized effects and the
    sampling variances, ``pval`` its two-sided p-value; ``exact`` says whether
    that p-value is exact (no ties) or from the normal approximation with the
    tie correction; ``k`` is the number of studies.
    """

    tau: Any
    pval: Any
    k: Any
    exact: Any

    def summary(self) -> str:
        """Reads like metafor's ``print.ranktest`` (single meta-analysis)."""
        if np.ndim(self.tau):
            return "\n".join(
                f"Row {i}: Kendall's tau = {t:.4f}, p = {p:.4f}"
                for i, (t, p) in enumerate(
                    zip(np.ravel(self.tau), np.ravel(self.pval), strict=True)
                )
            )
        return f"\nRank Correlation Test for Funnel Plot Asymmetry\n\nKendall's tau = {self.tau:.4f}, p = {self.pval:.4f}\n"

    def __str__(self) -> str:
        return self.summary()


@functools.lru_cache(maxsize=64)
def _kendall_lower_cdf(n: int) -> np.ndarray:
    """P(T <= q) for q = 0..floor(n(n-1)/4), T = concordant pairs of n i.i.d. points.

    Builds the Mahonian distribution by the recursion R's ``ckendall`` uses
    (a moving sum over i = 0..j-1 for each added point j), normalised at each
    step so it neither overflows (R's ``n!`` does for n > 170) nor loses the
    lower tail; the upper tail follows by symmetry.
    """
    half = n * (n - 1) // 4
    p = np.array([1.0])
    for j in range(2, n + 1):
        # New point j adds 0..j-1 concordant pairs: a moving sum of width j. Entries
        # above `half` never feed the lower ones, so they are not kept.
        pad = np.zeros(j - 1)
        c = np.concatenate(([0.0], np.cumsum(np.concatenate((pad, p, pad)))))
        size = min(p.size + j - 1, half + 1)
        p = (c[j : j + size] - c[:size]) / j
    return np.minimum(np.cumsum(p[: half + 1]), 1.0)


def _kendall(x: np.ndarray, y: np.ndarray, m: np.ndarray):
    """Per-row Kendall statistics of ``x`` against ``y`` on the observed studies.

    Returns S (concordant minus discordant pairs), the tied pairs in x and y,
    and the tie sums of R's ``cor.test`` variance formula.
    """
    n, kmax = x.shape
    out = np.zeros((9, n))
    for sl in _chunks(n, kmax):
        ms = m[sl]
        pair = ms[:, :, None] & ms[:, None, :]
        xs, ys = np.where(ms, x[sl], 0.0), np.where(ms, y[sl], 0.0)
        dx = np.sign(xs[:, :, None] - xs[:, None, :])
        dy = np.sign(ys[:, :, None] - ys[:, None, :])
        out[0, sl] = np.where(pair, dx * dy, 0.0).sum(axis=(1, 2)) / 2.0
        for j, d in ((1, dx), (5, dy)):
            # t_i: size of the tie group of study i (itself included).
            t = np.where(ms, ((d == 0.0) & pair).sum(axis=-1), 1).astype(float)
            out[j, sl] = (t - 1.0).sum(axis=-1) / 2.0  # tied pairs
            out[j + 1, sl] = ((t - 1.0) * (2.0 * t + 5.0)).sum(axis=-1)
            out[j + 2, sl] = (t - 1.0).sum(axis=-1)  # sum over groups of t(t-1)
            out[j + 3, sl] = ((t - 1.0) * (t - 2.0)).sum(axis=-1)
    s, tx, vtx, sx1, sx2, ty, vty, sy1, sy2 = out
    return s, tx, ty, vtx, vty, sx1, sy1, sx2, sy2


def ranktest(yi, vi=None, *, exact: bool = True) -> RankTestResult:
    """Begg and Mazumdar's rank correlation test for funnel plot asymmetry.

    As ``metafor::ranktest(yi, vi)``: Kendall's tau between the standardized
    deviates ``(yi - theta) / sqrt(vi - vb)`` (``theta`` the common-effect
    estimate, ``vb`` its variance) and the sampling variances ``vi``, with
    ``cor.test``'s p-value: exact (metafor's default ``exact = TRUE``) unless
    either variable has ties, in which case the normal approximation with the
    tie-corrected variance is used, as R does (R warns "Cannot compute exact
    p-value with ties").

    Parameters
    ----------
    yi : array_like or object with ``.estimates()``
        Effect sizes, shape ``(..., k)``; NaN marks a missing study.
    vi : array_like
        Sampling variances, same shape, > 0 where ``yi`` is observed.
    exact : bool
        Exact p-value when there are no ties (default, as metafor); False
        always uses the normal approximation.

    Returns
    -------
    RankTestResult
        ``tau``, ``pval``, ``k`` and ``exact`` per meta-analysis. ``tau`` and
        ``pval`` are NaN where either variable is constant (R: ``NA``).

    Raises
    ------
    ValueError
        Fewer than 3 studies in a row, mismatched shapes, non-positive
        variances, NaN in only one of ``yi``/``vi``.

    Notes
    -----
    Kendall's statistic is computed over all pairs of studies of all rows at
    once (in chunks of rows that bound memory). The exact null distribution
    is tabulated once per k; R's ``cor.test`` returns NaN beyond k = 170
    (``n!`` overflows) while this one stays exact up to k =
    :data:`EXACT_MAX_K` and uses the normal approximation above it (then
    ``exact`` is False).

    References
    ----------
    Begg, C. B., & Mazumdar, M. (1994). doi:10.2307/2533446

    Examples
    --------
    >>> import numpy as np
    >>> yi = np.array([-0.89, -1.59, -1.35, -1.44, -0.22, -0.79, 0.01])
    >>> vi = np.array([0.33, 0.19, 0.42, 0.02, 0.05, 0.01, 0.06])
    >>> res = ranktest(yi, vi)
    >>> round(res.tau, 4), round(res.pval, 4), res.exact
    (-0.0476, 1.0, True)
    >>> batch = ranktest(np.stack([yi, -yi]), np.stack([vi, vi]))
    >>> np.round(batch.tau, 4).tolist()
    [-0.0476, 0.0476]
    """
    b = _inputs("ranktest", yi, vi, min_k=3)
    y, v, m, k = b.y, b.v, b.m, b.k
    kf = k.astype(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        w = np.where(m, 1.0 / np.where(m, v, 1.0), 0.0)
        sw = w.sum(axis=-1)
        theta = _wmean(y, w, m)
        ystar = (y - theta[:, None]) / np.sqrt(v - (1.0 / sw)[:, None])
    s, tx, ty, vtx, vty, sx1, sy1, sx2, sy2 = _kendall(ystar, v, m)
    t0 = kf * (kf - 1.0) / 2.0
    with np.errstate(divide="ignore", invalid="ignore"):
        tau = s / np.sqrt((t0 - tx) * (t0 - ty))
        var_s = (
            (kf * (kf - 1.0) * (2.0 * kf + 5.0) - vtx - vty) / 18.0
            + sx1 * sy1 / (2.0 * kf * (kf - 1.0))
            + sx2 * sy2 / (9.0 * kf * (kf - 1.0) * (kf - 2.0))
        )
        z = s / np.sqrt(var_s)
    pval = 2.0 * stats.norm.sf(np.abs(z))
    use_exact = bool(exact) & (tx == 0) & (ty == 0) & (k <= EXACT_MAX_K) & np.isfinite(tau)
    if use_exact.any():
        q = np.rint((s + t0) / 2.0).astype(np.int64)  # concordant pairs
        u = (k * (k - 1)) // 2
        upper = 2 * q > u  # R: P(T >= q) there, which by symmetry is P(T <= u - q)
        qq = np.where(upper, u - q, q)
        for size in np.unique(k[use_exact]):
            rows = use_exact & (k == size)
            cdf = _kendall_lower_cdf(int(size))
            pval[rows] = np.minimum(2.0 * cdf[qq[rows]], 1.0)
    pval = np.where(np.isfinite(tau), pval, np.nan)
    tau = np.where(np.isfinite(tau), tau, np.nan)
    return RankTestResult(
        tau=_shaped(tau, b.shape),
        pval=_shaped(pval, b.shape),
        k=_shaped(k, b.shape),
        exact=_shaped(use_exact, b.shape),
    )


# --------------------------------------------------------------------------- trim and fill


def _sei_regression(y, v, m, k, method, shape=None, control=None):
    """tau2, slope and convergence of ``rma.uni(yi, vi, mods = sqrt(vi), method)`` per row.

    This is the regression ``metafor::trimfill`` uses to choose the side
    (slope < 0: studies are missing on the right), fitted for all rows at once
    by the meta-regression engine (:mod:`spatialmeta.meta_analysis.regression`:
    every tau^2 estimator, metafor's PM search interval included). ``shape``
    is the batch shape used to name a row in errors (default ``(n,)``).
    """
    shape = y.shape[:1] if shape is None else shape
    sx = np.where(m, np.sqrt(np.where(m, v, 1.0)), 0.0)
    kf = k.astype(float)
    top = np.where(m, sx, 0.0).max(axis=-1)
    bottom = np.where(m, sx, np.inf).min(axis=-1)
    # sqrt(vi) must not be constant: the old range test, and the design's own rank test
    # (|R_22| of [1, sqrt(vi)] with unit columns, below 1e-7 in check_design), with margin.
    spread = np.sqrt((np.where(m, sx - (sx.sum(-1) / kf)[:, None], 0.0) ** 2).sum(-1))
    const = ((top - bottom) <= 1e-7 * top) | (spread <= 1.01e-7 * np.sqrt((sx * sx).sum(-1)))
    if const.any():
        flat = int(np.argmax(const))
        raise ValueError(
            f"trimfill: the sampling variances of {_row_name(shape, flat)} are all equal, "
            "so the regression on sqrt(vi) that picks the side is undefined (metafor stops "
            "too); pass side='left' or side='right'."
        )
    X = np.stack([np.where(m, 1.0, np.nan), np.where(m, sx, np.nan)], axis=-1)
    Q, T = check_design(X, m, k, ("intrcpt", "sqrt(vi)"), method in FIXED_METHODS, shape)
    # Effects about the row's first study (tau2 and slope do not change): equal effects
    # then give a slope of exactly 0, hence side "left", not a sign of rounding noise.
    ref = np.take_along_axis(y, np.argmax(m, axis=-1)[:, None], axis=-1)
    yd = np.where(m, y - ref, np.nan)
    fit = estimate_tau2_mods(Q, yd, v, m, k, method, control=control)
    # Only the slope is needed (fit_mods would add tests and heterogeneity): the weighted
    # LS coefficients in the basis Q, mapped back through the upper-triangular T (X = Q T).
    w = _inv(np.where(m, v, 1.0), m, fit.tau2)
    _, bq, _, _ = _wls(Q, w, np.where(m, yd, 0.0), leverage=False)
    return fit.tau2, bq[:, 1] / T[:, 1, 1], fit.converged


@dataclass(frozen=True, eq=False)
class TrimFillResult(Result):
    """Result of :func:`trimfill` (metafor's ``rma.uni.trimfill`` object).

    ``k0`` (estimated number of missing studies), ``se_k0``, ``side``
    (``"left"``/``"right"``), ``p_k0`` (R0 only: the one-sided p-value of
    k0 under no asymmetry, NaN for L0) and ``converged`` are scalars for one
    meta-analysis and batch-shaped arrays otherwise. ``yi``, ``vi`` and
    ``fill`` hold the augmented data, shape ``(..., k + max k0)``: the
    original studies first (in their order), then the filled ones (``fill``
    True), NaN padding elsewhere. ``result`` is :func:`pool` on the augmented
    data (the original fit where ``k0 = 0``).
    """

    _dict_fields = (
        "k0", "se_k0", "side", "p_k0", "converged", "iterations", "estimator", "method", "yi",
        "vi", "fill", "result",
    )  # fmt: skip

    k0: Any
    se_k0: Any
    side: Any
    estimator: str
    p_k0: Any
    yi: np.ndarray
    vi: np.ndarray
    fill: np.ndarray
    result: PoolResult
    converged: Any
    iterations: Any
    method: str

    @property
    def estimate(self) -> Any:
        """Pooled estimate on the augmented data."""
        return self.result.estimate

    @property
    def se(self) -> Any:
        """Its standard error."""
        return self.result.se

    @property
    def ci_lb(self) -> Any:
        """Lower confidence bound of the filled estimate."""
        return self.result.ci_lb

    @property
    def ci_ub(self) -> Any:
        """Upper confidence bound of the filled estimate."""
        return self.result.ci_ub

    @property
    def pval(self) -> Any:
        """p-value of the filled estimate."""
        return self.result.pval

    @property
    def tau2(self) -> Any:
        """tau^2 on the augmented data."""
        return self.result.tau2

    def row(self, index: int | tuple[int, ...]) -> TrimFillResult:
        """One meta-analysis of a batched result (padding dropped)."""
        if not np.shape(self.k0):
            raise IndexError("this result holds a single meta-analysis; `row` needs a batch.")
        index = index if isinstance(index, tuple) else (index,)
        keep = ~np.isnan(self.yi[index])
        pick = {f: _shaped(np.asarray(getattr(self, f))[index], ())
                for f in ("k0", "se_k0", "side", "p_k0", "converged", "iterations")}  # fmt: skip
        return TrimFillResult(
            **pick,
            estimator=self.estimator,
            yi=self.yi[index][keep],
            vi=self.vi[index][keep],
            fill=self.fill[index][keep],
            result=self.result.row(index),
            method=self.method,
        )

    def summary(self) -> str:
        """Reads like metafor's ``print.rma.uni.trimfill``."""
        if np.ndim(self.k0):
            return "\n".join(
                f"Row {i if len(i) > 1 else i[0]}:\n" + self.row(i).summary()
                for i in np.ndindex(*np.shape(self.k0))
            )
        se = "NA" if np.isnan(self.se_k0) else f"{self.se_k0:.4f}"
        head = (
            f"\nEstimated number of missing studies on the {self.side} side: {self.k0} (SE = {se})"
        )
        if self.estimator == "R0":
            head += f"\nTest of H0: no missing studies on the {self.side} side:     p-val = {self.p_k0:.4f}"
        return head + "\n" + self.result.summary()

    def __str__(self) -> str:
        return self.summary()


def _signed_ranks(yc: np.ndarray, ms: np.ndarray) -> np.ndarray:
    """sign(yc) * rank(|yc|, ties.method = "first") over the observed studies."""
    key = np.where(ms, np.abs(yc), np.inf)
    order = np.argsort(key, axis=-1, kind="stable")
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.arange(1, yc.shape[1] + 1)[None, :], axis=-1)
    return np.where(ms, np.sign(yc) * ranks, 0.0)


def trimfill(
    yi,
    vi=None,
    *,
    estimator: str = "L0",
    side: str | None = None,
    method: str | None = None,
    test: str | None = None,
    level: float | None = None,
    maxiter: int = 100,
    ilim: tuple[float, float] | None = None,
    labels=None,
    control=None,
) -> TrimFillResult:
    """Duval and Tweedie's trim-and-fill method, as ``metafor::trimfill``.

    Studies on the side with the excess are trimmed until the rest is
    symmetric, their mirror images about the trimmed estimate are added, and
    the model is refitted to the augmented data.

    Parameters
    ----------
    yi : array_like, PoolResult or object with ``.estimates()``
        Effect sizes, shape ``(..., k)``; NaN marks a missing study. A
        :class:`PoolResult` (like metafor's ``trimfill(res)``) supplies the
        studies and ``method``, ``test`` and ``level`` (given as well, they must
        agree with it); a fit with moderators or user weights is refused.
    vi : array_like
        Sampling variances, same shape.
    estimator : {"L0", "R0"}
        Estimator of the number of missing studies.
    side : {"left", "right"} or None
        Side on which studies are missing. None (default) chooses it as
        metafor does: from the slope of ``rma.uni(yi, vi, mods = sqrt(vi),
        method)``, "right" if negative, else "left" (per row).
    method : str, optional
        tau^2 estimator of the fit (``"FE"``, ``"DL"``, ``"REML"``, ...), used
        for the side regression, every trimmed fit and the final fit; default
        the PoolResult's method, else ``"REML"`` (given with a PoolResult, it
        must be the fit's).
    test, level : str, float, optional
        Test and confidence level of the final fit (default: the
        PoolResult's, else ``"z"`` and 95).
    maxiter : int
        Maximum number of trim-and-fill iterations (metafor: 100).
    ilim : (float, float), optional
        Limits for the imputed effects (values outside are set to the limit).
    labels : array_like, optional
        Labels of the original studies (passed on to the final fit).
    control : dict or Control, optional
        Fisher scoring's settings of every fit (as for :func:`pool`); a PoolResult's own.

    Returns
    -------
    TrimFillResult
        ``k0``, ``se_k0``, ``side``, ``p_k0``, the augmented ``yi``/``vi``
        with the ``fill`` flags, and ``result``, the :class:`PoolResult` of
        the augmented data.

    Raises
    ------
    ValueError
        Fewer than 3 studies in a row, an unknown estimator, side or method,
        bad ``yi``/``vi``, or (``side=None``) a row whose sampling variances
        are all equal, where the side regression is undefined.

    Notes
    -----
    All rows iterate together (the search for k0 is sequential in its
    iterations, not in the rows); each iteration refits the trimmed rows with
    the batched tau^2 estimators and ranks every row at once. A row whose
    k0 has not settled after ``maxiter`` iterations, or whose trimmed fit did
    not converge (metafor stops with an error in both cases), is flagged in
    ``converged`` with a warning, as is one whose side regression did not
    converge. The side regression is fitted for all rows in one call of the
    meta-regression engine (:mod:`spatialmeta.meta_analysis.regression`).

    References
    ----------
    Duval, S., & Tweedie, R. (2000). doi:10.1111/j.0006-341X.2000.00455.x
    Duval, S., & Tweedie, R. (2000). doi:10.1080/01621459.2000.10473905

    Examples
    --------
    >>> import numpy as np
    >>> yi = np.array([0.1, 0.3, 0.35, 0.4, 0.45, 0.6, 0.8, 0.9])
    >>> vi = np.array([0.01, 0.02, 0.02, 0.03, 0.04, 0.05, 0.08, 0.1])
    >>> tf = trimfill(yi, vi, method="FE")
    >>> tf.side, tf.k0, round(tf.estimate, 4)
    ('left', 4, 0.2393)
    >>> tf.yi[tf.fill].round(4).tolist()
    [0.0286, -0.1214, -0.3214, -0.4214]
    """
    est = str(estimator).upper()
    if est not in ("L0", "R0"):
        raise ValueError(
            f"trimfill: `estimator` must be 'L0' or 'R0'; got {estimator!r} (metafor's Q0 "
            "is not implemented)."
        )
    if side is not None and side not in ("left", "right"):
        raise ValueError(
            f"trimfill: `side` must be 'left', 'right' or None (automatic); got {side!r}."
        )
    spec = fit_spec(yi, method, test, level, what="trimfill", control=control)
    method, test, level = spec.method, spec.test, spec.level
    b = _inputs("trimfill", yi, vi, min_k=3, labels=labels)
    y, v, m, k = b.y, b.v, b.m, b.k
    n, kmax = y.shape

    if side is None:
        _, slope, side_conv = _sei_regression(y, v, m, k, method, b.shape, spec.control)
        right = slope < 0
    else:
        right = np.full(n, side == "right")
        side_conv = np.ones(n, dtype=bool)
    sgn = np.where(right, -1.0, 1.0)

    # Flip to the "missing on the left" convention and sort each row (stable, as R's sort).
    yf = y * sgn[:, None]
    order = np.argsort(np.where(m, yf, np.inf), axis=-1, kind="stable")
    ys = np.take_along_axis(yf, order, axis=-1)
    vs = np.take_along_axis(v, order, axis=-1)
    pos = np.arange(kmax)[None, :]
    ms = pos < k[:, None]
    kf = k.astype(float)

    k0 = np.zeros(n, dtype=np.int64)
    se_k0 = np.full(n, np.nan)
    beta = np.zeros(n)
    fit_ok = np.ones(n, dtype=bool)
    settled = np.zeros(n, dtype=bool)
    iterations = np.zeros(n, dtype=np.int64)
    active = np.arange(n)
    # The k0 search is sequential in its iterations; every iteration handles all
    # unsettled rows at once.
    for it in range(1, maxiter + 1):
        if active.size == 0:
            break
        a = active
        kt = k[a] - k0[a]
        mt = pos < kt[:, None]
        _, bt, ok = _wmean_fit(ys[a], vs[a], mt, kt, method, spec.control)
        beta[a] = bt
        fit_ok[a] &= ok
        iterations[a] = it
        yc = ys[a] - bt[:, None]
        sr = _signed_ranks(yc, ms[a])
        ka = kf[a]
        with np.errstate(invalid="ignore", divide="ignore"):
            if est == "R0":
                neg = sr < 0
                top = np.where(neg, -sr, -np.inf).max(axis=-1)
                # Every study equal to the trimmed estimate (all signs 0): nothing to
                # trim. metafor's result there hinges on a 1-ulp rounding error of its
                # estimate; k0 = 0 is what it gets when that error leaves all below.
                top = np.where((sr == 0).all(axis=-1), ka, top)
                new = ka - top - 1.0
                se = np.sqrt(2.0 * np.maximum(0.0, new) + 2.0)
            else:
                sr_pos = np.where(sr > 0, sr, 0.0).sum(axis=-1)
                new = (4.0 * sr_pos - ka * (ka + 1.0)) / (2.0 * ka - 1.0)
                var_sr = (
                    ka * (ka + 1.0) * (2.0 * ka + 1.0)
                    + 10.0 * new**3
                    + 27.0 * new**2
                    + 17.0 * new
                    - 18.0 * ka * new**2
                    - 18.0 * ka * new
                    + 6.0 * ka**2 * new
                ) / 24.0
                se = 4.0 * np.sqrt(var_sr) / (2.0 * ka - 1.0)
        new = np.maximum(0.0, np.round(new))  # half to even, as R's round
        se_k0[a] = np.maximum(0.0, se)
        broken = ~np.isfinite(new) | (new >= ka)  # metafor stops with an error here
        new = np.where(broken, 0.0, new).astype(np.int64)
        fit_ok[a] &= ~broken
        done = (new == k0[a]) | broken
        k0[a] = new
        settled[a[done]] = True
        active = a[~done]
    converged = settled & fit_ok & side_conv
    bad = int((~converged).sum())
    if bad:
        warnings.warn(
            f"trimfill: {bad} of {n} meta-analyses did not converge (k0 not settled after "
            f"{maxiter} iterations, a trimmed {method} fit that did not converge, or no study "
            "below the trimmed estimate); see `converged` on the result.",
            RuntimeWarning,
            stacklevel=2,
        )

    # Mirror the k0 most extreme studies about the trimmed estimate.
    k0max = int(k0.max()) if n else 0
    fy = np.full((n, k0max), np.nan)
    fv = np.full((n, k0max), np.nan)
    if k0max:
        j = np.arange(k0max)[None, :]
        src = k[:, None] - k0[:, None] + j  # positions k - k0 .. k - 1 of the sorted row
        has = j < k0[:, None]
        src = np.where(has, src, 0)
        mirrored = 2.0 * beta[:, None] - np.take_along_axis(ys, src, axis=-1)
        fy = np.where(has, sgn[:, None] * mirrored, np.nan)
        fv = np.where(has, np.take_along_axis(vs, src, axis=-1), np.nan)
        if ilim is not None:
            lo, hi = sorted(float(x) for x in ilim)
            fy = np.where(has, np.clip(fy, lo, hi), np.nan)
    aug_y = np.concatenate([y, fy], axis=-1)
    aug_v = np.concatenate([v, fv], axis=-1)
    fill = np.concatenate([np.zeros_like(m), ~np.isnan(fy)], axis=-1)
    out_shape = b.shape + (kmax + k0max,)
    lab = None
    if b.labels is not None:
        extra = np.array([f"Filled {i + 1}" for i in range(k0max)], dtype=object)
        orig = b.labels.astype(object)
        if orig.ndim == 1:
            lab = np.concatenate([orig, extra])
        else:
            lab = np.concatenate(
                [orig, np.broadcast_to(extra, orig.shape[:-1] + (k0max,))], axis=-1
            )
    result = pool(
        aug_y.reshape(out_shape),
        aug_v.reshape(out_shape),
        method=method,
        test=test,
        level=level,
        control=spec.control,
        labels=lab,
    )
    if b.measure != "effect":
        result = replace(result, measure=b.measure)
    p_k0 = np.where(est == "R0", 0.5 ** (k0 + 1.0), np.nan)
    return TrimFillResult(
        k0=_shaped(k0, b.shape),
        se_k0=_shaped(se_k0, b.shape),
        side=_shaped(np.where(right, "right", "left"), b.shape),
        estimator=est,
        p_k0=_shaped(p_k0, b.shape),
        yi=aug_y.reshape(out_shape),
        vi=aug_v.reshape(out_shape),
        fill=fill.reshape(out_shape),
        result=result,
        converged=_shaped(converged, b.shape),
        iterations=_shaped(iterations, b.shape),
        method=method,
    )


# --------------------------------------------------------------------------- fail-safe N


@dataclass(frozen=True, eq=False)
class FsnResult(Result):
    """Result of :func:`fsn` (metafor's ``fsn`` object).

    ``fsnum`` is the fail-safe N (a whole number stored as float; ``inf``
    for Orwin's method with ``target = 0``); ``pval`` the p-value of the
    observed studies (Rosenthal: one-sided Stouffer; Rosenberg: two-sided
    z of the common-effect estimate; NaN for Orwin); ``meanes`` the mean
    effect (Orwin: unweighted or inverse-variance weighted; Rosenberg: the
    weighted mean; NaN for Rosenthal); ``target`` Orwin's target effect
    (NaN otherwise).
    """

    _dict_fields = ("type", "alpha", "fsnum", "pval", "meanes", "target", "k")

    type: str
    fsnum: Any
    alpha: float
    pval: Any
    meanes: Any
    target: Any
    k: Any

    def summary(self) -> str:
        """Reads like metafor's ``print.fsn`` (single meta-analysis)."""
        if np.ndim(self.fsnum):
            return "\n".join(
                f"Row {i}: Fail-safe N = {x:g}" for i, x in enumerate(np.ravel(self.fsnum))
            )
        lines = ["", f"Fail-safe N Calculation Using the {self.type} Approach", ""]
        if self.type == "Rosenthal":
            lines += [f"Observed Significance Level: {self.pval:.4f}",
                      f"Target Significance Level:   {self.alpha:g}"]  # fmt: skip
        elif self.type == "Orwin":
            lines += [f"Average Effect Size: {self.meanes:.4f}",
                      f"Target Effect Size:  {self.target:.4f}"]  # fmt: skip
        else:
            lines += [f"Average Effect Size:         {self.meanes:.4f}",
                      f"Observed Significance Level: {self.pval:.4f}",
                      f"Target Significance Level:   {self.alpha:g}"]  # fmt: skip
        lines += ["", f"Fail-safe N: {self.fsnum:g}", ""]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()


def fsn(
    yi,
    vi=None,
    *,
    type: str = "Rosenthal",  # noqa: A002 - metafor's argument name
    alpha: float = 0.05,
    target=None,
    weighted: bool = False,
) -> FsnResult:
    """Fail-safe N, as ``metafor::fsn``: how many null studies would overturn the result.

    Parameters
    ----------
    yi : array_like or object with ``.estimates()``
        Effect sizes, shape ``(..., k)``; NaN marks a missing study.
    vi : array_like, optional
        Sampling variances, same shape; not needed for unweighted Orwin.
    type : {"Rosenthal", "Orwin", "Rosenberg"}
        Rosenthal's file-drawer number (Stouffer's method), Orwin's number
        of studies with zero effect that bring the mean effect down to
        ``target``, or Rosenberg's weighted fail-safe number.
    alpha : float
        Target significance level (Rosenthal: one-sided; Rosenberg:
        two-sided).
    target : float or array_like, optional
        Orwin's target effect size (default: half the mean effect), a scalar
        or one per meta-analysis; its sign is made that of the mean effect.
    weighted : bool
        Orwin: inverse-variance weighted mean effect instead of the plain mean.

    Returns
    -------
    FsnResult
        ``fsnum`` (rounded up to a whole number, metafor's rule), ``alpha``,
        ``pval``, ``meanes``, ``target`` and ``k``.

    Raises
    ------
    ValueError
        Unknown type, ``alpha`` outside (0, 1), bad ``yi``/``vi``, a row
        without studies.

    References
    ----------
    Rosenthal, R. (1979). doi:10.1037/0033-2909.86.3.638
    Orwin, R. G. (1983). doi:10.3102/10769986008002157
    Rosenberg, M. S. (2005). doi:10.1111/j.0014-3820.2005.tb01004.x

    Examples
    --------
    >>> import numpy as np
    >>> yi = np.array([0.32, 0.41, 0.12, 0.55, 0.27])
    >>> vi = np.array([0.02, 0.03, 0.01, 0.05, 0.02])
    >>> fsn(yi, vi).fsnum
    34.0
    >>> res = fsn(yi, type="Orwin")
    >>> res.fsnum, round(res.meanes, 4), round(res.target, 4)
    (5.0, 0.334, 0.167)
    >>> fsn(np.stack([yi, yi / 2]), np.stack([vi, vi]), type="Rosenberg").fsnum.tolist()
    [18.0, 1.0]
    """
    types = ("Rosenthal", "Orwin", "Rosenberg")
    canon = {t.lower(): t for t in types}.get(str(type).lower())
    if canon is None:
        raise ValueError(
            f"fsn: `type` must be one of {', '.join(repr(t) for t in types)}; got {type!r} "
            "(metafor's 'REM' is simulation-based and not implemented)."
        )
    if not (isinstance(alpha, int | float) and 0 < alpha < 1):
        raise ValueError(f"fsn: `alpha` must be a significance level in (0, 1); got {alpha!r}.")
    need_vi = canon != "Orwin" or weighted
    b = _inputs("fsn", yi, vi, min_k=1, need_vi=need_vi)
    y, v, m, k = b.y, b.v, b.m, b.k
    kf = k.astype(float)
    n = y.shape[0]
    yz = np.where(m, y, 0.0)
    w = np.where(m, 1.0 / np.where(m, v, 1.0), 0.0)
    nan = np.full(n, np.nan)
    meanes, pval, tgt = nan, nan, nan
    with np.errstate(divide="ignore", invalid="ignore"):
        if canon == "Rosenthal":
            z_avg = np.abs((yz * np.sqrt(w)).sum(-1)) / np.sqrt(kf)
            pval = stats.norm.sf(z_avg)
            num = np.maximum(0.0, kf * (z_avg / stats.norm.isf(alpha)) ** 2 - kf)
        elif canon == "Rosenberg":
            sw = w.sum(-1)
            meanes = (w * yz).sum(-1) / sw
            zval = meanes / np.sqrt(1.0 / sw)
            wp = ((w * yz).sum(-1) / stats.norm.isf(alpha / 2.0)) ** 2 - sw
            pval = 2.0 * stats.norm.sf(np.abs(zval))
            num = np.maximum(0.0, kf * wp / sw)
        else:
            meanes = (w * yz).sum(-1) / w.sum(-1) if weighted else yz.sum(-1) / kf
            if target is None:
                tgt = meanes / 2.0
            else:
                try:
                    tgt = np.broadcast_to(np.asarray(target, dtype=float), b.shape).reshape(n)
                except ValueError as err:
                    raise ValueError(
                        f"fsn: `target` must be a scalar or one value per meta-analysis "
                        f"(shape {b.shape}); got shape {np.shape(target)}."
                    ) from err
                tgt = tgt.astype(float).copy()
            tgt = np.where((tgt != 0) & (np.sign(tgt) != np.sign(meanes)), -tgt, tgt)
            num = np.where(tgt == 0, np.inf, np.maximum(0.0, kf * (meanes - tgt) / tgt))
    # metafor: round up unless within sqrt(eps) of a whole number.
    with np.errstate(invalid="ignore"):
        near = np.abs(num - np.round(num)) < np.sqrt(_EPS)
    num = np.where(np.isfinite(num) & ~near, np.ceil(num), np.round(num))
    return FsnResult(
        type=canon,
        fsnum=_shaped(num, b.shape),
        alpha=float(alpha),
        pval=_shaped(pval, b.shape),
        meanes=_shaped(meanes, b.shape),
        target=_shaped(tgt, b.shape),
        k=_shaped(k, b.shape),
    )


# --------------------------------------------------------------------------- Baujat


@dataclass(frozen=True, eq=False)
class BaujatResult(Result):
    """Result of :func:`baujat`: per-study coordinates of the Baujat plot.

    ``x`` (contribution to the heterogeneity statistic, the squared Pearson
    residual) and ``y`` (influence on the pooled estimate) have the shape of
    ``yi``, NaN for missing studies; ``result`` is the full fit.
    """

    x: np.ndarray
    y: np.ndarray
    result: PoolResult
    labels: np.ndarray | None = None

    def summary(self) -> str:
        """The coordinates as metafor's ``baujat`` returns them (a table per study)."""
        if np.ndim(self.x) != 1:
            return f"Baujat coordinates of {int(np.prod(np.shape(self.x)[:-1]))} meta-analyses"
        return self.to_frame().to_string(index=False)

    def to_frame(self):
        """Single meta-analysis: one row per study (``x``, ``y``, ``label``)."""
        import pandas as pd

        if self.x.ndim != 1:
            raise ValueError("to_frame needs a single meta-analysis; index the batch first.")
        keep = ~np.isnan(self.x)
        lab = self.labels if self.labels is not None else np.arange(1, self.x.size + 1)
        return pd.DataFrame({"x": self.x[keep], "y": self.y[keep], "label": np.asarray(lab)[keep]})


def baujat(
    yi, vi=None, *, method: str | None = None, test: str | None = None, labels=None,
    control=None,
) -> BaujatResult:  # fmt: skip
    """Baujat coordinates of every study, as the data frame ``metafor::baujat`` returns.

    ``x_i = (y_i - mu)^2 / (v_i + tau^2)`` from the full fit and
    ``y_i = (mu_(-i) - mu)^2 / var(mu_(-i))`` from the fit without study i
    (same method and test; with ``test="knha"`` the leave-one-out variance
    carries its Knapp-Hartung factor).

    Parameters
    ----------
    yi : array_like, PoolResult or object with ``.estimates()``
        Effect sizes, shape ``(..., k)``; NaN marks a missing study. A
        :class:`PoolResult` supplies the studies, ``method`` and ``test`` (given as
        well, they must agree with it).
    vi : array_like
        Sampling variances, same shape.
    method : str, optional
        tau^2 estimator, as in :func:`pool` (``"FE"`` for a common effect);
        default the PoolResult's, else ``"REML"``.
    test : {"z", "knha"}, optional
        Test of the fits (affects ``y`` through the leave-one-out variance);
        default the PoolResult's, else ``"z"``.
    labels : array_like, optional
        Study labels, kept on the result.
    control : dict or Control, optional
        Fisher scoring's settings of every fit (as for :func:`pool`); a PoolResult's own.

    Returns
    -------
    BaujatResult
        ``x`` and ``y`` with the shape of ``yi``, and the full fit.

    Raises
    ------
    ValueError
        Fewer than 2 studies in a row, bad ``yi``/``vi`` or method.

    Notes
    -----
    All leave-one-out fits of all rows are one batch of ``rows * k``
    meta-analyses (in chunks of rows to bound memory). A leave-one-out fit
    that does not converge gives NaN, as metafor's ``try`` does.

    References
    ----------
    Baujat, B., et al. (2002). doi:10.1002/sim.1221

    Examples
    --------
    >>> import numpy as np
    >>> yi = np.array([-0.89, -1.59, -1.35, -1.44, -0.22, -0.79, 0.01])
    >>> vi = np.array([0.33, 0.19, 0.42, 0.02, 0.05, 0.01, 0.06])
    >>> bj = baujat(yi, vi, method="FE")
    >>> np.round(bj.x, 3).tolist()
    [0.003, 2.813, 0.574, 16.879, 8.166, 0.476, 12.586]
    >>> np.round(bj.y, 3).tolist()
    [0.0, 0.077, 0.007, 5.728, 0.921, 0.489, 1.161]
    """
    spec = fit_spec(yi, method, test, None, what="baujat", control=control)
    method, test = spec.method, spec.test
    knha = test == "knha"
    b = _inputs("baujat", yi, vi, min_k=2, labels=labels)
    y, v, m = b.y, b.v, b.m
    n, kmax = y.shape
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        full = pool(
            y.reshape(b.shape + (kmax,)), v.reshape(b.shape + (kmax,)), method=method,
            test=test, control=spec.control,
        )  # fmt: skip
    mu = np.asarray(full.estimate, dtype=float).reshape(n)
    tau2 = np.asarray(full.tau2, dtype=float).reshape(n)
    bx = np.where(m, (y - mu[:, None]) ** 2 / (v + tau2[:, None]), np.nan)

    by = np.full((n, kmax), np.nan)
    eye = np.eye(kmax, dtype=bool)
    for sl in _chunks(n, kmax):
        r = np.arange(n)[sl]
        # (rows, left-out study, study) -> rows * k leave-one-out meta-analyses.
        ml = (m[r][:, None, :] & ~eye[None, :, :]).reshape(-1, kmax)
        yl = np.broadcast_to(y[r][:, None, :], (r.size, kmax, kmax)).reshape(-1, kmax)
        vl = np.broadcast_to(v[r][:, None, :], (r.size, kmax, kmax)).reshape(-1, kmax)
        kl = ml.sum(-1)
        use = m[r].reshape(-1) & (kl >= 1)
        t2, bl, ok = _wmean_fit(yl[use], vl[use], ml[use], kl[use], method, spec.control)
        with np.errstate(divide="ignore", invalid="ignore"):
            w = np.where(ml[use], 1.0 / (np.where(ml[use], vl[use], 1.0) + t2[:, None]), 0.0)
            vb = 1.0 / w.sum(-1)
            if knha:
                e = np.where(ml[use], yl[use] - bl[:, None], 0.0)
                rss = (w * e * e).sum(-1)
                s2w = np.where(rss <= _EPS, 0.0, rss / (kl[use] - 1.0))
                vb = s2w * vb
            val = (bl - np.repeat(mu[r], kmax)[use]) ** 2 / vb
        out = np.full(r.size * kmax, np.nan)
        out[use] = np.where(ok, val, np.nan)
        by[r] = out.reshape(r.size, kmax)
    shape = b.shape + (kmax,)
    return BaujatResult(x=bx.reshape(shape), y=by.reshape(shape), result=full, labels=b.labels)

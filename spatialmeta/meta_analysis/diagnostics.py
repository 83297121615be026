"""Leave-one-out, cumulative meta-analysis and influence diagnostics, as metafor.

The functions here mirror ``metafor::leave1out``, ``metafor::cumul``,
``metafor::influence`` (with ``rstudent``) and ``metafor::rstandard`` for
intercept-only ``rma.uni`` models (common effect or random effects with any
tau^2 estimator of :func:`~spatialmeta.meta_analysis.pool.pool`).

All of them work array-at-a-time: for ``yi`` of shape ``(..., k)`` they build
the ``(..., k, k)`` batch of study subsets (every study but one, or the first
``s`` studies) as NaN-masked rows and fit the whole batch with a single
:func:`~spatialmeta.meta_analysis.pool.pool` call (in chunks of rows when the
batch is large), so iterative estimators iterate all subsets together.

References
----------
Viechtbauer, W. (2010). Conducting meta-analyses in R with the metafor
package. *Journal of Statistical Software*, 36(3), 1-48. doi:10.18637/jss.v036.i03
Viechtbauer, W., & Cheung, M. W.-L. (2010). Outlier and influence diagnostics
for meta-analysis. *Research Synthesis Methods*, 1(2), 112-125. doi:10.1002/jrsm.11
Lau, J., Schmid, C. H., & Chalmers, T. C. (1995). Cumulative meta-analysis of
clinical trials builds evidence for exemplary medical care. *Journal of
Clinical Epidemiology*, 48(1), 45-57. doi:10.1016/0895-4356(94)00106-Z
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pandas as pd
from scipy import stats

from spatialmeta.meta_analysis.estimators import FIXED_METHODS
from spatialmeta.meta_analysis.fitted import analysis, fits_by_k
from spatialmeta.meta_analysis.pool import PoolResult
from spatialmeta.meta_analysis.results import Result

__all__ = [
    "CumulResult",
    "InfluenceResult",
    "LeaveOneOutResult",
    "ResidualResult",
    "cumul",
    "influence",
    "leave1out",
    "rstandard",
    "rstudent",
]

# Rows x studies x studies held in memory at once when fitting subset batches.
_CHUNK_ELEMENTS = 1 << 22
_TINY_RESID = 100.0 * float(np.finfo(float).eps)  # metafor sets |resid| below this to 0
_FIT_FIELDS = ("estimate", "se", "zval", "pval", "ci_lb", "ci_ub", "Q", "Qp", "tau2", "I2", "H2")
_POOL_NAMES = {"Q": "QE", "Qp": "QEp"}


# --------------------------------------------------------------------------- results


class _PerStudy(Result):
    """Shared table export of results with one value per study (or step)."""

    _columns: ClassVar[tuple[str, ...]] = ()

    def _study_index(self) -> np.ndarray:
        return np.arange(np.shape(getattr(self, self._columns[0]))[-1])

    def _column(self, name: str) -> np.ndarray:
        return np.asarray(getattr(self, name))

    def _column_names(self) -> list[str]:
        return list(self._columns)

    def to_frame(self) -> pd.DataFrame:
        """One row per study (or step), with metafor's column names.

        A batched result gets a MultiIndex: the batch index, then ``study``.
        The index holds the study labels when given, else the study's position
        in the input (0-based).
        """
        shape = np.shape(getattr(self, self._columns[0]))
        cols = {}
        for name in self._column_names():
            out = "tval" if (name == "zval" and getattr(self, "test", "z") == "knha") else name
            cols[out] = self._column(name).reshape(-1)
        frame = pd.DataFrame(cols)
        study = self._study_index()
        study = np.broadcast_to(study, shape) if np.ndim(study) < len(shape) else study
        if len(shape) == 1:
            frame.index = pd.Index(np.asarray(study).tolist(), name="study")
        else:
            tuples = [(*i[:-1], np.asarray(study)[i]) for i in np.ndindex(*shape)]
            names = [f"row{j}" for j in range(len(shape) - 1)] + ["study"]
            frame.index = pd.MultiIndex.from_tuples(
                [tuple(x.item() if hasattr(x, "item") else x for x in t) for t in tuples],
                names=names,
            )
        return frame

    def summary(self) -> str:
        """The table of :meth:`to_frame`, as metafor prints these results."""
        return self.to_frame().to_string()


@dataclass(frozen=True, eq=False)
class LeaveOneOutResult(_PerStudy):
    """Result of :func:`leave1out`: the fit without each study, as ``metafor::leave1out``.

    Every field has the shape of ``yi``, ``(..., k)``: entry ``i`` is the
    model fitted to all studies but study ``i`` (NaN where study ``i`` is
    missing). ``Q``/``Qp`` are the heterogeneity test and its p-value (QE and
    QEp of that fit); with ``test="knha"`` ``zval`` holds t values. ``k`` is
    the number of studies in each fit and ``converged`` its tau^2 flag.
    ``full`` is the model fitted to all studies.
    """

    estimate: np.ndarray
    se: np.ndarray
    zval: np.ndarray
    pval: np.ndarray
    ci_lb: np.ndarray
    ci_ub: np.ndarray
    Q: np.ndarray
    Qp: np.ndarray
    tau2: np.ndarray
    I2: np.ndarray
    H2: np.ndarray
    k: np.ndarray
    converged: np.ndarray
    method: str
    test: str
    level: float
    labels: np.ndarray | None = None
    full: PoolResult | None = None

    _columns: ClassVar[tuple[str, ...]] = (*_FIT_FIELDS, "k", "converged")

    @property
    def tval(self) -> np.ndarray:
        """The t values of the Knapp-Hartung test (``zval`` under another name)."""
        if self.test != "knha":
            raise AttributeError('`tval` exists only for test="knha"; this result has `zval`.')
        return self.zval

    def _column_names(self) -> list[str]:
        # metafor leaves tau2 out for common-effect models.
        return [c for c in self._columns if not (c == "tau2" and self.method in FIXED_METHODS)]

    def _study_index(self) -> np.ndarray:
        if self.labels is not None:
            return np.asarray(self.labels)
        return np.arange(np.shape(self.estimate)[-1])


@dataclass(frozen=True, eq=False)
class CumulResult(LeaveOneOutResult):
    """Result of :func:`cumul`: cumulative fits, as ``metafor::cumul``.

    Fields have shape ``(..., k)`` in the cumulative order: entry ``s`` is the
    model fitted to the first ``s + 1`` studies of that order (NaN where the
    study added at step ``s`` is missing). ``order`` holds the 0-based input
    positions of the studies in that order, ``labels`` the labels reordered
    the same way. Steps with a single study are fitted as metafor does for
    ``k = 1``: tau^2 = 0 and a z test whatever ``test`` is.
    """

    order: np.ndarray | None = None

    def _study_index(self) -> np.ndarray:
        if self.labels is not None:
            return np.asarray(self.labels)
        return np.asarray(self.order)


@dataclass(frozen=True, eq=False)
class InfluenceResult(_PerStudy):
    """Result of :func:`influence`: case-deletion diagnostics, as ``metafor::influence``.

    Every per-study field has the shape of ``yi``. ``rstudent`` (externally
    standardized residuals), ``dffits``, ``cook_d`` (Cook's distance),
    ``cov_r`` (covariance ratio), ``tau2_del`` and ``QE_del`` (tau^2 and QE
    without the study), ``hat`` (leverage), ``weight`` (percent weight),
    ``dfbs`` (DFBETAS of the intercept), ``is_infl`` (metafor's flag for an
    influential study, printed as ``inf = "*"``), and the pieces of
    ``rstudent``: ``resid`` (y_i minus the estimate without study i) and
    ``resid_se``. ``converged`` flags the leave-one-out tau^2 fits; ``full``
    is the model fitted to all studies.

    A study is flagged influential (metafor's rule, p = 1 coefficient) when
    ``|dffits| > 3 sqrt(1 / (k - 1))``, or ``pchisq(cook_d, 1) > 0.5``, or
    ``hat > 3 / k``, or ``|dfbs| > 1``.
    """

    rstudent: np.ndarray
    dffits: np.ndarray
    cook_d: np.ndarray
    cov_r: np.ndarray
    tau2_del: np.ndarray
    QE_del: np.ndarray
    hat: np.ndarray
    weight: np.ndarray
    dfbs: np.ndarray
    is_infl: np.ndarray
    resid: np.ndarray
    resid_se: np.ndarray
    converged: np.ndarray
    method: str
    test: str
    level: float
    labels: np.ndarray | None = None
    full: PoolResult | None = None

    _columns: ClassVar[tuple[str, ...]] = (
        "rstudent", "dffits", "cook_d", "cov_r", "tau2_del", "QE_del", "hat", "weight",
        "dfbs", "inf",
    )  # fmt: skip

    def _column(self, name: str) -> np.ndarray:
        if name == "inf":
            return np.where(np.asarray(self.is_infl), "*", "")
        return np.asarray(getattr(self, name))

    def _study_index(self) -> np.ndarray:
        if self.labels is not None:
            return np.asarray(self.labels)
        return np.arange(np.shape(self.rstudent)[-1])

    @property
    def inf(self) -> np.ndarray:
        """metafor's ``inf`` column: ``"*"`` for an influential study, else ``""``."""
        return self._column("inf")


@dataclass(frozen=True, eq=False)
class ResidualResult(_PerStudy):
    """Residuals with standard errors and their ratio, as metafor's ``rstandard``/``rstudent``.

    ``resid``, ``se`` and ``z`` have the shape of ``yi``; ``type`` is
    ``"marginal"``, ``"conditional"`` or ``"deleted"`` (the externally
    standardized residuals of :func:`rstudent`).
    """

    resid: np.ndarray
    se: np.ndarray
    z: np.ndarray
    method: str
    type: str
    labels: np.ndarray | None = None

    _columns: ClassVar[tuple[str, ...]] = ("resid", "se", "z")

    def _study_index(self) -> np.ndarray:
        if self.labels is not None:
            return np.asarray(self.labels)
        return np.arange(np.shape(self.resid)[-1])


# --------------------------------------------------------------------------- inputs


def _studies(full: PoolResult) -> tuple[np.ndarray, np.ndarray]:
    """The fit's effects and variances, shape ``(..., k)`` (NaN = missing study)."""
    return np.asarray(full.yi, dtype=float), np.asarray(full.vi, dtype=float)


def _check_k(y: np.ndarray, method: str, what: str) -> None:
    """Leave-one-out needs k >= 3 (random effects) or k >= 2 (common effect) per row."""
    if y.ndim == 0:
        return  # pool() explains the missing study axis
    fixed = method in FIXED_METHODS
    need = 2 if fixed else 3
    k = (~np.isnan(y)).sum(axis=-1)
    bad = k < need
    if not bad.any():
        return
    if y.ndim == 1:
        where = f"the meta-analysis has k = {int(k)}"
    else:
        idx = tuple(int(i) for i in np.argwhere(bad)[0])
        where = f"row [{', '.join(map(str, idx))}] of `yi` has k = {int(k[idx])}"
    if fixed:
        raise ValueError(
            f"{what} needs at least 2 studies (each fit leaves one out); {where}. "
            "Drop that meta-analysis or add studies."
        )
    raise ValueError(
        f"{what} with method={method!r} needs at least 3 studies: every leave-one-out fit "
        f"must keep k - 1 >= 2 studies to estimate tau^2; {where}. Use method='FE' for "
        "that meta-analysis, drop it, or add studies."
    )


# --------------------------------------------------------------------------- subset fits


def _fit_subsets(
    y2, v2, obs2, include, wanted, method, test, level, control=None
) -> dict[str, np.ndarray]:
    """Fit many study subsets of every row with batched pool() calls.

    ``y2, v2, obs2`` have shape ``(n, k)``; ``include(obs)`` maps a block of
    rows ``(r, k)`` to the subsets ``(r, S, k)`` (True = study in the fit) and
    ``wanted`` ``(n, S)`` says which subsets to fit (the others stay NaN).
    Subsets with one study are fitted as metafor fits k = 1 (tau^2 = 0, z
    test). Rows are processed in blocks of about ``_CHUNK_ELEMENTS`` numbers;
    this loop is over blocks of many meta-analyses, never over studies.
    """
    n, kmax = y2.shape
    steps = wanted.shape[1]
    names = (*_FIT_FIELDS, "k", "converged")
    out = {f: np.full((n, steps), np.nan) for f in _FIT_FIELDS}
    out["k"] = np.zeros((n, steps), dtype=int)
    out["converged"] = np.ones((n, steps), dtype=bool)
    block = max(1, _CHUNK_ELEMENTS // max(1, steps * kmax))
    for start in range(0, n, block):
        rows = slice(start, min(n, start + block))
        m3 = include(obs2[rows])
        r = m3.shape[0]
        kf = m3.sum(axis=-1).reshape(-1)
        want = wanted[rows].reshape(-1) & (kf >= 1)
        yy = np.where(m3, y2[rows, None, :], np.nan).reshape(-1, kmax)
        vv = np.where(m3, v2[rows, None, :], np.nan).reshape(-1, kmax)
        res = {f: np.full(r * steps, np.nan) for f in _FIT_FIELDS}
        res["k"] = kf.astype(int)
        res["converged"] = np.ones(r * steps, dtype=bool)
        for sel, fit in fits_by_k(yy, vv, kf, method, test, level, control, want):
            for f in _FIT_FIELDS:
                res[f][sel] = np.asarray(getattr(fit, _POOL_NAMES.get(f, f)), dtype=float)
            res["converged"][sel] = np.asarray(fit.converged)
        for f in names:
            out[f][rows] = res[f].reshape(r, steps)
    return out


def _warn_unconverged(converged, wanted, method, what, labels) -> None:
    bad = wanted & ~converged
    if not bad.any():
        return
    if bad.ndim == 1:
        idx = np.flatnonzero(bad)
        if labels is not None and np.ndim(labels) == 1:
            names = ", ".join(repr(str(labels[i])) for i in idx[:5])
        else:
            names = ", ".join(str(int(i)) for i in idx[:5])
        more = "" if idx.size <= 5 else f" and {idx.size - 5} more"
        msg = f"{what} (study {names}{more})"
    else:
        msg = f"{int(bad.sum())} of {int(wanted.sum())} {what} fits"
    warnings.warn(
        f"tau^2 estimation ({method}) did not converge for {msg}; those values are flagged "
        "in `converged` (metafor reports NA for them).",
        RuntimeWarning,
        stacklevel=3,
    )


def _leave_one_out_fits(y, v, method, test, level, control=None):
    """Leave-one-out fits of every row: dict of ``(..., k)`` arrays."""
    shape = y.shape
    kmax = shape[-1]
    y2, v2 = y.reshape(-1, kmax), v.reshape(-1, kmax)
    obs2 = ~np.isnan(y2)
    eye = np.eye(kmax, dtype=bool)

    def include(obs):
        return obs[:, None, :] & ~eye

    out = _fit_subsets(y2, v2, obs2, include, obs2, method, test, level, control)
    return {f: a.reshape(shape) for f, a in out.items()}, obs2.reshape(shape)


# --------------------------------------------------------------------------- public API


@analysis("leave1out")
def leave1out(full: PoolResult) -> LeaveOneOutResult:
    """Leave-one-out analysis: the model refitted without each study, as ``metafor::leave1out``.

    Parameters
    ----------
    {fit_parameters}

    Returns
    -------
    LeaveOneOutResult
        ``estimate, se, zval, pval, ci_lb, ci_ub, Q, Qp, tau2, I2, H2`` (and
        ``k``, ``converged``), each of shape ``(..., k)``: entry ``i`` comes
        from the fit without study ``i``.

    Raises
    ------
    ValueError
        A meta-analysis with fewer than 3 studies under a random-effects
        method (each fit needs k - 1 >= 2), fewer than 2 under a common
        effect, or any input :func:`pool` rejects.

    Notes
    -----
    The ``(..., k, k)`` batch of leave-one-out subsets is fitted by one
    :func:`pool` call (in blocks of rows for large batches). A fit whose
    tau^2 iteration does not converge keeps its last value, is flagged in
    ``converged`` and triggers a ``RuntimeWarning``; metafor reports NA.

    Examples
    --------
    >>> import numpy as np
    >>> yi = np.array([-0.89, -1.59, -1.35, -1.44, -0.22, -0.79, 0.01])
    >>> vi = np.array([0.33, 0.19, 0.42, 0.02, 0.05, 0.01, 0.06])
    >>> res = leave1out(yi, vi, method="DL")
    >>> np.round(res.estimate, 4).tolist()
    [-0.8271, -0.7296, -0.7873, -0.6668, -0.9543, -0.866, -0.9883]
    >>> res.to_frame().columns.tolist()[:4]
    ['estimate', 'se', 'zval', 'pval']
    """
    y, v = _studies(full)
    _check_k(y, full.method, "leave1out")
    out, obs = _leave_one_out_fits(y, v, full.method, full.test, full.level, full.control)
    _warn_unconverged(out["converged"], obs, full.method, "leave-one-out", full.labels)
    return LeaveOneOutResult(
        **out,
        method=full.method,
        test=full.test,
        level=full.level,
        labels=full.labels,
        full=full,
    )


def _check_order(order, kmax: int) -> np.ndarray:
    arr = np.asarray(order)
    if arr.ndim != 1 or arr.shape[0] != kmax:
        raise ValueError(
            f"`order` must list every study once (a permutation of 0..{kmax - 1}); got shape "
            f"{arr.shape} for {kmax} studies. To order by a variable x, pass "
            "order=np.argsort(x, kind='stable')."
        )
    if arr.dtype == bool or not np.issubdtype(arr.dtype, np.number):
        raise ValueError(
            f"`order` must hold integer study positions 0..{kmax - 1}; got dtype {arr.dtype}. "
            "To order by a variable x, pass order=np.argsort(x, kind='stable')."
        )
    if not np.all(np.mod(arr, 1) == 0):
        bad = int(np.flatnonzero(np.mod(arr, 1) != 0)[0])
        raise ValueError(
            f"`order[{bad}]` = {arr[bad].item()!r} is not an integer study position; "
            f"`order` must be a permutation of 0..{kmax - 1}."
        )
    arr = arr.astype(int)
    out_of_range = (arr < 0) | (arr >= kmax)
    if out_of_range.any():
        bad = int(np.flatnonzero(out_of_range)[0])
        raise ValueError(
            f"`order[{bad}]` = {arr[bad]} is not a study position (0..{kmax - 1}); `order` "
            "must be a permutation of the study positions."
        )
    counts = np.bincount(arr, minlength=kmax)
    if (counts != 1).any():
        dup = int(np.flatnonzero(counts > 1)[0])
        miss = int(np.flatnonzero(counts == 0)[0])
        raise ValueError(
            f"`order` is not a permutation: study {dup} appears {counts[dup]} times and study "
            f"{miss} is missing. List every position 0..{kmax - 1} exactly once."
        )
    return arr


@analysis("cumul")
def cumul(full: PoolResult, *, order=None) -> CumulResult:
    """Cumulative meta-analysis: studies added one at a time, as ``metafor::cumul``.

    Parameters
    ----------
    {fit_parameters}
    order : array_like of int, optional
        The order in which studies enter: a permutation of ``0..k-1`` (study
        positions along the last axis), the same for every row. Default: the
        input order. To sort by a variable ``x`` (metafor 3's ``order=x``),
        pass ``np.argsort(x, kind="stable")``.

    Returns
    -------
    CumulResult
        ``estimate, se, zval, pval, ci_lb, ci_ub, Q, Qp, tau2, I2, H2`` (and
        ``k``, ``converged``) of shape ``(..., k)`` in the cumulative order;
        ``order`` and the reordered ``labels``.

    Raises
    ------
    ValueError
        ``order`` is not a permutation of the study positions, or any input
        :func:`pool` rejects.

    Notes
    -----
    A step whose fit holds a single study is fitted as metafor fits k = 1
    (tau^2 = 0, z test even with ``test="knha"``). Steps where the added
    study is missing are NaN (metafor with ``na.action = "na.exclude"``).

    Examples
    --------
    >>> import numpy as np
    >>> yi = np.array([-0.89, -1.59, -1.35, -1.44, -0.22, -0.79, 0.01])
    >>> vi = np.array([0.33, 0.19, 0.42, 0.02, 0.05, 0.01, 0.06])
    >>> res = cumul(yi, vi, method="DL")
    >>> np.round(res.estimate, 4).tolist()
    [-0.89, -1.3342, -1.3377, -1.422, -1.0677, -0.9883, -0.8311]
    >>> res.k.tolist()
    [1, 2, 3, 4, 5, 6, 7]
    """
    y, v = _studies(full)
    kmax = y.shape[-1]
    perm = np.arange(kmax) if order is None else _check_order(order, kmax)
    yp, vp = y[..., perm], v[..., perm]
    lab = full.labels
    if lab is not None:
        lab = np.asarray(lab)[..., perm]
    shape = y.shape
    y2, v2 = yp.reshape(-1, kmax), vp.reshape(-1, kmax)
    obs2 = ~np.isnan(y2)
    tri = np.tril(np.ones((kmax, kmax), dtype=bool))

    def include(obs):
        return obs[:, None, :] & tri

    out = _fit_subsets(
        y2, v2, obs2, include, obs2, full.method, full.test, full.level, full.control
    )
    out = {f: a.reshape(shape) for f, a in out.items()}
    _warn_unconverged(out["converged"], obs2.reshape(shape), full.method, "cumulative", lab)
    return CumulResult(
        **out,
        method=full.method,
        test=full.test,
        level=full.level,
        labels=lab,
        full=full,
        order=perm,
    )


def _full_pieces(y, v, obs, tau2):
    """Inverse-variance weights, their sum and the weighted mean at tau2 (shape (..., k))."""
    t = np.asarray(tau2, dtype=float)[..., None]
    w = np.where(obs, 1.0 / (np.where(obs, v, 1.0) + t), 0.0)
    s = w.sum(axis=-1)
    beta = (w * np.where(obs, y, 0.0)).sum(axis=-1) / s
    return w, s, beta


def _sum_w_del(v, obs, tau2_del):
    """sum_j 1/(v_j + tau2_del_i) over all observed j, for every i: shape (..., k).

    Builds the ``(..., k, k)`` array in blocks of rows to bound memory.
    """
    shape = v.shape
    kmax = shape[-1]
    v2 = np.where(obs, v, 1.0).reshape(-1, kmax)
    o2 = obs.reshape(-1, kmax)
    t2 = np.where(np.isnan(tau2_del), 0.0, tau2_del).reshape(-1, kmax)
    out = np.empty(v2.shape)
    block = max(1, _CHUNK_ELEMENTS // (kmax * kmax))
    for start in range(0, v2.shape[0], block):  # blocks of rows, not studies
        r = slice(start, start + block)
        w = np.where(o2[r, None, :], 1.0 / (v2[r, None, :] + t2[r, :, None]), 0.0)
        out[r] = w.sum(axis=-1)
    return out.reshape(shape)


@analysis("influence")
def influence(full: PoolResult) -> InfluenceResult:
    """Outlier and influence diagnostics, as ``metafor::influence`` on an ``rma.uni`` fit.

    Parameters
    ----------
    {fit_parameters}

    Returns
    -------
    InfluenceResult
        ``rstudent, dffits, cook_d, cov_r, tau2_del, QE_del, hat, weight,
        dfbs, is_infl`` (metafor's ``inf``), ``resid``, ``resid_se``, each of
        shape ``(..., k)``.

    Raises
    ------
    ValueError
        Fewer than 3 studies under a random-effects method (fewer than 2
        under a common effect), or any input :func:`pool` rejects.

    Notes
    -----
    With ``b`` the estimate, ``b_(i)``, ``tau2_(i)`` and ``s2w_(i)`` (the
    Knapp-Hartung scale, 1 for ``test="z"``) those of the fit without study
    ``i``, ``h_i = w_i / sum(w)`` the hat value and ``Var(b)`` including the
    Knapp-Hartung scale:

    * ``rstudent = (y_i - b_(i)) / sqrt(s2w_(i) (v_i + tau2_(i)) + Var(b_(i)))``
    * ``dffits = (b - b_(i)) / sqrt(s2w_(i) h_i (tau2_(i) + v_i))``
    * ``cook_d = (b - b_(i))^2 / Var(b)``, ``cov_r = Var(b_(i)) / Var(b)``
    * ``dfbs = (b - b_(i)) / sqrt(s2w_(i) / sum_j 1/(v_j + tau2_(i)))``
      (sum over all k studies, study i included, as metafor).

    Studies are flagged as metafor does (see :class:`InfluenceResult`). As
    in :func:`leave1out`, a leave-one-out fit that does not converge keeps
    its last value and is flagged in ``converged``. User weights are not
    supported.

    Examples
    --------
    >>> import numpy as np
    >>> yi = np.array([-0.89, -1.59, -1.35, -1.44, -0.22, -0.79, 0.01])
    >>> vi = np.array([0.33, 0.19, 0.42, 0.02, 0.05, 0.01, 0.06])
    >>> inf = influence(yi, vi, method="DL")
    >>> np.round(inf.rstudent, 3).tolist()
    [-0.076, -1.188, -0.644, -1.525, 1.2, 0.092, 1.76]
    >>> inf.inf.tolist()
    ['', '', '', '*', '', '', '']
    """
    y, v = _studies(full)
    _check_k(y, full.method, "influence")
    method, test = full.method, full.test
    obs = ~np.isnan(y)
    kf = obs.sum(axis=-1).astype(float)
    tau2 = np.asarray(full.tau2, dtype=float)
    w, s, beta = _full_pieces(y, v, obs, tau2)
    vb = np.asarray(full.se, dtype=float) ** 2  # Var(b), with the knha scale
    hat = w / s[..., None]

    fits, _ = _leave_one_out_fits(y, v, method, test, full.level, full.control)
    tau2_del = fits["tau2"]
    b_del = fits["estimate"]
    vb_del = fits["se"] ** 2
    s_all = _sum_w_del(v, obs, tau2_del)
    vv = np.where(obs, v, np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        s_del = s_all - 1.0 / (vv + tau2_del)
        if test == "knha":
            # vb_(i) = s2w_(i) / sum_{j != i} w_j; a fit left with one study used a z test.
            s2w_del = np.where(fits["k"] > 1, vb_del * s_del, 1.0)
        else:
            s2w_del = np.ones_like(vb_del)
        diff = beta[..., None] - b_del
        # A Knapp-Hartung scale of 0 (all effects equal) leaves these undefined; metafor
        # stops with an error there, we return NaN.
        s2w_del = np.where(s2w_del > 0, s2w_del, np.nan)
        vb_full = np.where(vb > 0, vb, np.nan)[..., None]
        dffits = diff / np.sqrt(s2w_del * hat * (tau2_del + vv))
        dfbs = diff / np.sqrt(s2w_del / s_all)
        cook_d = diff**2 / vb_full
        cov_r = vb_del / vb_full
        resid = y - b_del
        resid = np.where(np.abs(resid) < _TINY_RESID, 0.0, resid)
        resid_se = np.sqrt(vv * s2w_del + vb_del + tau2_del * s2w_del)
        rstud = resid / resid_se
        p = 1.0
        flag = (
            (np.abs(dffits) > 3.0 * np.sqrt(p / (kf[..., None] - p)))
            | (stats.chi2.cdf(cook_d, 1) > 0.5)
            | (hat > 3.0 * p / kf[..., None])
            | (np.abs(dfbs) > 1.0)
        )
    hat = np.where(obs, hat, np.nan)
    if test == "knha" and (vb[obs.any(axis=-1)] == 0).any():
        warnings.warn(
            "The Knapp-Hartung scale factor is 0 (all effects equal?), so Var(b) = 0 and "
            "dffits, cook_d, cov_r and dfbs are undefined (NaN); metafor stops here. Use "
            'test="z" for these diagnostics.',
            RuntimeWarning,
            stacklevel=2,
        )
    _warn_unconverged(fits["converged"], obs, method, "leave-one-out", full.labels)
    return InfluenceResult(
        rstudent=rstud,
        dffits=dffits,
        cook_d=cook_d,
        cov_r=cov_r,
        tau2_del=tau2_del,
        QE_del=fits["Q"],
        hat=hat,
        weight=100.0 * hat,
        dfbs=dfbs,
        is_infl=flag & obs,
        resid=resid,
        resid_se=resid_se,
        converged=fits["converged"],
        method=method,
        test=test,
        level=full.level,
        labels=full.labels,
        full=full,
    )


@analysis("rstudent")
def rstudent(full: PoolResult) -> ResidualResult:
    """Externally standardized (deleted) residuals, as ``metafor::rstudent`` on ``rma.uni``.

    ``resid`` is ``y_i`` minus the estimate of the fit without study ``i``,
    ``se`` its standard error and ``z`` their ratio (the ``rstudent`` of
    :func:`influence`). Parameters and errors are those of :func:`influence`.

    Examples
    --------
    >>> import numpy as np
    >>> yi = np.array([-0.89, -1.59, -1.35, -1.44, -0.22, -0.79, 0.01])
    >>> vi = np.array([0.33, 0.19, 0.42, 0.02, 0.05, 0.01, 0.06])
    >>> np.round(rstudent(yi, vi, method="DL").z, 3).tolist()
    [-0.076, -1.188, -0.644, -1.525, 1.2, 0.092, 1.76]
    """
    inf = influence(full)
    return ResidualResult(
        resid=inf.resid,
        se=inf.resid_se,
        z=inf.rstudent,
        method=inf.method,
        type="deleted",
        labels=inf.labels,
    )


@analysis("rstandard")
def rstandard(full: PoolResult, *, type: str = "marginal") -> ResidualResult:  # noqa: A002
    """Internally standardized residuals, as ``metafor::rstandard`` on an ``rma.uni`` fit.

    Parameters
    ----------
    {fit_parameters}
        (The test, z or Knapp-Hartung, does not enter these residuals.)
    type : {"marginal", "conditional"}
        ``"marginal"``: ``resid = y_i - b`` with ``se = sqrt(v_i + tau2 -
        1/sum(w))``, the diagonal of ``(I - H) M (I - H)'``. ``"conditional"``:
        residuals from the best linear unbiased predictions of the study
        effects, ``resid = (1 - l_i)(y_i - b)`` with ``l_i = tau2/(tau2 +
        v_i)`` and ``se = sqrt(v_i^2 / (v_i + tau2) (1 - h_i))``.

    Returns
    -------
    ResidualResult
        ``resid``, ``se`` and ``z = resid / se``, each of shape ``(..., k)``.

    Examples
    --------
    >>> import numpy as np
    >>> yi = np.array([-0.89, -1.59, -1.35, -1.44, -0.22, -0.79, 0.01])
    >>> vi = np.array([0.33, 0.19, 0.42, 0.02, 0.05, 0.01, 0.06])
    >>> np.round(rstandard(yi, vi, method="DL").z, 3).tolist()
    [-0.08, -1.188, -0.65, -1.249, 1.181, 0.086, 1.596]
    """
    if type not in ("marginal", "conditional"):
        raise ValueError(f"`type` must be 'marginal' or 'conditional'; got {type!r}.")
    y, v = _studies(full)
    obs = ~np.isnan(y)
    tau2 = np.asarray(full.tau2, dtype=float)[..., None]
    w, s, beta = _full_pieces(y, v, obs, full.tau2)
    e = y - beta[..., None]
    with np.errstate(divide="ignore", invalid="ignore"):
        if type == "marginal":
            resid = np.where(np.abs(e) < _TINY_RESID, 0.0, e)
            se = np.sqrt(v + tau2 - 1.0 / s[..., None])
        else:
            li = tau2 / (tau2 + v)
            resid = (1.0 - li) * e
            se = np.sqrt(v**2 / (v + tau2) * (1.0 - w / s[..., None]))
        z = resid / se
    return ResidualResult(
        resid=resid, se=se, z=z, method=full.method, type=type, labels=full.labels
    )

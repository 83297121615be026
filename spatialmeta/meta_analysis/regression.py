"""Meta-regression as ``metafor::rma.uni(yi, vi, mods = X)``: a batched design-matrix engine.

Everything here works on a padded batch: effects ``y`` and variances ``v`` of
shape ``(n, kmax)``, a mask ``m`` of the observed studies and a design ``X`` of
shape ``(n, kmax, p)``; results have shape ``(n,)``, ``(n, p)`` or ``(n, p, p)``.
All rows are iterated together; the only loops are over Fisher-scoring or
Brent iterations.

Numerics. Each row's design (observed studies only, columns scaled to unit
length) is factored once by Householder QR, ``X = Q T`` with ``Q`` orthonormal
(metafor solves through ``qr.solve`` as well). Every quantity the tau^2
estimators need is a function of metafor's matrix
``P = W - W X (X'WX)^-1 X'W``, which does not depend on the basis of the
column space, so the estimators run on ``Q``: its weighted cross-product
``Q'WQ`` is as well conditioned as the weights, whatever the scale of the
moderators (a moderator such as a publication year next to the intercept
makes ``X'X`` nearly singular). Coefficients are mapped back through ``T``.
The identities used (``c_ij = q_i' G^-1 q_j``, ``G = Q'WQ``)::

    Y'PY      = sum_i w_i e_i^2                  (e: weighted LS residuals)
    Y'PPY     = sum_i w_i^2 e_i^2
    tr(P)     = sum_i w_i - sum_i w_i^2 c_ii
    sum_ij P_ij^2 a_i b_j = sum_i a_i b_i (w_i^2 - 2 w_i^3 c_ii)
                          + tr(G^-1 Q'D(w^2 a)Q G^-1 Q'D(w^2 b)Q)

References
----------
Viechtbauer, W. (2010). Conducting meta-analyses in R with the metafor
package. *Journal of Statistical Software*, 36(3). doi:10.18637/jss.v036.i03
Raudenbush, S. W. (2009). Analyzing effect sizes: random-effects models. In
*The Handbook of Research Synthesis and Meta-Analysis* (2nd ed., pp. 295-315).
Knapp, G., & Hartung, J. (2003). Improved tests for a random effects
meta-regression with a single covariate. doi:10.1002/sim.1482
Lopez-Lopez, J. A., Marin-Martinez, F., Sanchez-Meca, J., Van den Noortgate,
W., & Viechtbauer, W. (2014). Estimation of the predictive power of the model
in mixed-effects meta-regression. doi:10.1111/bmsp.12002
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from spatialmeta.meta_analysis import estimators as est
from spatialmeta.meta_analysis._common import where as _where
from spatialmeta.meta_analysis.estimators import FIXED_METHODS, RANDOM_METHODS, Tau2Fit

__all__ = [
    "build_design", "check_design", "estimate_tau2_mods", "fit_mods", "predict_mods", "r2_mods",
    "read_mods",
]  # fmt: skip

_RANK_TOL = 1e-7  # the tolerance of R's lm() (dqrdc2) for a column to count as redundant
_INT_EPS = 1e-8  # metafor's .is.intercept


# ----------------------------------------------------------------- inputs ----


def _frame_columns(frame: pd.DataFrame) -> tuple[list[np.ndarray], list[str]]:
    """Numeric columns as they are; strings/categories/booleans as treatment dummies (R)."""
    cols, names = [], []
    for col in frame.columns:
        s = frame[col]
        name = str(col)
        if pd.api.types.is_bool_dtype(s):
            cols.append(s.to_numpy(dtype=float))
            names.append(f"{name}TRUE")
        elif pd.api.types.is_numeric_dtype(s):
            cols.append(s.to_numpy(dtype=float))
            names.append(name)
        else:
            miss = s.isna().to_numpy()
            if miss.any():
                i = int(np.argmax(miss))
                raise ValueError(
                    f"`mods` column '{name}' is missing at study index [{i}] (row label "
                    f"{frame.index[i]!r}); give its category, or drop that study."
                )
            if isinstance(s.dtype, pd.CategoricalDtype):
                levels = list(s.cat.categories)
            else:
                levels = sorted(pd.unique(s.astype(str)))
                s = s.astype(str)
            if len(levels) < 2:
                raise ValueError(
                    f"`mods` column '{name}' has a single category ({levels!r}); a "
                    "categorical moderator needs at least two levels. Drop the column."
                )
            values = s.to_numpy()
            for lev in levels[1:]:  # treatment contrasts: the first level is the reference
                cols.append((values == lev).astype(float))
                names.append(f"{name}{lev}")
    return cols, names


def read_mods(mods: Any, y_shape: tuple[int, ...]) -> tuple[np.ndarray, list[str]]:
    """Moderators as a float array broadcast to ``y_shape + (p,)``, with column names.

    ``mods`` may be an array ``(k,)``, ``(k, p)`` or ``(..., k, p)``, a
    :class:`pandas.DataFrame` or :class:`pandas.Series` with one row per study,
    or a dict of named columns (each ``(k,)`` or ``(..., k)``). String,
    categorical and boolean columns of a DataFrame (or of a dict of 1-D
    columns) become dummy columns as R's default treatment contrasts would
    build them (``model.matrix(~ x)``): one column per level but the first,
    named ``<column><level>``; levels are sorted (Python's code-point order,
    which can differ from R's locale-dependent sort for mixed case) unless
    the column is a pandas Categorical, whose category order is used.
    """
    k = y_shape[-1]
    if isinstance(mods, pd.Series):
        mods = mods.to_frame(name=mods.name if mods.name is not None else "mods")
    if isinstance(mods, dict):
        flat = all(np.ndim(v) == 1 for v in mods.values())
        if flat:
            mods = pd.DataFrame({str(key): list(val) for key, val in mods.items()})
        else:
            arrays, names = [], []
            for key, val in mods.items():
                arr = _numeric(val, f"mods['{key}']")
                try:
                    arrays.append(np.broadcast_to(arr, y_shape))
                except ValueError as err:
                    raise ValueError(
                        f"`mods['{key}']` has shape {arr.shape}, which does not broadcast to "
                        f"the shape of `yi` {y_shape}; give one value per study."
                    ) from err
                names.append(str(key))
            return np.stack(arrays, axis=-1), names
    if isinstance(mods, pd.DataFrame):
        if len(mods) != k:
            raise ValueError(
                f"`mods` has {len(mods)} rows but `yi` has k = {k} studies; give one row of "
                "moderators per study."
            )
        cols, names = _frame_columns(mods)
        if not cols:
            return np.zeros((k, 0)), []
        arr = np.stack(cols, axis=-1)
    else:
        arr = _numeric(mods, "mods")
        if arr.ndim == 0:
            raise ValueError(
                f"`mods` must have one row per study (shape (k, p) or (..., k, p)); got the "
                f"scalar {float(arr)!r}."
            )
        if arr.ndim == 1:
            arr = arr[:, None]
        if arr.shape[-2] != k:
            raise ValueError(
                f"`mods` has shape {arr.shape}: {arr.shape[-2]} rows but `yi` has k = {k} "
                "studies; give one row per study, shape (k, p) or (..., k, p) (a single "
                "moderator for a batch needs a trailing axis: mods[..., None])."
            )
        names = [f"mod{j + 1}" for j in range(arr.shape[-1])]
    try:
        arr = np.broadcast_to(arr, y_shape + arr.shape[-1:])
    except ValueError as err:
        raise ValueError(
            f"`mods` has shape {arr.shape}, which does not match the batch of `yi` "
            f"{y_shape}; give shape (k, p) for one design shared by all rows or "
            f"{y_shape + ('p',)} for one per row."
        ) from err
    return arr, names


def _numeric(x: Any, what: str) -> np.ndarray:
    arr = np.asarray(x)
    if arr.dtype.kind in "OUS":
        try:
            return arr.astype(float)
        except (TypeError, ValueError) as err:
            raise TypeError(
                f"`{what}` must be numeric; it holds {arr.dtype} values. Pass a pandas "
                "DataFrame to have string or categorical moderators dummy-coded."
            ) from err
    return arr.astype(float)


def build_design(
    mods_arr: np.ndarray, names: list[str], intercept: bool, obs: np.ndarray
) -> tuple[np.ndarray, list[str], bool]:
    """Prepend the intercept, check values, and put an all-ones column first as metafor.

    Returns the design ``(..., k, p)`` (NaN where a study is missing), the
    column names and whether the model has an intercept.
    """
    bad = obs[..., None] & ~np.isfinite(mods_arr)
    if bad.any():
        idx = tuple(int(i) for i in np.argwhere(bad)[0])
        value = mods_arr[idx]
        raise ValueError(
            f"`mods` column '{names[idx[-1]]}' is {value} at study index {_where(idx[:-1])}, "
            "an observed study; give a finite moderator value there, or set yi and vi to "
            "NaN to drop the study."
        )
    X = np.where(obs[..., None], mods_arr, np.nan)
    if intercept:
        X = np.concatenate([np.where(obs, 1.0, np.nan)[..., None], X], axis=-1)
        return X, ["intrcpt", *names], True
    if X.shape[-1] == 0:
        raise ValueError(
            "`mods` has no columns and intercept=False, so the model has no coefficients; "
            "give moderators or set intercept=True."
        )
    with np.errstate(invalid="ignore"):
        ones = np.all(np.where(obs[..., None], np.abs(X - 1.0) < _INT_EPS, True), axis=-2)
    ones = np.all(ones.reshape(-1, X.shape[-1]), axis=0)
    if ones.any():  # metafor moves a column of ones to the front and calls it intrcpt
        j = int(np.argmax(ones))
        order = [j] + [i for i in range(X.shape[-1]) if i != j]
        X = X[..., order]
        return X, ["intrcpt"] + [names[i] for i in order[1:]], True
    return X, list(names), False


def check_design(
    X: np.ndarray, m: np.ndarray, k: np.ndarray, names: Sequence[str], fixed: bool, shape
) -> tuple[np.ndarray, np.ndarray]:
    """Check sizes and rank; return the orthonormal basis ``Q`` and ``T`` (X = Q T).

    ``X`` is ``(n, kmax, p)`` and ``m`` the ``(n, kmax)`` mask.
    """
    p = X.shape[-1]
    need = p if fixed else p + 1
    few = k < need
    if few.any():
        i = int(np.argmax(few))
        idx = np.unravel_index(i, shape) if shape else ()
        raise ValueError(
            f"too few studies for the number of coefficients: row {_where(idx)} has k = "
            f"{int(k[i])} studies but the model has p = {p} coefficients "
            f"({', '.join(names)}); {'a common-effect' if fixed else 'a random-effects'} "
            f"meta-regression needs k >= {'p' if fixed else 'p + 1'}. Drop moderators or "
            "add studies (or set the rows' effects to NaN)."
        )
    Xm = np.where(m[..., None], X, 0.0)
    norms = np.sqrt((Xm * Xm).sum(axis=-2))
    scale = np.where(norms > 0, 1.0 / np.where(norms > 0, norms, 1.0), 0.0)
    Q, R = np.linalg.qr(Xm * scale[:, None, :])
    rdiag = np.abs(np.diagonal(R, axis1=-2, axis2=-1))
    deficient = rdiag < _RANK_TOL
    if deficient.any():
        i, j = (int(a) for a in np.argwhere(deficient)[0])
        idx = np.unravel_index(i, shape) if shape else ()
        raise ValueError(_rank_message(R[i], j, names, idx, norms[i]))
    Q = np.where(m[..., None], Q, 0.0)
    T = R * norms[:, None, :]
    return Q, T


def _rank_message(R: np.ndarray, j: int, names: Sequence[str], idx, norms) -> str:
    where = f"row {_where(idx)}" if idx else "the design"
    if norms[j] == 0:
        return (
            f"rank-deficient design in {where}: column '{names[j]}' is 0 for every observed "
            "study, so its coefficient cannot be estimated; drop that moderator."
        )
    coef = np.linalg.lstsq(R[:j, :j], R[:j, j], rcond=None)[0] if j else np.zeros(0)
    big = np.abs(coef) > 1e-6 * max(1.0, float(np.abs(coef).max(initial=0.0)))
    involved = [names[i] for i in np.flatnonzero(big)] + [names[j]]
    return (
        f"rank-deficient design in {where}: columns {', '.join(repr(n) for n in involved)} "
        "are collinear (one is a linear combination of the others over the observed "
        "studies); drop one of them. (metafor drops redundant predictors with a warning; "
        "here you choose which.)"
    )


# ---------------------------------------------------------------- algebra ----


def _safe_inv(A: np.ndarray) -> np.ndarray:
    """Batched inverse; rows with non-finite entries give NaN instead of an exception."""
    ok = np.isfinite(A).all(axis=(-2, -1))
    eye = np.broadcast_to(np.eye(A.shape[-1]), A.shape)
    out = np.linalg.inv(np.where(ok[:, None, None], A, eye))
    return np.where(ok[:, None, None], out, np.nan)


def _proj(Q: np.ndarray, w: np.ndarray, y: np.ndarray, leverage: bool = True):
    """Weighted LS of ``y`` on the basis: G^-1, coefficients, residuals, and c_ii."""
    Qt = np.swapaxes(Q, -1, -2)
    Gi = _safe_inv(Qt @ (Q * w[..., None]))
    b = (Gi @ (Qt @ (w * y)[..., None]))[..., 0]
    e = y - (Q @ b[..., None])[..., 0]
    c = ((Q @ Gi) * Q).sum(axis=-1) if leverage else None
    return Gi, b, e, c


def _sum_p2(Q, w, c, Gi, a=1.0, b=1.0) -> np.ndarray:
    """sum_ij P_ij^2 a_i b_j for P = W - W Q G^-1 Q'W (see the module docstring)."""
    w2 = w * w
    diag = (a * b * (w2 - 2.0 * w2 * w * c)).sum(axis=-1)
    Qt = np.swapaxes(Q, -1, -2)
    Ca = Gi @ (Qt @ (Q * (w2 * a)[..., None]))
    Cb = Ca if b is a else Gi @ (Qt @ (Q * (w2 * b)[..., None]))
    return diag + (Ca * np.swapaxes(Cb, -1, -2)).sum(axis=(-2, -1))


def _rss(Q, v, m, y, tau2) -> np.ndarray:
    """Y'P(tau2)Y: Q(tau2), the generalized Q statistic at tau2."""
    w = est._inv(v, m, tau2)
    _, _, e, _ = _proj(Q, w, y, leverage=False)
    return (w * e * e).sum(axis=-1)


def _loglik(Q, yc, v, m, k, p, tau2, reml):
    """ML or REML log likelihood (up to a constant that cancels in comparisons)."""
    w = est._inv(v, m, tau2)
    Gi, _, e, _ = _proj(Q, w, yc, leverage=False)
    rss = (w * e * e).sum(axis=-1)
    t = np.asarray(tau2, dtype=float)
    t = t[:, None] if t.ndim else t
    logv = np.where(m, np.log(v + t), 0.0).sum(axis=-1)
    if reml:
        logdet = -np.linalg.slogdet(Gi)[1]
        return -0.5 * (k - p) * np.log(2 * np.pi) - 0.5 * logv - 0.5 * logdet - 0.5 * rss
    return -0.5 * k * np.log(2 * np.pi) - 0.5 * logv - 0.5 * rss


# --------------------------------------------------------------- tau^2 -------


def _fisher_scoring(Q, yc, v, m, k, p, method, tau2, control=None):
    """Fisher scoring for ML, REML or EB with moderators, as metafor iterates it.

    Only the rows still iterating are computed at each step.
    """
    threshold, maxiter, stepadj = est._control(control)
    tau2 = tau2.copy()
    n = yc.shape[0]
    converged = np.zeros(n, dtype=bool)
    iterations = np.zeros(n, dtype=int)
    idx = np.flatnonzero(np.isfinite(tau2))
    for it in range(1, maxiter + 2):
        if idx.size == 0:
            break
        t, ys, vs, ms, ks, Qs = tau2[idx], yc[idx], v[idx], m[idx], k[idx], Q[idx]
        w = est._inv(vs, ms, t)
        Gi, _, e, c = _proj(Qs, w, ys, leverage=method == "REML")
        with np.errstate(all="ignore"):
            if method == "ML":
                adj = ((w * w * e * e).sum(axis=-1) - w.sum(axis=-1)) / (w * w).sum(axis=-1)
            elif method == "REML":
                trp = w.sum(axis=-1) - (w * w * c).sum(axis=-1)
                adj = ((w * w * e * e).sum(axis=-1) - trp) / _sum_p2(Qs, w, c, Gi)
            else:  # EB
                adj = ((w * e * e).sum(axis=-1) * ks / (ks - p) - ks) / w.sum(axis=-1)
        adj = np.where(np.isnan(adj), 0.0, adj) * stepadj
        # Step halving until tau2 stays >= 0; from exactly 0 a negative step ends as -0.0.
        adj = np.where((t == 0.0) & (adj < 0.0), 0.0, adj)
        neg = t + adj < 0.0
        for _ in range(1100):
            if not neg.any():
                break
            adj = np.where(neg, adj / 2.0, adj)
            neg &= t + adj < 0.0
        new = t + adj
        small = np.abs(t - new) <= threshold
        tau2[idx] = new
        iterations[idx] = it
        if it <= maxiter:
            converged[idx[small]] = True
        idx = idx[~small]
    return tau2, converged, iterations


def _rescue(Q, yc, v, m, k, p, method, tau2, converged):
    """Where Fisher scoring failed, the bracketed solve of the same likelihood equation
    (:func:`~spatialmeta.meta_analysis.estimators.solve_likelihood`), as without moderators.
    """
    bad = np.flatnonzero(~converged & (k > p))
    if bad.size == 0:
        return tau2, converged
    Qb, yb, vb, mb = Q[bad], yc[bad], v[bad], m[bad]
    kb = k[bad].astype(float)

    def score(x, sel):
        w = est._inv(vb[sel], mb[sel], x[sel])
        _, _, e, c = _proj(Qb[sel], w, yb[sel], leverage=method == "REML")
        if method == "EB":  # k/(k-p) Q = k, i.e. Q = k - p
            return (w * e * e).sum(axis=-1) - (kb[sel] - p)
        yppy = (w * w * e * e).sum(axis=-1)
        if method == "ML":
            return yppy - w.sum(axis=-1)
        return yppy - (w.sum(axis=-1) - (w * w * c).sum(axis=-1))  # - tr P

    def loglik(x):
        return _loglik(Qb, yb, vb, mb, kb, p, x, method == "REML")

    root, ok = est.solve_likelihood(score, loglik, est.tau2_max(yb, mb, k[bad]), method)
    tau2, converged = tau2.copy(), converged.copy()
    tau2[bad[ok]] = np.maximum(0.0, root[ok])
    converged[bad[ok]] = True
    return tau2, converged


def _paule_mandel(Q, yc, v, m, k, p, upper0):
    """PM: root of Q(tau2) = k - p on [0, tau2.max] by Brent's method, as metafor."""
    target = k - float(p)

    def f(x, rows):
        return _rss(Q[rows], v[rows], m[rows], yc[rows], x[rows]) - target[rows]

    return est._pm_root(f, yc.shape[0], upper0)


def estimate_tau2_mods(Q, y, v, m, k, method, control=None) -> Tau2Fit:
    """tau^2 of a meta-regression for every row, with metafor's residual-based formulas."""
    n, _, p = Q.shape
    kf = k.astype(float)
    if method in FIXED_METHODS:
        return Tau2Fit(np.zeros(n), np.full(n, np.nan), np.ones(n, bool), np.zeros(n, int))
    yz = np.where(m, y, 0.0)
    yc = np.where(m, y - (yz.sum(axis=-1) / kf)[:, None], 0.0)  # metafor's Ymc
    v = np.where(m, v, 1.0)
    vv = np.where(m, v, 0.0)
    ones = m.astype(float)
    dfr = kf - p
    converged = np.ones(n, dtype=bool)
    iterations = np.zeros(n, dtype=int)
    with np.errstate(invalid="ignore", divide="ignore"):
        if method in ("DL", "HS"):
            w = est._inv(v, m, 0.0)
            Gi, _, e, c = _proj(Q, w, yc)
            rss = (w * e * e).sum(axis=-1)
            sw = w.sum(axis=-1)
            trp = sw - (w * w * c).sum(axis=-1)
            if method == "DL":
                tau2 = np.maximum(0.0, (rss - dfr) / trp)
                den = trp
            else:
                tau2 = np.maximum(0.0, (rss - kf) / sw)
                den = sw
            se = np.sqrt(
                (2.0 * dfr + 4.0 * tau2 * trp + 2.0 * tau2**2 * _sum_p2(Q, w, c, Gi)) / den**2
            )
        elif method == "HE":
            tau2_he, trpv, svv = _he(Q, yc, v, m, ones, vv, dfr)
            tau2 = np.maximum(0.0, tau2_he)
            se = np.sqrt((2.0 * svv + 4.0 * tau2 * trpv + 2.0 * tau2**2 * dfr) / dfr**2)
        elif method == "SJ":
            tau2_0 = (yc * yc).sum(axis=-1) / kf
            w = est._inv(v, m, tau2_0)
            Gi, _, e, c = _proj(Q, w, yc)
            rss = (w * e * e).sum(axis=-1)
            tau2 = np.maximum(0.0, tau2_0 * rss / dfr)
            se = np.sqrt(
                tau2_0**2
                / dfr**2
                * (
                    2.0 * _sum_p2(Q, w, c, Gi, vv, vv)
                    + 4.0 * tau2 * _sum_p2(Q, w, c, Gi, 1.0, vv)
                    + 2.0 * tau2**2 * _sum_p2(Q, w, c, Gi)
                )
            )
        elif method in ("ML", "REML", "EB"):
            tau2_he, _, _ = _he(Q, yc, v, m, ones, vv, dfr)
            start = np.maximum(0.0, tau2_he)
            tau2, converged, iterations = _fisher_scoring(
                Q, yc, v, m, kf, p, method, start, control
            )
            tau2, converged = _rescue(Q, yc, v, m, k, p, method, tau2, converged)
            if method in ("ML", "REML"):
                reml = method == "REML"
                ll0 = _loglik(Q, yc, v, m, kf, p, 0.0, reml)
                ll = _loglik(Q, yc, v, m, kf, p, tau2, reml)
                threshold = est._control(control)[0]
                stuck = converged & (ll0 - ll > est.LL_TOL) & (tau2 > threshold)
                tau2 = np.where(stuck, 0.0, tau2)
            tau2 = np.maximum(0.0, tau2)
            w = est._inv(v, m, tau2)
            if method == "ML":
                se = np.sqrt(2.0 / (w * w).sum(axis=-1))
            elif method == "REML":
                Gi, _, _, c = _proj(Q, w, yc)
                se = np.sqrt(2.0 / _sum_p2(Q, w, c, Gi))
            else:
                se = np.sqrt(2.0 * kf**2 / dfr / w.sum(axis=-1) ** 2)
        elif method == "PM":
            upper = est.tau2_max(y, m, k)
            tau2, converged, iterations = _paule_mandel(Q, yc, v, m, kf, p, upper)
            tau2 = np.maximum(0.0, tau2)
            sw = est._inv(v, m, tau2).sum(axis=-1)
            se = np.sqrt(2.0 * kf**2 / dfr / sw**2)
        else:  # pragma: no cover - validated by the caller
            raise ValueError(f"unknown method {method!r}")
    return Tau2Fit(tau2, se, converged, iterations)


def _he(Q, yc, v, m, ones, vv, dfr):
    """Hedges' estimator with moderators (OLS residuals), untruncated, with tr(PV), tr(PVPV)."""
    Gi, _, e, c = _proj(Q, ones, yc)
    rss = (e * e).sum(axis=-1)
    trpv = (vv * (1.0 - c)).sum(axis=-1)
    return (rss - trpv) / dfr, trpv, _sum_p2(Q, ones, c, Gi, vv, vv)


# ------------------------------------------------------------------ fit ------


def fit_mods(y, v, m, k, Q, T, tau2, method, test, level, a, int_incl) -> dict[str, np.ndarray]:
    """Coefficients, tests, heterogeneity and weights of a meta-regression given tau^2."""
    n, _, p = Q.shape
    kf = k.astype(float)
    alpha = 1.0 - level / 100.0
    v1 = np.where(m, v, 1.0)
    yz = np.where(m, y, 0.0)
    dfr = kf - p
    with np.errstate(divide="ignore", invalid="ignore"):
        w = est._inv(v1, m, tau2)
        Gi, bt, e, _ = _proj(Q, w, yz, leverage=False)
        rss_knha = (w * e * e).sum(axis=-1)
        if a is None:
            vbt = Gi
            pct = 100.0 * w / w.sum(axis=-1)[:, None]
        else:
            a = np.where(m, a, 0.0)
            Gai, bt, _, _ = _proj(Q, a, yz, leverage=False)
            Qt = np.swapaxes(Q, -1, -2)
            meat = Qt @ (Q * (a * a * (v1 + tau2[:, None]))[..., None])
            vbt = Gai @ meat @ Gai
            pct = 100.0 * a / a.sum(axis=-1)[:, None]
        Ti = _safe_inv(T)
        beta = (Ti @ bt[..., None])[..., 0]
        vb0 = Ti @ vbt @ np.swapaxes(Ti, -1, -2)
        if test == "knha":
            s2w = np.where(rss_knha <= np.finfo(float).eps, 0.0, rss_knha / dfr)
            ok = dfr > 0
            dfs = np.where(ok, dfr, 1.0)
            crit = np.where(ok, stats.t.isf(alpha / 2.0, dfs), np.nan)
            df = dfr
        else:
            s2w = np.ones(n)
            crit = np.full(n, stats.norm.isf(alpha / 2.0))
            df = np.full(n, np.nan)
        vb = s2w[:, None, None] * vb0
        se = np.sqrt(np.diagonal(vb, axis1=-2, axis2=-1))
        zval = beta / se
        if test == "knha":
            pval = np.where(ok[:, None], 2.0 * stats.t.sf(np.abs(zval), dfs[:, None]), np.nan)
        else:
            pval = 2.0 * stats.norm.sf(np.abs(zval))

        # Omnibus test of the moderators (all coefficients when there is no intercept).
        btt = slice(1, p) if (int_incl and p > 1) else slice(0, p)
        mb = len(range(p)[btt])
        bb = beta[:, btt]
        vbb = vb0[:, btt, btt]
        qm = (bb * (_safe_inv(vbb) @ bb[..., None])[..., 0]).sum(axis=-1)
        qm = np.where(s2w > 0, qm / s2w, np.nan)  # metafor: NA when chol(vb) fails
        if test == "knha":
            qm = qm / mb
            qmp = np.where(dfr > 0, stats.f.sf(qm, mb, np.where(dfr > 0, dfr, 1.0)), np.nan)
            qmdf = np.stack([np.full(n, float(mb)), dfr], axis=-1)
        else:
            qmp = stats.chi2.sf(qm, mb)
            qmdf = np.stack([np.full(n, float(mb)), np.full(n, np.nan)], axis=-1)

        # Residual heterogeneity: inverse sampling-variance weights, on Ymc as metafor.
        yc = np.where(m, y - (yz.sum(axis=-1) / kf)[:, None], 0.0)
        w0 = est._inv(v1, m, 0.0)
        _, _, e0, c0 = _proj(Q, w0, yc)
        multi = k > p
        qe = np.where(multi, np.maximum(0.0, (w0 * e0 * e0).sum(axis=-1)), 0.0)
        qep = np.where(multi, stats.chi2.sf(qe, np.where(multi, dfr, 1.0)), 1.0)
        trp0 = w0.sum(axis=-1) - (w0 * w0 * c0).sum(axis=-1)
        vt = np.where(multi, dfr / trp0, 0.0)
        if method in RANDOM_METHODS:
            i2 = 100.0 * tau2 / (vt + tau2)
            h2 = tau2 / vt + 1.0
        else:
            i2 = np.maximum(0.0, 100.0 * (qe - dfr) / qe)
            h2 = qe / dfr
        i2 = np.where(multi, i2, 0.0)
        h2 = np.where(multi, h2, 1.0)
    return {
        "beta": beta,
        "vb": vb,
        "se": se,
        "zval": zval,
        "df": df,
        "pval": pval,
        "ci_lb": beta - crit[:, None] * se,
        "ci_ub": beta + crit[:, None] * se,
        "crit": crit,
        "QM": qm,
        "QMp": qmp,
        "QMdf": qmdf,
        "QE": qe,
        "QEp": qep,
        "vt": vt,
        "I2": i2,
        "H2": h2,
        "weights_pct": np.where(m, pct, np.nan),
    }


def r2_mods(y, v, m, k, Q, T, tau2, method, a, int_only) -> np.ndarray:
    """Pseudo-R^2 in percent, as metafor (NaN where metafor reports none).

    Random effects: ``max(0, 100 (tau2_RE - tau2) / tau2_RE)`` with ``tau2_RE``
    from the model without moderators, same estimator (0 where that is 0, NaN
    where it does not converge). Common effect: the adjusted R^2 of the
    weighted least-squares regression, truncated at 0.
    """
    n, _, p = Q.shape
    if int_only:
        return np.full(n, np.nan)
    kf = k.astype(float)
    if method in RANDOM_METHODS:
        fit0 = est.estimate_tau2(y, v, m, k, method)
        t0 = fit0.tau2
        with np.errstate(divide="ignore", invalid="ignore"):
            r2 = np.where(t0 == 0.0, 0.0, np.maximum(0.0, 100.0 * (t0 - tau2) / t0))
        return np.where(fit0.converged, r2, np.nan)
    yz = np.where(m, y, 0.0)
    wts = est._inv(np.where(m, v, 1.0), m, 0.0) if a is None else np.where(m, a, 0.0)
    _, _, e, _ = _proj(Q, wts, yz, leverage=False)
    fitted = np.where(m, yz - e, 0.0)
    sw = wts.sum(axis=-1)
    fbar = (wts * fitted).sum(axis=-1) / sw
    mss = (wts * np.where(m, fitted - fbar[:, None], 0.0) ** 2).sum(axis=-1)
    rss = (wts * e * e).sum(axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        r2 = mss / (mss + rss)
        adj = 1.0 - (1.0 - r2) * (kf - 1.0) / (kf - p)
        out = np.maximum(0.0, 100.0 * adj)
        out = np.where(np.isnan(adj), np.nan, out)
    ymin = np.where(m, y, np.inf).min(axis=-1)
    ymax = np.where(m, y, -np.inf).max(axis=-1)
    return np.where(ymin == ymax, 0.0, out)


def predict_mods(beta, vb, tau2, crit, newx) -> dict[str, np.ndarray]:
    """Predicted values at new design rows ``newx`` (q, p) for every row of the batch."""
    pred = np.einsum("qj,...j->...q", newx, beta)
    var = np.einsum("qi,...ij,qj->...q", newx, vb, newx)
    se = np.sqrt(var)
    c = np.asarray(crit)[..., None]
    half_pi = c * np.sqrt(var + np.asarray(tau2)[..., None])
    return {
        "pred": pred,
        "se": se,
        "ci_lb": pred - c * se,
        "ci_ub": pred + c * se,
        "pi_lb": pred - half_pi,
        "pi_ub": pred + half_pi,
    }

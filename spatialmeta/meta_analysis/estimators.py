"""Batched estimators of the between-study variance tau^2, following metafor.

Every function works on a whole batch at once: ``y`` and ``v`` have shape
``(n, kmax)``, ``m`` marks the observed studies of each row (a row may have
fewer than ``kmax``), and results have shape ``(n,)``. Entries outside ``m``
never enter a sum. The conventions (starting values, stopping rule, step
halving, truncation at zero, standard errors of tau^2) are those of
``metafor::rma.uni`` 3.8 with its default ``control`` settings.

References
----------
DerSimonian, R., & Laird, N. (1986). Meta-analysis in clinical trials.
*Controlled Clinical Trials*, 7(3), 177-188. doi:10.1016/0197-2456(86)90046-2
Viechtbauer, W. (2005). Bias and efficiency of meta-analytic variance
estimators in the random-effects model. *Journal of Educational and
Behavioral Statistics*, 30(3), 261-293. doi:10.3102/10769986030003261
Paule, R. C., & Mandel, J. (1982). Consensus values and weighting factors.
*Journal of Research of the National Bureau of Standards*, 87(5), 377-385.
Sidik, K., & Jonkman, J. N. (2005). Simple heterogeneity variance estimation
for meta-analysis. *Journal of the Royal Statistical Society C*, 54(2), 367-384.
Brent, R. P. (1973). *Algorithms for Minimization without Derivatives*, ch. 4
(the zero finder behind R's ``uniroot``, used here for PM).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

__all__ = ["FIXED_METHODS", "RANDOM_METHODS", "METHODS", "Tau2Fit", "estimate_tau2", "tau2_max"]

FIXED_METHODS = ("FE", "EE", "CE")
RANDOM_METHODS = ("DL", "HE", "HS", "SJ", "ML", "REML", "EB", "PM")
METHODS = FIXED_METHODS + RANDOM_METHODS

# metafor's rma.uni control defaults.
THRESHOLD = 1e-5
MAXITER = 100
STEPADJ = 1.0
TAU2_MAX = 100.0
UNIROOT_TOL = float(np.finfo(float).eps) ** 0.25
LL_TOL = UNIROOT_TOL
_EPS = float(np.finfo(float).eps)
# Batches fitted by ML, REML or EB (and pool's per-row sums) run the compiled per-row
# kernels of ``_kernels``; False selects the array-at-a-time numpy code, their reference.
_COMPILED = True


@dataclass(frozen=True)
class Tau2Fit:
    """tau^2 per row with its standard error, convergence flag and iteration count."""

    tau2: np.ndarray
    se_tau2: np.ndarray
    converged: np.ndarray
    iterations: np.ndarray


def _rowsum(a: np.ndarray) -> np.ndarray:
    """Sums over the last axis as a BLAS matrix-vector product with ones.

    numpy's reduction over a short last axis (k ~ 20) runs ~9x slower than gemv.
    """
    return a @ np.ones(a.shape[-1])


def _wdot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row sums of ``a * b`` without the temporary product."""
    return np.einsum("...j,...j->...", a, b)


def _wstats(w: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sum of weights, weighted mean and residuals (zero where ``w`` is zero)."""
    s = _rowsum(w)
    mu = _wdot(w, y) / s
    e = np.where(w > 0, y - mu[..., None], 0.0)
    return s, mu, e


def _trace_p(w: np.ndarray, s: np.ndarray) -> np.ndarray:
    """tr(P) for P = W - w w'/sum(w), the intercept-only projection."""
    return s - _wdot(w, w) / s


def _sum_p2(w: np.ndarray, s: np.ndarray, a=1.0, b=1.0) -> np.ndarray:
    """sum_ij P_ij^2 a_i b_j for P = W - w w'/sum(w) (a, b: per-study vectors)."""
    w2 = w * w
    if np.isscalar(a) and np.isscalar(b) and a == 1.0 and b == 1.0:
        sw2 = _rowsum(w2)
        return sw2 - 2.0 / s * _wdot(w2, w) + sw2 * sw2 / (s * s)
    return (
        _wdot(w2 * a, b)
        - 2.0 / s * _wdot(w2 * w * a, b)
        + _wdot(w2, a * np.ones_like(w)) * _wdot(w2, b * np.ones_like(w)) / (s * s)
    )


def _inv(v: np.ndarray, m: np.ndarray, tau2) -> np.ndarray:
    """Inverse-variance weights 1/(v + tau2) on observed studies, 0 elsewhere."""
    t = np.asarray(tau2, dtype=float)
    if t.ndim:
        t = t[:, None]
    vt = v + t
    out = np.zeros(vt.shape)
    np.divide(1.0, vt, out=out, where=m)
    return out


def _rss(y: np.ndarray, v: np.ndarray, m: np.ndarray, tau2) -> np.ndarray:
    """Weighted residual sum of squares Y'PY at a given tau2 (Q at tau2)."""
    w = _inv(v, m, tau2)
    _, _, e = _wstats(w, y)
    return _wdot(w * e, e)


def _he(y, v, m, k):
    """Hedges (HE) estimate, untruncated, and the pieces its SE needs."""
    ones = m.astype(float)
    s, _, e = _wstats(ones, y)
    rss = _wdot(e, e)
    trpv = _wdot(v, m) * (k - 1.0) / k
    return (rss - trpv) / (k - 1.0), ones, s, trpv


def _fisher_scoring(
    y, v, m, k, method, tau2, threshold=THRESHOLD, maxiter=MAXITER, stepadj=STEPADJ
):
    """Fisher scoring for ML, REML or EB exactly as metafor iterates it.

    Each step works only on the rows still iterating, so a few slow rows do not make the
    whole batch pay for 100 iterations; the arrays are compacted to those rows whenever
    they drop below 3/4 of the rows held. Missing studies get an infinite variance, so
    their weight 1/(v + tau2) is exactly 0 and no masking is needed inside the loop; the
    per-row sums are weighted moments (einsum, no temporaries).
    """
    tau2 = tau2.copy()
    n = y.shape[0]
    converged = np.zeros(n, dtype=bool)
    iterations = np.zeros(n, dtype=int)
    rows = np.flatnonzero(np.isfinite(tau2))  # rows held in the compact arrays
    # studies along the first axis: each row's tau2 then broadcasts along contiguous memory
    # and the sums over studies add contiguous vectors (2-3x faster than (rows, k))
    ys = np.ascontiguousarray(y[rows].T)
    vs = np.ascontiguousarray(v[rows].T)
    vs[~m[rows].T] = np.inf
    ys2 = ys * ys
    ks = k[rows]
    tc = tau2[rows]  # the held rows' tau2, written back when rows are dropped and at the end
    itc = np.zeros(rows.size, dtype=int)
    ones = np.ones(ys.shape[0])
    wbuf, w2buf = np.empty(ys.shape), np.empty(ys.shape)
    live = np.ones(rows.size, dtype=bool)  # held rows still iterating
    for it in range(1, maxiter + 2):
        n_live = int(live.sum())
        if n_live == 0:
            break
        if n_live < 0.5 * live.size:  # drop finished rows: copy the rest, once in a while
            done = ~live
            tau2[rows[done]], iterations[rows[done]] = tc[done], itc[done]
            rows, ks, tc, itc = rows[live], ks[live], tc[live], itc[live]
            ys, ys2, vs = ys[:, live], ys2[:, live], vs[:, live]
            wbuf, w2buf = np.empty(ys.shape), np.empty(ys.shape)
            live = np.ones(rows.size, dtype=bool)
        t = tc
        w = np.add(vs, t, out=wbuf)
        np.divide(1.0, w, out=w)
        s = ones @ w
        wy = np.einsum("ij,ij->j", w, ys)
        mu = wy / s
        # sums of w^a (y - mu)^2 from weighted moments of y: y is mean-centred, so the
        # expansion loses nothing, and it saves two passes over the batch per step
        with np.errstate(all="ignore"):
            if method == "EB":
                wee = np.einsum("ij,ij->j", w, ys2) - mu * wy
                adj = (wee * ks / (ks - 1.0) - ks) / s
            else:
                w2 = np.multiply(w, w, out=w2buf)
                sw2 = ones @ w2
                sw2y = np.einsum("ij,ij->j", w2, ys)
                yppy = np.einsum("ij,ij->j", w2, ys2) - mu * (2.0 * sw2y - mu * sw2)
                if method == "ML":
                    adj = (yppy - s) / sw2
                else:  # REML: (Y'PPY - tr P) / tr(PP)
                    q = sw2 / s
                    tr_pp = sw2 - 2.0 * np.einsum("ij,ij->j", w2, w) / s + q * q
                    adj = (yppy - (s - q)) / tr_pp
        adj[np.isnan(adj)] = 0.0
        adj *= stepadj
        # metafor halves the step until tau2 stays >= 0 (tau2.min); from exactly 0 a
        # negative step underflows to -0.0, i.e. no move, which is what we set.
        adj[(t == 0.0) & (adj < 0.0)] = 0.0
        neg = np.flatnonzero(t + adj < 0.0)
        if neg.size:  # halve only the few steps that overshoot (halving is exact)
            a_, t_ = adj[neg], t[neg]
            for _ in range(1100):
                over = t_ + a_ < 0.0
                if not over.any():
                    break
                a_[over] /= 2.0
            adj[neg] = a_
        new = t + adj
        small = np.abs(t - new) <= threshold
        tc = np.where(live, new, tc)  # finished rows keep their value
        itc[live] = it
        if it <= maxiter:
            converged[rows[live & small]] = True
        live &= ~small
    tau2[rows], iterations[rows] = tc, itc
    return tau2, converged, iterations


def _loglik(y, v, m, k, tau2, reml):
    """Log likelihood (ML) or restricted log likelihood (REML) at tau2."""
    t = np.asarray(tau2, dtype=float)
    t = t[:, None] if t.ndim else t
    vt = np.where(m, v + t, 1.0)  # 1 on missing studies: log 0, and weight 0 below
    logv = _rowsum(np.log(vt))
    w = np.reciprocal(vt)
    w *= m
    s, _, e = _wstats(w, y)
    rss = _wdot(w * e, e)
    if reml:
        return -0.5 * (k - 1.0) * np.log(2 * np.pi) - 0.5 * logv - 0.5 * np.log(s) - 0.5 * rss
    return -0.5 * k * np.log(2 * np.pi) - 0.5 * logv - 0.5 * rss


def _row_fit(y, v, m, tau2):
    """Weights, their sum and the weighted residuals at ``tau2``, each row on its own.

    Sums over studies are per-row reductions (``sum(-1)``), not the BLAS products of
    :func:`_rowsum`, whose kernels round the last rows of a block differently: a rescued
    row's result then depends on that row only, whatever else is in the batch.
    """
    w = np.where(m, 1.0 / (np.where(m, v, 1.0) + np.asarray(tau2, dtype=float)[:, None]), 0.0)
    s = w.sum(-1)
    mu = (w * y).sum(-1) / s
    return w, s, np.where(m, y - mu[:, None], 0.0)


def _score(y, v, m, k, tau2, method):
    """The likelihood equation of ``method`` at ``tau2`` (per row), positive below the root.

    ML: ``sum w^2 e^2 - sum w`` (twice the score of the log likelihood); REML:
    ``sum w^2 e^2 - tr P`` (twice the score of the restricted one); EB: ``Q(tau2) - (k -
    1)`` (Morris's equation, ``k/(k-1) Q = k``, decreasing in tau2). Fisher scoring steps
    by these numerators over their information; the rescue below solves them directly.
    """
    w, s, e = _row_fit(y, v, m, tau2)
    if method == "EB":
        return (w * e * e).sum(-1) - (k - 1.0)
    yppy = (w * w * e * e).sum(-1)
    if method == "ML":
        return yppy - s
    return yppy - (s - (w * w).sum(-1) / s)


def _row_loglik(y, v, m, k, tau2, reml):
    """:func:`_loglik` with per-row sums (see :func:`_row_fit`)."""
    w, s, e = _row_fit(y, v, m, tau2)
    vt = np.where(m, v + np.asarray(tau2, dtype=float)[:, None], 1.0)
    logv = np.log(vt).sum(-1)
    rss = (w * e * e).sum(-1)
    if reml:
        return -0.5 * (k - 1.0) * np.log(2 * np.pi) - 0.5 * logv - 0.5 * np.log(s) - 0.5 * rss
    return -0.5 * k * np.log(2 * np.pi) - 0.5 * logv - 0.5 * rss


GRID = 48  # grid points of the rescue's search for the likelihood's maximum
RESCUE_TOL = 1e-12  # absolute tolerance on tau^2 of the rescue's root


def solve_likelihood(score, loglik, upper, method: str):
    """Maximize an ML/REML likelihood, or solve EB's equation, on a batch of rows.

    ``score(x, sel)``: the likelihood equation (positive below the root, as
    :func:`_score`) of the rows in the boolean mask ``sel`` at ``x[sel]``;
    ``loglik(x)``: the (restricted) log likelihood of every row at ``x``; ``upper``: the
    end of each row's search (metafor's ``tau2.max``). ML/REML evaluate the likelihood on
    a grid of tau^2 from 0 to ``upper`` (widened while the maximum sits at its end), take
    the best grid point (0 included, so a boundary maximum is kept) and refine the root
    of the score between its neighbours by Brent's method; EB's equation decreases in
    tau^2 and is solved as PM's. Returns ``(root, ok)``; ``ok`` is False where no bracket
    could be formed. Shared by the intercept-only and the meta-regression estimators.
    """
    n = upper.shape[0]
    every = np.ones(n, dtype=bool)
    if method == "EB":
        root, ok, _ = _pm_root(score, n, upper, tol=RESCUE_TOL)
        return root, ok
    fracs = np.concatenate([[0.0], np.logspace(-10.0, 0.0, GRID - 1)])
    upper = upper.copy()
    for _ in range(30):  # widen while the best grid point is the last one
        grid = upper[:, None] * fracs[None, :]  # (B, G)
        ll = np.column_stack([loglik(grid[:, g]) for g in range(GRID)])  # loop over points
        best = np.argmax(np.where(np.isfinite(ll), ll, -np.inf), axis=1)
        at_end = best == GRID - 1
        if not at_end.any():
            break
        upper = np.where(at_end, upper * 10.0, upper)
    rows = np.arange(n)
    sc = score(grid[rows, best], every)
    # the root lies right of the best point where the score still rises, else left
    right = sc > 0.0
    lo = grid[rows, np.where(right, best, np.maximum(best - 1, 0))]
    hi = grid[rows, np.where(right, np.minimum(best + 1, GRID - 1), best)]
    f_lo, f_hi = score(lo, every), score(hi, every)
    root = np.full(n, np.nan)
    ok = np.zeros(n, dtype=bool)
    zero = (best == 0) & (sc <= 0.0)  # the maximum is at tau^2 = 0
    root[zero], ok[zero] = 0.0, True
    brk = ~zero & (f_lo > 0.0) & (f_hi <= 0.0)
    if brk.any():
        f = _on_subset(score, np.flatnonzero(brk), n)
        r, o, _ = _zeroin(f, lo[brk], hi[brk], f_lo[brk], f_hi[brk], tol=RESCUE_TOL)
        root[brk], ok[brk] = r, o
    return root, ok


def rescue_tau2(y, v, m, k, method, tau2, converged, iterations):
    """Solve the likelihood equation where Fisher scoring did not converge (ML, REML, EB).

    Fisher scoring oscillates on about 0.5 % of random k = 20 analyses (metafor stops with
    "Fisher scoring algorithm did not converge" on the same rows). The estimate is still
    the maximum of the same likelihood, found by :func:`solve_likelihood` on those rows
    only, all at once. Returns updated copies of ``tau2, converged, iterations``; a
    rescued row keeps ``iterations = MAXITER + 1``, which tells it apart, and a row whose
    bracket cannot be formed stays flagged.
    """
    bad = np.flatnonzero(~converged & (k >= 2))
    if bad.size == 0:
        return tau2, converged, iterations
    tau2, converged, iterations = tau2.copy(), converged.copy(), iterations.copy()
    kf = k[bad].astype(float)
    mb = m[bad]
    yb = np.where(mb, y[bad], 0.0)
    yb = np.where(mb, yb - (yb.sum(-1) / kf)[:, None], 0.0)
    vb = np.where(mb, v[bad], 1.0)

    def score(x, sel):
        return _score(yb[sel], vb[sel], mb[sel], kf[sel], x[sel], method)

    def loglik(x):
        return _row_loglik(yb, vb, mb, kf, x, method == "REML")

    root, ok = solve_likelihood(score, loglik, tau2_max(yb, mb, k[bad]), method)
    fixed = bad[ok]
    tau2[fixed] = np.maximum(0.0, root[ok])
    converged[fixed] = True
    return tau2, converged, iterations


def _se_iterative(y, v, m, k, tau2, method):
    """Standard errors of the ML, REML and EB tau^2 estimates, as metafor (per-row sums)."""
    kf = k.astype(float)
    w, s, _ = _row_fit(y, v, m, tau2)
    w2 = (w * w).sum(-1)
    if method == "ML":
        return np.sqrt(2.0 / w2)
    if method == "REML":  # sum of P_ij^2 for P = W - w w'/s
        return np.sqrt(2.0 / (w2 - 2.0 / s * (w * w * w).sum(-1) + w2 * w2 / (s * s)))
    return np.sqrt(2.0 * kf**2 / (kf - 1.0) / s**2)


def _zeroin(
    f: Callable[[np.ndarray, np.ndarray], np.ndarray],
    ax: np.ndarray,
    bx: np.ndarray,
    fa: np.ndarray,
    fb: np.ndarray,
    tol: float = UNIROOT_TOL,
    maxiter: int = MAXITER,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Brent's zero finder on many brackets at once, step for step as R's uniroot.

    ``f(x, rows)`` evaluates the function at ``x[rows]`` for the rows in the
    boolean mask ``rows`` and returns values for those rows. Returns the roots
    a boolean array saying which rows met the tolerance, and the number
    of function evaluations after the two end points.
    """
    a, b, c = ax.copy(), bx.copy(), ax.copy()
    fa, fb, fc = fa.copy(), fb.copy(), fa.copy()
    root = np.full(a.shape, np.nan)
    ok = np.zeros(a.shape, dtype=bool)
    iters = np.zeros(a.shape, dtype=int)
    for hit, at in ((fa == 0.0, a), (fb == 0.0, b)):
        hit = hit & ~ok
        root[hit] = at[hit]
        ok |= hit
    act = ~ok
    for _ in range(maxiter + 1):
        if not act.any():
            break
        prev_step = b - a
        swap = act & (np.abs(fc) < np.abs(fb))
        a, b, c = np.where(swap, b, a), np.where(swap, c, b), np.where(swap, b, c)
        fa, fb, fc = np.where(swap, fb, fa), np.where(swap, fc, fb), np.where(swap, fb, fc)
        tol_act = 2.0 * _EPS * np.abs(b) + tol / 2.0
        new_step = (c - b) / 2.0
        fin = act & ((np.abs(new_step) <= tol_act) | (fb == 0.0))
        root[fin] = b[fin]
        ok |= fin
        act &= ~fin
        with np.errstate(all="ignore"):
            cb = c - b
            t1 = fb / fa
            p_lin, q_lin = cb * t1, 1.0 - t1
            q0, t1q, t2q = fa / fc, fb / fc, fb / fa
            p_quad = t2q * (cb * q0 * (q0 - t1q) - (b - a) * (t1q - 1.0))
            q_quad = (q0 - 1.0) * (t1q - 1.0) * (t2q - 1.0)
            lin = a == c
            p = np.where(lin, p_lin, p_quad)
            q = np.where(lin, q_lin, q_quad)
            pos = p > 0.0
            q = np.where(pos, -q, q)
            p = np.where(pos, p, -p)
            try_interp = act & (np.abs(prev_step) >= tol_act) & (np.abs(fa) > np.abs(fb))
            accept = (
                try_interp
                & (p < 0.75 * cb * q - np.abs(tol_act * q) / 2.0)
                & (p < np.abs(prev_step * q / 2.0))
            )
            new_step = np.where(accept, p / q, new_step)
        tiny = np.abs(new_step) < tol_act
        new_step = np.where(tiny, np.where(new_step > 0.0, tol_act, -tol_act), new_step)
        a = np.where(act, b, a)
        fa = np.where(act, fb, fa)
        b = np.where(act, b + new_step, b)
        if act.any():
            fb = fb.copy()
            fb[act] = f(b, act)
            iters += act
        same = act & (((fb > 0.0) & (fc > 0.0)) | ((fb < 0.0) & (fc < 0.0)))
        c = np.where(same, a, c)
        fc = np.where(same, fa, fc)
    root[act] = b[act]
    return root, ok, iters


def _row_median(x: np.ndarray, m: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Median of the observed entries of each row (R's ``median``)."""
    s = np.sort(np.where(m, x, np.inf), axis=-1)
    lo = np.take_along_axis(s, ((k - 1) // 2)[:, None], axis=-1)[:, 0]
    hi = np.take_along_axis(s, (k // 2)[:, None], axis=-1)[:, 0]
    return 0.5 * (lo + hi)


def tau2_max(y: np.ndarray, m: np.ndarray, k: np.ndarray) -> np.ndarray:
    """metafor's default upper end of the tau^2 search: ``max(100, 10 * mad(yi)^2)``."""
    out = np.full(y.shape[0], TAU2_MAX)
    # mad <= 1.4826 * range, so only rows with a wide range can exceed 100: sort only those.
    spread = np.where(m, y, -np.inf).max(axis=-1) - np.where(m, y, np.inf).min(axis=-1)
    wide = np.flatnonzero(10.0 * (1.4826 * spread) ** 2 > TAU2_MAX)
    if wide.size:
        yw, mw, kw = y[wide], m[wide], k[wide]
        med = _row_median(yw, mw, kw)
        mad = 1.4826 * _row_median(np.abs(np.where(mw, yw, 0.0) - med[:, None]), mw, kw)
        out[wide] = np.maximum(TAU2_MAX, 10.0 * mad * mad)
    return out


def _paule_mandel(y, v, m, k, upper0=None):
    """PM: root of Q(tau2) = k - 1 on [0, tau2.max] by uniroot, as metafor."""
    target = k - 1.0

    def f(x, rows):
        return _rss(y[rows], v[rows], m[rows], x[rows]) - target[rows]

    n = y.shape[0]
    return _pm_root(f, n, np.full(n, TAU2_MAX) if upper0 is None else upper0)


def _on_subset(f, idx: np.ndarray, n: int):
    """``f(x, rows)`` of ``n`` rows as a function of the rows ``idx`` only, for
    :func:`_zeroin` (which iterates over its own rows)."""

    def sub(x, rows):
        full = np.zeros(n, dtype=bool)
        full[idx[rows]] = True
        xx = np.zeros(n)
        xx[idx] = x
        return f(xx, full)

    return sub


def _pm_root(f, n: int, upper0: np.ndarray, tol: float = UNIROOT_TOL):
    """Root of ``f(tau2, rows)`` (Q(tau2) minus its expectation) on [0, upper] per row.

    The Paule-Mandel solve shared by the intercept-only and the meta-regression
    estimators: 0 where Q(0) is already below its expectation, else Brent's method as R's
    uniroot, on all rows at once. Where metafor stops with "tau2.max too low" the bracket
    is widened instead.
    """
    every = np.ones(n, dtype=bool)
    lower = np.zeros(n)
    f0 = f(lower, every)
    tau2 = np.where(f0 < 0.0, 0.0, np.nan)
    converged = f0 < 0.0
    iterations = np.zeros(n, dtype=int)
    need = ~converged & np.isfinite(f0)
    upper = np.array(upper0, dtype=float, copy=True)
    fu = np.full(n, np.nan)
    if need.any():
        fu[need] = f(upper, need)
        wide = need & (fu > 0.0)
        for _ in range(30):
            if not wide.any():
                break
            upper = np.where(wide, upper * 10.0, upper)
            fu[wide] = f(upper, wide)
            wide &= fu > 0.0
        need &= ~wide
    if need.any():
        idx = np.flatnonzero(need)
        fsub = _on_subset(f, idx, n)
        root, ok, its = _zeroin(fsub, lower[idx], upper[idx], f0[idx], fu[idx], tol=tol)
        tau2[idx] = root
        converged[idx] = ok
        iterations[idx] = its
    return tau2, converged, iterations


def _control(control) -> tuple[float, int, float]:
    """``(threshold, maxiter, stepadj)`` of a Control (None: metafor's defaults)."""
    if control is None:
        return THRESHOLD, MAXITER, STEPADJ
    return float(control.threshold), int(control.maxiter), float(control.stepadj)


def estimate_tau2(
    y: np.ndarray, v: np.ndarray, m: np.ndarray, k: np.ndarray, method: str, control=None
) -> Tau2Fit:
    """Estimate tau^2 for every row of a padded batch.

    Parameters
    ----------
    y, v : numpy.ndarray
        Effects and sampling variances, shape ``(n, kmax)``; values outside
        ``m`` are ignored (they may be NaN).
    m : numpy.ndarray
        Boolean mask of observed studies, shape ``(n, kmax)``.
    k : numpy.ndarray
        Number of observed studies per row (``m.sum(-1)``), at least 2 for
        random-effects methods.
    method : str
        One of :data:`METHODS` (upper case).
    control : Control, optional
        Fisher scoring's threshold, maxiter and stepadj (ML, REML, EB); default metafor's.

    Returns
    -------
    Tau2Fit
        ``tau2`` (truncated at 0), ``se_tau2`` (NaN for common-effect
        methods), per-row ``converged`` and ``iterations`` (Fisher-scoring
        steps, or function evaluations of Brent's method for PM; 0 for
        closed forms).

    References
    ----------
    See the module docstring.
    """
    n = y.shape[0]
    kf = k.astype(float)
    zeros = np.zeros(n)
    if method in FIXED_METHODS:
        return Tau2Fit(zeros, np.full(n, np.nan), np.ones(n, bool), np.zeros(n, int))
    if _COMPILED and method in ("ML", "REML", "EB"):
        from spatialmeta.meta_analysis import _kernels  # imports numba on first use

        tau2, se, converged, iterations = _kernels.tau2_iterative(
            y, v, m, method, *_control(control)
        )
        if not converged.all():  # Fisher scoring failed on a few rows: solve them directly
            fixed = ~converged
            tau2, converged, iterations = rescue_tau2(
                y, v, m, k, method, tau2, converged, iterations
            )
            fixed &= converged
            if fixed.any():
                se = se.copy()
                se[fixed] = _se_iterative(
                    y[fixed], v[fixed], m[fixed], k[fixed], tau2[fixed], method
                )
        return Tau2Fit(tau2, se, converged, iterations)
    # metafor estimates tau2 from the mean-centred effects (Ymc).
    yc = np.where(m, y, 0.0)
    yc = np.where(m, y - (_rowsum(yc) / kf)[:, None], 0.0)
    v = np.where(m, v, 1.0)
    converged = np.ones(n, dtype=bool)
    iterations = np.zeros(n, dtype=int)

    with np.errstate(invalid="ignore", divide="ignore"):
        if method in ("DL", "HS"):
            w = _inv(v, m, 0.0)
            s, _, e = _wstats(w, yc)
            rss = _wdot(w * e, e)
            trp = _trace_p(w, s)
            if method == "DL":
                tau2 = np.maximum(0.0, (rss - (kf - 1.0)) / trp)
                den = trp
            else:
                tau2 = np.maximum(0.0, (rss - kf) / s)
                den = s
            se = np.sqrt(
                (2.0 * (kf - 1.0) + 4.0 * tau2 * trp + 2.0 * tau2**2 * _sum_p2(w, s)) / den**2
            )
        elif method == "HE":
            he, ones, s, trpv = _he(yc, v, m, kf)
            tau2 = np.maximum(0.0, he)
            vv = np.where(m, v, 0.0)
            se = np.sqrt(
                (2.0 * _sum_p2(ones, s, vv, vv) + 4.0 * tau2 * trpv + 2.0 * tau2**2 * (kf - 1.0))
                / (kf - 1.0) ** 2
            )
        elif method == "SJ":
            e0 = np.where(m, yc - (_rowsum(yc) / kf)[:, None], 0.0)
            tau2_0 = _wdot(e0, e0) / (kf - 1.0) * (kf - 1.0) / kf
            w = _inv(v, m, tau2_0)
            s, _, e = _wstats(w, yc)
            rss = _wdot(w * e, e)
            tau2 = np.maximum(0.0, tau2_0 * rss / (kf - 1.0))
            vv = np.where(m, v, 0.0)
            se = np.sqrt(
                tau2_0**2
                / (kf - 1.0) ** 2
                * (
                    2.0 * _sum_p2(w, s, vv, vv)
                    + 4.0 * tau2 * _sum_p2(w, s, 1.0, vv)
                    + 2.0 * tau2**2 * _sum_p2(w, s)
                )
            )
        elif method in ("ML", "REML", "EB"):
            he, *_ = _he(yc, v, m, kf)
            tau2, converged, iterations = _fisher_scoring(
                yc, v, m, kf, method, np.maximum(0.0, he), *_control(control)
            )
            tau2, converged, iterations = rescue_tau2(
                yc, v, m, k, method, tau2, converged, iterations
            )
            if method in ("ML", "REML"):
                # metafor's check that the root beats tau2 = 0, on the rows where it can bite
                cand = np.flatnonzero(converged & (tau2 > _control(control)[0]))
                if cand.size:
                    reml = method == "REML"
                    yk, vk, mk, kk = yc[cand], v[cand], m[cand], kf[cand]
                    ll0 = _loglik(yk, vk, mk, kk, 0.0, reml)
                    ll = _loglik(yk, vk, mk, kk, tau2[cand], reml)
                    tau2 = tau2.copy()
                    tau2[cand[ll0 - ll > LL_TOL]] = 0.0
            tau2 = np.maximum(0.0, tau2)
            se = _se_iterative(yc, v, m, k, tau2, method)  # the formulas the rescue uses too
        elif method == "PM":
            upper = tau2_max(yc, m, k)
            tau2, converged, iterations = _paule_mandel(yc, v, m, kf, upper)
            tau2 = np.maximum(0.0, tau2)
            s = _rowsum(_inv(v, m, tau2))
            se = np.sqrt(2.0 * kf**2 / (kf - 1.0) / s**2)
        else:  # pragma: no cover - validated by the caller
            raise ValueError(f"unknown method {method!r}")
    return Tau2Fit(tau2, se, converged, iterations)

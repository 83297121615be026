"""Many multilevel models of one shape fitted at once (issue 15, item 6).

A gridded field pooled region by region gives one analysis per variable (or per member,
per season, per lead time) with the same regions, the same random structure and the same
moderators, but its own effects and sampling variances: the rows of ``Y`` and ``V``.
:func:`pool_mv_batch` fits all of them together. The components are bound once (the
distance matrix, the cluster indicators) and every step of the optimizer is one stacked
``(B, k, k)`` array operation for the whole batch: average-information scoring on the
(restricted) likelihood, each analysis's step projected onto its bounds (variances ``>= 0``,
correlations inside (-1, 1), the spatial range within the data's extent) and halved until
its likelihood rises. The analyses start from every component's starting points (the
spatial range from four: its likelihood has two modes on few regions), all in the same
stack, and each keeps its best.

It returns what :func:`~spatialmeta.meta_analysis.multilevel.pool_mv` returns for each
analysis, as arrays with a leading batch axis (:class:`MultilevelBatchResult`;
``fit(b)`` gives analysis ``b``'s full :class:`~spatialmeta.meta_analysis.multilevel.
MultilevelResult`, with ``ranef`` and ``confint``). ``pool_mv`` fits one analysis by
L-BFGS-B from the same starts; both find the same maximum (a test holds it, to 1e-6).

Written by hand for the same reason as ``multilevel`` (no Python package fits rma.mv's
models, batched or not). Scoring with the average information ``1/2 (dS_q P r)' P (dS_r
P r)`` is the algorithm of the mixed-model programs (ASReml, Gilmour et al. 1995): it
converges like Newton's method, and unlike the expected information ``1/2 tr(P dS_q P
dS_r)`` it needs no ``k^3`` product per parameter.

References
----------
Gilmour, A. R., Thompson, R., & Cullis, B. R. (1995). Average information REML: an
efficient algorithm for variance parameter estimation in linear mixed models. Biometrics
51(4), 1440-1450. doi:10.2307/2533274
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from spatialmeta.meta_analysis.multilevel import (
    MultilevelResult,
    _Model,
    _result,
    _Spec,
    _spec,
    _starts,
)
from spatialmeta.meta_analysis.results import Result, fmt_num
from spatialmeta.meta_analysis.structures import Spatial, Structured

__all__ = ["MultilevelBatchResult", "pool_mv_batch"]

MAX_ITER = 200
# the step lengths tried when a full step lowers the likelihood: a first stacked round,
# then (rare) the rest
CHUNK_ELEMENTS = 1 << 16  # matrix elements stacked at once (overridable for tests)
HALVES = (0.5 ** np.arange(1, 5), 0.5 ** np.arange(5, 21))


@dataclass(frozen=True, eq=False)
class MultilevelBatchResult(Result):
    """``B`` fitted multilevel models of one shape (:func:`pool_mv_batch`). Each field is
    :class:`~spatialmeta.meta_analysis.multilevel.MultilevelResult`'s with a leading batch
    axis: ``beta``/``se``/``zval``/``pval``/``ci_lb``/``ci_ub`` ``(B, p)``, ``theta``
    ``(B, n_par)`` (the parameters named in ``par_names``; a spatial range on the log
    scale), ``sigma2`` and ``I2`` ``(B, levels)``, ``tau2``/``rho`` ``(B,)`` for a spatial
    component (variance and range) and ``range_at_bound`` (the range reached its upper
    bound, ten times the extent: the correlation falls linearly with distance across the
    whole domain and range and variance are not told apart; the fit stands), ``QE``/``QEp``/``QM``/``QMp``/``logLik``/``converged``
    ``(B,)``. ``labels`` name the analyses. ``fit(b)`` is analysis ``b``'s full result."""

    labels: tuple
    beta: np.ndarray
    se: np.ndarray
    zval: np.ndarray
    pval: np.ndarray
    ci_lb: np.ndarray
    ci_ub: np.ndarray
    theta: np.ndarray
    par_names: tuple
    sigma2: np.ndarray
    levels: tuple
    I2: np.ndarray
    tau2: np.ndarray | None
    rho: np.ndarray | None
    range_at_bound: np.ndarray | None
    QE: np.ndarray
    QEp: np.ndarray
    QM: np.ndarray
    QMp: np.ndarray
    logLik: np.ndarray
    converged: np.ndarray
    k: int
    method: str
    level: float
    coef_names: tuple
    structure: str | None = None
    iterations: int = 0
    data: object = None  # (Y, V, spec): what fit(b) rebuilds an analysis from

    _dict_skip = ("data",)

    def fit(self, b: int) -> MultilevelResult:
        """Analysis ``b`` as :func:`~spatialmeta.meta_analysis.multilevel.pool_mv`'s result
        (at the batch's parameters: no refit)."""
        Y, V, spec = self.data
        Vb = V[b] if V.ndim == 3 else V
        model = _Model(Y[b], Vb, spec.X, spec.comps, self.method == "REML")
        return _result(model, spec, self.theta[b], float(self.logLik[b]),
                       bool(self.converged[b]), self.level)  # fmt: skip

    def to_frame(self) -> pd.DataFrame:
        """One row per analysis: coefficients with SE and interval, the variance
        components, logLik and convergence."""
        cols: dict[str, np.ndarray] = {}
        for j, n in enumerate(self.coef_names):
            pre = "" if len(self.coef_names) == 1 else f"{n}_"
            for f in ("beta", "se", "ci_lb", "ci_ub", "pval"):
                cols[f"{pre}{f}"] = getattr(self, f)[:, j]
        for j, n in enumerate(self.levels):
            cols[f"sigma2 ({n})"] = self.sigma2[:, j]
        if self.tau2 is not None:
            cols["tau2"], cols["rho"] = self.tau2, self.rho
            cols["range_at_bound"] = self.range_at_bound
        cols["logLik"], cols["converged"] = self.logLik, self.converged
        return pd.DataFrame(cols, index=pd.Index(self.labels, name="analysis"))

    def summary(self) -> str:
        n_ok = int(self.converged.sum())
        lines = [f"{len(self.labels)} multilevel models (k = {self.k} each; method: "
                 f"{self.method}; {n_ok} converged, {self.iterations} scoring steps)"]  # fmt: skip
        for j, n in enumerate(self.coef_names):
            b = self.beta[:, j]
            lines.append(f"{n[:10]:10} median {fmt_num(np.median(b))}, range {fmt_num(b.min())} "
                         f"to {fmt_num(b.max())}")  # fmt: skip
        if self.rho is not None:
            lines.append(f"spatial ({self.structure}) range: median {fmt_num(np.median(self.rho))}")
        return "\n".join(lines)


class _Batch:
    """The stacked likelihood of ``N`` analyses (rows of ``Y``) under shared components."""

    def __init__(self, Y, V, spec: _Spec, reml: bool):
        self.Y, self.V, self.spec, self.reml = Y, V, spec, reml
        self.X = spec.X
        self.k, self.p = self.X.shape
        self.half_xx = 0.5 * np.linalg.slogdet(self.X.T @ self.X)[1]
        self.slices, i = [], 0
        for c in spec.comps:
            self.slices.append(slice(i, i + c.n_par))
            i += c.n_par
        self.n_par = i
        b = [bd for c in spec.comps for bd in c.bounds()]
        self.lo = np.array([x[0] if x[0] is not None else -np.inf for x in b])
        self.hi = np.array([x[1] if x[1] is not None else np.inf for x in b])

    def evaluate(self, T, rows, grad: bool):
        """The log-likelihood of analyses ``rows`` at parameters ``T`` (len(rows), n_par);
        with ``grad``, its gradient and average information too. A non positive definite
        marginal covariance (a correlation structure outside its valid range) scores
        -inf."""
        Y, X, k, p = self.Y[rows], self.X, self.k, self.p
        S = self.V[rows] if self.V.ndim == 3 else np.broadcast_to(self.V, (len(rows), k, k))
        S = S.copy()
        dS = []
        for c, sl in zip(self.spec.comps, self.slices, strict=True):
            Sc, dc = c.cov_batch(T[:, sl])
            S += Sc
            dS += dc
        ok = np.ones(len(rows), bool)
        try:
            L = np.linalg.cholesky(S)
        except np.linalg.LinAlgError:  # rare: find the rows at fault, score them -inf
            ok = np.linalg.eigvalsh(S)[:, 0] > 0
            S = np.where(ok[:, None, None], S, np.eye(k))
            L = np.linalg.cholesky(S)
        if grad:  # the gradient needs Sigma^-1 whole
            Si = np.linalg.inv(S)
            Si = 0.5 * (Si + Si.transpose(0, 2, 1))
            SiX = Si @ X  # (N, k, p)
            Siy = np.einsum("nij,nj->ni", Si, Y)
        else:  # the likelihood alone: two solves, a third of the inverse's work
            Z = np.linalg.solve(S, np.concatenate([np.broadcast_to(X, (len(rows), k, p)),
                                                   Y[..., None]], 2))  # fmt: skip
            SiX, Siy = Z[..., :p], Z[..., p]
        XSX = np.einsum("ki,nkj->nij", X, SiX)
        XSXi = np.linalg.inv(XSX)
        Xy = np.einsum("ki,nk->ni", X, Siy)
        beta = np.einsum("nij,nj->ni", XSXi, Xy)
        q = np.einsum("nk,nk->n", Y, Siy) - np.einsum("ni,ni->n", beta, Xy)  # r' Sigma^-1 r
        logdet = 2 * np.log(np.diagonal(L, axis1=1, axis2=2)).sum(1)
        logdet_x = np.linalg.slogdet(XSX)[1]
        if self.reml:
            ll = -0.5 * ((k - p) * math.log(2 * math.pi) + logdet + logdet_x + q) + self.half_xx
        else:
            ll = -0.5 * (k * math.log(2 * math.pi) + logdet + q)
        ll = np.where(ok, ll, -np.inf)
        if not grad:
            return ll, None, None, beta
        Pr = Siy - np.einsum("nkj,nj->nk", SiX, beta)  # Sigma^-1 r = P y
        P = Si - SiX @ XSXi @ SiX.transpose(0, 2, 1) if self.reml else Si
        # gradient -1/2 tr(P dS_q) + 1/2 r'P dS_q P r, and the average information
        # 1/2 (dS_q P r)' P (dS_r P r) (Gilmour et al. 1995): vectors only, no k^3 product
        # per parameter as the expected information would need
        n_par = len(dS)
        g = np.empty((len(rows), n_par))
        U = np.empty((len(rows), k, n_par))
        for j, d in enumerate(dS):
            if d.ndim == 2:  # shared by the batch
                g[:, j] = -0.5 * np.einsum("nij,ij->n", P, d)
                U[:, :, j] = Pr @ d
            else:
                g[:, j] = -0.5 * np.einsum("nij,nij->n", P, d)
                U[:, :, j] = np.einsum("nij,nj->ni", d, Pr)
        g += 0.5 * np.einsum("nkj,nk->nj", U, Pr)
        F = 0.5 * U.transpose(0, 2, 1) @ (P @ U)
        return ll, g, F, beta

    def free(self, T, g):
        """Parameters not held at a bound by the gradient."""
        with np.errstate(invalid="ignore"):  # an infinite bound is never reached
            at_lo = (T <= self.lo + 1e-12 * (1 + np.abs(self.lo))) & (g < 0)
            at_hi = (T >= self.hi - 1e-12 * (1 + np.abs(self.hi))) & (g > 0)
        return ~(at_lo | at_hi)

    def maximize(self, T0, owner=None):
        """Projected quasi-Newton ascent from every row of ``T0``, all rows stacked: the
        step solves the curvature (average information, then BFGS-updated) on the free
        parameters; a step that does not raise the likelihood is shortened, the
        candidate lengths 1/2 .. 1/2^20 tried in one stacked evaluation. Rows of the same
        ``owner`` (starts of one analysis) that meet are merged: the lower one stops."""
        N = T0.shape[0]
        T = np.clip(T0, self.lo, self.hi)
        ll, g, H, _ = self.evaluate(T, np.arange(N), True)
        active = np.ones(N, bool)
        steps = 0
        for steps in range(1, MAX_ITER + 1):  # noqa: B007 - the count is reported
            idx = np.flatnonzero(active)
            if idx.size == 0:
                break
            free = self.free(T[idx], g[idx])
            gf = np.where(free, g[idx], 0.0)
            Hf = np.where(free[:, :, None] & free[:, None, :], H[idx], 0.0)
            Hf = Hf + np.eye(self.n_par) * (~free)[:, None, :]  # held: identity rows
            scale = np.abs(np.diagonal(Hf, axis1=1, axis2=2)).max(1, keepdims=True)
            Hf = Hf + 1e-10 * scale[:, :, None] * np.eye(self.n_par)
            with np.errstate(all="ignore"):
                delta = np.linalg.solve(Hf, gf[..., None])[..., 0]
            bad = ~np.isfinite(delta).all(1) | ((delta * gf).sum(1) <= 0)
            delta[bad] = gf[bad] / np.maximum(scale[bad], 1e-300)  # scaled ascent
            decrement = 0.5 * (gf * delta).sum(1)  # the gain the full step predicts
            cand = np.clip(T[idx] + delta, self.lo, self.hi)
            ll_c, g_c, F_c, _ = self.evaluate(cand, idx, True)
            up = ll_c >= ll[idx] - 1e-12 * (1 + np.abs(ll[idx]))
            for halves in HALVES:  # shorter steps of the rows still short, stacked
                short = np.flatnonzero(~up)
                if short.size == 0:
                    break
                n_h = halves.size
                rep = np.repeat(short, n_h)
                tries = np.clip(T[idx[rep]] + np.tile(halves, short.size)[:, None] * delta[rep],
                                self.lo, self.hi)  # fmt: skip
                lt = self.evaluate(tries, idx[rep], False)[0].reshape(short.size, n_h)
                ok = lt >= ll[idx[short], None] - 1e-12 * (1 + np.abs(ll[idx[short], None]))
                found = ok.any(1)
                sel = short[found]
                if sel.size:  # the longest step that does not lower the likelihood
                    first = np.argmax(ok[found], 1)
                    cand[sel] = tries.reshape(short.size, n_h, -1)[found, first]
                    ll_s, g_s, F_s, _ = self.evaluate(cand[sel], idx[sel], True)
                    ll_c[sel], g_c[sel], F_c[sel] = ll_s, g_s, F_s
                    up[sel] = True
            moved = np.where(up, np.abs(cand - T[idx]).max(1), 0.0)
            acc = idx[up]
            H[acc] = _bfgs(H[acc], cand[up] - T[acc], g[acc] - g_c[up], F_c[up])
            T[acc], ll[acc], g[acc] = cand[up], ll_c[up], g_c[up]
            done = ~up | (moved < 1e-10) | (decrement < 1e-10)
            active[idx[done]] = False
            if owner is not None:  # starts of one analysis that met: keep the higher
                a_idx = np.flatnonzero(active)
                o = owner[a_idx]
                order = np.lexsort((-ll[a_idx], o))
                a_s, o_s = a_idx[order], o[order]
                same = (o_s[1:] == o_s[:-1]) & (np.abs(T[a_s[1:]] - T[a_s[:-1]]).max(1) < 1e-6)
                active[a_s[1:][same]] = False
        pg = np.abs(np.where(self.free(T, g), g, 0.0)).max(1)
        return T, ll, pg < 1e-4, steps


def _bfgs(H, s, y, fallback):
    """BFGS updates of the curvature ``H`` (n x n per row) of minus the log-likelihood
    from a step ``s`` and the gradient's fall ``y``: the average information alone
    misses the curvature of a nonlinear parameter (a spatial range) and steps oscillate
    around the maximum; the secant updates restore fast convergence. A row whose step
    shows no positive curvature restarts from the average information ``fallback``."""
    sy = np.einsum("ni,ni->n", s, y)
    Hs = np.einsum("nij,nj->ni", H, s)
    sHs = np.einsum("ni,ni->n", s, Hs)
    ok = (sy > 1e-12 * np.sqrt((s * s).sum(1) * (y * y).sum(1))) & (sHs > 0)
    safe_sy, safe_sHs = np.where(ok, sy, 1.0), np.where(ok, sHs, 1.0)
    upd = (H - Hs[:, :, None] * Hs[:, None, :] / safe_sHs[:, None, None]
           + y[:, :, None] * y[:, None, :] / safe_sy[:, None, None])  # fmt: skip
    return np.where(ok[:, None, None], upd, fallback)


def pool_mv_batch(Y, V, *, random=(), structured: Structured | None = None,
                  spatial: Spatial | None = None, mods=None, intercept: bool = True,
                  method: str = "REML", level: float = 95.0, names=None,
                  labels=None) -> MultilevelBatchResult:  # fmt: skip
    """Fit ``B`` multilevel models that share their random structure and design.

    Parameters
    ----------
    Y : array_like ``(B, k)``
        One row of effects per analysis.
    V : array_like
        Sampling variances ``(B, k)`` or covariance matrices ``(B, k, k)``, one per
        analysis; or variances ``(k,)`` or a covariance matrix ``(1, k, k)`` shared by all.
    random, structured, spatial, mods, intercept, method, level, names
        As :func:`~spatialmeta.meta_analysis.multilevel.pool_mv`, shared by every analysis.
    labels : sequence, optional
        Names of the analyses (default 0 .. B-1).

    Examples
    --------
    Five variables of a field over the same 30 regions, each pooled with a spatially
    correlated effect:

    >>> import numpy as np
    >>> from spatialmeta.meta_analysis import Spatial
    >>> rng = np.random.default_rng(0)
    >>> xy = rng.uniform(0, 10, (30, 2))
    >>> Y = 0.2 + rng.normal(0, 0.3, (5, 30))
    >>> res = pool_mv_batch(Y, np.full(30, 0.02), random=[np.arange(30)], spatial=Spatial(xy))
    >>> res.beta.shape, res.to_frame().shape
    ((5, 1), (5, 11))
    """
    if method not in ("REML", "ML"):
        raise ValueError(f"pool_mv_batch: `method` must be 'REML' or 'ML'; got {method!r}.")
    Y = np.asarray(Y, dtype=float)
    if Y.ndim != 2:
        raise ValueError(f"pool_mv_batch: `Y` must be (analyses, effects); got shape {Y.shape}.")
    B, k = Y.shape
    lab = tuple(range(B)) if labels is None else tuple(labels)
    if len(lab) != B:
        raise ValueError(f"pool_mv_batch: {len(lab)} `labels` for {B} analyses.")
    bad = ~np.isfinite(Y)
    if bad.any():
        b, i = np.argwhere(bad)[0]
        raise ValueError(f"pool_mv_batch: analysis {lab[b]!r} has a non-finite effect at "
                         f"position {i}; drop the analysis or the effect.")  # fmt: skip
    Vm = _check_V_batch(V, B, k, lab)
    spec = _spec(k, mods, intercept, random, structured, spatial, names)
    batch = _Batch(Y, Vm, spec, method == "REML")
    vbar = np.diagonal(Vm, axis1=-2, axis2=-1)
    starts = _starts(spec.comps, Y, np.broadcast_to(vbar, (B, k)))
    n_s = len(starts[0])
    T0 = np.stack([s for per in starts for s in per])  # analysis-major: row b * n_s + s
    owner = np.repeat(np.arange(B), n_s)
    # in chunks of analyses whose stacked k x k matrices stay near the cache: the work is
    # memory-bound, and one stack of every analysis is slower than a loop over them
    per = max(1, CHUNK_ELEMENTS // (n_s * k * k))
    T, ll, conv = np.empty_like(T0), np.empty(len(T0)), np.empty(len(T0), bool)
    steps = 0
    for c0 in range(0, B, per):
        r = np.arange(c0 * n_s, min(B, c0 + per) * n_s)
        part = _Batch(Y[owner[r]], Vm[owner[r]] if Vm.ndim == 3 else Vm, spec, method == "REML")
        T[r], ll[r], conv[r], n = part.maximize(T0[r], owner[r])
        steps = max(steps, n)
    pick = np.arange(B) * n_s + np.argmax(ll.reshape(B, n_s), 1)  # each analysis's best start
    T, ll, conv = T[pick], ll[pick], conv[pick]
    return _batch_result(batch, spec, T, ll, conv, level, lab, steps)


def _check_V_batch(V, B, k, lab) -> np.ndarray:
    """``V`` as a (k, k) matrix shared by every analysis or (B, k, k), each positive
    definite (the one at fault named). A 2-D ``V`` is always each analysis's variances
    (B, k): a covariance matrix shared by all comes as (1, k, k), so no shape is read two
    ways when there are as many analyses as effects."""
    Vm = np.asarray(V, dtype=float)
    if Vm.ndim == 0:
        Vm = np.full(k, float(Vm))
    if Vm.ndim in (1, 2):
        if Vm.shape not in ((k,), (B, k)):
            shared = (
                " (one covariance matrix shared by all: pass it as V[None])"
                if Vm.shape == (k, k)
                else ""
            )
            raise ValueError(f"pool_mv_batch: a {Vm.ndim}-D `V` holds variances, (k,) shared or "
                             f"(B, k) = ({B}, {k}) one row per analysis; got {Vm.shape}{shared}.")  # fmt: skip
        if not (Vm > 0).all():
            pos = np.argwhere(~(Vm > 0))[0]
            who = (
                f"analysis {lab[pos[0]]!r}, effect {pos[1]}" if Vm.ndim == 2 else f"effect {pos[0]}"
            )
            raise ValueError(f"pool_mv_batch: `V` must hold positive variances; {who} has "
                             f"{float(Vm[tuple(pos)])!r}.")  # fmt: skip
        return np.eye(k) * Vm[..., None, :]
    if Vm.ndim != 3 or Vm.shape[1:] != (k, k) or Vm.shape[0] not in (1, B):
        raise ValueError(f"pool_mv_batch: a 3-D `V` holds covariance matrices, (1, k, k) shared "
                         f"or (B, k, k) = ({B}, {k}, {k}); got {Vm.shape}.")  # fmt: skip
    pd_ok = np.linalg.eigvalsh(0.5 * (Vm + Vm.transpose(0, 2, 1)))[:, 0] > 0
    if not pd_ok.all():
        b = int(np.flatnonzero(~pd_ok)[0])
        who = "the shared `V`" if Vm.shape[0] == 1 else f"`V` of analysis {lab[b]!r}"
        raise ValueError(f"pool_mv_batch: {who} is not positive definite; check its variances "
                         "and covariances.")  # fmt: skip
    return Vm[0] if Vm.shape[0] == 1 and B > 1 else Vm


def _batch_result(batch: _Batch, spec: _Spec, T, ll, conv, level, lab, steps):
    Y, X, k, p = batch.Y, batch.X, batch.k, batch.p
    B = Y.shape[0]
    rows = np.arange(B)
    _, _, _, beta = batch.evaluate(T, rows, False)
    # Var(beta) = (X' Sigma^-1 X)^-1 at the estimates
    S = (batch.V if batch.V.ndim == 3 else np.broadcast_to(batch.V, (B, k, k))).copy()
    for c, sl in zip(spec.comps, batch.slices, strict=True):
        S += c.cov_batch(T[:, sl])[0]
    SiX = np.linalg.solve(S, np.broadcast_to(X, (B, k, p)))
    vb = np.linalg.inv(np.einsum("ki,nkj->nij", X, SiX))
    se = np.sqrt(np.diagonal(vb, axis1=1, axis2=2))
    zval = beta / se
    crit = stats.norm.isf((1 - level / 100) / 2)
    # QE under V alone and the typical sampling variance of I^2 (as pool_mv)
    Vs = batch.V if batch.V.ndim == 3 else batch.V[None]
    Wv = np.linalg.inv(Vs)
    Vi_X = Wv @ X
    XWX = np.einsum("ki,nkj->nij", X, Vi_X)
    Pv = Wv - Vi_X @ np.linalg.inv(XWX) @ Vi_X.transpose(0, 2, 1)
    QE = np.einsum("ni,nij,nj->n", Y, np.broadcast_to(Pv, (B, k, k)), Y)
    typical = (k - p) / np.broadcast_to(np.trace(Pv, axis1=1, axis2=2), (B,))
    test = np.arange(1 if spec.intercept else 0, p)
    QM, QMp = np.full(B, np.nan), np.full(B, np.nan)
    if test.size:
        bt = beta[:, test]
        QM = np.einsum(
            "ni,ni->n", bt, np.linalg.solve(vb[:, test][:, :, test], bt[..., None])[..., 0]
        )
        QMp = stats.chi2.sf(QM, test.size)
    n_sigma = spec.n_sigma
    sigma2 = (
        np.stack([T[:, sl][:, 0] for sl in batch.slices[:n_sigma]], 1)
        if n_sigma
        else np.zeros((B, 0))
    )
    I2 = 100 * sigma2 / (sigma2.sum(1, keepdims=True) + typical[:, None])
    tau2 = rho = at_bound = None
    if spec.spatial is not None:
        tau2, rho = T[:, batch.slices[-1]][:, 0], np.exp(T[:, batch.slices[-1]][:, 1])
        at_bound = T[:, batch.slices[-1]][:, 1] >= batch.hi[batch.slices[-1]][1] - 1e-6
    structure = spec.spatial.structure if spec.spatial is not None else (
        spec.structured.structure if spec.structured is not None else None)  # fmt: skip
    par_names = tuple(n for c in spec.comps for n in c.names)
    return MultilevelBatchResult(
        lab, beta, se, zval, 2 * stats.norm.sf(np.abs(zval)), beta - crit * se,
        beta + crit * se, T, par_names, sigma2, tuple(spec.lv_names), I2, tau2, rho, at_bound, QE,
        stats.chi2.sf(QE, k - p), QM, QMp, ll, conv, k, "REML" if batch.reml else "ML",
        float(level), tuple(spec.coef), structure, steps, (Y, batch.V, spec),
    )  # fmt: skip

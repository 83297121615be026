"""Many multilevel models of one shape fitted at once (issue 15, item 6).

A gridded field pooled region by region gives one analysis per variable (or per member,
per season, per lead time, per compared method) with the same regions, the same random
structure and the same moderators, but its own effects and sampling variances: the rows of
``Y`` and ``V``. :func:`pool_mv_batch` fits all of them together. The components are bound
once (the distance matrix, the cluster indicators) and every step of the optimizer
(:mod:`~spatialmeta.meta_analysis.mv_fit`) is one stacked array operation for the whole
batch, every analysis from every start in the same stack.

It returns what :func:`~spatialmeta.meta_analysis.multilevel.pool_mv` returns for each
analysis, as arrays with a leading batch axis (:class:`MultilevelBatchResult`;
``fit(b)`` gives analysis ``b``'s full :class:`~spatialmeta.meta_analysis.multilevel.
MultilevelResult`, with ``ranef`` and ``confint``). ``pool_mv`` is the same fit with one
row (a test holds them equal).
"""

from __future__ import annotations

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
)
from spatialmeta.meta_analysis.mv_fit import _Batch, fit_stack
from spatialmeta.meta_analysis.results import Result, fmt_num
from spatialmeta.meta_analysis.structures import Spatial, Structured

__all__ = ["MultilevelBatchResult", "pool_mv_batch"]


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
    T, ll, conv, steps = fit_stack(Y, Vm, spec, method == "REML")
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
    _, _, _, (beta, vb) = batch.evaluate(T, rows, False)  # vb = (X' Sigma^-1 X)^-1
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

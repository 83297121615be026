"""Multilevel and multivariate random-effects models: effect sizes with a known sampling
covariance ``V`` and random components (metafor's ``rma.mv``).

The marginal model is ``y ~ N(X beta, Sigma)``, ``Sigma = V + sum_c S_c(theta_c)``, one
``S_c`` per random component of :mod:`~spatialmeta.meta_analysis.structures`: nested random
intercepts (``~ 1 | district/school``: ``sigma_l^2 Z_l Z_l'``), effects correlated within
clusters (``~ inner | outer`` with a CS, HCS, UN, AR or DIAG structure), a spatially
correlated effect, a known correlation matrix. The parameters maximize the restricted
(REML) or full (ML) log-likelihood (variances ``>= 0``, correlations inside (-1, 1)) by
the stacked quasi-Newton ascent of :mod:`~spatialmeta.meta_analysis.mv_fit` from every
start at once, with the analytic gradient (``-1/2 tr(P dS) + 1/2 r' P dS P r``); the
profile intervals re-maximize by L-BFGS-B with a parameter held; ``beta`` is then
the GLS estimate with ``Var(beta) = (X' Sigma^-1 X)^-1`` and z tests. ``QE`` is the test of
residual heterogeneity with ``V`` alone and ``QM`` the Wald test of the moderators, as
metafor reports them; ``I2`` splits the total heterogeneity between the nested levels
(Cheung 2014's formula, as metafor's FAQ computes it); :meth:`MultilevelResult.ranef`
gives the BLUPs of the random intercepts and :meth:`MultilevelResult.confint` the profile
likelihood intervals of their variances.

Written by hand because no Python package fits rma.mv's models (statsmodels' MixedLM has
no known sampling covariance); the k x k algebra is dense, which suits meta-analyses of up
to a few thousand effects.

References
----------
Konstantopoulos, S. (2011). Fixed effects and variance components estimation in
three-level meta-analysis. Research Synthesis Methods 2(1), 61-76. doi:10.1002/jrsm.35

Cheung, M. W.-L. (2014). Modeling dependent effect sizes with three-level meta-analyses: a
structural equation modeling approach. Psychological Methods 19(2), 211-229.
doi:10.1037/a0032968
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import linalg, optimize, stats

from spatialmeta.meta_analysis.mv_fit import fit_stack
from spatialmeta.meta_analysis.regression import read_mods
from spatialmeta.meta_analysis.results import Result, fmt_num, fmt_p
from spatialmeta.meta_analysis.structures import (
    KnownCorrelation,
    Spatial,
    Structured,
    _Component,
    _Nested,
)

__all__ = ["MultilevelResult", "Spatial", "Structured", "KnownCorrelation", "pool_mv"]


class _Model:
    """The marginal likelihood of one data set under its bound components (shared by the
    fit and the profile intervals)."""

    def __init__(self, y, Vm, X, comps: list[_Component], reml: bool):
        self.y, self.V, self.X, self.comps, self.reml = y, Vm, X, comps, reml
        self.k, self.p = X.shape
        self.half_xx = 0.5 * np.linalg.slogdet(X.T @ X)[1]
        self.slices, i = [], 0
        for c in comps:
            self.slices.append(slice(i, i + c.n_par))
            i += c.n_par
        self.n_par = i
        self.bounds = [b for c in comps for b in c.bounds()]

    def sigma(self, x):
        """Sigma and its derivatives in every parameter."""
        S, dS = self.V.copy(), []
        for c, sl in zip(self.comps, self.slices, strict=True):
            Sc, dc = c.cov(x[sl])
            S += Sc
            dS += dc
        return S, dS

    def parts(self, x):
        X, y = self.X, self.y
        S, dS = self.sigma(x)
        cf = linalg.cho_factor(S, lower=True)
        Si_X = linalg.cho_solve(cf, X)
        cx = linalg.cho_factor(X.T @ Si_X, lower=True)
        beta = linalg.cho_solve(cx, Si_X.T @ y)
        r = y - X @ beta
        Si_r = linalg.cho_solve(cf, r)
        logdet = 2 * np.log(np.diag(cf[0])).sum()
        logdet_x = 2 * np.log(np.diag(cx[0])).sum()
        return S, dS, cf, Si_X, cx, beta, Si_r, logdet, logdet_x, float(r @ Si_r)

    def loglik(self, x, grad: bool = True):
        """The (restricted) log-likelihood, with metafor's constants, and its gradient."""
        try:
            S, dS, cf, Si_X, cx, beta, Si_r, logdet, logdet_x, q = self.parts(x)
        except (np.linalg.LinAlgError, linalg.LinAlgError, ValueError):
            return -1e300, np.zeros_like(x)
        k, p = self.k, self.p
        if self.reml:  # with metafor's + 1/2 log|X'X| (so that logLik matches rma.mv's)
            ll = -0.5 * ((k - p) * math.log(2 * math.pi) + logdet + logdet_x + q) + self.half_xx
        else:
            ll = -0.5 * (k * math.log(2 * math.pi) + logdet + q)
        if not grad:
            return ll, None
        # d/dtheta = -1/2 tr(P dS) + 1/2 (P r)' dS (P r); P = Sigma^-1 for ML
        Si = linalg.cho_solve(cf, np.eye(k))
        P = Si - Si_X @ linalg.cho_solve(cx, Si_X.T) if self.reml else Si
        g = np.array([-0.5 * np.sum(P * d) + 0.5 * Si_r @ d @ Si_r for d in dS])
        return ll, g

    def scales(self, x) -> np.ndarray:
        """Each parameter's approximate standard error at ``x``: ``1 / sqrt`` of the
        average information's diagonal ``1/2 (dS_q P r)' P (dS_q P r)`` (1 where it is
        not positive)."""
        try:
            S, dS, cf, Si_X, cx, beta, Si_r, *_ = self.parts(x)
        except (np.linalg.LinAlgError, linalg.LinAlgError, ValueError):
            return np.ones(self.n_par)
        Si = linalg.cho_solve(cf, np.eye(self.k))
        P = Si - Si_X @ linalg.cho_solve(cx, Si_X.T) if self.reml else Si
        info = np.array([0.5 * (d @ Si_r) @ P @ (d @ Si_r) for d in dS])
        with np.errstate(divide="ignore", invalid="ignore"):
            sc = 1 / np.sqrt(info)
        return np.where(np.isfinite(sc) & (sc > 0), sc, 1.0)

    def maximize(self, start, fixed: dict | None = None):
        """Maximize over the parameters (``fixed``: index -> value held). The held ones are
        left out of the optimizer's vector: held by equal bounds instead, their large
        gradient stalled L-BFGS-B's first line search (a profile point not re-maximized)."""
        lo = np.array([b[0] if b[0] is not None else -np.inf for b in self.bounds])
        hi = np.array([b[1] if b[1] is not None else np.inf for b in self.bounds])
        x_full = np.clip(np.array(start, dtype=float), lo, hi)
        free = np.ones(self.n_par, bool)
        for i, v in (fixed or {}).items():
            x_full[i], free[i] = v, False
        bounds = [b for b, f in zip(self.bounds, free, strict=True) if f]

        def neg(z):
            x = x_full.copy()
            x[free] = z
            ll, g = self.loglik(x)
            return -ll, -g[free]

        if not free.any():
            return x_full, float(self.loglik(x_full, grad=False)[0]), True
        # in units of each parameter's standard error at the start (the average
        # information's diagonal): unscaled, a variance of 0.03 with a gradient of 7 had
        # L-BFGS-B's first step jump to the bound and stop there
        sc = self.scales(x_full)[free]

        def neg_z(z):
            f, g = neg(z * sc)
            return f, g * sc

        zb = [(None if b[0] is None else b[0] / s_, None if b[1] is None else b[1] / s_)
              for b, s_ in zip(bounds, sc, strict=True)]  # fmt: skip
        res = optimize.minimize(neg_z, x_full[free] / sc, jac=True, method="L-BFGS-B",
                                bounds=zb, options={"ftol": 1e-15, "gtol": 1e-12,
                                                    "maxiter": 5000})  # fmt: skip
        x = x_full.copy()
        x[free] = np.clip(np.array(res.x, dtype=float) * sc, lo[free], hi[free])
        g = -neg(x[free])[1]
        xf, lf, hf = x[free], lo[free], hi[free]
        # converged: the optimizer says so, or the gradient vanishes where no bound holds
        inner = ~(np.isclose(xf, lf) & (g < 0)) & ~(np.isclose(xf, hf) & (g > 0))
        ok = bool(res.success) or bool(np.abs(g[inner]).max(initial=0.0) < 1e-4)
        return x, -float(neg(x[free])[0]), ok


@dataclass(frozen=True, eq=False)
class MultilevelResult(Result):
    """A fitted multilevel model (:func:`pool_mv`): ``sigma2`` per nested level (named in
    ``levels``, with ``n_levels`` clusters each) and ``I2`` (percent of the total variance
    at each), ``beta``/``se``/``zval``/``pval``/``ci_lb``/``ci_ub``, ``vb``, ``QE``/``QEp``
    (residual heterogeneity under ``V`` alone), ``QM``/``QMp`` (Wald test of the
    moderators; NaN without any), ``logLik`` (of ``method``), ``k``, ``method``,
    ``converged``. A spatial or structured component fills ``structure``, ``tau2`` and
    ``rho`` (floats for a spatial one: variance and range; arrays for ``~ inner | outer``:
    the variances and correlations, metafor's order, over ``struct_levels``)."""

    sigma2: np.ndarray
    levels: tuple
    n_levels: tuple
    beta: np.ndarray
    se: np.ndarray
    zval: np.ndarray
    pval: np.ndarray
    ci_lb: np.ndarray
    ci_ub: np.ndarray
    vb: np.ndarray
    QE: float
    QEp: float
    logLik: float
    k: int
    method: str
    level: float
    converged: bool
    coef_names: tuple
    tau2: float | np.ndarray | None = None  # the spatial or structured component
    rho: float | np.ndarray | None = None
    structure: str | None = None
    yi: np.ndarray | None = None  # the data, design and fitted marginal covariance (for
    X: np.ndarray | None = None  # robust inference on the fit)
    Sigma: np.ndarray | None = None
    user_weights: bool = False
    QM: float = float("nan")
    QMp: float = float("nan")
    QMdf: int = 0
    I2: np.ndarray | None = None
    struct_levels: tuple | None = None
    model: object = None  # the fitted likelihood (for ranef and confint)
    theta: np.ndarray | None = None

    _dict_skip = ("X", "Sigma", "model", "theta")

    def summary(self) -> str:
        lines = [f"Multilevel random-effects model (k = {self.k}; method: {self.method})", "",
                 f"{'':12}{'estim':>9}{'sqrt':>9}{'nlvls':>7}  factor"]  # fmt: skip
        for i, (name, n) in enumerate(zip(self.levels, self.n_levels, strict=True)):
            lines.append(f"sigma^2.{i + 1:<4}{fmt_num(self.sigma2[i]):>9}"
                         f"{fmt_num(math.sqrt(self.sigma2[i])):>9}{n:>7}  {name}")  # fmt: skip
        if self.structure in ("CS", "HCS", "UN", "AR", "DIAG"):
            tau2 = np.atleast_1d(self.tau2)
            names = self.struct_levels if len(tau2) > 1 else ("",)
            lines.append(f"structure {self.structure}:")
            for n, t in zip(names, tau2, strict=True):
                lines.append(f"  tau^2 {n:<10}{fmt_num(t):>9}{fmt_num(math.sqrt(t)):>9}")
            for r in np.atleast_1d(self.rho):
                lines.append(f"  rho{'':>8}{fmt_num(r):>9}")
        elif self.structure is not None:
            lines.append(f"spatial ({self.structure}): tau^2 = {fmt_num(self.tau2)}, rho = "
                         f"{fmt_num(self.rho)}")  # fmt: skip
        lines += ["", f"Test for Heterogeneity: Q(df = {self.k - len(self.beta)}) = "
                  f"{fmt_num(self.QE)}, p-val {fmt_p(self.QEp)}"]  # fmt: skip
        if self.QMdf:
            lines.append(f"Test of Moderators: QM(df = {self.QMdf}) = {fmt_num(self.QM)}, "
                         f"p-val {fmt_p(self.QMp)}")  # fmt: skip
        lines.append("")
        for i, n in enumerate(self.coef_names):
            lines.append(f"{n[:10]:10} {fmt_num(self.beta[i])} (se {fmt_num(self.se[i])}, z "
                         f"{fmt_num(self.zval[i])}, p {fmt_p(self.pval[i])}, "
                         f"{self.level:g}% CI {fmt_num(self.ci_lb[i])} to {fmt_num(self.ci_ub[i])})")  # fmt: skip
        return "\n".join(lines)

    def _nested(self):
        return [(i, c) for i, c in enumerate(self.model.comps) if isinstance(c, _Nested)]

    def ranef(self, level: float | None = None) -> dict:
        """BLUPs of the nested random intercepts (metafor's ``ranef``): per level, a frame
        indexed by cluster with ``pred``, the best linear unbiased predictor ``sigma^2 Z'
        Sigma^-1 (y - X beta)``, its ``se``, ``sqrt(diag(sigma^2 I - sigma^4 Z' P Z))`` with
        ``P = Sigma^-1 - Sigma^-1 X (X' Sigma^-1 X)^-1 X' Sigma^-1``, and a prediction
        interval."""
        m = self.model
        crit = stats.norm.isf((1 - (level or self.level) / 100) / 2)
        S = self.Sigma
        cf = linalg.cho_factor(S, lower=True)
        Si_X = linalg.cho_solve(cf, m.X)
        P = linalg.cho_solve(cf, np.eye(m.k)) - Si_X @ np.linalg.solve(m.X.T @ Si_X, Si_X.T)
        e = linalg.cho_solve(cf, m.y - m.X @ self.beta)
        out = {}
        for j, comp in self._nested():  # j: the component's index among the levels
            s2 = float(self.sigma2[j])
            Z = (comp.codes[:, None] == np.arange(comp.codes.max() + 1)[None, :]).astype(float)
            pred = s2 * (Z.T @ e)
            var = s2 - s2 * s2 * np.einsum("ki,kl,li->i", Z, P, Z)
            se = np.sqrt(np.maximum(var, 0.0))
            out[self.levels[j]] = pd.DataFrame(
                {"pred": pred, "se": se, "pi_lb": pred - crit * se, "pi_ub": pred + crit * se},
                index=pd.Index(comp.labels, name=self.levels[j]),
            )
        return out

    def confint(self, level: float | None = None) -> pd.DataFrame:
        """Profile likelihood intervals of every random-effects parameter (metafor's
        ``confint`` of an ``rma.mv`` fit): where the (restricted) log-likelihood, maximized
        over every other parameter, drops by ``chi2_1(level) / 2`` from its maximum. One
        row per parameter: each nested level's variance (named by the level), then the
        structured or spatial component's (``tau2``, ``rho`` as :attr:`tau2`/:attr:`rho`
        hold them: a spatial range on its natural scale). Where the drop is not reached
        before a parameter's bound (a variance at 0, a correlation at +-1, a range at ten
        times the extent) the interval ends there and ``lb_at_bound``/``ub_at_bound`` say
        so."""
        m, theta = self.model, np.asarray(self.theta, dtype=float)
        drop = stats.chi2.ppf((level or self.level) / 100, 1) / 2
        target = self.logLik - drop
        names = {j: self.levels[j] for j, _ in self._nested()}
        rows = []
        for ci, (comp, sl) in enumerate(zip(m.comps, m.slices, strict=True)):
            for q, j in enumerate(range(sl.start, sl.stop)):
                name = names.get(ci) if q == 0 and ci in names else comp.names[q]
                if ci < len(self.levels) and ci not in names:  # a known-correlation level
                    name = self.levels[ci]
                log = name == "log rho"
                lo, hi, lo_b, hi_b = self._profile(j, theta, target)
                f = math.exp if log else float
                rows.append({"component": "rho" if log else name, "estimate": f(theta[j]),
                             "ci_lb": f(lo), "ci_ub": f(hi), "lb_at_bound": lo_b,
                             "ub_at_bound": hi_b})  # fmt: skip
        return pd.DataFrame(rows).set_index("component")

    def _profile(self, j: int, theta: np.ndarray, target: float):
        """The interval of parameter ``j``: the two roots of the profile log-likelihood
        minus ``target``, or the parameter's bounds where it stays above."""
        m = self.model
        est = float(theta[j])
        lo_b, hi_b = m.bounds[j]
        lo_b = -np.inf if lo_b is None else float(lo_b)
        hi_b = np.inf if hi_b is None else float(hi_b)

        def prof(v):
            return m.maximize(theta, {j: v})[1] - target

        tol = {"xtol": 1e-12, "rtol": 1e-10}
        if est <= lo_b or prof(lo_b) >= 0:
            lo, lo_at = lo_b, True
        else:
            lo, lo_at = optimize.brentq(prof, lo_b, est, **tol), False
        if np.isfinite(hi_b):
            if est >= hi_b or prof(hi_b) >= 0:
                hi, hi_at = hi_b, True
            else:
                hi, hi_at = optimize.brentq(prof, est, hi_b, **tol), False
            return lo, hi, lo_at, hi_at
        hi, step = np.nan, max(abs(est), 1e-4)
        for _ in range(60):  # widen until the drop is passed (a handful of doublings)
            if prof(est + step) < 0:
                hi = optimize.brentq(prof, est, est + step, **tol)
                break
            step *= 2
        return lo, hi, lo_at, not np.isfinite(hi)


def _labels(spec, k: int, i: int) -> tuple[str, np.ndarray, np.ndarray]:
    """A level's name, cluster codes and cluster labels; a tuple of label arrays is a
    nesting (labels joined with '/')."""
    parts = spec if isinstance(spec, tuple) else (spec,)
    cols = []
    for part in parts:
        arr = pd.Series(np.asarray(part, dtype=object).ravel())
        if len(arr) != k:
            raise ValueError(
                f"pool_mv: random level {i + 1} has {len(arr)} labels for {k} effects."
            )
        if arr.isna().any():
            j = int(np.flatnonzero(arr.isna().to_numpy())[0])
            raise ValueError(f"pool_mv: random level {i + 1} has no label for effect {j}.")
        cols.append(arr.astype(str))
    joined = cols[0] if len(cols) == 1 else cols[0].str.cat(cols[1:], sep="/")
    codes, uniq = pd.factorize(joined)
    name = getattr(parts[-1], "name", None) or f"level {i + 1}"
    return str(name), codes, np.asarray(uniq)


def _where(random, structured, k: int):
    """A function naming effect ``i``'s cluster of the outermost random level (or of the
    structure's outer clusters), for errors; None without labels."""
    spec = random[0] if random else (structured.outer if structured is not None else None)
    if spec is None or isinstance(spec, KnownCorrelation):
        return None
    labels = np.asarray(spec[0] if isinstance(spec, tuple) else spec, dtype=object).ravel()
    if labels.size != k:
        return None
    return lambda i: f", in cluster {labels[i]!r}"


def _check_V(V, k: int, where=None) -> np.ndarray:
    """``V`` as a positive definite (k, k) matrix; ``where(i)`` words effect ``i``'s study
    in an error (its clusters)."""
    Vm = np.asarray(V, dtype=float)
    if Vm.ndim == 1:
        if Vm.size != k or not (Vm > 0).all():
            bad = int(np.flatnonzero(~(Vm > 0))[0]) if Vm.size == k else -1
            raise ValueError(
                f"pool_mv: `V` must hold {k} positive variances"
                + (f"; effect {bad} has {float(Vm[bad])!r}." if bad >= 0 else f"; got {Vm.size}.")
            )
        Vm = np.diag(Vm)
    if Vm.shape != (k, k):
        raise ValueError(f"pool_mv: `V` must be (k,) or (k, k) with k = {k}; got {Vm.shape}.")
    try:
        np.linalg.cholesky(Vm)
    except np.linalg.LinAlgError:
        w, vec = np.linalg.eigh(0.5 * (Vm + Vm.T))
        worst = int(np.argmax(np.abs(vec[:, 0])))
        study = "" if where is None else where(worst)
        raise ValueError(
            f"pool_mv: `V` is not positive definite (smallest eigenvalue {w[0]:.3g}, carried "
            f"mostly by effect {worst}{study}); check that effect's variance and covariances."
        ) from None
    return Vm


def pool_mv(yi, V, *, random=(), structured: Structured | None = None,
            spatial: Spatial | None = None, mods=None, intercept: bool = True,
            method: str = "REML", level: float = 95.0, names=None) -> MultilevelResult:  # fmt: skip
    """Fit ``y ~ N(X beta, V + sum_c S_c)``: a multilevel or multivariate meta-analysis.

    Parameters
    ----------
    yi : array_like ``(k,)``
    V : array_like ``(k,)`` sampling variances or ``(k, k)`` sampling covariance matrix
        (positive definite; :mod:`~spatialmeta.meta_analysis.vcov` builds one).
    random : list
        The random intercepts, outermost first: each a label array (a level's clusters),
        a tuple of label arrays (a level nested in the ones before it), e.g.
        ``[district, (district, school)]`` for metafor's ``~ 1 | district/school``, or a
        :class:`KnownCorrelation` (a level whose clusters are correlated by a known
        matrix, metafor's ``R``).
    structured : Structured, optional
        Effects correlated within clusters across inner levels (metafor's ``random = ~
        inner | outer, struct = "CS" | "HCS" | "UN" | "AR" | "DIAG"``).
    spatial : Spatial, optional
        A spatially correlated random effect (metafor's ``random = ~ x + y | const,
        struct = "SPEXP"``), its variance and range estimated with the rest.
    mods : array_like ``(k, m)``, DataFrame or dict, optional
        Moderators (a DataFrame's text columns become treatment-contrast dummies, named,
        as :func:`~spatialmeta.meta_analysis.pool` builds them).
    intercept : bool
        Add an intercept to ``mods`` (False: ``mods`` is the whole design, as ``~ outcome
        - 1`` gives one mean per outcome).
    method : {"REML", "ML"}
    level : float
        Confidence level, percent.
    names : sequence of str, optional
        Names of the levels of ``random`` (default: the label Series' names, else "level
        1", ...).

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> study = np.repeat(np.arange(20), 3)
    >>> vi = rng.uniform(0.01, 0.05, 60)
    >>> yi = 0.3 + rng.normal(0, 0.2, 20)[study] + rng.normal(0, np.sqrt(vi))
    >>> res = pool_mv(yi, vi, random=[study, (study, np.arange(60))])
    >>> res.n_levels, bool(res.sigma2[0] > res.sigma2[1])
    ((20, 60), True)

    Two outcomes per study, correlated (metafor's ``~ outcome | study, struct = "UN"``):

    >>> outcome = np.tile(["a", "b"], 30)
    >>> y2 = np.where(outcome == "a", 0.2, -0.3) + rng.normal(0, 0.3, 60)
    >>> fit = pool_mv(y2, 0.02, structured=Structured(outcome, np.repeat(np.arange(30), 2), "UN"),
    ...               mods=(outcome[:, None] == np.array(["a", "b"])).astype(float),
    ...               intercept=False)
    >>> fit.tau2.shape, fit.rho.shape, fit.coef_names
    ((2,), (1,), ('mod1', 'mod2'))
    """
    if method not in ("REML", "ML"):
        raise ValueError(f"pool_mv: `method` must be 'REML' or 'ML'; got {method!r}.")
    y = np.asarray(yi, dtype=float).ravel()
    k = y.size
    if not np.isfinite(y).all():
        raise ValueError(
            f"pool_mv: `yi` is not finite at effect {int(np.flatnonzero(~np.isfinite(y))[0])}."
        )
    if np.ndim(V) == 0:
        V = np.full(k, float(V))
    Vm = _check_V(V, k, _where(random, structured, k))
    spec = _spec(k, mods, intercept, random, structured, spatial, names)
    model = _Model(y, Vm, spec.X, spec.comps, method == "REML")
    T, ll, conv, _ = fit_stack(y[None], Vm, spec, method == "REML")  # every start at once
    return _result(model, spec, T[0], float(ll[0]), bool(conv[0]), level)


@dataclass
class _Spec:
    """What a model is, apart from its data: the design and the bound components."""

    X: np.ndarray
    coef: list
    intercept: bool
    comps: list
    lv_names: list
    n_lv: list
    n_sigma: int
    structured: Structured | None
    spatial: Spatial | None


def _spec(k, mods, intercept, random, structured, spatial, names) -> _Spec:
    """Check and build the design and the random components of ``k`` effects."""
    mod_names: list[str] = []
    if mods is None:
        if not intercept:
            raise ValueError("pool_mv: `intercept=False` needs `mods` (the whole design).")
        X = np.ones((k, 1))
    else:
        if isinstance(mods, (pd.DataFrame, pd.Series, dict)):  # named, text columns as dummies
            M, mod_names = read_mods(mods, (k,))
        else:
            M = np.asarray(mods, dtype=float).reshape(k, -1)
        X = np.column_stack([np.ones(k), M]) if intercept else M
    p = X.shape[1]
    if np.linalg.matrix_rank(X) < p:
        raise ValueError(f"pool_mv: the design (`mods`{' and the intercept' if intercept else ''})"
                         f" has rank {np.linalg.matrix_rank(X)} < {p} columns; drop a "
                         "redundant moderator.")  # fmt: skip
    if not random and spatial is None and structured is None:
        raise ValueError("pool_mv: give at least one random level in `random`, or "
                         "`structured` or `spatial`.")  # fmt: skip
    if spatial is not None and structured is not None:
        raise ValueError("pool_mv: give one of `structured` and `spatial` (one correlated "
                         "component per model, as rma.mv's G term).")  # fmt: skip
    comps: list[_Component] = []
    lv_names, n_lv = [], []
    for i, spec in enumerate(random):
        if isinstance(spec, KnownCorrelation):
            comp = spec.bind(k)
            nm, n = f"R level {i + 1}", int(np.unique(np.asarray(spec.labels, object)).size)
        else:
            nm, codes, labels = _labels(spec, k, i)
            comp = _Nested(nm, codes, labels)
            n = int(codes.max() + 1)
            if n == 1:
                raise ValueError(f"pool_mv: random level {nm!r} has one cluster; its variance "
                                 "cannot be told apart from the intercept; drop it.")  # fmt: skip
        lv_names.append(nm)
        n_lv.append(n)
        comps.append(comp)
    if names is not None:
        lv_names = [str(n) for n in names]
        if len(lv_names) != len(comps):
            raise ValueError(f"pool_mv: {len(lv_names)} `names` for {len(comps)} random levels.")
    n_sigma = len(comps)
    if structured is not None:
        comps.append(structured.bind(k))
    elif spatial is not None:
        comps.append(spatial.bind(k))
    coef = (["intrcpt"] if intercept else []) + (
        list(mod_names) or [f"mod{i}" for i in range(1, p + (not intercept))]
    )
    return _Spec(X, coef, intercept, comps, lv_names, n_lv, n_sigma, structured, spatial)


def _result(model: _Model, spec: _Spec, xs, ll, converged, level) -> MultilevelResult:
    """The fitted model at parameters ``xs``: GLS estimates, tests, QE, QM, I^2."""
    y, Vm, X = model.y, model.V, model.X
    k, p = X.shape
    S, _, cf, Si_X, cx, beta, Si_r, *_ = model.parts(xs)
    vb = linalg.cho_solve(cx, np.eye(p))
    se = np.sqrt(np.diag(vb))
    zval = beta / se
    crit = stats.norm.isf((1 - level / 100) / 2)
    # QE: residual heterogeneity with V alone (the fixed-effects GLS fit under V)
    cv = linalg.cho_factor(Vm, lower=True)
    Vi_X = linalg.cho_solve(cv, X)
    b_fe = np.linalg.solve(X.T @ Vi_X, Vi_X.T @ y)
    e = y - X @ b_fe
    QE = float(e @ linalg.cho_solve(cv, e))
    # QM: Wald test of the moderators (every coefficient without an intercept)
    test = np.arange(1 if spec.intercept else 0, p)
    QM, QMp = float("nan"), float("nan")
    if test.size:
        b = beta[test]
        QM = float(b @ np.linalg.solve(vb[np.ix_(test, test)], b))
        QMp = float(stats.chi2.sf(QM, test.size))
    n_sigma = spec.n_sigma
    sigma2 = np.array([xs[sl][0] for sl in model.slices[:n_sigma]])
    # I^2 per level: sigma_l^2 over the total with the typical sampling variance
    # (k - p) / tr(P), P = W - W X (X'WX)^-1 X'W with W = V^-1 (Cheung 2014; metafor's FAQ)
    Wv = linalg.cho_solve(cv, np.eye(k))
    Pv = Wv - Vi_X @ np.linalg.solve(X.T @ Vi_X, Vi_X.T)
    typical = (k - p) / float(np.trace(Pv))
    I2 = 100 * sigma2 / (sigma2.sum() + typical) if n_sigma else None
    tau2 = rho = structure = slv = None
    if spec.structured is not None:
        extra = spec.comps[-1]
        t = xs[model.slices[-1]]
        tau2, rho = t[: extra.n_var], t[extra.n_var :]
        structure, slv = spec.structured.structure, tuple(extra.levels)
    elif spec.spatial is not None:
        t = xs[model.slices[-1]]
        tau2, rho, structure = float(t[0]), float(math.exp(t[1])), spec.spatial.structure
    return MultilevelResult(
        sigma2, tuple(spec.lv_names), tuple(spec.n_lv), beta, se, zval,
        2 * stats.norm.sf(np.abs(zval)), beta - crit * se, beta + crit * se, vb, QE,
        float(stats.chi2.sf(QE, k - p)), ll, k, "REML" if model.reml else "ML", float(level),
        converged, tuple(spec.coef), tau2, rho, structure, y, X, S, False, QM, QMp,
        int(test.size), I2, slv, model, xs,
    )  # fmt: skip

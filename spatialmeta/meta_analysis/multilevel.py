"""Multilevel random-effects models: effect sizes with a known sampling covariance ``V`` and
nested random intercepts (metafor's ``rma.mv(yi, V, random = ~ 1 | district/school)``).

The marginal model is ``y ~ N(X beta, Sigma)``, ``Sigma = V + sum_l sigma_l^2 Z_l Z_l'``,
with ``Z_l`` the indicator of each cluster of level ``l`` (for ``district/school`` the
districts, then the schools within districts). The variance components maximize the
restricted (REML) or full (ML) log-likelihood, by L-BFGS-B on ``sigma^2 >= 0`` with the
analytic gradient (``-1/2 tr(P A_l) + 1/2 r' P A_l P r``, ``A_l = Z_l Z_l'``); ``beta`` is
then the GLS estimate with ``Var(beta) = (X' Sigma^-1 X)^-1`` and z tests. ``QE`` is the
test of residual heterogeneity with ``V`` alone, as metafor reports it.

Written by hand because no Python package fits rma.mv's models (statsmodels' MixedLM has
no known sampling covariance); the k x k algebra is dense, which suits meta-analyses of up
to a few thousand effects.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import linalg, optimize, stats

from spatialmeta.meta_analysis.results import Result, fmt_num, fmt_p

__all__ = ["MultilevelResult", "Spatial", "pool_mv"]

# spatial correlation functions of distance d and range rho (metafor's struct = "SP..."),
# each with its derivative in rho
STRUCTURES = ("SPEXP", "SPGAU", "SPLIN", "SPRAT", "SPSPH")


def _correlation(structure: str, d: np.ndarray, rho: float) -> tuple[np.ndarray, np.ndarray]:
    """``(R, dR/drho)`` of a spatial structure at distances ``d``."""
    u = d / rho
    if structure == "SPEXP":
        R = np.exp(-u)
        return R, R * d / rho**2
    if structure == "SPGAU":
        R = np.exp(-(u**2))
        return R, R * 2 * d**2 / rho**3
    if structure == "SPLIN":
        inside = d < rho
        return np.where(inside, 1 - u, 0.0), np.where(inside, d / rho**2, 0.0)
    if structure == "SPRAT":
        R = 1 / (1 + u**2)
        return R, 2 * d**2 / rho**3 * R**2
    inside = d < rho  # SPSPH
    R = np.where(inside, 1 - 1.5 * u + 0.5 * u**3, 0.0)
    return R, np.where(inside, 1.5 * d / rho**2 - 1.5 * d**3 / rho**4, 0.0)


@dataclass(frozen=True)
class Spatial:
    """A spatially correlated random effect: variance ``tau^2`` times a correlation of the
    distance between effects (``structure``, one of SPEXP, SPGAU, SPLIN, SPRAT, SPSPH, as
    metafor's), with range ``rho`` estimated. ``coords`` are ``(k, 2)``: planar x, y
    (Euclidean distances, metafor's default) or, with ``distance="gcd"``, longitude and
    latitude in degrees (great-circle distances in km, haversine on a 6371 km sphere)."""

    coords: np.ndarray
    structure: str = "SPEXP"
    distance: str = "euclidean"

    def distances(self, k: int) -> np.ndarray:
        c = np.asarray(self.coords, dtype=float)
        if c.shape != (k, 2) or not np.isfinite(c).all():
            raise ValueError(f"pool_mv: `Spatial.coords` must be finite (k, 2) = ({k}, 2); got "
                             f"{c.shape}.")  # fmt: skip
        if self.structure not in STRUCTURES:
            raise ValueError(f"pool_mv: spatial structure {self.structure!r} is not one of "
                             f"{', '.join(STRUCTURES)}.")  # fmt: skip
        if self.distance == "euclidean":
            diff = c[:, None, :] - c[None, :, :]
            return np.sqrt((diff**2).sum(-1))
        if self.distance == "gcd":
            lon, lat = np.radians(c[:, 0]), np.radians(c[:, 1])
            a = (np.sin((lat[:, None] - lat[None, :]) / 2) ** 2 + np.cos(lat[:, None])
                 * np.cos(lat[None, :]) * np.sin((lon[:, None] - lon[None, :]) / 2) ** 2)  # fmt: skip
            return 2 * 6371.0 * np.arcsin(np.sqrt(np.clip(a, 0.0, 1.0)))
        raise ValueError(f"pool_mv: `Spatial.distance` must be 'euclidean' or 'gcd'; got "
                         f"{self.distance!r}.")  # fmt: skip


@dataclass(frozen=True, eq=False)
class MultilevelResult(Result):
    """A fitted multilevel model (:func:`pool_mv`): ``sigma2`` per level (named in
    ``levels``, with ``n_levels`` clusters each), ``beta``/``se``/``zval``/``pval``/``ci_lb``/
    ``ci_ub``, ``vb``, ``QE``/``QEp`` (residual heterogeneity under ``V`` alone), ``logLik``
    (of ``method``), ``k``, ``method``, ``converged``."""

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
    tau2: float | None = None  # the spatial variance, with its range rho and structure
    rho: float | None = None
    structure: str | None = None
    yi: np.ndarray | None = None  # the data, design and fitted marginal covariance (for
    X: np.ndarray | None = None  # robust inference on the fit)
    Sigma: np.ndarray | None = None
    user_weights: bool = False

    _dict_skip = ("X", "Sigma")

    def summary(self) -> str:
        lines = [f"Multilevel random-effects model (k = {self.k}; method: {self.method})", "",
                 f"{'':12}{'estim':>9}{'sqrt':>9}{'nlvls':>7}  factor"]  # fmt: skip
        for i, (name, n) in enumerate(zip(self.levels, self.n_levels, strict=True)):
            lines.append(f"sigma^2.{i + 1:<4}{fmt_num(self.sigma2[i]):>9}"
                         f"{fmt_num(math.sqrt(self.sigma2[i])):>9}{n:>7}  {name}")  # fmt: skip
        if self.structure is not None:
            lines.append(f"spatial ({self.structure}): tau^2 = {fmt_num(self.tau2)}, rho = "
                         f"{fmt_num(self.rho)}")  # fmt: skip
        lines += ["", f"Test for Heterogeneity: Q(df = {self.k - len(self.beta)}) = "
                  f"{fmt_num(self.QE)}, p-val {fmt_p(self.QEp)}", ""]  # fmt: skip
        for i, n in enumerate(self.coef_names):
            lines.append(f"{n[:10]:10} {fmt_num(self.beta[i])} (se {fmt_num(self.se[i])}, z "
                         f"{fmt_num(self.zval[i])}, p {fmt_p(self.pval[i])}, "
                         f"{self.level:g}% CI {fmt_num(self.ci_lb[i])} to {fmt_num(self.ci_ub[i])})")  # fmt: skip
        return "\n".join(lines)


def _labels(spec, k: int, i: int) -> tuple[str, np.ndarray]:
    """A level's name and its cluster codes; a tuple of label arrays is a nesting."""
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
    codes, _ = pd.factorize(joined)
    name = getattr(parts[-1], "name", None) or f"level {i + 1}"
    return str(name), codes


def pool_mv(yi, V, *, random=(), spatial: Spatial | None = None, mods=None,
            method: str = "REML", level: float = 95.0, names=None) -> MultilevelResult:  # fmt: skip
    """Fit ``y ~ N(X beta, V + sum_l sigma_l^2 Z_l Z_l')``: a multilevel meta-analysis.

    Parameters
    ----------
    yi : array_like ``(k,)``
    V : array_like ``(k,)`` sampling variances or ``(k, k)`` sampling covariance matrix
        (positive definite).
    random : list
        The random intercepts, outermost first: each a label array (a level's clusters)
        or a tuple of label arrays (a level nested in the ones before it), e.g.
        ``[district, (district, school)]`` for metafor's ``~ 1 | district/school``.
    spatial : Spatial, optional
        A spatially correlated random effect (metafor's ``random = ~ x + y | const,
        struct = "SPEXP"``), its variance and range estimated with the rest.
    mods : array_like ``(k, m)``, optional
        Moderators (an intercept is added).
    method : {"REML", "ML"}
    level : float
        Confidence level, percent.
    names : sequence of str, optional
        Names of the levels (default: the label Series' names, else "level 1", ...).

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
    """
    if method not in ("REML", "ML"):
        raise ValueError(f"pool_mv: `method` must be 'REML' or 'ML'; got {method!r}.")
    y = np.asarray(yi, dtype=float).ravel()
    k = y.size
    if not np.isfinite(y).all():
        raise ValueError(
            f"pool_mv: `yi` is not finite at effect {int(np.flatnonzero(~np.isfinite(y))[0])}."
        )
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
        raise ValueError(
            f"pool_mv: `V` is not positive definite (smallest eigenvalue {w[0]:.3g}, carried "
            f"mostly by effect {worst}); check that effect's variance and covariances."
        ) from None
    X = np.ones((k, 1)) if mods is None else np.column_stack([np.ones(k), np.asarray(mods, float)])
    p = X.shape[1]
    if not random and spatial is None:
        raise ValueError("pool_mv: give at least one random level in `random`, or `spatial`.")
    levels = [_labels(spec, k, i) for i, spec in enumerate(random)]
    if names is not None:
        levels = [(str(n), c) for n, (_, c) in zip(names, levels, strict=True)]
    A = [(c[:, None] == c[None, :]).astype(float) for _, c in levels]  # Z_l Z_l'
    for (name, c), _a in zip(levels, A, strict=True):
        if c.max() + 1 == 1:
            raise ValueError(f"pool_mv: random level {name!r} has one cluster; its variance "
                             "cannot be told apart from the intercept; drop it.")  # fmt: skip
    n_var = len(A)
    if spatial is not None:
        dist = spatial.distances(k)
        scale = float(np.median(dist[np.triu_indices(k, 1)])) if k > 1 else 1.0
        extent = float(dist.max())
    reml = method == "REML"
    half_xx = 0.5 * np.linalg.slogdet(X.T @ X)[1]

    def sigma(x):
        """Sigma and its derivatives in every parameter (variances, then log rho)."""
        S = Vm + sum(si * a for si, a in zip(x[:n_var], A, strict=True))
        dS = list(A)
        if spatial is not None:
            tau2, rho = x[n_var], math.exp(x[n_var + 1])
            R, dR = _correlation(spatial.structure, dist, rho)
            S = S + tau2 * R
            dS += [R, tau2 * dR * rho]  # d/d log rho = rho d/d rho
        return S, dS

    def parts(x):
        S, _ = sigma(x)
        cf = linalg.cho_factor(S, lower=True)
        Si_X = linalg.cho_solve(cf, X)
        XtSiX = X.T @ Si_X
        cx = linalg.cho_factor(XtSiX, lower=True)
        beta = linalg.cho_solve(cx, Si_X.T @ y)
        r = y - X @ beta
        Si_r = linalg.cho_solve(cf, r)
        logdet = 2 * np.log(np.diag(cf[0])).sum()
        logdet_x = 2 * np.log(np.diag(cx[0])).sum()
        return cf, Si_X, cx, beta, Si_r, logdet, logdet_x, float(r @ Si_r)

    def negll(x):
        try:
            cf, Si_X, cx, beta, Si_r, logdet, logdet_x, q = parts(x)
        except (np.linalg.LinAlgError, linalg.LinAlgError):
            return 1e300, np.zeros_like(x)
        if reml:  # with metafor's + 1/2 log|X'X| (so that logLik matches rma.mv's)
            ll = -0.5 * ((k - p) * math.log(2 * math.pi) + logdet + logdet_x + q) + half_xx
        else:
            ll = -0.5 * (k * math.log(2 * math.pi) + logdet + q)
        # the gradient: d/ds_l = -1/2 tr(P A_l) + 1/2 (P r)' A_l (P r) (REML), Sigma^-1 for ML
        Si = linalg.cho_solve(cf, np.eye(k))
        P = Si - Si_X @ linalg.cho_solve(cx, Si_X.T) if reml else Si
        _, dS = sigma(x)
        grad = np.array([-0.5 * np.sum(P * a) + 0.5 * Si_r @ a @ Si_r for a in dS])
        return -ll, -grad

    n_par = n_var + (2 if spatial is not None else 0)
    total = max(float(np.var(y)) - float(np.mean(np.diag(Vm))), 0.01)
    start = np.full(n_par, total / max(n_var + (spatial is not None), 1))
    bounds = [(0.0, None)] * (n_var + (spatial is not None))
    if spatial is not None:
        start[-1] = math.log(scale / 2)
        # a range beyond the data's extent is a constant shift, not told apart from the
        # intercept (the likelihood's ridge toward rho -> infinity): the range stops there
        bounds.append((math.log(scale * 1e-4), math.log(extent)))
    res = optimize.minimize(negll, start, jac=True, method="L-BFGS-B", bounds=bounds,
                            options={"ftol": 1e-15, "gtol": 1e-10, "maxiter": 5000})  # fmt: skip
    xs = np.array(res.x, dtype=float)
    xs[: n_var + (spatial is not None)] = np.maximum(xs[: n_var + (spatial is not None)], 0.0)
    s2 = xs[:n_var]
    # converged: the optimizer says so, or the gradient vanishes where no bound holds
    g = negll(xs)[1]
    lo = np.array([b[0] for b in bounds])
    free = ~np.isclose(xs, lo) | (g < 0)
    converged = bool(res.success) or bool(np.abs(g[free]).max(initial=0.0) < 1e-4)
    cf, Si_X, cx, beta, Si_r, logdet, logdet_x, q = parts(xs)
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
    coef = ["intrcpt"] + [f"mod{i}" for i in range(1, p)]
    return MultilevelResult(
        s2, tuple(n for n, _ in levels), tuple(int(c.max() + 1) for _, c in levels), beta, se,
        zval, 2 * stats.norm.sf(np.abs(zval)), beta - crit * se, beta + crit * se, vb, QE,
        float(stats.chi2.sf(QE, k - p)), -float(res.fun), k, method, float(level),
        converged, tuple(coef),
        None if spatial is None else float(xs[n_var]),
        None if spatial is None else float(math.exp(xs[n_var + 1])),
        None if spatial is None else spatial.structure, y, X, sigma(xs)[0],
    )  # fmt: skip

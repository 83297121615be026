"""Heterogeneity priors learned from a corpus of meta-analyses, by empirical Bayes.

Each meta-analysis j contributes its marginal likelihood of tau with its own mu integrated
out (flat prior: mu is a nuisance parameter of every analysis, as in Turner et al.'s and
Rhodes et al.'s analyses of the Cochrane database). The prior's parameters theta maximize

    sum_j log  integral p(tau | theta) p(y_j | tau) d tau,

the integral on one log-tau grid shared by every analysis (the likelihoods are computed
once, array-at-a-time; each evaluation of theta is then a (meta-analyses x nodes)
log-sum-exp). Standard errors come from the inverse of the numerical Hessian of that sum
(central differences) on the optimizer's unconstrained scale, carried to the natural
parameters by the delta method.

A meta-analysis with one study has a likelihood of tau that is flat under a flat prior
on mu: it carries no information on tau. It is kept (its term is constant in theta) and
counted in the result (``n_single``), not dropped silently. (Under a learned prior for mu,
``learn_mu=True``, it does inform the mu prior and, through it, tau.)

Covariates (Turner et al. 2015's outcome x comparison types, the measure, a field) move
the prior's location: log(tau^2)'s mean for the log-normal and log-t families, log of the
scale for the inverse-gamma, half-normal and half-t ones, as a linear function of an
intercept and the covariates (categorical columns as indicators of every level but the
first); the spread parameter is shared. A prior for mu, ``N(m, s^2)`` with ``m`` on the
same covariates, is learned with it on request: given tau, the evidence under it is the
flat-prior evidence times ``N(mu_hat(tau); m, 1/W(tau) + s^2)``, so the likelihoods on the
grid still need computing once.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import optimize, special

from spatialmeta.meta_analysis._common import check_studies, read_inputs
from spatialmeta.meta_analysis.bayes import tau_likelihood
from spatialmeta.meta_analysis.priors import MuPrior, TauPrior, check_scale_name
from spatialmeta.meta_analysis.results import Result

__all__ = ["SHARED_PARAMS", "Design", "LearnedPrior", "learn_tau_prior"]

GRID = 600
WEAK = 20  # fewer meta-analyses than this make a weak prior (a warning says so)
# the spread of log tau^2 (log-normal, log-t) is kept at or above this: a corpus with no
# heterogeneity would otherwise collapse the prior to a point the quadrature cannot resolve
SPREAD_FLOOR = 0.1
# per family: the parameter the covariates move (its link: identity or log), and (in
# SHARED_PARAMS, which prior_files reads to check a prior file) the shared parameters on
# the optimizer's scale (name, to natural)
_TARGET = {
    "lognormal_tau2": ("mu", "identity"),
    "logt_tau2": ("location", "identity"),
    "invgamma_tau": ("scale", "log"),
    "halfnormal_tau": ("scale", "log"),
    "halft_tau": ("scale", "log"),
}
SHARED_PARAMS = {
    "lognormal_tau2": (("sigma", np.exp),),
    "logt_tau2": (("scale", np.exp),),
    "invgamma_tau": (("shape", np.exp),),
    "halfnormal_tau": (),
    "halft_tau": (),
}
_FIXED = {"logt_tau2": {"df": 5.0}, "halft_tau": {"df": 3.0}}
INTERCEPT = "(Intercept)"
GROUP_NODES = 20  # Gauss-Hermite nodes over a group's effect on the location


@dataclass(frozen=True)
class Design:
    """How covariate values become a design row: the intercept, then each column, a
    numeric one as given or a categorical one as indicators of its levels but the first."""

    columns: tuple[str, ...] = ()
    levels: tuple[tuple[str, ...] | None, ...] = ()  # None: numeric

    @property
    def names(self) -> list[str]:
        out = [INTERCEPT]
        for col, lev in zip(self.columns, self.levels, strict=True):
            out += [col] if lev is None else [f"{col}={v}" for v in lev[1:]]
        return out

    @classmethod
    def from_frame(cls, frame: pd.DataFrame | None) -> tuple[Design, np.ndarray]:
        if frame is None:
            return cls(), np.ones((0, 1))
        cols, levels = [], []
        for col in frame.columns:
            s = frame[col]
            if s.isna().any():
                raise ValueError(
                    f"learn_tau_prior: covariate {col!r} is missing for meta-analysis (row) "
                    f"{int(np.flatnonzero(s.isna().to_numpy())[0])}; fill it or drop the row."
                )
            numeric = pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s)
            cols.append(str(col))
            levels.append(None if numeric else tuple(sorted(map(str, s.unique()))))
        design = cls(tuple(cols), tuple(levels))
        return design, design.rows(frame)

    def rows(self, frame: pd.DataFrame) -> np.ndarray:
        """The design matrix of covariate values (one row per meta-analysis)."""
        parts = [np.ones((len(frame), 1))]
        for col, lev in zip(self.columns, self.levels, strict=True):
            if col not in frame:
                raise ValueError(
                    f"the learned prior depends on covariate {col!r}; give it (it has "
                    f"{list(self.columns)})."
                )
            if lev is None:
                parts.append(frame[col].to_numpy(float)[:, None])
                continue
            val = frame[col].astype(str).to_numpy()
            unknown = sorted(set(val) - set(lev))
            if unknown:
                raise ValueError(
                    f"covariate {col!r} has level {unknown[0]!r}, which the prior was not "
                    f"learned on; it knows {np.asarray(lev).tolist()}."
                )
            parts.append((val[:, None] == np.asarray(lev[1:])[None, :]).astype(float))
        return np.hstack(parts)


@dataclass(frozen=True, eq=False)
class LearnedPrior(Result):
    """The prior learned by :func:`learn_tau_prior`.

    ``prior``: the :class:`~spatialmeta.meta_analysis.priors.TauPrior` (with covariates:
    at the design's baseline, every covariate at its first level or 0; use
    :meth:`prior_for`), ``mu_prior`` the learned :class:`MuPrior` (None unless
    ``learn_mu``); ``params`` the estimates with standard errors ``se`` (without
    covariates the prior's natural parameters; with them the location's coefficients,
    named ``"mu[(Intercept)]"``, ``"mu[measure=RR]"``, ... on its link scale, and the
    shared parameters); ``cov`` their covariance on the optimizer's scale; ``loglik`` the
    maximized log marginal likelihood (up to the constant of a flat mu prior); ``n_meta``
    meta-analyses, of which ``n_single`` have one study; ``converged``.
    """

    prior: TauPrior
    params: dict
    se: dict
    loglik: float
    n_meta: int
    n_single: int
    converged: bool
    family: str = "lognormal_tau2"
    scale: str | None = None
    design: Design = Design()
    coef: tuple = ()  # the optimizer's vector: location coefficients, shared, mu prior's
    mu_prior: MuPrior | None = None
    cov: np.ndarray | None = None
    group_name: str | None = None  # with `groups`: their name, and per group
    group_effects: tuple = ()  # (label, posterior mean, posterior sd) of its effect b_g

    _dict_skip = ("prior", "design", "coef", "mu_prior", "cov", "group_effects")

    def summary(self) -> str:
        rows = ", ".join(f"{k} = {v:.4f} (SE {self.se.get(k, float('nan')):.4f})"
                         for k, v in self.params.items())  # fmt: skip
        cov = f" on {', '.join(self.design.columns)}" if self.design.columns else ""
        return (
            f"Learned {self.family} prior{cov} from {self.n_meta} meta-analyses "
            f"({self.n_single} with one study): {rows}; log marginal likelihood "
            f"{self.loglik:.3f}{'' if self.converged else ' (optimizer did not converge)'}"
        )

    def _split(self):
        p = len(self.design.names)
        x = np.asarray(self.coef, dtype=float)
        n_shared = len(SHARED_PARAMS[self.family])
        return x[:p], x[p : p + n_shared], x[p + n_shared :]

    def _group_prior(self, level) -> TauPrior:
        """With partial pooling: the prior of a meta-analysis of group ``level`` (its
        effect's posterior), or of a new group (the population prior)."""
        beta, shared, rest = self._split()
        omega = float(np.exp(rest[-1]))
        hit = {str(g): (m, s) for g, m, s in self.group_effects}.get(str(level))
        mean_b, sd_b = hit if hit is not None else (0.0, omega)
        params = {k: float(np.ravel(v)[0]) for k, v in
                  _natural(self.family, np.asarray([beta[0] + mean_b]), shared).items()}  # fmt: skip
        if self.family == "lognormal_tau2":  # b's uncertainty adds to log tau^2's variance
            params["sigma"] = float(math.sqrt(params["sigma"] ** 2 + sd_b**2))
        what = f"{self.group_name}={level}" if hit is not None else f"a new {self.group_name}"
        return TauPrior(self.family, params, self.scale, f"learned from {self.n_meta} "
                        f"meta-analyses (empirical Bayes, partial pooling), at {what}")  # fmt: skip

    def prior_for(self, **covariates) -> TauPrior:
        """The tau prior of a new meta-analysis with these covariate values.

        >>> import numpy as np, pandas as pd
        >>> rng = np.random.default_rng(1)
        >>> g = np.repeat(["OR", "SMD"], 150)
        >>> tau = np.exp(rng.normal(np.where(g == "OR", -1.5, -3.0), 0.7) / 2)
        >>> vi = rng.uniform(0.02, 0.1, (300, 6))
        >>> yi = rng.normal(0.0, np.sqrt(vi + tau[:, None] ** 2))
        >>> res = learn_tau_prior(yi, vi, covariates=pd.DataFrame({"measure": g}))
        >>> [round(res.prior_for(measure=m).params["mu"], 1) for m in ("OR", "SMD")]
        [-1.6, -2.9]
        """
        if self.group_name is not None:
            extra = sorted(set(covariates) - {self.group_name})
            if extra:
                raise ValueError(
                    f"the learned prior has no covariate {extra[0]!r}; it is partially pooled "
                    f"by {self.group_name!r}."
                )
            return self._group_prior(covariates.get(self.group_name))
        extra = sorted(set(covariates) - set(self.design.columns))
        if extra:
            raise ValueError(
                f"the learned prior has no covariate {extra[0]!r}; it has "
                f"{list(self.design.columns) or 'none'}."
            )
        x = self.design.rows(pd.DataFrame({k: [v] for k, v in covariates.items()}, index=[0]))[0]
        label = ", ".join(f"{k}={v}" for k, v in covariates.items())
        return self._tau_at(x, label)

    def baseline_prior(self) -> TauPrior:
        """The prior at the design's baseline: the intercept alone (every covariate at its
        first level or 0); without covariates, the learned prior; with partial pooling,
        the population prior (a new group)."""
        if self.group_name is not None:
            return self._group_prior(None)
        return self._tau_at(np.eye(len(self.design.names))[0])

    def _tau_at(self, x: np.ndarray, label: str = "") -> TauPrior:
        beta, shared, _ = self._split()
        params = _natural(self.family, np.asarray([x @ beta]), shared)
        src = f"learned from {self.n_meta} meta-analyses (empirical Bayes)" + (
            f", at {label}" if label else ""
        )
        return TauPrior(self.family, {k: float(np.ravel(v)[0]) for k, v in params.items()},
                        self.scale, src)  # fmt: skip

    def mu_prior_for(self, **covariates) -> MuPrior:
        """The learned mu prior of a new meta-analysis with these covariate values."""
        if self.mu_prior is None:
            raise ValueError("this prior was learned without a mu prior; use learn_mu=True.")
        x = self.design.rows(pd.DataFrame({k: [v] for k, v in covariates.items()}, index=[0]))[0]
        _, _, mu = self._split()
        p = len(x)
        return MuPrior("normal", {"mean": float(x @ mu[:p]), "sd": float(np.exp(mu[p]))},
                       self.scale, self.mu_prior.source)  # fmt: skip


def _natural(family: str, eta: np.ndarray, shared: np.ndarray) -> dict:
    """The family's natural parameters from the location's linear predictor ``eta`` (per
    meta-analysis) and the shared parameters on the optimizer's scale."""
    name, link = _TARGET[family]
    out = {name: eta if link == "identity" else np.exp(eta)}
    for (pname, f), v in zip(SHARED_PARAMS[family], shared, strict=True):
        out[pname] = float(f(v))
    out.update(_FIXED.get(family, {}))
    return out


def learn_tau_prior(yi, vi=None, *, family: str = "lognormal_tau2", scale: str | None = None,
                    covariates: pd.DataFrame | None = None, groups=None,
                    learn_mu: bool = False):  # fmt: skip
    """Learn a prior for tau (and optionally mu) from a corpus of meta-analyses (one per
    row of ``yi``).

    Parameters
    ----------
    yi, vi : array_like ``(n, kmax)``, NaN where a meta-analysis has fewer studies
        Effect sizes and sampling variances of every meta-analysis of the corpus, on one
        effect-size scale.
    family : str
        ``"lognormal_tau2"`` (as Turner et al.), ``"logt_tau2"`` (df 5, as Rhodes et al.),
        ``"invgamma_tau"`` (as Bartoš et al.), ``"halfnormal_tau"`` or ``"halft_tau"``
        (df 3).
    scale : str, optional
        The effect-size scale the prior is for (``"logor"``, ``"smd"``, ...), kept on it.
    covariates : DataFrame, optional
        One row per meta-analysis: the prior's location depends on these columns
        (categorical ones by level, numeric ones linearly); see :meth:`LearnedPrior.prior_for`.
    groups : array_like or Series, optional
        One label per meta-analysis (e.g. its measure): the prior's location gets a random
        effect per group, ``b_g ~ N(0, omega^2)``, integrated out (Gauss-Hermite, 20 nodes)
        and omega learned with the rest: a group with few analyses borrows from the others
        (partial pooling) instead of getting its own free location. ``prior_for(<name>=g)``
        (the Series' name, else ``group``) uses b_g's posterior; an unseen group, or none,
        gets the population prior (for the log-normal family exactly: sigma^2 + omega^2).
    learn_mu : bool
        Also learn a normal prior for mu (mean on the same covariates, shared sd).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> tau = np.exp(rng.normal(-1.2, 0.6, 300) / 2)  # log tau^2 ~ N(-1.2, 0.6^2)
    >>> vi = rng.uniform(0.02, 0.1, (300, 6))
    >>> yi = rng.normal(0.2, np.sqrt(vi + tau[:, None] ** 2))
    >>> res = learn_tau_prior(yi, vi)
    >>> abs(res.params["mu"] + 1.2) < 3 * res.se["mu"], res.n_meta
    (True, 300)
    """
    if family not in _TARGET:
        raise ValueError(
            f"learn_tau_prior: `family` must be one of {sorted(_TARGET)}; got {family!r}."
        )
    check_scale_name(scale)
    y, v, _, _, _ = read_inputs(yi, vi, None, prefix="learn_tau_prior: ")
    if y.ndim != 2:
        raise ValueError(
            f"learn_tau_prior: `yi` must be (meta-analyses, studies); got shape {y.shape}."
        )
    obs = check_studies(y, v, prefix="learn_tau_prior: ")
    k = obs.sum(-1)
    if (k == 0).any():
        raise ValueError(
            f"learn_tau_prior: meta-analysis (row) {int(np.argmax(k == 0))} has no observed "
            "study; drop it from the corpus."
        )
    n = y.shape[0]
    if covariates is not None:
        covariates = pd.DataFrame(covariates).reset_index(drop=True)
        if len(covariates) != n:
            raise ValueError(
                f"learn_tau_prior: `covariates` has {len(covariates)} rows for {n} "
                "meta-analyses; give one row per meta-analysis."
            )
    design, X = Design.from_frame(covariates)
    if covariates is None:
        X = np.ones((n, 1))
    gname, gcodes, glevels = None, None, ()
    if groups is not None:
        if covariates is not None or learn_mu:
            raise ValueError(
                "learn_tau_prior: `groups` (partial pooling) goes without `covariates` and "
                "`learn_mu`; use one of them."
            )
        gs = pd.Series(np.asarray(groups).ravel())
        if len(gs) != n:
            raise ValueError(
                f"learn_tau_prior: `groups` has {len(gs)} labels for {n} meta-analyses."
            )
        if gs.isna().any():
            raise ValueError(
                f"learn_tau_prior: `groups` is missing for meta-analysis (row) "
                f"{int(np.flatnonzero(gs.isna().to_numpy())[0])}."
            )
        gname = str(getattr(groups, "name", None) or "group")
        codes, levels = pd.factorize(gs.astype(str), sort=True)
        gcodes, glevels = codes, tuple(levels)
    if np.linalg.matrix_rank(X) < X.shape[1]:
        raise ValueError(
            f"learn_tau_prior: the covariates' design ({', '.join(design.names)}) is not of "
            "full rank: a level with no meta-analysis, or collinear columns; drop one."
        )
    if n < WEAK:
        warnings.warn(
            f"learn_tau_prior: only {n} meta-analyses; a prior learned from fewer than {WEAK} "
            "is weak (its standard errors say how weak).",
            UserWarning,
            stacklevel=2,
        )
    # one log-tau grid for the corpus, from well below the smallest study SD to well above
    # the widest spread of effects
    sd = np.sqrt(np.nanmin(np.where(obs, v, np.nan)))
    spread = np.nanmax(np.abs(y - np.nanmean(y, -1, keepdims=True)))
    lo, hi = 1e-4 * sd, 20.0 * max(spread, float(np.sqrt(np.nanmax(v))))
    tau = np.exp(np.linspace(np.log(lo), np.log(hi), GRID))
    du = float(np.log(tau[1]) - np.log(tau[0]))
    trap = np.ones(GRID)
    trap[[0, -1]] = 0.5
    loglik = np.empty((n, GRID))
    mhat = np.empty((n, GRID))
    prec = np.empty((n, GRID))
    step = max(1, (1 << 21) // (GRID * y.shape[1]))
    for s in range(0, n, step):  # blocks of meta-analyses, each over the whole grid
        sl = slice(s, s + step)
        grid = np.broadcast_to(tau, (y[sl].shape[0], GRID))
        loglik[sl], mhat[sl], prec[sl] = tau_likelihood(y[sl], v[sl], obs[sl], grid,
                                                        MuPrior("flat"))  # fmt: skip
    base = loglik + np.log(tau) + np.log(trap) + math.log(du)  # (n, G)
    base_max = base.max(axis=1, keepdims=True)
    base_exp = np.exp(base - base_max)  # once: every evaluation is then a matrix product
    p = X.shape[1]
    n_shared = len(SHARED_PARAMS[family])

    link = _TARGET[family][1]
    # the location is kept above the grid's bottom, the log-spread above its floor
    eta_lo = 2 * math.log(lo) if link == "identity" else math.log(lo)
    floor = math.log(SPREAD_FLOOR) if family in ("lognormal_tau2", "logt_tau2") else -np.inf

    def bounded(x: np.ndarray) -> np.ndarray:
        x = np.array(x, dtype=float)
        if n_shared:
            x[p] = max(x[p], floor)
        return x

    def total(x: np.ndarray) -> float:
        x = bounded(x)
        eta = np.maximum(X @ x[:p], eta_lo)
        params = _natural(family, eta[:, None], x[p : p + n_shared])
        lp = TauPrior(family, params).logpdf(tau[None, :])
        if not np.isfinite(lp).any():
            return 1e300
        if p == 1 and not learn_mu:  # one prior for every analysis: a matrix-vector product
            val = -float(_mixture_loglik(base, base_max, base_exp, lp[:1]).sum())
            return val if math.isfinite(val) else 1e300
        term = base + lp
        if learn_mu:
            m0 = (X @ x[p + n_shared : 2 * p + n_shared])[:, None]
            var = 1.0 / prec + math.exp(2 * x[-1])
            term = term - 0.5 * (np.log(2 * math.pi * var) + (mhat - m0) ** 2 / var)
        val = -float(special.logsumexp(term, axis=-1).sum())
        return val if math.isfinite(val) else 1e300

    if gcodes is not None:
        onehot = (gcodes[:, None] == np.arange(len(glevels))[None, :]).astype(float)
        tq, wq = np.polynomial.hermite_e.hermegauss(GROUP_NODES)
        logwq = np.log(wq / math.sqrt(2 * math.pi))

        def per_group(x: np.ndarray) -> np.ndarray:
            """(nodes, groups): each group's log likelihood at b = omega * node."""
            x = bounded(x)
            eta = np.maximum(x[0] + math.exp(x[-1]) * tq, eta_lo)  # (Q,)
            params = _natural(family, eta[:, None], x[1 : 1 + n_shared])
            lp = TauPrior(family, params).logpdf(tau[None, :])  # (Q, G)
            return _mixture_loglik(base, base_max, base_exp, lp).T @ onehot

        def total_grouped(x: np.ndarray) -> float:
            val = -float(special.logsumexp(per_group(x) + logwq[:, None], axis=0).sum())
            return val if math.isfinite(val) else 1e300

    objective = total if gcodes is None else total_grouped
    start = math.log(max(spread, sd) ** 2 / 4)
    loc0 = {"identity": start, "log": math.log(max(spread, sd) / 2)}[_TARGET[family][1]]
    shared0 = {"lognormal_tau2": [0.0], "logt_tau2": [0.0], "invgamma_tau": [math.log(2.0)],
               "halfnormal_tau": [], "halft_tau": []}[family]  # fmt: skip
    x0 = [loc0] + [0.0] * (p - 1) + shared0
    if gcodes is not None:
        x0 += [0.0]  # log omega
    if learn_mu:
        first = mhat[:, GRID // 2]
        x0 += [float(np.median(first))] + [0.0] * (p - 1) + [math.log(max(np.std(first), sd))]
    x0 = np.asarray(x0, dtype=float)
    if len(x0) <= 2:  # the simplex: robust, and quick in one or two dimensions
        res = optimize.minimize(objective, x0, method="Nelder-Mead",
                                options={"xatol": 1e-8, "fatol": 1e-10, "maxiter": 4000})  # fmt: skip
    else:  # quasi-Newton on the smooth log marginal likelihood, then the simplex to settle
        res = optimize.minimize(objective, x0, method="BFGS", options={"gtol": 1e-5})
        res2 = optimize.minimize(objective, res.x, method="Nelder-Mead",
                                 options={"xatol": 1e-7, "fatol": 1e-9, "adaptive": True,
                                          "maxiter": 400 * len(x0)})  # fmt: skip
        res = res2 if res2.fun <= res.fun else res
        res.success = bool(np.linalg.norm(optimize.approx_fprime(res.x, objective, 1e-6)) < 1e-2)
    x, fun, ok = bounded(res.x), res.fun, bool(res.success)
    collapsed = (n_shared and x[p] <= floor + 1e-9) or bool(((X @ x[:p]) <= eta_lo + 1e-6).any())
    if collapsed:
        warnings.warn(
            "learn_tau_prior: the corpus shows (almost) no heterogeneity beyond sampling error: "
            "the learned prior sits at its bound (tau near 0, or its spread at "
            f"{SPREAD_FLOOR}); its intervals are close to common-effect ones. If the studies "
            "share errors (neighbouring regions, one sample), that hides heterogeneity: "
            "model the dependence instead.",
            UserWarning,
            stacklevel=2,
        )
    hess = _hessian(objective, x)
    with np.errstate(invalid="ignore"):
        cov = np.linalg.pinv(hess)
    names = design.names
    target, link = _TARGET[family]
    params, se = {}, {}
    jac = np.ones(len(x))  # d natural / d optimizer scale, where a parameter is reported
    if covariates is None:
        params[target] = float(x[0] if link == "identity" else math.exp(x[0]))
        jac[0] = 1.0 if link == "identity" else math.exp(x[0])
        labels = [target]
    else:
        labels = [f"{target}[{nm}]" for nm in names]
        params.update({lab: float(val) for lab, val in zip(labels, x[:p], strict=True)})
    for i, (pname, f) in enumerate(SHARED_PARAMS[family]):
        params[pname] = float(f(x[p + i]))
        jac[p + i] = float(f(x[p + i]))  # f is exp
        labels.append(pname)
    effects = ()
    if gcodes is not None:
        params["omega"] = float(math.exp(x[-1]))
        jac[-1] = params["omega"]
        labels.append("omega")
        post = per_group(x) + logwq[:, None]  # (Q, L): b_g's posterior on the nodes
        post = np.exp(post - special.logsumexp(post, axis=0, keepdims=True))
        b = params["omega"] * tq[:, None]
        mean_b = (post * b).sum(0)
        sd_b = np.sqrt(np.maximum((post * b * b).sum(0) - mean_b**2, 0.0))
        effects = tuple(zip(glevels, map(float, mean_b), map(float, sd_b), strict=True))
    mu_prior = None
    if learn_mu:
        mlabels = [f"mu_mean[{nm}]" for nm in names] if covariates is not None else ["mu_mean"]
        params.update({lab: float(val) for lab, val in
                       zip(mlabels, x[p + n_shared : 2 * p + n_shared], strict=True)})  # fmt: skip
        params["mu_sd"] = float(math.exp(x[-1]))
        jac[-1] = math.exp(x[-1])
        labels += mlabels + ["mu_sd"]
        mu_prior = MuPrior("normal", {"mean": float(x[p + n_shared]), "sd": params["mu_sd"]},
                           scale, f"learned from {n} meta-analyses (empirical Bayes)")  # fmt: skip
    for i, lab in enumerate(labels):
        se[lab] = float(abs(jac[i]) * math.sqrt(max(cov[i, i], 0.0)))
    out = LearnedPrior(None, params, se, -float(fun), n, int((k == 1).sum()), ok, family,
                       scale, design, tuple(float(c) for c in x), mu_prior, cov, gname,
                       effects)  # fmt: skip
    return dataclasses.replace(out, prior=out.baseline_prior())


def _mixture_loglik(base, base_max, base_exp, lp) -> np.ndarray:
    """``log sum_g exp(base[j, g] + lp[q, g])`` for every analysis j and prior row q, as
    one matrix product of the rescaled exponentials, ``(n, Q)``; the pairs whose product
    underflows (a prior far from the analysis) by the log-sum-exp itself."""
    lp_max = lp.max(axis=1, keepdims=True)
    safe = np.where(np.isfinite(lp_max), lp_max, 0.0)
    with np.errstate(divide="ignore"):
        out = np.log(base_exp @ np.exp(lp - safe).T) + base_max + safe.T
    bad = ~np.isfinite(out)
    if bad.any():
        j, q = np.nonzero(bad)
        out[j, q] = special.logsumexp(base[j] + lp[q], axis=-1)
    return out


def _hessian(f, x: np.ndarray, h: float = 1e-4) -> np.ndarray:
    """Central-difference Hessian of ``f`` at ``x`` (a handful of parameters)."""
    d = len(x)
    out = np.empty((d, d))
    for i in range(d):  # d <= 2: four to eight evaluations each
        for j in range(i, d):
            ei, ej = np.eye(d)[i] * h, np.eye(d)[j] * h
            val = (f(x + ei + ej) - f(x + ei - ej) - f(x - ei + ej) + f(x - ei - ej)) / (4 * h * h)
            out[i, j] = out[j, i] = val
    return out

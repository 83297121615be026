"""Selection models for publication bias: the Vevea & Hedges (1995) step function on top of a
random-effects model or meta-regression (metafor's ``selmodel(type = "stepfun")``).

A study whose one-sided p-value ``p_i`` falls in the j-th interval ``(a_{j-1}, a_j]`` of
the cut points is published with relative probability ``delta_j`` (``delta_1 = 1``). The
observed effects then have the weighted density

    f(y_i) = delta_{j(i)} phi((y_i - x_i' beta) / s_i) / s_i / A_i,   s_i^2 = v_i + tau^2,

where ``A_i = sum_j delta_j P(p_i in interval j)`` under the unweighted model: the
probability of each interval is a difference of normal tail areas at the critical values
``z_{1 - a_j} sqrt(v_i)``, so the likelihood is closed-form, array-at-a-time over studies
and intervals. ``beta``, ``tau^2`` and the ``delta``s maximize it (``delta`` kept in
``(0, 100]`` as metafor does); standard errors come from the numerical Hessian of the
log-likelihood on the natural scale (metafor's default, ``htransf = FALSE``); the
likelihood-ratio test of ``delta_2 = ... = 1`` compares it with the ML fit without
selection.

No Python package fits these (PyMARE has none), so it is written here.

References
----------
Vevea, J. L., & Hedges, L. V. (1995). A general linear model for estimating effect size in
the presence of publication bias. *Psychometrika*, 60(3), 419-435.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
from scipy import optimize, special, stats

from spatialmeta.meta_analysis.results import Result, fmt_num, fmt_p

__all__ = ["SelectionResult", "selmodel", "step_loglik"]

DELTA_MAX = 100.0  # metafor's delta.max for the step function


@dataclass(frozen=True, eq=False)
class SelectionResult(Result):
    """A fitted step-function selection model: ``beta``/``se``/``zval``/``pval``/``ci_lb``/
    ``ci_ub`` (the adjusted estimates), ``tau2``/``se_tau2``, ``steps``, ``delta`` (one per
    interval, the first 1) with ``se_delta``, ``k_per_step`` (studies per interval),
    ``ll`` (log-likelihood), ``LRT``/``LRTdf``/``LRTp`` (against no selection), and the
    unadjusted ML estimate ``beta_ml``."""

    beta: np.ndarray
    se: np.ndarray
    zval: np.ndarray
    pval: np.ndarray
    ci_lb: np.ndarray
    ci_ub: np.ndarray
    tau2: float
    se_tau2: float
    steps: tuple
    delta: np.ndarray
    se_delta: np.ndarray
    k_per_step: np.ndarray
    ll: float
    LRT: float
    LRTdf: int
    LRTp: float
    beta_ml: np.ndarray
    coef_names: tuple
    level: float
    alternative: str = "greater"

    def summary(self) -> str:
        lines = [f"Step-function selection model ({self.alternative}; cut points {', '.join(f'{s:g}' for s in self.steps)};"
                 f" tau^2 = {fmt_num(self.tau2)}, SE {fmt_num(self.se_tau2)})",
                 f"LRT for selection: {fmt_num(self.LRT)} on {self.LRTdf} df, p {fmt_p(self.LRTp, eq=True)}"]  # fmt: skip
        for i, n in enumerate(self.coef_names):
            lines.append(f"{n[:10]:10} adjusted {fmt_num(self.beta[i])} (SE {fmt_num(self.se[i])}, "
                         f"{self.level:g}% CI {fmt_num(self.ci_lb[i])} to {fmt_num(self.ci_ub[i])}); "
                         f"unadjusted {fmt_num(self.beta_ml[i])}")  # fmt: skip
        lo = (0.0, *self.steps[:-1])
        for j, (a, b) in enumerate(zip(lo, self.steps, strict=True)):
            se = "---" if j == 0 else fmt_num(self.se_delta[j])
            lines.append(f"  {a:<6g}< p <= {b:<6g} k = {int(self.k_per_step[j]):<4d} "
                         f"delta {fmt_num(self.delta[j])} (SE {se})")  # fmt: skip
        return "\n".join(lines)


def _interval_probs(eta, s, sv, crit):
    """P(p in interval j) for Y ~ N(eta, s^2), intervals cut at the critical values
    ``crit * sv`` (decreasing in y as p grows), ``(k, N)``."""
    cuts = crit[None, :] * sv[:, None]  # (k, N - 1): y above cut_j <=> p <= a_j
    upper = special.ndtr((eta[:, None] - cuts) / s[:, None])  # P(Y > cut_j)
    first = upper[:, :1]
    mid = upper[:, 1:] - upper[:, :-1]
    last = 1.0 - upper[:, -1:]
    return np.concatenate([first, mid, last], axis=1)


def step_loglik(y, v, X, steps, beta, tau2, delta) -> float:
    """The step-function selection model's log-likelihood at ``(beta, tau2, delta)`` (one
    ``delta`` per interval of ``steps``, the first 1)."""
    y, v, X = np.asarray(y, float), np.asarray(v, float), np.asarray(X, float)
    a = np.asarray(steps, dtype=float)
    delta = np.asarray(delta, dtype=float)
    group = np.searchsorted(a, special.ndtr(-y / np.sqrt(v)), side="left")
    eta = X @ np.atleast_1d(beta)
    s = np.sqrt(v + tau2)
    A = (_interval_probs(eta, s, np.sqrt(v), stats.norm.isf(a[:-1])) * delta[None, :]).sum(1)
    return float((np.log(delta[group]) + stats.norm.logpdf(y, eta, s) - np.log(A)).sum())


def selmodel(fit, *, steps=(0.025, 1.0), alternative: str = "greater",
             level: float | None = None) -> SelectionResult:  # fmt: skip
    """Fit a step-function selection model on top of a fitted
    :func:`~spatialmeta.meta_analysis.pool` result.

    ``alternative``: the direction of the one-sided p-values that selection acts on,
    ``"greater"`` (metafor's default: significant positive effects favoured) or ``"less"``
    (for effects expected below zero, e.g. log risk ratios of a protective treatment).

    ``steps``: the interval cut points of the p-values, increasing (1 is added when
    missing). The fit's method is replaced by ML (as metafor does); FE keeps tau^2 = 0.

    Examples
    --------
    >>> import numpy as np
    >>> from spatialmeta.meta_analysis import pool
    >>> rng = np.random.default_rng(2)
    >>> vi = rng.uniform(0.01, 0.1, 60)
    >>> yi = rng.normal(0.2, np.sqrt(vi + 0.02))
    >>> res = selmodel(pool(yi, vi, method="ML"), steps=(0.05, 1))
    >>> res.LRTdf, len(res.delta), bool(res.LRTp > 0.01)
    (1, 2, True)
    """
    from spatialmeta.meta_analysis.pool import pool

    if np.ndim(fit.yi) != 1:
        raise ValueError("selmodel: one meta-analysis at a time.")
    if getattr(fit, "user_weights", False):
        raise ValueError("selmodel: a fit with user weights cannot take a selection model.")
    steps = [float(s) for s in np.atleast_1d(steps)]
    if steps[-1] != 1.0:
        steps.append(1.0)
    if any(b <= a for a, b in zip(steps[:-1], steps[1:], strict=True)) or not 0 < steps[0]:
        raise ValueError(f"selmodel: `steps` must increase within (0, 1]; got {steps}.")
    if alternative not in ("greater", "less"):
        raise ValueError(
            f"selmodel: `alternative` must be 'greater' or 'less'; got {alternative!r}."
        )
    sign = (
        1.0 if alternative == "greater" else -1.0
    )  # "less": the mirror image, fitted as "greater"
    y = sign * np.asarray(fit.yi, dtype=float)
    v = np.asarray(fit.vi, dtype=float)
    keep = np.isfinite(y)
    y, v = y[keep], v[keep]
    X = np.ones((y.size, 1)) if fit.X is None else np.asarray(fit.X, dtype=float)[keep]
    fixed = fit.method in ("FE", "EE", "CE")
    ml = pool(y, v, mods=None if X.shape[1] == 1 else X[:, 1:], method="FE" if fixed else "ML",
              test="z", level=fit.level)  # fmt: skip
    beta0 = np.atleast_1d(np.asarray(ml.beta if ml.beta is not None else ml.estimate, float))
    pvals = special.ndtr(-y / np.sqrt(v))  # one-sided, H1: effect > 0
    a = np.asarray(steps)
    group = np.searchsorted(a, pvals, side="left")  # first j with p <= a_j
    counts = np.bincount(group, minlength=len(a))
    empty = [j for j in range(len(a)) if counts[j] == 0]
    if empty:
        lo = (0.0, *steps[:-1])
        warnings.warn(
            "selmodel: no study has a p-value in "
            + ", ".join(f"({lo[j]:g}, {steps[j]:g}]" for j in empty)
            + "; that interval's delta is not identified (choose other steps).",
            UserWarning,
            stacklevel=2,
        )
    p = X.shape[1]
    nd = len(a) - 1

    def unpack(theta):
        beta = theta[:p]
        tau2 = 0.0 if fixed else theta[p]
        delta = np.concatenate([[1.0], theta[p + (0 if fixed else 1) :]])
        return beta, tau2, delta

    def negll(theta):
        beta, tau2, delta = unpack(theta)
        if tau2 < 0 or (delta <= 0).any():
            return 1e300
        val = -step_loglik(y, v, X, steps, beta, tau2, delta)
        return val if math.isfinite(val) else 1e300

    # optimize on an unconstrained scale (log tau^2, logit of delta / DELTA_MAX)
    def to_theta(u):
        out = [u[:p]]
        if not fixed:
            out.append([math.exp(u[p])])
        d = u[p + (0 if fixed else 1) :]
        out.append(DELTA_MAX * special.expit(d))
        return np.concatenate(out)

    u0 = list(beta0) + ([] if fixed else [math.log(max(float(ml.tau2), 1e-4))])
    u0 += [float(special.logit(0.5 / DELTA_MAX))] * nd
    obj = lambda u: negll(to_theta(u))  # noqa: E731
    res = optimize.minimize(obj, np.asarray(u0), method="BFGS", options={"gtol": 1e-9})
    res = optimize.minimize(obj, res.x, method="Nelder-Mead",
                            options={"xatol": 1e-10, "fatol": 1e-12, "maxiter": 20000,
                                     "adaptive": True})  # fmt: skip
    theta = to_theta(res.x)
    beta, tau2, delta = unpack(theta)
    # the Hessian over the identified parameters (an empty interval's delta is not)
    free = np.ones(theta.size, dtype=bool)
    free[p + (0 if fixed else 1) + np.asarray([j - 1 for j in empty if j > 0], dtype=int)] = False

    def restricted(t):
        full = theta.copy()
        full[free] = t
        return negll(full)

    se_all = np.full(theta.size, np.nan)
    cov = np.linalg.pinv(_hessian(restricted, theta[free]))
    se_all[free] = np.sqrt(np.maximum(np.diag(cov), 0.0))
    se = se_all[:p]
    se_tau2 = float("nan") if fixed else float(se_all[p])
    se_delta = np.concatenate([[np.nan], se_all[p + (0 if fixed else 1) :]])
    lv = float(fit.level if level is None else level)
    z = stats.norm.isf((1 - lv / 100) / 2)
    zval = beta / se
    ll = -float(res.fun)
    ll0 = -negll(np.concatenate([beta0, [] if fixed else [float(ml.tau2)], np.ones(nd)]))
    lrt = max(2 * (ll - ll0), 0.0)
    names = tuple(getattr(fit, "coef_names", None) or [f"b{i}" for i in range(p)])
    beta, beta0, zval = sign * beta, sign * beta0, sign * zval
    return SelectionResult(beta, se, zval, 2 * stats.norm.sf(np.abs(zval)), beta - z * se,
                           beta + z * se, float(tau2), se_tau2, tuple(steps), delta, se_delta,
                           counts, ll, lrt, nd, float(stats.chi2.sf(lrt, nd)), beta0, names,
                           lv, alternative)  # fmt: skip


def _hessian(f, x: np.ndarray) -> np.ndarray:
    """Central-difference Hessian with a relative step (a handful of parameters)."""
    d = len(x)
    h = 1e-4 * np.maximum(np.abs(x), 1e-2)
    out = np.empty((d, d))
    for i in range(d):  # d = p + 1 + steps: a few evaluations each
        for j in range(i, d):
            ei = np.eye(d)[i] * h[i]
            ej = np.eye(d)[j] * h[j]
            val = (f(x + ei + ej) - f(x + ei - ej) - f(x - ei + ej) + f(x - ei - ej)) / (
                4 * h[i] * h[j]
            )
            out[i, j] = out[j, i] = val
    return out

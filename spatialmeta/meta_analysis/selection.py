"""Selection models for publication bias on top of a random-effects model or
meta-regression, as metafor's ``selmodel``: the Vevea & Hedges (1995) step function
(``type="stepfun"``), the beta weight function of Citkowicz & Vevea (2017) (``"beta"``)
and the half-normal one of Preston et al. (2004) (``"halfnorm"``).

A study whose one-sided p-value is ``p_i`` is published with relative probability
``w(p_i)``. The observed effects then have the weighted density

    f(y_i) = w(p_i) phi((y_i - x_i' beta) / s_i) / s_i / A_i,   s_i^2 = v_i + tau^2,

where ``A_i`` is the mean of ``w(p(Y))`` under the unweighted model ``Y ~ N(x_i' beta,
s_i^2)`` and ``p(y) = 1 - Phi(y / sqrt(v_i))`` (``alternative="greater"``; ``"less"`` is
its mirror image, fitted as ``"greater"`` on ``-y``). The weight functions:

* ``stepfun``: ``w(p) = delta_j`` for ``p`` in the j-th interval ``(a_{j-1}, a_j]`` of the
  cut points (``delta_1 = 1``, the others in ``(0, 100]``). ``A_i`` is a sum of normal tail
  areas at the critical values ``z_{1 - a_j} sqrt(v_i)``: closed form.
* ``beta``: ``w(p) = p^(delta_1 - 1) (1 - p)^(delta_2 - 1)``, both in ``[1e-5, 100]``, with
  ``p`` truncated to ``[1e-5, 1 - 1e-5]`` (metafor's ``pval.min``) in ``w(p_i)`` and in
  ``A_i`` alike; no selection at ``delta = (1, 1)``.
* ``halfnorm``: ``w(p) = exp(-delta p^2)``, ``delta`` in ``[0, 100]``; no selection at
  ``delta = 0``.

For the continuous ones ``A_i`` is an integral, which metafor computes study by study with
R's adaptive ``integrate`` over the real line. Here, on the scale ``z = y / sqrt(v_i)``,

    A_i = int w(Phi(-z)) phi((z sqrt(v_i) - x_i' beta) / s_i) sqrt(v_i) / s_i dz,

whose weight is the same for every study: beyond a fixed ``|z|`` (the truncation point
``z_{1 - 1e-5}`` for beta, 8.5 for the half-normal) it is constant (to double precision),
so ``A_i`` is that constant times a normal tail area on each side plus a fixed composite
Gauss-Legendre rule in between (16 panels of 24 nodes): one matrix-vector product over all
studies, accurate to about 1e-14 in the log-likelihood and a smooth function of the
parameters (metafor's default tolerance, ``rel.tol = 1.2e-4``, leaves its beta
log-likelihood off by up to ~3e-4, and its optimizer stops where that noise hides the
gradient; its fit with integrals to ``rel.tol = 1e-12`` and Nelder-Mead agrees with
this one to ~1e-6).

``beta``, ``tau^2`` and the ``delta``s maximize the likelihood (a fit's method is replaced
by ML, as metafor does; FE keeps ``tau^2 = 0``); standard errors come from the numerical
Hessian of the log-likelihood on the natural scale (metafor's default, ``htransf =
FALSE``; for the continuous weights with steps scaled to each parameter's SE and
Richardson-extrapolated); the likelihood-ratio test of no selection compares it with the
ML fit without selection, on as many degrees of freedom as ``delta``s are estimated. Where
``tau^2 = 0`` or a ``delta`` ends at its bound (no stationary point) and the Hessian is not
positive definite, that parameter gets no SE and the others come from the Hessian without
it.
metafor's other weight functions, its ``prec`` option and the half-normal's ``steps``
(a p-value below which the weight is 1) are not implemented.

No Python package fits these (PyMARE has none), so it is written here.

References
----------
Vevea, J. L., & Hedges, L. V. (1995). A general linear model for estimating effect size in
the presence of publication bias. *Psychometrika*, 60(3), 419-435.

Citkowicz, M., & Vevea, J. L. (2017). A parsimonious weight function for modeling
publication bias. *Psychological Methods*, 22(1), 28-41. doi:10.1037/met0000119

Preston, C., Ashby, D., & Smyth, R. (2004). Adjusting for publication bias: modelling the
selection process. *Journal of Evaluation in Clinical Practice*, 10(2), 313-322.
doi:10.1111/j.1365-2753.2003.00457.x

Examples
--------
>>> import numpy as np
>>> from spatialmeta.meta_analysis import pool
>>> rng = np.random.default_rng(1)
>>> vi = rng.uniform(0.01, 0.1, 50)
>>> yi = rng.normal(0.2, np.sqrt(vi + 0.02))
>>> fit = pool(yi, vi, method="ML")
>>> beta = selmodel(fit, type="beta")
>>> half = selmodel(fit, type="halfnorm")
>>> beta.delta.shape, beta.LRTdf, half.delta.shape, half.LRTdf, beta.steps
((2,), 2, (1,), 1, None)
>>> print(half.summary().splitlines()[0])  # doctest: +ELLIPSIS
Half-normal selection model (Preston et al. 2004; greater; tau^2 = ...
"""

from __future__ import annotations

import functools
import math
import warnings
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from scipy import optimize, special, stats

from spatialmeta.meta_analysis.results import Result, fmt_num, fmt_p

__all__ = ["SelectionResult", "cont_loglik", "selmodel", "step_loglik"]

DELTA_MAX = 100.0  # metafor's delta.max for the step function
TYPES = ("stepfun", "beta", "halfnorm")


class _Weight(NamedTuple):
    """A continuous weight function as metafor sets it up: the bounds of its ``delta``s,
    their starting values, their values under no selection, the p-value truncation
    ``pval.min`` and the ``|z|`` beyond which the weight is constant."""

    title: str
    lo: tuple
    hi: tuple
    init: tuple
    h0: tuple
    pmin: float
    zmax: float


_CONT = {
    "beta": _Weight("Beta selection model (Citkowicz & Vevea 2017", (1e-5, 1e-5),
                    (100.0, 100.0), (1.0, 1.0), (1.0, 1.0), 1e-5, float(stats.norm.isf(1e-5))),
    "halfnorm": _Weight("Half-normal selection model (Preston et al. 2004", (0.0,), (100.0,),
                        (1.0,), (0.0,), 0.0, 8.5),
}  # fmt: skip


@dataclass(frozen=True, eq=False)
class SelectionResult(Result):
    """A fitted selection model: ``beta``/``se``/``zval``/``pval``/``ci_lb``/``ci_ub`` (the
    adjusted estimates), ``tau2``/``se_tau2``, ``delta`` with ``se_delta`` (the weight
    function's parameters: for the step function one per interval, the first 1 with no SE;
    two for ``beta``, one for ``halfnorm``), ``steps`` and ``k_per_step`` (the step
    function's cut points and studies per interval; None otherwise), ``ll``
    (log-likelihood), ``LRT``/``LRTdf``/``LRTp`` (against no selection), the unadjusted ML
    estimate ``beta_ml`` and the weight function ``type``."""

    beta: np.ndarray
    se: np.ndarray
    zval: np.ndarray
    pval: np.ndarray
    ci_lb: np.ndarray
    ci_ub: np.ndarray
    tau2: float
    se_tau2: float
    steps: tuple | None
    delta: np.ndarray
    se_delta: np.ndarray
    k_per_step: np.ndarray | None
    ll: float
    LRT: float
    LRTdf: int
    LRTp: float
    beta_ml: np.ndarray
    coef_names: tuple
    level: float
    alternative: str = "greater"
    type: str = "stepfun"

    def summary(self) -> str:
        tau = f"tau^2 = {fmt_num(self.tau2)}, SE {fmt_num(self.se_tau2)})"
        if self.type == "stepfun":
            cuts = ", ".join(f"{s:g}" for s in self.steps)
            head = f"Step-function selection model ({self.alternative}; cut points {cuts}; {tau}"
        else:
            head = f"{_CONT[self.type].title}; {self.alternative}; {tau}"
        lines = [head, f"LRT for selection: {fmt_num(self.LRT)} on {self.LRTdf} df, "
                       f"p {fmt_p(self.LRTp, eq=True)}"]  # fmt: skip
        for i, n in enumerate(self.coef_names):
            lines.append(f"{n[:10]:10} adjusted {fmt_num(self.beta[i])} (SE {fmt_num(self.se[i])}, "
                         f"{self.level:g}% CI {fmt_num(self.ci_lb[i])} to {fmt_num(self.ci_ub[i])}); "
                         f"unadjusted {fmt_num(self.beta_ml[i])}")  # fmt: skip
        if self.type != "stepfun":
            for j, d in enumerate(self.delta):
                name = "delta" if self.delta.size == 1 else f"delta.{j + 1}"
                lines.append(f"  {name:8} {fmt_num(d)} (SE {fmt_num(self.se_delta[j])})")
            return "\n".join(lines)
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


def _log_weight(type: str, z, delta) -> np.ndarray:
    """``log w(p)`` of a continuous weight function at the p-values ``p = Phi(-z)``
    (truncated to ``[pval.min, 1 - pval.min]``)."""
    logp, logq = special.log_ndtr(-z), special.log_ndtr(z)  # log p, log(1 - p)
    if type == "halfnorm":
        return -delta[0] * np.exp(2 * logp)
    lo, hi = math.log(_CONT["beta"].pmin), math.log1p(-_CONT["beta"].pmin)
    return (delta[0] - 1) * np.clip(logp, lo, hi) + (delta[1] - 1) * np.clip(logq, lo, hi)


@functools.cache
def _nodes(zmax: float, panels: int = 16, n: int = 24) -> tuple[np.ndarray, np.ndarray]:
    """Composite Gauss-Legendre nodes and weights on ``[-zmax, zmax]``."""
    x, w = np.polynomial.legendre.leggauss(n)
    edges = np.linspace(-zmax, zmax, panels + 1)
    half = np.diff(edges)[:, None] / 2
    return (edges[:-1, None] + half * (x + 1)).ravel(), (half * w).ravel()


def cont_loglik(y, v, X, beta, tau2, delta, *, type: str = "beta") -> float:
    """The log-likelihood of a selection model with a continuous weight function (``type``
    ``"beta"`` or ``"halfnorm"``) at ``(beta, tau2, delta)``, for ``alternative="greater"``
    (pass ``-y`` and ``-beta`` for ``"less"``)."""
    if type not in _CONT:
        raise ValueError(f"cont_loglik: `type` must be 'beta' or 'halfnorm'; got {type!r}.")
    y, v, X = np.asarray(y, float), np.asarray(v, float), np.asarray(X, float)
    delta = np.atleast_1d(np.asarray(delta, dtype=float))
    zmax = _CONT[type].zmax
    z, wq = _nodes(zmax)
    eta = X @ np.atleast_1d(np.asarray(beta, dtype=float))
    s, sv = np.sqrt(v + tau2), np.sqrt(v)
    u = (np.outer(sv, z) - eta[:, None]) / s[:, None]  # (k, nodes)
    inner = np.exp(-0.5 * u * u) @ (np.exp(_log_weight(type, z, delta)) * wq)
    w_right, w_left = np.exp(_log_weight(type, np.array([np.inf, -np.inf]), delta))
    A = (inner * sv / (s * math.sqrt(2 * math.pi)) + w_right * special.ndtr((eta - zmax * sv) / s)
         + w_left * special.ndtr((-zmax * sv - eta) / s))  # fmt: skip
    return float(
        (_log_weight(type, y / sv, delta) + stats.norm.logpdf(y, eta, s) - np.log(A)).sum()
    )


def selmodel(fit, *, type: str = "stepfun", steps=None, alternative: str = "greater",
             level: float | None = None) -> SelectionResult:  # fmt: skip
    """Fit a selection model on top of a fitted :func:`~spatialmeta.meta_analysis.pool`
    result (metafor's ``selmodel``).

    ``type``: the weight function, ``"stepfun"`` (Vevea & Hedges' step function),
    ``"beta"`` (Citkowicz & Vevea) or ``"halfnorm"`` (Preston et al.); see the module.

    ``steps``: for ``"stepfun"`` only, the interval cut points of the p-values, increasing
    (1 is added when missing; default ``(0.025, 1)``).

    ``alternative``: the direction of the one-sided p-values that selection acts on,
    ``"greater"`` (metafor's default: significant positive effects favoured) or ``"less"``
    (for effects expected below zero, e.g. log risk ratios of a protective treatment).

    The fit's method is replaced by ML (as metafor does); FE keeps tau^2 = 0.

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
    >>> half = selmodel(pool(yi, vi, method="ML"), type="halfnorm")
    >>> half.type, half.LRTdf, half.delta.shape
    ('halfnorm', 1, (1,))
    """
    from spatialmeta.meta_analysis.pool import pool

    if type not in TYPES:
        raise ValueError(f"selmodel: `type` must be 'stepfun', 'beta' or 'halfnorm'; got {type!r}.")
    if type != "stepfun" and steps is not None:
        raise ValueError(
            f"selmodel: `steps` applies to type='stepfun' only; got steps={steps!r} with "
            f"type={type!r} (leave `steps` out, or use type='stepfun')."
        )
    if np.ndim(fit.yi) != 1:
        raise ValueError("selmodel: one meta-analysis at a time.")
    if getattr(fit, "user_weights", False):
        raise ValueError("selmodel: a fit with user weights cannot take a selection model.")
    if type == "stepfun":
        steps = [float(s) for s in np.atleast_1d((0.025, 1.0) if steps is None else steps)]
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
    p, nt = X.shape[1], 0 if fixed else 1  # coefficients, tau^2 parameters
    counts, empty = None, []
    if type == "stepfun":
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
        nd = len(a) - 1
        d_lo, d_hi, d_init, h0 = np.zeros(nd), np.full(nd, DELTA_MAX), np.full(nd, 0.5), np.ones(nd)

        def loglik(beta, tau2, d):
            return step_loglik(y, v, X, steps, beta, tau2, np.concatenate([[1.0], d]))
    else:
        spec = _CONT[type]
        d_lo, d_hi, d_init, h0 = (np.asarray(t) for t in (spec.lo, spec.hi, spec.init, spec.h0))
        nd = d_lo.size
        if y.size < p + nt + nd:
            raise ValueError(f"selmodel: {y.size} studies are too few for the {p + nt + nd} "
                             f"parameters of a {type!r} selection model on this fit.")  # fmt: skip

        def loglik(beta, tau2, d):
            return cont_loglik(y, v, X, beta, tau2, d, type=type)

    def negll(theta, checked=True):
        beta, tau2, d = theta[:p], 0.0 if fixed else theta[p], theta[p + nt :]
        # the step function keeps delta > 0 and tau^2 >= 0 even in its Hessian; the
        # continuous weights are smooth across their bounds (metafor's Hessian, too)
        if checked and (tau2 < 0 or (d <= 0).any()):
            return 1e300
        if not (v + tau2 > 0).all():
            return 1e300
        val = -loglik(beta, tau2, d)
        return val if math.isfinite(val) else 1e300

    # optimize on an unconstrained scale (log tau^2, logit of delta within its bounds)
    def to_theta(u):
        out = [u[:p]]
        if not fixed:
            out.append([math.exp(u[p])])
        out.append(d_lo + (d_hi - d_lo) * special.expit(u[p + nt :]))
        return np.concatenate(out)

    u0 = list(beta0) + ([] if fixed else [math.log(max(float(ml.tau2), 1e-4))])
    u0 += list(special.logit((d_init - d_lo) / (d_hi - d_lo)))
    obj = lambda u: negll(to_theta(u))  # noqa: E731
    res = optimize.minimize(obj, np.asarray(u0), method="BFGS", options={"gtol": 1e-9})
    res = optimize.minimize(obj, res.x, method="Nelder-Mead",
                            options={"xatol": 1e-10, "fatol": 1e-12, "maxiter": 20000,
                                     "adaptive": True})  # fmt: skip
    theta = to_theta(res.x)
    d = theta[p + nt :]
    if type != "stepfun" and not fixed and theta[p] < 10 * np.finfo(float).eps:
        theta[p] = 0.0  # as metafor reports a tau^2 at its bound
    at_bound = np.concatenate([np.zeros(p, bool), theta[p : p + nt] <= 1e-6 * v.min(),
                               (d <= d_lo + 2**-13) | (d >= d_hi - 100 * 2**-13)])  # fmt: skip
    if type != "stepfun" and at_bound[p + nt :].any():
        warnings.warn(
            f"selmodel: a delta estimate of the {type!r} model is (almost) at its bound "
            f"(delta = {', '.join(f'{x:.6g}' for x in d)}; bounds "
            f"[{d_lo[0]:g}, {d_hi[0]:g}]): treat the fit with caution.",
            UserWarning,
            stacklevel=2,
        )
    # the Hessian over the identified parameters (an empty interval's delta is not)
    free = np.ones(theta.size, dtype=bool)
    free[p + nt + np.asarray([j - 1 for j in empty if j > 0], dtype=int)] = False

    def restricted(t):
        full = theta.copy()
        full[free] = t
        return negll(full, checked=type == "stepfun")

    se_all = np.full(theta.size, np.nan)
    if type == "stepfun":
        cov = np.linalg.pinv(_hessian(restricted, theta[free]))
    else:  # tau^2's step kept inside v_i + tau^2 > 0
        cap = np.full(theta.size, np.inf)
        cap[p : p + nt] = 0.25 * (theta[p : p + nt] + v.min())
        cov = _inverse(_hessian_fine(restricted, theta, cap), at_bound)
    se_all[free] = np.sqrt(np.maximum(np.diag(cov), 0.0))
    se = se_all[:p]
    se_tau2 = float("nan") if fixed else float(se_all[p])
    se_delta = se_all[p + nt :]
    beta, tau2 = theta[:p], 0.0 if fixed else float(theta[p])
    if type == "stepfun":
        d, se_delta = np.concatenate([[1.0], d]), np.concatenate([[np.nan], se_delta])
    lv = float(fit.level if level is None else level)
    z = stats.norm.isf((1 - lv / 100) / 2)
    zval = beta / se
    ll = -float(res.fun)
    ll0 = -negll(np.concatenate([beta0, [] if fixed else [float(ml.tau2)], h0]), checked=False)
    lrt = max(2 * (ll - ll0), 0.0)
    names = tuple(getattr(fit, "coef_names", None) or [f"b{i}" for i in range(p)])
    beta, beta0, zval = sign * beta, sign * beta0, sign * zval
    return SelectionResult(beta, se, zval, 2 * stats.norm.sf(np.abs(zval)), beta - z * se,
                           beta + z * se, tau2, se_tau2, tuple(steps) if steps else None, d,
                           se_delta, counts, ll, lrt, nd, float(stats.chi2.sf(lrt, nd)), beta0,
                           names, lv, alternative, type)  # fmt: skip


def _hessian(f, x: np.ndarray, h: np.ndarray | None = None) -> np.ndarray:
    """Central-difference Hessian, by default with a relative step (a handful of
    parameters)."""
    d = len(x)
    h = 1e-4 * np.maximum(np.abs(x), 1e-2) if h is None else h
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


def _hessian_fine(f, x: np.ndarray, cap: np.ndarray) -> np.ndarray:
    """Central differences with steps of 1/200 of each parameter's SE from a first pass (at
    most ``cap``), Richardson-extrapolated over two step sizes: a relative step is too small
    for a parameter near zero (the rounding error of the log-likelihood dominates)."""
    var = np.diag(np.linalg.pinv(_hessian(f, x)))
    h = np.where(var > 0, 5e-3 * np.sqrt(np.abs(var)), 1e-4 * np.maximum(np.abs(x), 1e-2))
    h = np.minimum(h, cap)
    return (4 * _hessian(f, x, h / 2) - _hessian(f, x, h)) / 3


def _inverse(H: np.ndarray, at_bound: np.ndarray) -> np.ndarray:
    """The inverse of a positive definite Hessian. Where it is not and parameters are at
    their bounds (tau^2 = 0, a delta at its limit: the maximum is no stationary point
    there), the inverse without those (they get no SE); NaN, with a warning (as metafor),
    when that fails too."""
    out = np.full(H.shape, np.nan)
    for keep in (np.ones(len(H), bool), ~at_bound):
        try:
            Li = np.linalg.inv(np.linalg.cholesky(H[np.ix_(keep, keep)]))
        except np.linalg.LinAlgError:
            continue
        out[np.ix_(keep, keep)] = Li.T @ Li
        return out
    warnings.warn("selmodel: the Hessian is not positive definite, so there are no standard "
                  "errors (the fit may be at a bound or not identified).",
                  UserWarning, stacklevel=3)  # fmt: skip
    return out

"""Bayesian random-effects meta-analysis by deterministic integration (no MCMC), batched.

The normal-normal model ``y_i ~ N(theta_i, v_i)``, ``theta_i ~ N(mu, tau^2)`` with a prior
on tau (:class:`~spatialmeta.meta_analysis.priors.TauPrior`) and a flat or normal prior on
mu. Given tau, mu's posterior is normal and the marginal likelihood of tau is closed-form
(mu integrated out: Röver 2020, bayesmeta, J Stat Softw 93(6), section 2); so the joint
posterior is a one-dimensional integral over tau, done on a grid in log tau that covers
the prior's mass (its 1e-9 and 1 - 1e-9 quantiles) and the data's, for every meta-analysis
of a batch at once. mu's marginal posterior is the mixture of the conditional normals
over the tau grid (its quantiles by bisection on the mixture CDF), as is the predictive
distribution of a new study's effect (variance ``1/W(tau) + tau^2``).

A t prior on mu (Bartoš et al.'s) is the scale mixture of normals N(loc, s^2 / lambda) over
lambda ~ gamma(df/2, rate df/2) (Andrews & Mallows 1974): given tau and lambda everything
is still closed-form, so the second dimension is a 48-node quadrature over lambda.

What no library does batched (bayesmeta integrates one analysis at a time in R), so it is
written here: the grid, the mixture quantiles and the Bayes factors, array-at-a-time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import special, stats

from spatialmeta.meta_analysis._common import check_labels, check_studies, read_inputs
from spatialmeta.meta_analysis.priors import MuPrior, TauPrior, check_scale
from spatialmeta.meta_analysis.results import Count, Result, Value, fmt_num

__all__ = ["BayesPoolResult", "PosteriorCurves", "bayes_pool", "posterior_curves", "tau_likelihood"]

GRID = 1600  # nodes of the log-tau grid (4e-5 of the brute-force summaries at k = 2 to 16)
_BLOCK = 1 << 21  # rows x nodes x studies held at once
_NEWTON = 30  # Newton steps of the mixture quantiles
_BISECT = 64  # bisection steps where Newton has not settled (to 2^-64 of the bracket)
_T_NODES = 48  # nodes of a t prior's scale mixture (df >= 2; four times as many below)
_T_THIN = 13  # the t prior's mu mixture on every 13th tau node (1599 = 13 x 123 steps)


@dataclass(frozen=True, eq=False)
class BayesPoolResult(Result):
    """Posterior summaries of :func:`bayes_pool`, one value per meta-analysis (scalars for
    one analysis, arrays of the batch shape otherwise).

    ``mu_*``: posterior mean, sd, median and central ``level`` % interval of mu;
    ``tau_*``: the same for tau (no sd); ``pred_lb``/``pred_ub``: the posterior predictive
    interval of a new study's effect; ``theta``/``theta_sd``: the shrunken study
    estimates (posterior means and sds of the study effects, with the study axis); ``bf01_tau``: Bayes factor of tau = 0
    against the prior (above 1 favours no heterogeneity); ``bf01_mu``: of mu = 0 against
    mu's prior (NaN for a flat prior, which has no Bayes factor).
    """

    mu_mean: Value
    mu_sd: Value
    mu_median: Value
    mu_lb: Value
    mu_ub: Value
    tau_mean: Value
    tau_median: Value
    tau_lb: Value
    tau_ub: Value
    pred_lb: Value
    pred_ub: Value
    bf01_tau: Value
    bf01_mu: Value
    log_evidence: Value
    k: Count
    theta: np.ndarray
    theta_sd: np.ndarray
    level: float
    tau_prior: TauPrior
    mu_prior: MuPrior
    measure: str = "effect"
    labels: np.ndarray | None = None

    _dict_skip = ("tau_prior", "mu_prior")

    def summary(self) -> str:
        """Posterior summaries, one block per meta-analysis."""
        rows = [
            ("mu", self.mu_mean, self.mu_median, self.mu_lb, self.mu_ub),
            ("tau", self.tau_mean, self.tau_median, self.tau_lb, self.tau_ub),
        ]
        lines = [f"Bayesian random-effects model (tau prior: {self.tau_prior.family} "
                 f"{self.tau_prior.params}; mu prior: {self.mu_prior.family})",
                 f"{'':6}{'mean':>9}{'median':>9}{'lower':>9}{'upper':>9}"]  # fmt: skip
        for name, *vals in rows:
            if np.ndim(vals[0]):
                lines.append(f"{name:6}(batch of {np.size(vals[0])} meta-analyses)")
                continue
            lines.append(f"{name:6}" + "".join(f"{fmt_num(v):>9}" for v in vals))
        if not np.ndim(self.pred_lb):
            lines.append(f"prediction interval: [{fmt_num(self.pred_lb)}, {fmt_num(self.pred_ub)}]")
            lines.append(f"Bayes factor tau = 0: {fmt_num(self.bf01_tau)}")
        return "\n".join(lines)


def _bounds(prior: TauPrior) -> tuple[float, float]:
    """tau range holding all but 1e-9 of the prior on each side."""
    p, q_lo, q_hi = prior.params, 1e-9, 1 - 1e-9
    fam = prior.family
    if fam == "lognormal_tau2":
        lo, hi = (np.exp(stats.norm.ppf(q, p["mu"], p["sigma"]) / 2) for q in (q_lo, q_hi))
    elif fam == "logt_tau2":
        lo, hi = (
            np.exp((p["location"] + p["scale"] * stats.t.ppf(q, p["df"])) / 2) for q in (q_lo, q_hi)
        )
    elif fam == "invgamma_tau":
        lo, hi = (stats.invgamma.ppf(q, p["shape"], scale=p["scale"]) for q in (q_lo, q_hi))
    elif fam == "halfnormal_tau":
        lo, hi = 0.0, stats.halfnorm.ppf(q_hi, scale=p["scale"])
    elif fam == "uniform_tau":
        lo, hi = 0.0, float(p["upper"])
    else:
        lo, hi = 0.0, p["scale"] * stats.t.ppf(1 - (1 - q_hi) / 2, p["df"])
    return float(lo), float(hi)


def _grid(y, v, m, prior: TauPrior) -> np.ndarray:
    """(n, G) tau nodes, uniform in log tau, covering the prior's mass and the data's."""
    lo, hi = _bounds(prior)
    spread = np.nanmax(np.where(m, np.abs(y - np.nanmean(np.where(m, y, np.nan), -1)[:, None]),
                                0.0), axis=-1)  # fmt: skip
    sd = np.sqrt(np.nanmax(np.where(m, v, 0.0), axis=-1))
    top = np.maximum(hi, 10.0 * np.maximum(spread, sd))
    if prior.family == "uniform_tau":  # the grid ends at the prior's jump, not across it
        top = np.full_like(top, hi)
    bottom = np.where(lo > 0, np.minimum(lo, 1e-6 * top), 1e-8 * top)
    u = np.linspace(0.0, 1.0, GRID)[None, :]
    return np.exp(np.log(bottom)[:, None] + u * (np.log(top) - np.log(bottom))[:, None])


def tau_likelihood(y, v, m, tau, mu_prior: MuPrior):
    """Per (row, node): log marginal likelihood of tau (mu integrated out under
    ``mu_prior``), mu's conditional mean and precision, shapes (b, G); shared with
    :func:`~spatialmeta.meta_analysis.learned.learn_tau_prior`."""
    t2 = (tau * tau)[..., None]  # (b, G, 1)
    vt = np.where(m[:, None, :], v[:, None, :] + t2, 1.0)
    w = np.where(m[:, None, :], 1.0 / vt, 0.0)
    yy = np.where(m, y, 0.0)[:, None, :]
    W = w.sum(-1)
    sy = (w * yy).sum(-1)
    logdet = np.where(m[:, None, :], np.log(vt), 0.0).sum(-1)
    k = m.sum(-1)[:, None].astype(float)
    if mu_prior.family == "normal":
        m0, s0 = mu_prior.params["mean"], mu_prior.params["sd"]
        W = W + 1.0 / s0**2
        sy = sy + m0 / s0**2
    mean = sy / W
    q = (w * (yy - mean[..., None]) ** 2).sum(-1)
    if mu_prior.family == "normal":
        q = q + (m0 - mean) ** 2 / s0**2
        loglik = -0.5 * (k * math.log(2 * math.pi) + logdet + 2 * math.log(s0) + np.log(W) + q)
    else:  # flat prior on mu: the integral over mu leaves (2 pi)^((1-k)/2) W^(-1/2)
        loglik = -0.5 * ((k - 1) * math.log(2 * math.pi) + logdet + np.log(W) + q)
    return loglik, mean, W


def _mixture_quantile(p, weights, means, sds, start):
    """The p-quantile of the normal mixture sum_g weights[:, g] N(means, sds^2), per row:
    Newton steps on the mixture CDF from ``start`` (the moment-matched normal's quantile),
    kept inside a shrinking bracket, finished by bisection where Newton has not settled."""
    lo = (means - 12 * sds).min(-1)
    hi = (means + 12 * sds).max(-1)
    x = np.clip(start, lo, hi)
    for _ in range(_NEWTON):  # Newton steps, each over every row at once
        z = (x[:, None] - means) / sds
        f = (weights * special.ndtr(z)).sum(-1) - p
        d = (weights * np.exp(-0.5 * z * z) / (sds * math.sqrt(2 * math.pi))).sum(-1)
        lo, hi = np.where(f < 0, x, lo), np.where(f < 0, hi, x)
        step = np.where(d > 0, f / np.where(d > 0, d, 1.0), 0.0)
        x = np.clip(x - step, lo, hi)
        if (np.abs(step) <= 1e-13 * (1.0 + np.abs(x))).all():
            return x
    for _ in range(_BISECT):  # the rare rows Newton left: bisection in their bracket
        mid = 0.5 * (lo + hi)
        cdf = (weights * special.ndtr((mid[:, None] - means) / sds)).sum(-1)
        lo, hi = np.where(cdf < p, mid, lo), np.where(cdf < p, hi, mid)
    return 0.5 * (lo + hi)


def _grid_quantile(p, dens, tau):
    """The p-quantile of tau's posterior from its density on the log-tau grid (``dens``,
    per node, uniform spacing): the CDF at the nodes by the trapezoid rule, then linear
    interpolation in log tau between the nodes around p."""
    cell = 0.5 * (dens[:, 1:] + dens[:, :-1])
    total = cell.sum(-1, keepdims=True)
    cdf = np.concatenate([np.zeros((dens.shape[0], 1)), np.cumsum(cell, -1)], -1) / total
    j = np.clip((cdf < p).sum(-1), 1, tau.shape[-1] - 1)
    r = np.arange(tau.shape[0])
    # within the cell the trapezoid density is linear, so the CDF is quadratic in the
    # cell's fraction x: a x^2 + b x = p - F(left node)
    d0, d1 = dens[r, j - 1] / total[:, 0], dens[r, j] / total[:, 0]
    need = np.maximum(p - cdf[r, j - 1], 0.0)
    a, b = 0.5 * (d1 - d0), d0
    with np.errstate(divide="ignore", invalid="ignore"):
        quad = (-b + np.sqrt(np.maximum(b * b + 4 * a * need, 0.0))) / (2 * a)
        lin = need / b
        frac = np.where(np.abs(a) > 1e-12 * np.maximum(np.abs(b), 1e-300), quad, lin)
    frac = np.clip(np.nan_to_num(frac), 0.0, 1.0)
    lt = np.log(tau)
    return np.exp(lt[r, j - 1] + frac * (lt[r, j] - lt[r, j - 1]))


def _t_nodes(df: float) -> tuple[np.ndarray, np.ndarray]:
    """Nodes and log weights of the gamma(df/2, rate df/2) mixing distribution of a t prior
    (t_df(loc, s) is the mixture over lambda of N(loc, s^2 / lambda)): the trapezoid rule,
    uniform in log lambda between the distribution's 1e-14 and 1 - 1e-16 quantiles, whose
    error falls geometrically with the nodes (below 1e-12 of the t's convolution with a
    normal at 64 nodes for df = 5 and 1e-9 at 48, checked against scipy's quad)."""
    g = stats.gamma(df / 2.0, scale=2.0 / df)
    n = _T_NODES if df >= 2 else 4 * _T_NODES
    u = np.linspace(math.log(g.ppf(1e-14)), math.log(g.isf(1e-16)), n)
    lam = np.exp(u)
    logw = g.logpdf(lam) + u + math.log(u[1] - u[0])
    logw[[0, -1]] += math.log(0.5)
    return lam, logw - special.logsumexp(logw)  # weights summing to one


def _top(wts, *arrays, tol: float = 1e-15):
    """The mixture's components that hold all but ``tol`` of each row's weight (the same
    number of them in every row of the block: the most any row needs), renormalized."""
    order = np.argsort(-wts, axis=-1)
    sorted_w = np.take_along_axis(wts, order, -1)
    need = int((np.cumsum(sorted_w, -1) < 1.0 - tol).sum(-1).max()) + 1
    keep = order[:, : min(need, wts.shape[-1])]
    w = np.take_along_axis(wts, keep, -1)
    return (w / w.sum(-1, keepdims=True), *(np.take_along_axis(x, keep, -1) for x in arrays))


def _joint(y, v, m, tau_prior, mu_prior):
    """The joint posterior on the quadrature nodes: per row the tau grid ``(b, G)``, its
    log step, the trapezoid weights, and per component (a tau node, times a lambda node
    under a t prior on mu) the unnormalized log posterior weight, mu's conditional mean
    and precision and the component's tau, ``(b, C)``; and the lambda nodes per tau node."""
    tau = _grid(y, v, m, tau_prior)  # (b, G)
    du = np.log(tau[:, 1]) - np.log(tau[:, 0])
    is_t = mu_prior.family == "t"
    loglik, mean, W = tau_likelihood(y, v, m, tau, MuPrior("flat") if is_t else mu_prior)
    # the posterior of tau on the grid: prior x likelihood x Jacobian (d tau = tau d log tau)
    trap = np.ones(GRID)
    trap[[0, -1]] = 0.5
    logpost = tau_prior.logpdf(tau) + loglik + np.log(tau) + np.log(trap)[None, :]
    comp_tau, n_l = tau, 1
    if is_t:  # a second dimension: the t prior's normal scale mixture, closed form given lambda
        lam, logw = _t_nodes(mu_prior.params["df"])
        loc, s2 = mu_prior.params["location"], mu_prior.params["scale"] ** 2 / lam  # (L,)
        var = 1.0 / W[..., None] + s2
        logpost = (logpost[..., None] + logw
                   - 0.5 * (np.log(2 * math.pi * var) + (mean[..., None] - loc) ** 2 / var))  # fmt: skip
        Wc = W[..., None] + 1.0 / s2
        mean = (W[..., None] * mean[..., None] + loc / s2) / Wc
        b, g, n_l = logpost.shape
        logpost, mean, W = (x.reshape(b, g * n_l) for x in (logpost, mean, Wc))
        comp_tau = np.repeat(tau, n_l, axis=-1)
    return tau, du, trap, logpost, mean, W, comp_tau, n_l


def _block(y, v, m, tau_prior, mu_prior, level):
    is_t = mu_prior.family == "t"
    tau, du, trap, logpost, mean, W, comp_tau, n_l = _joint(y, v, m, tau_prior, mu_prior)
    b, g = tau.shape
    lognorm = special.logsumexp(logpost, axis=-1) + np.log(du)  # log p(y)
    wts = np.exp(logpost - special.logsumexp(logpost, axis=-1, keepdims=True))
    mu_mean = (wts * mean).sum(-1)
    mu_sd = np.sqrt(np.maximum((wts * (1.0 / W + mean**2)).sum(-1) - mu_mean**2, 0.0))
    pred_var = 1.0 / W + comp_tau**2
    pr_sd = np.sqrt(np.maximum((wts * (pred_var + mean**2)).sum(-1) - mu_mean**2, 0.0))
    tau_mean = (wts * comp_tau).sum(-1)
    # per tau node: its weight and its weighted conditional mean of mu (over lambda)
    wtau, wmean, wm2, winv = wts, wts * mean, wts * mean**2, wts / W
    if is_t:
        wtau, wmean, wm2, winv = (x.reshape(b, g, n_l).sum(-1) for x in (wts, wmean, wm2, winv))
        # mu's quantiles from the mixture over every _T_THIN-th tau node (the trapezoid rule
        # of that step: the integrand is smooth in log tau; the quantiles move < 3e-9 from
        # every node's over k = 2..20 and three t priors, df 1 to 5)
        sub = np.arange(0, g, _T_THIN)
        coarse = np.where((sub == 0) | (sub == g - 1), 0.5, 1.0) / trap[sub]
        lw = (logpost.reshape(b, g, n_l)[:, sub] + np.log(coarse)[None, :, None]).reshape(b, -1)
        pick = (x.reshape(b, g, n_l)[:, sub].reshape(b, -1) for x in (mean, W, pred_var))
        thin = np.exp(lw - special.logsumexp(lw, axis=-1, keepdims=True))
        wts, mean, W, pred_var = _top(thin, *pick)
    a = (100.0 - level) / 200.0
    z = {q: stats.norm.ppf(q) for q in (0.5, a, 1 - a)}
    sd_c = 1.0 / np.sqrt(W)
    mu_q = [_mixture_quantile(q, wts, mean, sd_c, mu_mean + z[q] * mu_sd) for q in (0.5, a, 1 - a)]
    pred_sd = np.sqrt(pred_var)
    pred = [_mixture_quantile(q, wts, mean, pred_sd, mu_mean + z[q] * pr_sd) for q in (a, 1 - a)]
    dens = wtau / trap[None, :]  # the posterior density in log tau at the nodes (unscaled)
    tau_q = [_grid_quantile(q, dens, tau) for q in (0.5, a, 1 - a)]
    # shrunken study effects: E[theta_i | tau, y] = mu_hat + tau^2 / (v_i + tau^2) (y_i - mu_hat),
    # mu_hat's posterior mean given tau summed over tau's nodes (and lambda's)
    t2 = (tau * tau)[..., None]
    shrink = t2 / (np.where(m, v, 1.0)[:, None, :] + t2)
    yy = np.where(m, y, 0.0)[:, None, :]
    th = wmean[..., None] * (1.0 - shrink) + wtau[..., None] * shrink * yy
    theta = np.where(m, th.sum(1), np.nan)
    # and their posterior sd: given a component, theta_i ~ N(mean (1 - S) + S y_i,
    # S v_i + (1 - S)^2 / W), S = tau^2 / (v_i + tau^2); mixed over the components
    vv = np.where(m, v, 1.0)[:, None, :]
    second = (wtau[..., None] * shrink * vv + (1 - shrink) ** 2 * (winv + wm2)[..., None]
              + 2 * (1 - shrink) * shrink * yy * wmean[..., None]
              + shrink**2 * yy**2 * wtau[..., None]).sum(1)  # fmt: skip
    theta_sd = np.where(m, np.sqrt(np.maximum(second - np.where(m, theta, 0.0) ** 2, 0.0)), np.nan)
    # Bayes factors against the priors: tau = 0 (mu still integrated), and mu = 0
    zero = np.zeros((y.shape[0], 1))
    ll0, m0, W0 = tau_likelihood(y, v, m, zero, MuPrior("flat") if is_t else mu_prior)
    ll0 = ll0[:, 0]
    if is_t:
        lam, logw = _t_nodes(mu_prior.params["df"])
        loc, s2 = mu_prior.params["location"], mu_prior.params["scale"] ** 2 / lam
        var0 = 1.0 / W0 + s2  # (b, L)
        ll0 = ll0 + special.logsumexp(
            logw - 0.5 * (np.log(2 * math.pi * var0) + (m0 - loc) ** 2 / var0), axis=-1
        )
    bf_tau = np.exp(ll0 - lognorm)
    if mu_prior.family in ("normal", "t"):
        vt = np.where(m[:, None, :], v[:, None, :] + (tau * tau)[..., None], 1.0)
        l_mu0 = (np.where(m[:, None, :], stats.norm.logpdf(np.where(m, y, 0.0)[:, None, :], 0.0,
                 np.sqrt(vt)), 0.0)).sum(-1)  # fmt: skip
        lp0 = tau_prior.logpdf(tau) + l_mu0 + np.log(tau) + np.log(trap)[None, :]
        bf_mu = np.exp(special.logsumexp(lp0, axis=-1) + np.log(du) - lognorm)
    else:
        bf_mu = np.full(y.shape[0], np.nan)
    return {
        "mu_mean": mu_mean, "mu_sd": mu_sd, "mu_median": mu_q[0], "mu_lb": mu_q[1],
        "mu_ub": mu_q[2], "tau_mean": tau_mean, "tau_median": tau_q[0], "tau_lb": tau_q[1],
        "tau_ub": tau_q[2], "pred_lb": pred[0], "pred_ub": pred[1], "bf01_tau": bf_tau,
        "bf01_mu": bf_mu, "log_evidence": lognorm, "theta": theta, "theta_sd": theta_sd,
    }  # fmt: skip


def bayes_pool(yi, vi=None, *, tau_prior: TauPrior, mu_prior: MuPrior | None = None,
               level: float = 95, labels=None) -> BayesPoolResult:  # fmt: skip
    """Bayesian random-effects meta-analysis of every row of ``yi``, by quadrature over tau.

    Parameters
    ----------
    yi, vi : array_like, or an object with ``.estimates()``
        Effect sizes and sampling variances ``(..., k)``, NaN for a missing study (as for
        :func:`~spatialmeta.meta_analysis.pool.pool`).
    tau_prior : TauPrior
        The prior of tau (e.g. :func:`~spatialmeta.meta_analysis.priors.published_prior`);
        a published prior made for another effect-size scale than the estimates' measure
        is refused.
    mu_prior : MuPrior, optional
        Flat (default), normal, or t (Bartoš et al.'s; integrated as a scale mixture of
        normals, a second quadrature dimension).
    level : float
        Level of the credible and predictive intervals, percent.

    Examples
    --------
    >>> import numpy as np
    >>> from spatialmeta.meta_analysis.priors import TauPrior
    >>> res = bayes_pool(np.array([0.1, 0.5, 0.3]), np.array([0.04, 0.05, 0.03]),
    ...                  tau_prior=TauPrior("halfnormal_tau", {"scale": 0.5}))
    >>> round(res.mu_mean, 3), res.mu_lb < res.mu_mean < res.mu_ub, res.k
    (0.292, True, 3)
    """
    mu_prior = mu_prior or MuPrior("flat")
    if not 1 <= float(level) < 100:
        raise ValueError(f"bayes_pool: `level` must be a percentage in [1, 100); got {level!r}.")
    y, v, labels, measure, _ = read_inputs(yi, vi, labels, prefix="bayes_pool: ")
    if y.ndim == 0:
        raise ValueError("bayes_pool: `yi` needs a study axis (..., k).")
    obs = check_studies(y, v, prefix="bayes_pool: ")
    labels = check_labels(labels, y.shape, prefix="bayes_pool: ")
    check_scale(tau_prior, measure)
    shape, kmax = y.shape[:-1], y.shape[-1]
    y2, v2, m2 = y.reshape(-1, kmax), v.reshape(-1, kmax), obs.reshape(-1, kmax)
    k = m2.sum(-1)
    if (k == 0).any():
        raise ValueError("bayes_pool: a meta-analysis has no observed study; drop that row.")
    n = y2.shape[0]
    step = max(1, _BLOCK // (GRID * max(kmax, _T_NODES if mu_prior.family == "t" else 1)))
    parts = [
        _block(y2[s], v2[s], m2[s], tau_prior, mu_prior, float(level))
        for s in (slice(i, i + step) for i in range(0, n, step))
    ]  # blocks of rows
    out = {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}
    theta = out.pop("theta").reshape(y.shape)
    theta_sd = out.pop("theta_sd").reshape(y.shape)
    if shape:
        fields = {key: val.reshape(shape) for key, val in out.items()}
        kk = k.reshape(shape)
    else:
        fields = {key: float(val[0]) for key, val in out.items()}
        kk = int(k[0])
    return BayesPoolResult(**fields, k=kk, theta=theta, theta_sd=theta_sd, level=float(level), tau_prior=tau_prior,
                           mu_prior=mu_prior, measure=str(measure), labels=labels)  # fmt: skip


@dataclass(frozen=True)
class PosteriorCurves:
    """Densities of one meta-analysis's posterior (and prior) for plotting: ``tau`` nodes
    with ``tau_post`` and ``tau_prior`` (densities in tau), ``mu`` nodes with ``mu_post``
    and ``mu_prior`` (None for a flat prior)."""

    tau: np.ndarray
    tau_post: np.ndarray
    tau_prior: np.ndarray
    mu: np.ndarray
    mu_post: np.ndarray
    mu_prior: np.ndarray | None


def posterior_curves(yi, vi, *, tau_prior: TauPrior, mu_prior: MuPrior | None = None,
                     points: int = 400) -> PosteriorCurves:  # fmt: skip
    """The marginal posterior densities of tau and mu of one meta-analysis, on ``points``
    nodes over the range that holds all but 0.1 % of each (and the prior's densities).

    >>> c = posterior_curves([0.1, 0.5, 0.3], [0.04, 0.05, 0.03],
    ...                      tau_prior=TauPrior("halfnormal_tau", {"scale": 0.5}))
    >>> from scipy.integrate import trapezoid
    >>> round(float(trapezoid(c.mu_post, c.mu)), 2), c.mu_prior is None
    (1.0, True)
    """
    mu_prior = mu_prior or MuPrior("flat")
    y, v, _, _, _ = read_inputs(yi, vi, None, prefix="posterior_curves: ")
    if y.ndim != 1:
        raise ValueError("posterior_curves: one meta-analysis: `yi` must be one-dimensional.")
    obs = check_studies(y, v, prefix="posterior_curves: ")
    y, v, m = y[None, :], v[None, :], obs[None, :]
    tau, du, trap, logpost, mean, W, comp_tau, n_l = _joint(y, v, m, tau_prior, mu_prior)
    wts = np.exp(logpost - special.logsumexp(logpost, axis=-1, keepdims=True))
    wtau = wts.reshape(1, tau.shape[1], n_l).sum(-1)[0]
    dens = wtau / (trap * du[0] * tau[0])  # density in tau at the nodes
    cdf = np.cumsum(wtau)
    top = tau[0, min(int(np.searchsorted(cdf, 0.999)), tau.shape[1] - 1)]
    t = np.linspace(0.0, top * 1.05, points)
    tau_post = np.interp(t, tau[0], dens, left=dens[0])
    w, mn, prec = _top(wts, mean, W, tol=1e-12)
    sd = 1.0 / np.sqrt(prec)
    lo = float(_mixture_quantile(5e-4, w, mn, sd, (w * mn).sum(-1) - 4 * sd.max())[0])
    hi = float(_mixture_quantile(1 - 5e-4, w, mn, sd, (w * mn).sum(-1) + 4 * sd.max())[0])
    pad = 0.1 * (hi - lo)
    mu = np.linspace(lo - pad, hi + pad, points)
    mu_post = (w[0, :, None] * stats.norm.pdf(mu[None, :], mn[0, :, None], sd[0, :, None])).sum(0)
    mu_pr = None if mu_prior.family == "flat" else np.exp(mu_prior.logpdf(mu))
    return PosteriorCurves(t, tau_post, tau_prior.pdf(t), mu, mu_post, mu_pr)

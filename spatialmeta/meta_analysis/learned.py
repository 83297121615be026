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
counted in the result (``n_single``), not dropped silently.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
from scipy import optimize, special

from spatialmeta.meta_analysis._common import check_studies, read_inputs
from spatialmeta.meta_analysis.bayes import tau_likelihood
from spatialmeta.meta_analysis.priors import MuPrior, TauPrior
from spatialmeta.meta_analysis.results import Result

__all__ = ["LearnedPrior", "learn_tau_prior"]

GRID = 600
WEAK = 20  # fewer meta-analyses than this make a weak prior (a warning says so)
# each family's free parameters on the optimizer's scale: (name, to natural, start)
_FREE = {
    "lognormal_tau2": (("mu", lambda x: x), ("sigma", np.exp)),
    "logt_tau2": (("location", lambda x: x), ("scale", np.exp)),
    "invgamma_tau": (("shape", np.exp), ("scale", np.exp)),
    "halfnormal_tau": (("scale", np.exp),),
    "halft_tau": (("scale", np.exp),),
}
_FIXED = {"logt_tau2": {"df": 5.0}, "halft_tau": {"df": 3.0}}


@dataclass(frozen=True, eq=False)
class LearnedPrior(Result):
    """The prior learned by :func:`learn_tau_prior`.

    ``prior`` (a :class:`~spatialmeta.meta_analysis.priors.TauPrior`), its parameters
    ``params`` with standard errors ``se``, the maximized log marginal likelihood
    ``loglik`` (up to the constant of the flat mu prior), ``n_meta`` meta-analyses, of
    which ``n_single`` have one study (no information on tau), and ``converged``.
    """

    prior: TauPrior
    params: dict
    se: dict
    loglik: float
    n_meta: int
    n_single: int
    converged: bool

    _dict_skip = ("prior",)

    def summary(self) -> str:
        rows = ", ".join(f"{k} = {v:.4f} (SE {self.se.get(k, float('nan')):.4f})"
                         for k, v in self.params.items())  # fmt: skip
        return (
            f"Learned {self.prior.family} prior from {self.n_meta} meta-analyses "
            f"({self.n_single} with one study): {rows}; log marginal likelihood "
            f"{self.loglik:.3f}{'' if self.converged else ' (optimizer did not converge)'}"
        )


def _natural(family: str, x: np.ndarray) -> dict:
    out = {name: float(f(v)) for (name, f), v in zip(_FREE[family], x, strict=True)}
    out.update(_FIXED.get(family, {}))
    return out


def learn_tau_prior(yi, vi=None, *, family: str = "lognormal_tau2", scale: str | None = None):
    """Learn a prior for tau from a corpus of meta-analyses (one per row of ``yi``).

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
    if family not in _FREE:
        raise ValueError(
            f"learn_tau_prior: `family` must be one of {sorted(_FREE)}; got {family!r}."
        )
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
    step = max(1, (1 << 21) // (GRID * y.shape[1]))
    for s in range(0, n, step):  # blocks of meta-analyses, each over the whole grid
        sl = slice(s, s + step)
        grid = np.broadcast_to(tau, (y[sl].shape[0], GRID))
        loglik[sl] = tau_likelihood(y[sl], v[sl], obs[sl], grid, MuPrior("flat"))[0]
    base = loglik + np.log(tau) + np.log(trap) + math.log(du)  # (n, G)

    def total(x: np.ndarray) -> float:
        prior = TauPrior(family, _natural(family, x))
        lp = prior.logpdf(tau)
        if not np.isfinite(lp).any():
            return 1e300
        return -float(special.logsumexp(base + lp[None, :], axis=-1).sum())

    x0 = {
        "lognormal_tau2": [math.log(max(spread, sd) ** 2 / 4), 0.0],
        "logt_tau2": [math.log(max(spread, sd) ** 2 / 4), 0.0],
        "invgamma_tau": [math.log(2.0), math.log(max(spread, sd) / 2)],
        "halfnormal_tau": [math.log(max(spread, sd) / 2)],
        "halft_tau": [math.log(max(spread, sd) / 2)],
    }[family]
    res = optimize.minimize(total, np.asarray(x0, dtype=float), method="Nelder-Mead",
                            options={"xatol": 1e-8, "fatol": 1e-10, "maxiter": 4000})  # fmt: skip
    x = res.x
    hess = _hessian(total, x)
    with np.errstate(invalid="ignore"):
        cov = np.linalg.pinv(hess)
    params = _natural(family, x)
    se = {}
    for i, (name, f) in enumerate(_FREE[family]):
        slope = float(f(x[i])) if f is np.exp else 1.0  # d natural / d free
        se[name] = float(abs(slope) * math.sqrt(max(cov[i, i], 0.0)))
    prior = TauPrior(family, params, scale, f"learned from {n} meta-analyses (empirical Bayes)")
    return LearnedPrior(prior, params, se, -float(res.fun), n, int((k == 1).sum()),
                        bool(res.success))  # fmt: skip


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

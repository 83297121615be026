"""Plots of a Bayesian random-effects fit (:func:`~spatialmeta.meta_analysis.bayes.bayes_pool`),
drawn with matplotlib's Agg canvas: the prior and posterior of tau and the posterior of
mu (as bayesmeta's ``plot(..., which = 3:4)``), and the shrunken forest plot (observed
estimates with their intervals beside the posterior of each study's effect, as
bayesmeta's ``forestplot(..., shrinkage = TRUE)``). Each returns the Figure and, given
``path``, writes a PNG or SVG (by suffix) atomically.
"""

from __future__ import annotations

import os

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from scipy import stats

from spatialmeta.meta_analysis.bayes import BayesPoolResult, posterior_curves
from spatialmeta.meta_analysis.bias_plots import _save

__all__ = ["posterior_plot", "shrinkage_plot"]

_INK = "#1f1f1f"
_POST = "#b2182b"
_PRIOR = "#4d4d4d"


def _single(res: BayesPoolResult, what: str) -> None:
    if np.ndim(res.mu_mean):
        raise ValueError(
            f"{what} draws one meta-analysis but got a batch of shape {np.shape(res.mu_mean)}; "
            "fit that analysis alone."
        )


def posterior_plot(yi, vi, res: BayesPoolResult, *, xlabel: str = "Effect size",
                   title: str | None = None, path: str | os.PathLike | None = None,
                   dpi: int = 150) -> Figure:  # fmt: skip
    """Two panels: tau's prior (dashed) and posterior with its median and interval; mu's
    posterior (and prior, when not flat) with its median and interval.

    Returns the Figure; its lines have gids ``"tau-posterior"``, ``"tau-prior"``,
    ``"mu-posterior"`` (and ``"mu-prior"``).

    >>> import numpy as np
    >>> from spatialmeta.meta_analysis.bayes import bayes_pool
    >>> from spatialmeta.meta_analysis.priors import TauPrior
    >>> y, v = np.array([0.1, 0.5, 0.3]), np.array([0.04, 0.05, 0.03])
    >>> res = bayes_pool(y, v, tau_prior=TauPrior("halfnormal_tau", {"scale": 0.5}))
    >>> sorted(ln.get_gid() for ax in posterior_plot(y, v, res).axes for ln in ax.lines
    ...        if ln.get_gid())
    ['mu-posterior', 'tau-posterior', 'tau-prior']
    """
    _single(res, "posterior_plot")
    c = posterior_curves(yi, vi, tau_prior=res.tau_prior, mu_prior=res.mu_prior)
    fig = Figure(figsize=(9.0, 3.6))
    FigureCanvasAgg(fig)
    ax_t, ax_m = fig.subplots(1, 2)
    ax_t.plot(c.tau, c.tau_post, color=_POST, lw=1.8, gid="tau-posterior", label="posterior")
    ax_t.plot(c.tau, c.tau_prior, color=_PRIOR, lw=1.2, ls="--", gid="tau-prior", label="prior")
    ax_t.axvline(res.tau_median, color=_POST, lw=0.8)
    ax_t.axvspan(res.tau_lb, res.tau_ub, color=_POST, alpha=0.08, lw=0)
    ax_t.set_xlabel("Heterogeneity tau")
    ax_t.set_ylabel("Density")
    ax_t.set_xlim(0, c.tau[-1])
    ax_t.set_ylim(bottom=0)
    ax_t.legend(frameon=False, fontsize=8)
    ax_m.plot(c.mu, c.mu_post, color=_POST, lw=1.8, gid="mu-posterior", label="posterior")
    if c.mu_prior is not None:
        ax_m.plot(c.mu, c.mu_prior, color=_PRIOR, lw=1.2, ls="--", gid="mu-prior", label="prior")
    ax_m.axvline(res.mu_median, color=_POST, lw=0.8)
    ax_m.axvspan(res.mu_lb, res.mu_ub, color=_POST, alpha=0.08, lw=0)
    ax_m.set_xlabel(f"Mean effect mu ({xlabel.lower()})")
    ax_m.set_ylim(bottom=0)
    ax_m.legend(frameon=False, fontsize=8)
    for ax in (ax_t, ax_m):
        ax.spines[["top", "right"]].set_visible(False)
    fig.suptitle(title or f"Posterior ({res.level:g}% intervals shaded)", fontsize=10)
    fig.tight_layout()
    if path is not None:
        _save(fig, path, dpi)
    return fig


def shrinkage_plot(yi, vi, res: BayesPoolResult, *, labels=None, xlabel: str = "Effect size",
                   title: str | None = None, transform=None, path: str | os.PathLike | None = None,
                   dpi: int = 150) -> Figure:  # fmt: skip
    """Forest plot with shrinkage: each study's observed estimate and interval (black),
    its posterior mean and interval (mean +- z sd of the study effect given all the data,
    red), then the pooled mu and the prediction interval for a new study.

    ``transform`` (e.g. ``np.exp``) draws ratios on their natural scale. The study rows
    are the scatter collections with gids ``"observed"`` and ``"shrunken"``.
    """
    _single(res, "shrinkage_plot")
    y = np.asarray(yi, dtype=float)
    v = np.asarray(vi, dtype=float)
    th, sd = np.asarray(res.theta, dtype=float), np.asarray(res.theta_sd, dtype=float)
    if y.shape != th.shape:
        raise ValueError(f"shrinkage_plot: {y.size} studies but the fit has {th.size}.")
    k = y.size
    labels = [str(x) for x in (labels if labels is not None else range(1, k + 1))]
    z = float(stats.norm.isf((1 - res.level / 100) / 2))
    f = transform or (lambda x: x)
    fig = Figure(figsize=(7.5, 1.2 + 0.32 * (k + 3)))
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    rows = np.arange(k)[::-1] + 3.0
    off = 0.17
    ax.hlines(rows + off, f(y - z * np.sqrt(v)), f(y + z * np.sqrt(v)), color=_INK, lw=1)
    ax.scatter(f(y), rows + off, s=18, color=_INK, marker="s", gid="observed", label="observed")
    ax.hlines(rows - off, f(th - z * sd), f(th + z * sd), color=_POST, lw=1)
    ax.scatter(f(th), rows - off, s=18, color=_POST, marker="o", gid="shrunken",
               label="shrunken (posterior)")  # fmt: skip
    ax.hlines(1.0, f(res.mu_lb), f(res.mu_ub), color=_POST, lw=2.4)
    ax.scatter([f(res.mu_median)], [1.0], marker="D", s=40, color=_POST, zorder=3)
    ax.hlines(0.0, f(res.pred_lb), f(res.pred_ub), color=_POST, lw=1, ls=":")
    ax.set_yticks(list(rows) + [1.0, 0.0])
    ax.set_yticklabels(labels + ["mu (posterior)", "new study (predictive)"], fontsize=8)
    ax.axvline(f(0.0), color="#999999", lw=0.6, ls="--")
    if transform is np.exp:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.spines[["top", "right"]].set_visible(False)
    ax.legend(frameon=False, fontsize=8, loc="upper right")
    ax.set_title(title or f"Shrinkage ({res.level:g}% intervals)", fontsize=10)
    fig.tight_layout()
    if path is not None:
        _save(fig, path, dpi)
    return fig

"""The Bayesian section of the pool job (``spatialmeta pool --prior SPEC``): the prior named by
the spec (published, a family, or learned from a corpus), the posterior of mu and tau by
:func:`~spatialmeta.meta_analysis.bayes.bayes_pool`, its report section, its results and
its two plots (prior/posterior, shrunken forest)."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from spatialmeta.meta_analysis.bayes import BayesPoolResult, bayes_pool
from spatialmeta.meta_analysis.prior_files import resolve_prior
from spatialmeta.meta_analysis.priors import check_scale
from spatialmeta.meta_analysis.results import fmt_num

__all__ = ["bayes_fit", "bayes_markdown", "bayes_plots", "bayes_results", "bayes_summary"]


def _describe(prior) -> str:
    if prior is None:
        return "flat"
    params = ", ".join(f"{k} = {fmt_num(v, 3)}" for k, v in prior.params.items())
    src = f"; {prior.source}" if prior.source else ""
    return f"{prior.family} ({params}{src})"


def bayes_fit(st, spec: str, level: float, notes: list[str]) -> dict[str, Any]:
    """``{"bayes": BayesPoolResult, "spec": spec}`` for the studies ``st`` of the pool job;
    a prior made for another effect-size scale than the studies' measure is refused."""
    with warnings.catch_warnings(record=True) as caught:  # a prior learned now: its notes
        warnings.simplefilter("always")
        tau_prior, mu_prior = resolve_prior(spec, st.measure)
    notes += [f"--prior {spec}: {str(w.message).splitlines()[0]}" for w in caught]
    if st.measure is None:
        notes.append(
            f"--prior {spec}: the table holds yi/vi without --measure, so the prior's "
            "effect-size scale could not be checked against the studies'"
        )
    else:
        check_scale(tau_prior, st.measure)
        if mu_prior is not None:
            check_scale(mu_prior, st.measure)
    res = bayes_pool(st.yi, st.vi, tau_prior=tau_prior, mu_prior=mu_prior, level=level,
                     labels=st.labels)  # fmt: skip
    return {"bayes": res, "spec": spec}


def bayes_markdown(fit: dict[str, Any]) -> list[str]:
    res: BayesPoolResult = fit["bayes"]
    lv = f"{res.level:g}%"
    rows = [
        ("mu", res.mu_mean, res.mu_median, res.mu_lb, res.mu_ub),
        ("tau", res.tau_mean, res.tau_median, res.tau_lb, res.tau_ub),
    ]
    lines = [
        f"- prior for tau: {_describe(res.tau_prior)}",
        f"- prior for mu: {_describe(None if res.mu_prior.family == 'flat' else res.mu_prior)}",
        f"- `--prior {fit['spec']}`; posterior by quadrature (no MCMC)",
        "",
        f"| | mean | median | {lv} lower | {lv} upper |",
        "|---|---:|---:|---:|---:|",
    ]
    lines += [f"| {n} | " + " | ".join(fmt_num(x) for x in vals) + " |" for n, *vals in rows]
    lines += [
        "",
        f"Predictive {lv} interval for a new study: [{fmt_num(res.pred_lb)}, "
        f"{fmt_num(res.pred_ub)}]. Bayes factor for tau = 0: {fmt_num(res.bf01_tau)}"
        + ("" if not np.isfinite(res.bf01_mu) else f"; for mu = 0: {fmt_num(res.bf01_mu)}")
        + " (above 1 favours the null).",
        "",
    ]
    return lines


def bayes_results(fit: dict[str, Any]) -> dict[str, Any]:
    res: BayesPoolResult = fit["bayes"]
    out = res.to_dict()
    out["spec"] = fit["spec"]
    out["tau_prior"] = {"family": res.tau_prior.family, "params": res.tau_prior.params,
                        "source": res.tau_prior.source}  # fmt: skip
    out["mu_prior"] = {"family": res.mu_prior.family, "params": res.mu_prior.params}
    return out


def bayes_summary(fit: dict[str, Any]) -> str:
    res: BayesPoolResult = fit["bayes"]
    return (
        f"Bayesian random effects (--prior {fit['spec']}): mu {fmt_num(res.mu_median)} "
        f"[{fmt_num(res.mu_lb)}, {fmt_num(res.mu_ub)}], tau {fmt_num(res.tau_median)} "
        f"[{fmt_num(res.tau_lb)}, {fmt_num(res.tau_ub)}] (posterior medians, {res.level:g}% "
        "credible intervals)"
    )


def bayes_plots(st, fit: dict[str, Any], draw, axis: str, ratio: bool, scale_name: str) -> None:
    """The posterior and shrinkage plots through the pool job's ``draw(name, fn)``."""
    from spatialmeta.meta_analysis.bayes_plots import posterior_plot, shrinkage_plot

    res = fit["bayes"]
    draw("posterior", lambda: posterior_plot(st.yi, st.vi, res, xlabel=scale_name,
                                             title=st.path.stem))  # fmt: skip
    draw("shrinkage", lambda: shrinkage_plot(st.yi, st.vi, res, labels=st.labels, xlabel=axis,
                                             title=st.path.stem,
                                             transform=np.exp if ratio else None))  # fmt: skip

"""Published priors (every row reproduced) and Bayesian random effects by quadrature, against
an independent brute-force 2-D integration over (mu, tau) written here."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from scipy import integrate, stats

from spatialmeta.meta_analysis.bayes import bayes_pool
from spatialmeta.meta_analysis.priors import (
    TABLES,
    MuPrior,
    TauPrior,
    published_prior,
    published_table,
)
from spatialmeta.tasks.estimates import Estimates
from tests.conftest import shared_path

SHARED = {
    "turner2015": "turner2015_tau2_lognormal.tsv",
    "rhodes2015": "rhodes2015_tau2_logt5.tsv",
    "bartos2021": "bartos_informed_priors_BayesTools0.3.0.tsv",
}
DATA = json.loads((Path(__file__).resolve().parents[1] / "reference" /
                   "metafor_reference.json").read_text())["datasets"]  # fmt: skip


def _rows(name):
    text = shared_path("meta_analysis", "priors", SHARED[name]).read_text(encoding="utf-8")
    return list(csv.DictReader([ln for ln in text.splitlines() if not ln.startswith("#")],
                               delimiter="\t"))  # fmt: skip


@pytest.mark.parametrize("name", list(SHARED))
def test_built_in_tables_are_the_published_files(name):
    shipped = (TABLES / SHARED[name]).read_bytes()
    assert shipped == shared_path("meta_analysis", "priors", SHARED[name]).read_bytes()
    assert published_table(name) == _rows(name)


def test_every_turner_and_rhodes_row_is_reproduced():
    for r in _rows("turner2015"):
        p = published_prior(
            "turner2015", outcome=r["outcome_type"], comparison=r["comparison_type"]
        )
        assert (p.family, p.scale) == ("lognormal_tau2", "logor")
        assert p.params == {"mu": float(r["mu"]), "sigma": float(r["sigma"])}
    for r in _rows("rhodes2015"):
        p = published_prior("rhodes2015", area=r["medical_area"], outcome=r["outcome_type"],
                            comparison=r["comparison_type"])  # fmt: skip
        assert (p.family, p.scale) == ("logt_tau2", "smd")
        assert p.params == {"location": float(r["location"]), "scale": float(r["scale"]), "df": 5.0}
    assert published_prior("turner2015").params == {"mu": -2.56, "sigma": 1.74}
    assert published_prior("rhodes2015").params == {"location": -3.44, "scale": 2.59, "df": 5.0}


def test_every_bartos_row_is_reproduced():
    rows = _rows("bartos2021")
    for r in rows:
        tau, mu = published_prior("bartos2021", scale=r["type"], subfield=r["subfield"])
        values = dict(kv.split("=") for kv in r["parameters"].split(","))
        got = tau if r["parameter"].startswith("heterogeneity") else mu
        assert got is not None
        if r["distribution"] == "invgamma":
            assert got.family == "invgamma_tau"
            assert got.params == {"shape": float(values["shape"]), "scale": float(values["scale"])}
        elif r["distribution"] == "normal":  # truncated at 0: a half-normal
            assert got.family == "halfnormal_tau" and "lower=0" in r["extra"]
            assert float(values["mean"]) == 0 and got.params == {"scale": float(values["sd"])}
        else:
            assert got.family == "t"
            assert got.params == {k: float(values[k]) for k in ("location", "scale", "df")}
    assert len(rows) == 417


@pytest.mark.parametrize("prior", [
    TauPrior("lognormal_tau2", {"mu": -2.56, "sigma": 1.74}),
    TauPrior("logt_tau2", {"location": -3.44, "scale": 2.59, "df": 5.0}),
    TauPrior("invgamma_tau", {"shape": 1.71, "scale": 0.4}),
    TauPrior("halfnormal_tau", {"scale": 0.5}),
    TauPrior("halft_tau", {"scale": 0.5, "df": 3.0}),
], ids=lambda p: p.family)  # fmt: skip
def test_tau_densities_integrate_to_one(prior):
    total, _ = integrate.quad(lambda t: float(prior.pdf(t)), 0, np.inf, limit=500)
    assert total == pytest.approx(1.0, abs=1e-6)
    assert prior.pdf(-0.1) == 0.0


def test_published_prior_errors_name_the_options():
    with pytest.raises(ValueError, match=r"turner2015: no outcome 'x'; the table has \["):
        published_prior(
            "turner2015", outcome="x", comparison="pharmacological vs. placebo / control"
        )
    with pytest.raises(ValueError, match=r"bartos2021: `scale` must be one of"):
        published_prior("bartos2021", scale="cohen")
    with pytest.raises(ValueError, match=r"no published prior 'smith2020'"):
        published_prior("smith2020")


# --------------------------------------------------------------------------- brute force


def _brute(yi, vi, tau_prior, mu_prior, level=95):
    """Posterior summaries on a fine (mu, tau) grid, trapezoid rule in mu and tau: independent
    of the package's log-tau grid with mu integrated analytically. The grids are dense
    around the data and reach far into the tails (heavy-tailed priors on tau, and with them
    on mu, at k = 2)."""
    sd = np.sqrt(vi.max() + yi.var())
    c = yi.mean()
    tails = np.geomspace(12 * sd, 500 * sd, 600)[1:]
    mu = np.concatenate([c - tails[::-1], np.linspace(c - 12 * sd, c + 12 * sd, 4001), c + tails])
    tau = np.concatenate(
        [np.linspace(0, 0.05 * sd, 401)[:-1], np.geomspace(0.05 * sd, 2000 * sd, 4000)]
    )
    lp = tau_prior.logpdf(tau)[None, :] + mu_prior.logpdf(mu)[:, None]
    for i in range(len(yi)):  # one study at a time over the whole grid
        lp = lp + stats.norm.logpdf(yi[i], mu[:, None], np.sqrt(vi[i] + tau[None, :] ** 2))
    top = lp.max()
    p = np.exp(lp - top)
    # Bayes factor of tau = 0: p(y | tau = 0) / p(y), mu integrated under its prior in both
    l0 = mu_prior.logpdf(mu) + sum(
        stats.norm.logpdf(yi[i], mu, np.sqrt(vi[i])) for i in range(len(yi))
    )
    bf = integrate.trapezoid(np.exp(l0 - top), mu) / integrate.trapezoid(
        integrate.trapezoid(p, tau, axis=1), mu
    )
    pm = integrate.trapezoid(p, tau, axis=1)
    pt = integrate.trapezoid(p, mu, axis=0)
    pm, pt = pm / integrate.trapezoid(pm, mu), pt / integrate.trapezoid(pt, tau)
    a = (100 - level) / 200

    def quant(x, dens, q):
        cdf = integrate.cumulative_trapezoid(dens, x, initial=0)
        return float(np.interp(q, cdf / cdf[-1], x))

    evidence = top + np.log(integrate.trapezoid(integrate.trapezoid(p, tau, axis=1), mu))
    return {
        "log_evidence": evidence,
        "mu_mean": integrate.trapezoid(pm * mu, mu), "tau_mean": integrate.trapezoid(pt * tau, tau),
        "mu_median": quant(mu, pm, 0.5), "mu_lb": quant(mu, pm, a), "mu_ub": quant(mu, pm, 1 - a),
        "tau_median": quant(tau, pt, 0.5), "tau_lb": quant(tau, pt, a),
        "tau_ub": quant(tau, pt, 1 - a), "bf01_tau": bf,
    }  # fmt: skip


CASES = [
    ("bcg", TauPrior("halfnormal_tau", {"scale": 0.5}), MuPrior("flat")),
    ("bcg", published_prior("turner2015"), MuPrior("normal", {"mean": 0.0, "sd": 2.0})),
    ("normand1999", published_prior("bartos2021", scale="smd")[0], MuPrior("flat")),
    ("molloy2014", TauPrior("halft_tau", {"scale": 0.3, "df": 3.0}), MuPrior("flat")),
    ("normand1999", *published_prior("bartos2021", scale="smd")),  # Bartoš's t prior on mu
    (
        "bcg",
        TauPrior("halfnormal_tau", {"scale": 0.5}),
        MuPrior("t", {"location": -0.5, "scale": 0.3, "df": 3.0}),
    ),  # fmt: skip
]


@pytest.mark.parametrize(("name", "tau_prior", "mu_prior"), CASES,
                         ids=lambda x: x if isinstance(x, str) else x.family)  # fmt: skip
@pytest.mark.parametrize("k", [2, 3, None])
def test_posterior_summaries_match_brute_force(name, tau_prior, mu_prior, k):
    yi = np.array(DATA[name]["yi"], dtype=float)[:k]
    vi = np.array(DATA[name]["vi"], dtype=float)[:k]
    res = bayes_pool(yi, vi, tau_prior=tau_prior, mu_prior=mu_prior)
    ref = _brute(yi, vi, tau_prior, mu_prior)
    bf = ref.pop("bf01_tau")
    for key, want in ref.items():
        assert getattr(res, key) == pytest.approx(want, abs=1e-4), key
    assert res.bf01_tau == pytest.approx(bf, rel=1e-4)


def test_batched_rows_equal_single_fits_and_shrinkage_is_between():
    rng = np.random.default_rng(3)
    vi = rng.uniform(0.02, 0.2, (6, 5))
    yi = rng.normal(0.2, np.sqrt(vi + 0.05))
    yi[2, 3:] = vi[2, 3:] = np.nan  # a shorter row
    prior = published_prior("turner2015")
    batch = bayes_pool(yi, vi, tau_prior=prior)
    for i in range(6):
        keep = ~np.isnan(yi[i])
        one = bayes_pool(yi[i][keep], vi[i][keep], tau_prior=prior)
        for f in ("mu_mean", "mu_lb", "tau_median", "pred_ub", "bf01_tau"):
            assert getattr(batch, f)[i] == pytest.approx(getattr(one, f), rel=1e-9), f
    th, mu = batch.theta, batch.mu_mean[:, None]
    ok = ~np.isnan(yi)
    lo, hi = np.minimum(yi, mu), np.maximum(yi, mu)
    assert ((th[ok] >= lo[ok] - 1e-12) & (th[ok] <= hi[ok] + 1e-12)).all()  # shrunk toward mu
    assert (batch.pred_lb < batch.mu_lb).all() and (batch.pred_ub > batch.mu_ub).all()


def test_bayes_factors_and_bad_input():
    same = np.full(5, 0.3)
    v = np.full(5, 0.05)
    hn = TauPrior("halfnormal_tau", {"scale": 1.0})
    assert bayes_pool(same, v, tau_prior=hn).bf01_tau > 1  # equal effects favour tau = 0
    spread = np.array([-1.0, 0.0, 1.0, 2.0, -2.0])
    assert bayes_pool(spread, v, tau_prior=hn).bf01_tau < 0.01
    normal = MuPrior("normal", {"mean": 0.0, "sd": 1.0})
    assert bayes_pool(same + 1.0, v, tau_prior=hn, mu_prior=normal).bf01_mu < 0.01
    assert np.isnan(bayes_pool(same, v, tau_prior=hn).bf01_mu)  # a flat prior has none
    smd = Estimates(yi=same, vi=v, measure="SMD")
    with pytest.raises(ValueError, match=r"on the logor scale, but the effect sizes are 'SMD'"):
        bayes_pool(smd, tau_prior=published_prior("turner2015"))
    t1 = MuPrior("t", {"location": 0.0, "scale": 1.0, "df": 3.0})
    assert bayes_pool(same + 1.0, v, tau_prior=hn, mu_prior=t1).bf01_mu < 0.01
    assert bayes_pool(same * 0, v, tau_prior=hn, mu_prior=t1).bf01_mu > 1
    with pytest.raises(ValueError, match=r"`vi` must be > 0"):
        bayes_pool(same, np.zeros(5), tau_prior=hn)


def test_posterior_matches_a_long_metropolis_run():
    """A hand-written random-walk Metropolis sampler on (mu, log tau), 200,000 steps after
    burn-in, for one case: posterior means and quantiles agree within Monte Carlo error."""
    yi = np.array(DATA["bcg"]["yi"], dtype=float)[:4]
    vi = np.array(DATA["bcg"]["vi"], dtype=float)[:4]
    prior = published_prior("turner2015")
    res = bayes_pool(yi, vi, tau_prior=prior)

    m0, s0 = prior.params["mu"], prior.params["sigma"]

    def logpost(mu, lt):  # flat mu; log tau^2 = 2 lt ~ N(m0, s0^2), so lt's density has a 2
        s2 = vi + np.exp(2 * lt)
        loglik = -0.5 * float(np.sum(np.log(s2) + (yi - mu) ** 2 / s2))
        return loglik - 0.5 * ((2 * lt - m0) / s0) ** 2

    rng = np.random.default_rng(11)
    n, burn = 220_000, 20_000
    x = np.array([yi.mean(), np.log(0.3)])
    lp = logpost(*x)
    steps = rng.normal(0, 1, (n, 2)) * np.array([0.35, 0.9])
    accept = np.log(rng.uniform(size=n))
    draws = np.empty((n, 2))
    for i in range(n):  # the sampler is sequential by nature (the reference, not the method)
        prop = x + steps[i]
        lq = logpost(*prop)
        if accept[i] < lq - lp:
            x, lp = prop, lq
        draws[i] = x
    mu, tau = draws[burn:, 0], np.exp(draws[burn:, 1])
    assert res.mu_mean == pytest.approx(mu.mean(), abs=0.01)
    assert res.mu_lb == pytest.approx(np.quantile(mu, 0.025), abs=0.03)
    assert res.mu_ub == pytest.approx(np.quantile(mu, 0.975), abs=0.03)
    assert res.tau_median == pytest.approx(np.median(tau), abs=0.01)
    assert res.tau_mean == pytest.approx(tau.mean(), abs=0.02)
    # the shrunken study effects: theta_i | mu, tau, y is normal (precision 1/v_i + 1/tau^2),
    # so each draw gives an exact conditional mean and variance (Rao-Blackwellized)
    prec = 1 / vi[None, :] + 1 / tau[:, None] ** 2
    cmean = (yi[None, :] / vi[None, :] + mu[:, None] / tau[:, None] ** 2) / prec
    np.testing.assert_allclose(res.theta, cmean.mean(0), atol=0.01)
    sd = np.sqrt((1 / prec).mean(0) + cmean.var(0))
    np.testing.assert_allclose(res.theta_sd, sd, rtol=0.03)

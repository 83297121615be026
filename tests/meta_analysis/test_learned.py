"""Priors learned from a corpus by empirical Bayes: the generating prior is recovered from a
simulated corpus of 500 meta-analyses within two standard errors."""

from __future__ import annotations

import numpy as np
import pytest

from spatialmeta.meta_analysis.learned import learn_tau_prior
from spatialmeta.meta_analysis.priors import TauPrior


def _corpus(seed, tau, n=500, kmax=10):
    rng = np.random.default_rng(seed)
    k = rng.integers(2, kmax + 1, n)
    vi = rng.uniform(0.01, 0.2, (n, kmax))
    vi[np.arange(kmax)[None, :] >= k[:, None]] = np.nan
    mu = rng.normal(0.0, 0.5, n)[:, None]
    yi = rng.normal(mu, np.sqrt(np.nan_to_num(vi, nan=1.0) + tau(rng, n)[:, None] ** 2))
    yi[np.isnan(vi)] = np.nan
    return yi, vi


CASES = {
    "lognormal_tau2": ({"mu": -2.5, "sigma": 1.2}, lambda r, n: np.exp(r.normal(-2.5, 1.2, n) / 2)),
    "invgamma_tau": ({"shape": 2.0, "scale": 0.3}, lambda r, n: 1 / r.gamma(2.0, 1 / 0.3, n)),
    "halfnormal_tau": ({"scale": 0.4}, lambda r, n: np.abs(r.normal(0, 0.4, n))),
}


@pytest.mark.parametrize("family", list(CASES))
def test_the_generating_prior_is_recovered_within_two_standard_errors(family):
    truth, draw = CASES[family]
    yi, vi = _corpus(2, draw)
    res = learn_tau_prior(yi, vi, family=family, scale="smd")
    assert res.converged and res.n_meta == 500 and res.n_single == 0
    for name, value in truth.items():
        assert abs(res.params[name] - value) < 2 * res.se[name], (name, res.params, res.se)
        assert 0 < res.se[name] < 0.5 * abs(value)  # an informative corpus
    assert isinstance(res.prior, TauPrior) and res.prior.scale == "smd"
    assert res.prior.params == res.params
    assert "Learned" in res.summary() and "tau_prior" not in res.to_dict()


def test_single_study_analyses_are_counted_and_carry_no_information():
    truth, draw = CASES["lognormal_tau2"]
    yi, vi = _corpus(3, draw, n=300)
    base = learn_tau_prior(yi, vi)
    one_y = np.full((40, yi.shape[1]), np.nan)
    one_v = np.full((40, yi.shape[1]), np.nan)
    one_y[:, 0], one_v[:, 0] = np.linspace(-1, 1, 40), 0.05
    more = learn_tau_prior(np.vstack([yi, one_y]), np.vstack([vi, one_v]))
    assert more.n_meta == 340 and more.n_single == 40
    for name in ("mu", "sigma"):
        assert more.params[name] == pytest.approx(base.params[name], abs=1e-4)


def test_a_small_corpus_warns_and_bad_input_is_named():
    truth, draw = CASES["halfnormal_tau"]
    yi, vi = _corpus(4, draw, n=12)
    with pytest.warns(UserWarning, match=r"only 12 meta-analyses; a prior learned from fewer"):
        learn_tau_prior(yi, vi, family="halfnormal_tau")
    with pytest.raises(ValueError, match=r"`family` must be one of"):
        learn_tau_prior(yi, vi, family="gamma")
    bad = yi.copy()
    bad[3], vi2 = np.nan, vi.copy()
    vi2[3] = np.nan
    with pytest.raises(ValueError, match=r"meta-analysis \(row\) 3 has no observed study"):
        learn_tau_prior(bad, vi2, family="halfnormal_tau")
    with pytest.raises(ValueError, match=r"`vi` is NaN"):
        v3 = vi.copy()
        v3[0, 0] = np.nan
        learn_tau_prior(yi, v3, family="halfnormal_tau")


def _grouped_corpus(seed, n=600):
    """Two kinds of meta-analysis with different heterogeneity (log tau^2 means -1.5 and
    -3.0, shared sd 0.8) and a mu prior N(0.3, 0.5^2)."""
    rng = np.random.default_rng(seed)
    g = np.repeat(["OR", "SMD"], n // 2)
    k = rng.integers(2, 11, n)
    vi = rng.uniform(0.01, 0.2, (n, 10))
    vi[np.arange(10)[None, :] >= k[:, None]] = np.nan
    tau = np.exp(rng.normal(np.where(g == "OR", -1.5, -3.0), 0.8) / 2)
    mu = rng.normal(0.3, 0.5, n)[:, None]
    yi = rng.normal(mu, np.sqrt(np.nan_to_num(vi, nan=1.0) + tau[:, None] ** 2))
    yi[np.isnan(vi)] = np.nan
    return yi, vi, g


def test_a_covariate_moves_the_location_and_the_generating_values_are_recovered():
    import pandas as pd

    yi, vi, g = _grouped_corpus(5)
    res = learn_tau_prior(yi, vi, covariates=pd.DataFrame({"measure": g}), learn_mu=True)
    assert res.converged and list(res.design.names) == ["(Intercept)", "measure=SMD"]
    truth = {"mu[(Intercept)]": -1.5, "mu[measure=SMD]": -1.5, "sigma": 0.8,
             "mu_mean[(Intercept)]": 0.3, "mu_mean[measure=SMD]": 0.0, "mu_sd": 0.5}  # fmt: skip
    for name, value in truth.items():
        assert abs(res.params[name] - value) < 2 * res.se[name], (name, res.params, res.se)
        assert 0 < res.se[name] < 0.3
    smd = res.prior_for(measure="SMD")
    assert smd.params["mu"] == pytest.approx(res.params["mu[(Intercept)]"]
                                             + res.params["mu[measure=SMD]"])  # fmt: skip
    assert res.prior.params == res.prior_for(measure="OR").params  # the baseline level
    assert res.mu_prior_for(measure="OR").params["sd"] == pytest.approx(res.params["mu_sd"])
    with pytest.raises(ValueError, match=r"covariate 'measure' has level 'RR', which the prior"):
        res.prior_for(measure="RR")
    with pytest.raises(ValueError, match=r"has no covariate 'field'; it has \['measure'\]"):
        res.prior_for(measure="OR", field="x")
    with pytest.raises(ValueError, match=r"depends on covariate 'measure'; give it"):
        res.prior_for()


def test_a_one_level_covariate_equals_no_covariate_and_bad_covariates_are_named():
    import pandas as pd

    yi, vi, _ = _grouped_corpus(6, n=200)
    plain = learn_tau_prior(yi, vi)
    one = learn_tau_prior(yi, vi, covariates=pd.DataFrame({"measure": ["OR"] * 200}))
    assert one.params["mu[(Intercept)]"] == pytest.approx(plain.params["mu"], abs=1e-4)
    assert one.params["sigma"] == pytest.approx(plain.params["sigma"], abs=1e-4)
    assert one.loglik == pytest.approx(plain.loglik, abs=1e-6)
    with pytest.raises(ValueError, match=r"`covariates` has 3 rows for 200 meta-analyses"):
        learn_tau_prior(yi, vi, covariates=pd.DataFrame({"measure": ["OR"] * 3}))
    cov = pd.DataFrame({"x": np.r_[np.nan, np.ones(199)]})
    with pytest.raises(ValueError, match=r"covariate 'x' is missing for meta-analysis \(row\) 0"):
        learn_tau_prior(yi, vi, covariates=cov)
    cov = pd.DataFrame({"a": np.arange(200.0), "b": 2 * np.arange(200.0)})
    with pytest.raises(ValueError, match=r"not of full rank"):
        learn_tau_prior(yi, vi, covariates=cov)
    with pytest.raises(ValueError, match=r"unknown effect-size scale 'log-or'"):
        learn_tau_prior(yi, vi, scale="log-or")


def test_a_corpus_without_heterogeneity_warns_and_keeps_a_usable_prior():
    """Studies that share an error (as neighbouring regions do) scatter less than their
    sampling variances say: the EB optimum runs to tau -> 0 with no spread; the prior is
    held at its bounds, said in a warning, and bayes_pool still integrates it."""
    from spatialmeta.meta_analysis.bayes import bayes_pool
    from spatialmeta.meta_analysis.learned import SPREAD_FLOOR

    rng = np.random.default_rng(8)
    vi = np.full((80, 6), 0.04)
    yi = rng.normal(0.3, 0.05, (80, 6)) + rng.normal(0.0, 0.2, (80, 1))  # a shared error
    with pytest.warns(UserWarning, match=r"\(almost\) no heterogeneity beyond sampling error"):
        res = learn_tau_prior(yi, vi)
    assert res.params["sigma"] >= SPREAD_FLOOR - 1e-12
    fit = bayes_pool(yi[:3], vi[:3], tau_prior=res.prior)
    assert np.isfinite(fit.mu_lb).all() and np.isfinite(fit.log_evidence).all()
    assert (fit.tau_ub < 0.01).all()  # the prior says tau is (almost) zero
    with pytest.raises(ValueError, match=r"uniform_tau prior needs an upper bound > 0"):
        TauPrior("uniform_tau", {"upper": 0.0})


def test_partial_pooling_recovers_omega_and_shrinks_a_small_group():
    """30 groups whose locations scatter with omega = 0.8 around -2.5 (sigma 0.6): mu, sigma
    and omega within 2 SE; a group of 3 analyses is pulled toward the population, a big
    one keeps its own location; an unseen group gets the population prior, widened."""
    import pandas as pd

    rng = np.random.default_rng(12)
    n_groups, per = 30, 20
    b = rng.normal(0.0, 0.8, n_groups)
    g = np.repeat(np.arange(n_groups), per)
    keep = np.ones(g.size, dtype=bool)
    keep[(g == 0) & (np.arange(g.size) % per >= 3)] = False  # group 0: 3 analyses only
    g = g[keep]
    n = g.size
    k = rng.integers(3, 11, n)
    vi = rng.uniform(0.01, 0.2, (n, 10))
    vi[np.arange(10)[None, :] >= k[:, None]] = np.nan
    tau = np.exp(rng.normal(-2.5 + b[g], 0.6) / 2)
    yi = rng.normal(0.0, np.sqrt(np.nan_to_num(vi, nan=1.0) + tau[:, None] ** 2))
    yi[np.isnan(vi)] = np.nan
    labels = pd.Series([f"g{i:02d}" for i in g], name="field")
    res = learn_tau_prior(yi, vi, groups=labels)
    for name, value in {"mu": -2.5, "sigma": 0.6, "omega": 0.8}.items():
        assert abs(res.params[name] - value) < 2 * res.se[name], (name, res.params, res.se)
    assert res.group_name == "field" and len(res.group_effects) == n_groups
    eff = {lab: (m, s) for lab, m, s in res.group_effects}
    # a big group's effect is close to its truth, with a small sd; the 3-analysis group's
    # posterior is wider
    big = [abs(eff[f"g{i:02d}"][0] - (b[i] - (res.params["mu"] + 2.5))) for i in range(1, 30)]
    assert np.median(big) < 0.25
    assert eff["g00"][1] > np.median([eff[f"g{i:02d}"][1] for i in range(1, 30)])
    one = res.prior_for(field="g05")
    assert one.params["mu"] == pytest.approx(res.params["mu"] + eff["g05"][0])
    assert one.params["sigma"] == pytest.approx(np.hypot(res.params["sigma"], eff["g05"][1]))
    new = res.prior_for(field="unseen")
    assert new.params["sigma"] == pytest.approx(np.hypot(res.params["sigma"], res.params["omega"]))
    assert res.prior.params == new.params  # the baseline is the population prior
    with pytest.raises(ValueError, match=r"partially pooled by 'field'"):
        res.prior_for(measure="OR")
    with pytest.raises(ValueError, match=r"`groups` \(partial pooling\) goes without"):
        learn_tau_prior(yi, vi, groups=labels, covariates=pd.DataFrame({"x": np.ones(n)}))


def test_a_partially_pooled_prior_file_round_trips(tmp_path):
    import pandas as pd

    from spatialmeta.meta_analysis.corpus import Corpus
    from spatialmeta.meta_analysis.prior_files import learn_corpus, load_prior, save_prior

    yi, vi, g = _grouped_corpus(9, n=200)
    rows = [{"meta_id": f"m{i}", "yi": a, "vi": b, "measure": g[i]}
            for i in range(200) for a, b in zip(yi[i], vi[i], strict=True) if np.isfinite(a)]  # fmt: skip
    learned = learn_corpus(Corpus.from_table(pd.DataFrame(rows)))
    assert learned.group_name == "measure"
    back = load_prior(save_prior(learned, tmp_path / "p.json"))
    for m in ("OR", "SMD", "RR"):
        assert back.prior_for(measure=m).params == learned.prior_for(measure=m).params

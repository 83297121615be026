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

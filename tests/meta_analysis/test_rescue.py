"""Fits that always converge: where Fisher scoring fails, the bracketed solve of the same
likelihood (estimators.rescue_tau2) finds the optimum.

References: metafor 3.8 on 75 simulated analyses where its default Fisher scoring stops
("did not converge") and on the ``nonconverge`` set, refitted with damped steps
(``control = list(stepadj = 0.5, maxiter = 10000, threshold = 1e-12)``, which converge):
``tests/reference/rescue_reference.json`` (make_rescue_inputs.py, make_rescue_reference.R);
and scipy's bounded scalar minimizer on the negative (restricted) log likelihood.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from scipy import optimize

from spatialmeta.meta_analysis import estimators, pool

REF = json.loads(
    (Path(__file__).resolve().parents[1] / "reference" / "rescue_reference.json").read_text()
)
FITS = REF["fits"]


def _batch(method: str):
    """The reference rows of ``method``, padded with NaN (missing studies) to one width."""
    rows = [f for f in FITS if f["method"] == method]
    kmax = max(len(f["yi"]) for f in rows)
    yi, vi = np.full((len(rows), kmax), np.nan), np.full((len(rows), kmax), np.nan)
    for i, f in enumerate(rows):
        yi[i, : len(f["yi"])], vi[i, : len(f["vi"])] = f["yi"], f["vi"]
    return rows, yi, vi


def _quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


def test_the_reference_rows_are_ones_metafor_cannot_fit():
    assert len(FITS) == 76 and {f["method"] for f in FITS} == {"ML", "REML", "EB"}
    assert all("did not converge" in f["default_error"] for f in FITS)


@pytest.mark.parametrize("method", ["ML", "REML", "EB"])
def test_rescued_fits_equal_metafors_damped_fits(method):
    rows, yi, vi = _batch(method)
    res = pool(yi, vi, method=method)  # no warning: every row converges
    assert np.asarray(res.converged).all()
    # Fisher scoring did fail on every one (it ran out of steps), and was rescued
    assert (np.asarray(res.iterations) == estimators.MAXITER + 1).all()
    for key, attr in (("tau2", "tau2"), ("se_tau2", "se_tau2"), ("estimate", "estimate"),
                      ("se", "se")):  # fmt: skip
        want = np.array([f[key] for f in rows])
        np.testing.assert_allclose(res.__getattribute__(attr), want, rtol=1e-9, atol=1e-12,
                                   err_msg=key)  # fmt: skip


@pytest.mark.parametrize("method", ["ML", "REML", "EB"])
def test_compiled_and_numpy_paths_rescue_alike(method, monkeypatch):
    _, yi, vi = _batch(method)
    got = pool(yi, vi, method=method)
    monkeypatch.setattr(estimators, "_COMPILED", False)
    ref = pool(yi, vi, method=method)
    for f in ("tau2", "se_tau2", "estimate", "se", "converged", "iterations"):
        np.testing.assert_allclose(getattr(got, f), getattr(ref, f), rtol=1e-12, err_msg=f)


@pytest.mark.parametrize("method", ["ML", "REML"])
def test_rescued_tau2_is_scipys_maximum_of_the_likelihood(method):
    rows, yi, vi = _batch(method)
    res = pool(yi, vi, method=method)
    reml = method == "REML"
    for i in range(len(rows)):
        y, v = np.array(rows[i]["yi"]), np.array(rows[i]["vi"])

        def nll(t, y=y, v=v):
            w = 1.0 / (v + t)
            mu = (w * y).sum() / w.sum()
            ll = -0.5 * np.log(v + t).sum() - 0.5 * (w * (y - mu) ** 2).sum()
            return -(ll - 0.5 * np.log(w.sum()) if reml else ll)

        opt = optimize.minimize_scalar(nll, bounds=(0.0, 10.0), method="bounded",
                                       options={"xatol": 1e-13})  # fmt: skip
        # scipy stops within about 1e-9 of the optimum on these flat likelihoods; ours is at
        # least as high a likelihood
        assert res.tau2[i] == pytest.approx(opt.x, rel=1e-5, abs=5e-8), i
        assert nll(res.tau2[i]) <= opt.fun + 1e-12


@pytest.mark.parametrize("method", ["ML", "REML", "EB"])
def test_rows_fisher_scoring_fits_are_left_alone(method, monkeypatch):
    rng = np.random.default_rng(5)
    vi = rng.uniform(0.01, 0.2, (5000, 20))
    yi = rng.normal(0.3, np.sqrt(vi + rng.choice([0.0, 0.02, 0.1], (5000, 1))))
    with_rescue = pool(yi, vi, method=method)
    monkeypatch.setattr(estimators, "rescue_tau2", lambda *a: a[-3:])
    plain = _quiet(pool, yi, vi, method=method)
    fs = np.asarray(plain.converged)
    assert (~fs).any() and np.asarray(with_rescue.converged).all()
    for f in ("tau2", "se_tau2", "estimate", "se", "iterations"):
        np.testing.assert_array_equal(np.asarray(getattr(with_rescue, f))[fs],
                                      np.asarray(getattr(plain, f))[fs], f)  # fmt: skip


@pytest.mark.parametrize("method", ["ML", "REML", "EB"])
def test_meta_regressions_are_rescued_like_intercept_only_fits(method):
    # a meta-regression on a column of ones is the intercept-only model, rescue included
    rows, yi, vi = _batch(method)
    ones = np.ones(yi.shape + (1,))
    reg = pool(yi, vi, mods=ones, intercept=False, method=method)
    assert np.asarray(reg.converged).all()
    want = np.array([f["tau2"] for f in rows])
    np.testing.assert_allclose(reg.tau2, want, rtol=1e-9, atol=1e-12)

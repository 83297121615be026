"""Step-function selection models against metafor 3.8's selmodel(type = "stepfun")
(tests/reference/selmodel_reference.json, from tests/reference/make_selmodel_reference.R).

The selection model's likelihood is flat along the deltas, and metafor's optimizer
(optim's BFGS, reltol 1e-8) stops a few 1e-6 short of the maximum: at its estimates the
log-likelihood is below ours in every case (checked here with our own exact likelihood,
whose value at metafor's estimates equals metafor's reported ll to 1e-12). The estimates
therefore agree to the optimizer's tolerance (5e-5 absolute), the likelihood-ratio test to
1e-7, the counts per interval exactly.

The beta and half-normal weight functions (selmodel(type = "beta" / "halfnorm")) follow,
against tests/reference/selmodel_cont_reference.json; their tolerances are explained there."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from spatialmeta.meta_analysis import pool
from spatialmeta.meta_analysis.selection import cont_loglik, selmodel, step_loglik

REF = json.loads((Path(__file__).resolve().parents[1] / "reference" /
                  "selmodel_reference.json").read_text())["cases"]  # fmt: skip
CASES = {c["name"]: c for c in REF}


def _num(x):
    return np.array([np.nan if v == "NA" else v for v in np.atleast_1d(x)], dtype=float)


def _pooled(c):
    """The design and the unadjusted fit of a fixture case (metafor's model)."""
    X = np.column_stack(c["X"])
    fit = pool(np.array(c["yi"]), np.array(c["vi"]), method=c["method"],
               mods=None if X.shape[1] == 1 else X[:, 1:])  # fmt: skip
    return X, fit


@pytest.fixture(scope="module", params=sorted(CASES))
def fitted(request):
    c = CASES[request.param]
    X, fit = _pooled(c)
    return c, X, selmodel(fit, steps=c["steps"], alternative=c["alternative"])


def test_the_likelihood_equals_metafors_at_its_estimates_and_ours_is_not_lower(fitted):
    c, X, res = fitted
    sign = 1.0 if c["alternative"] == "greater" else -1.0  # "less" is the mirror image
    at_r = step_loglik(sign * np.array(c["yi"]), c["vi"], X, c["steps"],
                       sign * np.atleast_1d(c["beta"]), c["tau2"], _num(c["delta"]))  # fmt: skip
    assert at_r == pytest.approx(c["ll"], rel=1e-12, abs=1e-12)
    assert res.ll >= at_r - 1e-10


def test_estimates_tests_and_counts_agree_with_metafor(fitted):
    c, _, res = fitted
    np.testing.assert_array_equal(res.k_per_step, c["k_per_step"])
    assert res.LRTdf == c["LRTdf"]
    assert res.LRT == pytest.approx(c["LRT"], rel=1e-7)
    assert res.LRTp == pytest.approx(c["LRTp"], rel=1e-7)
    for f in ("beta", "ci_lb", "ci_ub", "tau2", "delta"):
        ref = _num(c[f])
        np.testing.assert_allclose(np.atleast_1d(getattr(res, f)), ref, rtol=0, atol=5e-5,
                                   err_msg=f)  # fmt: skip
    for f in ("se", "se_tau2", "se_delta"):
        ref = _num(c[f])
        ok = np.isfinite(ref)
        np.testing.assert_allclose(np.atleast_1d(getattr(res, f))[ok], ref[ok], rtol=2e-4,
                                   err_msg=f)  # fmt: skip
    assert "Step-function selection model" in res.summary()


def _unselected(seed, k, mu, tau2, steps):
    """Simulated effects without selection, their ML fit, the design and the step model's
    log-likelihood at no selection (all deltas 1: the ML model's)."""
    rng = np.random.default_rng(seed)
    vi = rng.uniform(0.01, 0.1, k)
    yi = rng.normal(mu, np.sqrt(vi + tau2))
    fit = pool(yi, vi, method="ML")
    X = np.ones((k, 1))
    ml = step_loglik(yi, vi, X, steps, [float(fit.estimate)], float(fit.tau2), [1.0, 1.0])
    return yi, vi, fit, X, ml


def test_no_selection_gives_the_ml_fit_and_bad_steps_are_refused():
    yi, vi, fit, X, ml = _unselected(5, 80, 0.3, 0.02, (0.05, 1.0))
    res = selmodel(fit, steps=(0.05,))
    assert res.steps == (0.05, 1.0) and res.ll >= ml - 1e-9 and res.LRT >= 0
    with pytest.raises(ValueError, match=r"`steps` must increase within \(0, 1\]"):
        selmodel(fit, steps=(0.5, 0.05))
    with pytest.warns(UserWarning, match=r"no study has a p-value in \(0.5, 0.50001\]; that"):
        empty = selmodel(fit, steps=(0.5, 0.50001, 1.0))
    assert empty.k_per_step[1] == 0 and np.isfinite(empty.beta).all()


def test_the_pool_report_carries_the_selection_model(tmp_path):
    """``spatialmeta pool``'s bias section: the step model at p = 0.025 and the beta and
    half-normal models, in the direction of the pooled effect (``less`` for BCG's
    protective log risk ratios), as selmodel gives them; a table under 10 studies says why
    they are skipped."""
    import pandas as pd
    from typer.testing import CliRunner

    from spatialmeta.cli import app

    c = CASES["bcg_less"]
    pd.DataFrame({"yi": c["yi"], "vi": c["vi"]}).to_csv(tmp_path / "b.csv", index=False)
    res = CliRunner().invoke(app, ["pool", str(tmp_path / "b.csv"), "--out", str(tmp_path / "r"),
                                   "--no-progress"])  # fmt: skip
    assert res.exit_code == 0, res.output
    got = json.loads((tmp_path / "r" / "results.json").read_text())["publication_bias"]["selmodel"]
    want = selmodel(pool(np.array(c["yi"]), np.array(c["vi"])), steps=(0.025, 1.0),
                    alternative="less")  # fmt: skip
    assert got["alternative"] == "less"
    assert got["beta"][0] == pytest.approx(float(want.beta[0]), rel=1e-10)
    assert got["LRTp"] == pytest.approx(want.LRTp, rel=1e-10)
    assert "selection model (step at p = 0.025): adjusted" in res.output
    bias = json.loads((tmp_path / "r" / "results.json").read_text())["publication_bias"]
    report = (tmp_path / "r" / "report.md").read_text()
    for key, kind, name in (("selmodel_beta", "beta", "beta"),
                            ("selmodel_halfnorm", "halfnorm", "half-normal")):  # fmt: skip
        one = selmodel(pool(np.array(c["yi"]), np.array(c["vi"])), type=kind, alternative="less")
        assert bias[key]["type"] == kind and bias[key]["alternative"] == "less"
        assert bias[key]["beta"][0] == pytest.approx(float(one.beta[0]), rel=1e-10)
        assert bias[key]["LRTp"] == pytest.approx(one.LRTp, rel=1e-10)
        assert f"selection model ({name}): adjusted" in res.output
        assert f"| Selection model ({name}; LRT, {one.LRTdf} df) |" in report
    pd.DataFrame({"yi": c["yi"][:6], "vi": c["vi"][:6]}).to_csv(tmp_path / "s.csv", index=False)
    small = CliRunner().invoke(app, ["pool", str(tmp_path / "s.csv"), "--out",
                                     str(tmp_path / "r2"), "--no-progress"])  # fmt: skip
    assert small.exit_code == 0
    skipped = json.loads((tmp_path / "r2" / "results.json").read_text())["skipped"]
    for name in ("step at p = 0.025", "beta", "half-normal"):
        assert "at least 10 studies; k = 6" in skipped[f"selection model ({name})"]


# --- the beta (Citkowicz & Vevea) and half-normal (Preston et al.) weight functions -------
# against metafor 3.8's selmodel(type = "beta" / "halfnorm")
# (tests/reference/selmodel_cont_reference.json, from make_selmodel_cont_reference.R).
#
# Each case holds two metafor fits. `default` is selmodel() as it comes: each study's
# normalizing integral by R's integrate() over the real line at rel.tol 1.2e-4, which for
# the beta weight (kinked where the p-values are truncated at 1e-5 and 1 - 1e-5) leaves its
# log-likelihood off by up to 2.5e-4, and its BFGS stops where that noise hides the
# gradient: at its estimates the exact log-likelihood is below ours by up to 2.5e-4 (beta)
# and 3.5e-7 (half-normal), and its numerical Hessian (numDeriv, steps of 1e-4 relative) of
# the noisy function is off by up to 2 % (beta) and 7 % (half-normal, se_tau2). `accurate`
# is metafor with integrals to rel.tol 1e-12 and Nelder-Mead to reltol 1e-14: it stops
# within 1e-13 of our maximum in log-likelihood, which pins the estimates to about 1e-6
# (the likelihood is flat at its maximum: 1e-13 in ll leaves ~3e-7 of an SE), and its
# Hessian is accurate to about 1e-6. `ll_exact` is metafor's likelihood (its integrand and
# weight function) at each fit's estimates with the integrals split at the truncation
# points and computed to 1e-13; ours equals it to 1e-12 at both fits' estimates.

CONT = {c["name"]: c for c in json.loads((Path(__file__).resolve().parents[1] / "reference" /
        "selmodel_cont_reference.json").read_text())["cases"]}  # fmt: skip

# metafor's default fit against ours, per weight function (see above): estimates within
# this fraction of their SE, SEs, log-likelihood, LRT and its p-value to these relative
# differences
DEFAULT_TOL = {
    "beta": {"est_se": 0.025, "se": 0.01, "ll": 5e-5, "LRT": 2e-4, "LRTp": 6e-4},
    "halfnorm": {"est_se": 0.002, "se": 0.07, "ll": 1e-7, "LRT": 2e-6, "LRTp": 1e-6},
}


@pytest.fixture(scope="module", params=sorted(CONT))
def cont_fitted(request):
    c = CONT[request.param]
    X, fit = _pooled(c)
    return c, X, selmodel(fit, type=c["type"], alternative=c["alternative"])


def _theta(res, ref):
    """(ours, metafor's, our SE) of the estimates beta, tau^2 (not for FE) and delta."""
    fe = not np.isfinite(res.se_tau2)
    ours = np.concatenate([res.beta, [] if fe else [res.tau2], res.delta])
    theirs = np.concatenate([_num(ref["beta"]), [] if fe else [ref["tau2"]], _num(ref["delta"])])
    se = np.concatenate([res.se, [] if fe else [res.se_tau2], res.se_delta])
    return ours, theirs, se


def test_cont_likelihood_is_metafors_and_ours_is_not_lower(cont_fitted):
    c, X, res = cont_fitted
    sign = 1.0 if c["alternative"] == "greater" else -1.0  # "less" is the mirror image
    for key in ("default", "accurate"):
        ref = c[key]
        at_r = cont_loglik(sign * np.array(c["yi"]), c["vi"], X, sign * _num(ref["beta"]),
                           ref["tau2"], _num(ref["delta"]), type=c["type"])  # fmt: skip
        assert at_r == pytest.approx(ref["ll_exact"], rel=1e-12), key
        assert res.ll >= at_r - 1e-10, key
    # the LRT's null model is metafor's ML fit without selection
    assert res.ll - res.LRT / 2 == pytest.approx(c["accurate"]["ll0"], rel=1e-10)


def test_cont_agrees_with_metafors_accurate_fit(cont_fitted):
    c, _, res = cont_fitted
    ref = c["accurate"]
    assert res.type == c["type"] and res.steps is None and res.k_per_step is None
    assert res.LRTdf == ref["LRTdf"] == (2 if c["type"] == "beta" else 1)
    assert res.ll == pytest.approx(ref["ll_exact"], rel=1e-12)
    # metafor's reported ll (and so its LRT) carries its integrals' error, up to 1.3e-7
    assert res.LRT == pytest.approx(ref["LRT"], rel=1e-7)
    assert res.LRTp == pytest.approx(ref["LRTp"], rel=2e-7)
    for f in ("beta", "se", "zval", "tau2", "se_tau2", "delta", "se_delta"):
        want = _num(ref[f])
        got = np.atleast_1d(getattr(res, f)).astype(float)
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=0, err_msg=f)
    # the p-values amplify the z values' 1e-6 by z^2; the interval bounds to 1e-6 of an SE
    np.testing.assert_allclose(res.pval, _num(ref["pval"]), rtol=2e-6, atol=0)
    for f in ("ci_lb", "ci_ub"):
        assert np.all(np.abs(getattr(res, f) - _num(ref[f])) <= 1e-6 * res.se), f


def test_cont_agrees_with_metafors_default_fit_to_its_integration_error(cont_fitted):
    c, _, res = cont_fitted
    ref, tol = c["default"], DEFAULT_TOL[c["type"]]
    ours, theirs, se = _theta(res, ref)
    assert np.all(np.abs(ours - theirs) <= tol["est_se"] * se), (ours, theirs)
    for f in ("se", "se_tau2", "se_delta"):
        want = _num(ref[f])
        ok = np.isfinite(want)  # metafor could not invert one Hessian (bangertdrowns, beta)
        got = np.atleast_1d(getattr(res, f))[ok]
        np.testing.assert_allclose(got, want[ok], rtol=tol["se"], err_msg=f)
    if not np.isfinite(_num(ref["se"])).all():
        assert "Error when trying to invert Hessian." in ref["warnings"]
        assert np.isfinite(res.se).all() and np.isfinite(res.se_delta).all()
    for f in ("ll", "LRT", "LRTp"):
        assert getattr(res, f) == pytest.approx(ref[f], rel=tol[f]), f


def test_cont_result_prints_names_its_weight_function_and_is_plain_json(cont_fitted):
    c, _, res = cont_fitted
    text = res.summary()
    title = "Beta selection model" if c["type"] == "beta" else "Half-normal selection model"
    assert text.startswith(title) and c["alternative"] in text.splitlines()[0]
    assert ("delta.2" in text) == (c["type"] == "beta")
    back = json.loads(json.dumps(res.to_dict(), allow_nan=False))
    assert back["type"] == c["type"] and back["steps"] is None and back["k_per_step"] is None
    assert len(back["delta"]) == len(back["se_delta"]) == res.LRTdf


def test_cont_bad_input_is_refused():
    c = CONT["hackshaw1998_beta"]
    fit = pool(np.array(c["yi"]), np.array(c["vi"]), method="ML")
    with pytest.raises(ValueError, match=r"`type` must be 'stepfun', 'beta' or 'halfnorm'; "
                                         r"got 'logistic'"):  # fmt: skip
        selmodel(fit, type="logistic")
    with pytest.raises(ValueError, match=r"`steps` applies to type='stepfun' only; got "
                                         r"steps=\(0.025, 1\) with type='beta' \(leave"):  # fmt: skip
        selmodel(fit, type="beta", steps=(0.025, 1))
    with pytest.raises(ValueError, match=r"`steps` applies to type='stepfun' only"):
        selmodel(fit, type="halfnorm", steps=0.05)
    with pytest.raises(ValueError, match=r"`alternative` must be 'greater' or 'less'; got "
                                         r"'two.sided'"):  # fmt: skip
        selmodel(fit, type="halfnorm", alternative="two.sided")
    few = pool(np.array(c["yi"][:3]), np.array(c["vi"][:3]), method="ML")
    with pytest.raises(ValueError, match=r"3 studies are too few for the 4 parameters of a "
                                         r"'beta' selection model"):  # fmt: skip
        selmodel(few, type="beta")
    with pytest.raises(ValueError, match=r"cont_loglik: `type` must be 'beta' or 'halfnorm'; "
                                         r"got 'stepfun'"):  # fmt: skip
        cont_loglik(c["yi"], c["vi"], np.ones((37, 1)), [0.1], 0.01, [1.0], type="stepfun")


def test_cont_no_selection_and_a_delta_at_its_bound():
    """At delta = (1, 1) (beta) or 0 (half-normal) the weight is 1 and the likelihood is the
    ML model's; with no sign of selection the half-normal's delta goes to its bound 0 (with
    metafor's warning) and the LRT to 0."""
    yi, vi, fit, X, ml = _unselected(0, 40, 0.0, 0.01, (0.5, 1.0))
    for t, h0 in (("beta", [1.0, 1.0]), ("halfnorm", [0.0])):
        at = cont_loglik(yi, vi, X, [float(fit.estimate)], float(fit.tau2), h0, type=t)
        assert at == pytest.approx(ml, rel=1e-13)
    with pytest.warns(UserWarning, match=r"delta estimate of the 'halfnorm' model is \(almost\) "
                                         r"at its bound"):  # fmt: skip
        res = selmodel(fit, type="halfnorm")
    assert res.delta[0] < 1e-4 and res.LRT < 1e-8 and res.LRTp == pytest.approx(1.0, abs=1e-4)
    assert res.beta[0] == pytest.approx(float(fit.estimate), abs=1e-5)


def test_cont_tau2_at_zero_gets_no_se_and_the_others_do():
    """A beta model whose tau^2 ends at 0 (the likelihood still rises towards it): the
    Hessian there is not positive definite, so tau^2 gets no SE and the other SEs come from
    the Hessian without it (metafor stops at tau^2 ~ 8e-6 and reports SEs from a
    numerical Hessian of its noisy integrals)."""
    import warnings

    rng = np.random.default_rng(4)
    vi = rng.uniform(0.01, 0.1, 50)
    yi = rng.normal(0.2, np.sqrt(vi + 0.02))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = selmodel(pool(yi, vi, method="ML"), type="beta")
    assert res.tau2 == 0.0 and np.isnan(res.se_tau2)
    assert np.isfinite(res.se).all() and np.isfinite(res.se_delta).all()
    assert json.loads(json.dumps(res.to_dict(), allow_nan=False))["se_tau2"] is None

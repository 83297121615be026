"""Step-function selection models against metafor 3.8's selmodel(type = "stepfun")
(tests/reference/selmodel_reference.json, from tests/reference/make_selmodel_reference.R).

The selection model's likelihood is flat along the deltas, and metafor's optimizer
(optim's BFGS, reltol 1e-8) stops a few 1e-6 short of the maximum: at its estimates the
log-likelihood is below ours in every case (checked here with our own exact likelihood,
whose value at metafor's estimates equals metafor's reported ll to 1e-12). The estimates
therefore agree to the optimizer's tolerance (5e-5 absolute), the likelihood-ratio test to
1e-7, the counts per interval exactly."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from spatialmeta.meta_analysis import pool
from spatialmeta.meta_analysis.selection import selmodel, step_loglik

REF = json.loads((Path(__file__).resolve().parents[1] / "reference" /
                  "selmodel_reference.json").read_text())["cases"]  # fmt: skip
CASES = {c["name"]: c for c in REF}


def _num(x):
    return np.array([np.nan if v == "NA" else v for v in np.atleast_1d(x)], dtype=float)


@pytest.fixture(scope="module", params=sorted(CASES))
def fitted(request):
    c = CASES[request.param]
    X = np.column_stack(c["X"])
    fit = pool(np.array(c["yi"]), np.array(c["vi"]), method=c["method"],
               mods=None if X.shape[1] == 1 else X[:, 1:])  # fmt: skip
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


def test_no_selection_gives_the_ml_fit_and_bad_steps_are_refused():
    rng = np.random.default_rng(5)
    vi = rng.uniform(0.01, 0.1, 80)
    yi = rng.normal(0.3, np.sqrt(vi + 0.02))
    fit = pool(yi, vi, method="ML")
    X = np.ones((80, 1))
    ml = step_loglik(yi, vi, X, (0.05, 1.0), [float(fit.estimate)], float(fit.tau2), [1.0, 1.0])
    res = selmodel(fit, steps=(0.05,))
    assert res.steps == (0.05, 1.0) and res.ll >= ml - 1e-9 and res.LRT >= 0
    with pytest.raises(ValueError, match=r"`steps` must increase within \(0, 1\]"):
        selmodel(fit, steps=(0.5, 0.05))
    with pytest.warns(UserWarning, match=r"no study has a p-value in \(0.5, 0.50001\]; that"):
        empty = selmodel(fit, steps=(0.5, 0.50001, 1.0))
    assert empty.k_per_step[1] == 0 and np.isfinite(empty.beta).all()


def test_the_pool_report_carries_the_selection_model(tmp_path):
    """``spatialmeta pool``'s bias section: the step model at p = 0.025 in the direction of
    the pooled effect (``less`` for BCG's protective log risk ratios), as selmodel gives it;
    a table under 10 studies says why it is skipped."""
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
    pd.DataFrame({"yi": c["yi"][:6], "vi": c["vi"][:6]}).to_csv(tmp_path / "s.csv", index=False)
    small = CliRunner().invoke(app, ["pool", str(tmp_path / "s.csv"), "--out",
                                     str(tmp_path / "r2"), "--no-progress"])  # fmt: skip
    assert small.exit_code == 0
    skipped = json.loads((tmp_path / "r2" / "results.json").read_text())["skipped"]
    assert "at least 10 studies; k = 6" in skipped["selection model"]

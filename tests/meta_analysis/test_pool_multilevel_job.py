"""`spatialmeta pool --cluster COL --structure ... --rho R`: the multilevel section of the pool
job against metafor's rma.mv and clubSandwich's coef_test on the same model
(tests/reference/make_multivariate_reference.R, entry "cli": dat.assink2016, V imputed with
r = 0.6 within studies, ~ 1 | study/esid, mods = ~ deltype, CR2 clustered by study)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from spatialmeta.cli import app
from spatialmeta.jobs.pool import StudyTableError, pool_job
from spatialmeta.meta_analysis.results import fmt_num

REF = json.loads((Path(__file__).resolve().parents[1] / "reference" /
                  "multivariate_reference.json").read_text())["cli"]  # fmt: skip


@pytest.fixture(scope="module")
def assink(tmp_path_factory):
    d = tmp_path_factory.mktemp("assink")
    pd.DataFrame(REF["csv"]).to_csv(d / "assink.csv", index=False)
    return d / "assink.csv"


def test_three_level_section_equals_rma_mv_and_coef_test(assink, tmp_path):
    job = pool_job(assink, tmp_path / "out", cluster="study", structure="3level", rho=0.6,
                   mods="deltype", label="esid", plots=False)  # fmt: skip
    m = job.results["multilevel"]
    assert m["structure"] == "3level" and m["rho"] == 0.6
    np.testing.assert_allclose(m["model"]["sigma2"], REF["sigma2"], rtol=2e-6)
    np.testing.assert_allclose(m["model"]["beta"], REF["beta"], rtol=1e-6)
    np.testing.assert_allclose(m["model"]["se"], REF["se"], rtol=1e-6)
    np.testing.assert_allclose(m["model"]["I2"], REF["I2"], rtol=2e-6)
    assert m["model"]["QM"] == pytest.approx(REF["QM"], rel=1e-6)
    assert m["model"]["QE"] == pytest.approx(REF["QE"], rel=1e-10)
    np.testing.assert_allclose(m["robust"]["se"], REF["robust_se"], rtol=1e-6)
    np.testing.assert_allclose(m["robust"]["df"], REF["robust_df"], rtol=1e-5)
    np.testing.assert_allclose(m["robust"]["pval"], REF["robust_p"], rtol=1e-5)
    lo = [r["ci_lb"] for r in m["confint"]]
    np.testing.assert_allclose(lo, [REF["ci_sigma2"][k][1] for k in ("1", "2")], rtol=1e-3)
    assert m["model"]["coef_names"] == ["intrcpt", "deltypegeneral", "deltypeovert"]
    report = (tmp_path / "out" / "report.md").read_text()
    assert "## Multilevel model" in report and "I² by level: cluster 38.0%" in report
    assert "Multilevel (3level)" in job.summary


def test_structured_section_through_the_cli(tmp_path):
    """Two outcomes per trial, UN across them, from the command line."""
    rng = np.random.default_rng(0)
    trial = np.repeat(np.arange(12), 2)
    outcome = np.tile(["AL", "PD"], 12)
    yi = np.where(outcome == "PD", 0.35, -0.3) + rng.normal(0, 0.15, 24)
    pd.DataFrame({"trial": trial, "outcome": outcome, "yi": yi, "vi": 0.01}).to_csv(
        tmp_path / "t.csv", index=False
    )
    res = CliRunner().invoke(app, ["pool", str(tmp_path / "t.csv"), "--cluster", "trial",
                                   "--structure", "UN", "--inner", "outcome", "--mods", "outcome",
                                   "--out", str(tmp_path / "o"), "--no-progress"])  # fmt: skip
    assert res.exit_code == 0, res.output
    m = json.loads((tmp_path / "o" / "results.json").read_text())["multilevel"]
    assert m["model"]["structure"] == "UN" and m["model"]["struct_levels"] == ["AL", "PD"]
    assert len(m["model"]["tau2"]) == 2 and len(m["model"]["rho"]) == 1
    # every parameter with its profile interval, as MultilevelResult.confint gives it
    assert [r["component"] for r in m["confint"]] == ["tau2 (AL)", "tau2 (PD)", "rho (PD, AL)"]
    report = (tmp_path / "o" / "report.md").read_text()
    r = m["confint"][2]
    assert f"| rho (PD, AL) | {fmt_num(r['estimate'])} | {fmt_num(r['ci_lb'])}" in report
    assert "| tau^2 (AL) |" in report


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"structure": "3level"}, r"--structure 3level needs --cluster"),
        ({"structure": "nested", "cluster": "study"}, r"--structure must be one of 3level, CS"),
        ({"structure": "UN", "cluster": "study"}, r"--structure UN needs --inner"),
        ({"structure": "3level", "cluster": "study", "inner": "esid"}, r"--inner goes with"),
        ({"inner": "esid"}, r"--inner needs --structure"),
        ({"structure": "3level", "cluster": "study", "rho": 1.0}, r"--rho must lie in \(-1, 1\)"),
        ({"structure": "CS", "cluster": "study", "inner": "nope"}, r"column 'nope'"),
    ],
)
def test_bad_multilevel_options_are_refused_before_any_work(assink, tmp_path, kw, match):
    with pytest.raises(StudyTableError, match=match):
        pool_job(assink, tmp_path / "out", plots=False, **kw)
    assert not (tmp_path / "out").exists()

"""Cluster-robust inference against clubSandwich 0.5.8 (vcovCR CR0/CR1/CR2, coef_test with
Satterthwaite df, conf_int) on metafor rma.uni fits: tests/reference/robust_reference.json,
written by tests/reference/make_robust_reference.R."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from spatialmeta.meta_analysis import pool
from spatialmeta.meta_analysis.robust import robust

REF = json.loads((Path(__file__).resolve().parents[1] / "reference" /
                  "robust_reference.json").read_text())["cases"]  # fmt: skip
CASES = {c["name"]: c for c in REF}


def _fit(c):
    X = np.column_stack(c["X"])
    mods = None if X.shape[1] == 1 else X[:, 1:]
    return pool(np.array(c["yi"]), np.array(c["vi"]), method=c["method"], mods=mods)


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("kind", ["CR0", "CR1", "CR2"])
def test_robust_covariances_equal_clubsandwich(name, kind):
    c = CASES[name]
    fit = _fit(c)
    np.testing.assert_allclose(np.atleast_1d(fit.beta), c["beta"], rtol=1e-9)
    res = robust(fit, c["cluster"], type=kind)
    np.testing.assert_allclose(res.vcov, np.column_stack(c[f"vcov_{kind}"]), rtol=1e-9)
    assert res.n_clusters == len(set(c["cluster"])) and res.type == kind
    if kind == "CR1":
        np.testing.assert_allclose(res.df, c["df_CR1"], rtol=1e-9)


@pytest.mark.parametrize("name", sorted(CASES))
def test_cr2_satterthwaite_tests_equal_coef_test(name):
    c = CASES[name]
    res = robust(_fit(c), c["cluster"])
    for mine, ref in ((res.se, "se_CR2"), (res.tval, "tstat_CR2"), (res.df, "df_CR2"),
                      (res.pval, "p_CR2"), (res.ci_lb, "ci_lb_CR2"), (res.ci_ub, "ci_ub_CR2")):  # fmt: skip
        np.testing.assert_allclose(mine, c[ref], rtol=1e-9, err_msg=ref)
    frame = res.to_frame()
    assert list(frame.columns)[:3] == ["beta", "se", "tval"] and len(frame) == np.size(c["beta"])
    assert "Satterthwaite" in res.summary()


def test_cluster_labels_order_does_not_matter_and_singletons_give_hc0():
    c = CASES["konstantopoulos2011_REML"]
    fit = _fit(c)
    perm = {lab: f"z{i}" for i, lab in enumerate(sorted(set(c["cluster"]), reverse=True))}
    same = robust(fit, [perm[x] for x in c["cluster"]])
    np.testing.assert_allclose(same.vcov, robust(fit, c["cluster"]).vcov, rtol=1e-12)
    # every study its own cluster, CR0: the heteroskedasticity-consistent sandwich
    y, v = np.array(c["yi"]), np.array(c["vi"])
    w = 1 / (v + fit.tau2)
    hc0 = (w**2 * (y - fit.estimate) ** 2).sum() / w.sum() ** 2
    one = robust(fit, np.arange(y.size), type="CR0")
    assert one.vcov[0, 0] == pytest.approx(hc0, rel=1e-12)


def test_bad_input_is_named():
    c = CASES["bcg_DL_ablat"]
    fit = _fit(c)
    with pytest.raises(ValueError, match=r"`cluster` has one cluster \('x'\)"):
        robust(fit, ["x"] * 13)
    with pytest.raises(ValueError, match=r"`cluster` has 3 labels for 13 studies"):
        robust(fit, ["a", "b", "c"])
    with pytest.raises(ValueError, match=r"`cluster` is missing for study 2"):
        robust(fit, ["a", "b", None] + ["c"] * 10)
    with pytest.raises(ValueError, match=r"`type` must be one of CR0, CR1, CR2"):
        robust(fit, c["cluster"], type="CR3")
    batch = pool(np.ones((2, 4)) * [0.1, 0.2, 0.3, 0.4], np.full((2, 4), 0.05))
    with pytest.raises(ValueError, match=r"one meta-analysis at a time"):
        robust(batch, ["a", "a", "b", "b"])


def test_pool_cluster_reports_clubsandwich_values(tmp_path):
    """``spatialmeta pool --cluster study --mods year,deltype``: the report's robust table
    for the meta-regression equals clubSandwich's coef_test on the same data."""
    import pandas as pd
    from typer.testing import CliRunner

    from spatialmeta.cli import app

    c = CASES["assink2016_REML_mods"]
    X = np.column_stack(c["X"])
    # R's model matrix: levels sorted (covert the reference), columns deltypegeneral, deltypeovert
    assert c["coef_names"] == ["intrcpt", "year", "deltypegeneral", "deltypeovert"]
    deltype = np.where(X[:, 2] == 1, "general", np.where(X[:, 3] == 1, "overt", "covert"))
    frame = pd.DataFrame({"yi": c["yi"], "vi": c["vi"], "year": X[:, 1], "deltype": deltype,
                          "study": c["cluster"]})  # fmt: skip
    frame.to_csv(tmp_path / "a.csv", index=False)
    out = tmp_path / "rep"
    res = CliRunner().invoke(app, ["pool", str(tmp_path / "a.csv"), "--mods", "year,deltype",
                                   "--cluster", "study", "--out", str(out), "--no-progress"])  # fmt: skip
    assert res.exit_code == 0, res.output
    r = json.loads((out / "results.json").read_text())["robust"]["meta_regression"]
    for key, ref in (("se", "se_CR2"), ("df", "df_CR2"), ("pval", "p_CR2")):
        np.testing.assert_allclose(r[key], c[ref], rtol=1e-8, err_msg=key)
    htz = json.loads((out / "results.json").read_text())["robust"]["moderators_htz"]
    assert htz["F"] == pytest.approx(c["wald_F"], rel=1e-8) and htz["df_num"] == 3
    assert "## Cluster-robust inference" in (out / "report.md").read_text()
    assert "Cluster-robust (CR2, 17 clusters)" in res.output
    frame.assign(study="one").to_csv(tmp_path / "b.csv", index=False)
    bad = CliRunner().invoke(app, ["pool", str(tmp_path / "b.csv"), "--cluster", "study",
                                   "--out", str(tmp_path / "rep2"), "--no-progress"])  # fmt: skip
    assert bad.exit_code == 2 and "holds one cluster ('one')" in bad.output
    assert not (tmp_path / "rep2").exists()
    bad = CliRunner().invoke(app, ["pool", str(tmp_path / "a.csv"), "--cluster", "nope",
                                   "--out", str(tmp_path / "rep3"), "--no-progress"])  # fmt: skip
    assert bad.exit_code == 2 and "--cluster names column 'nope'" in bad.output


@pytest.mark.parametrize("name", sorted(CASES))
def test_htz_wald_tests_equal_clubsandwich(name):
    """Wald_test(..., constrain_zero(moderators), test = "HTZ"), and on the meta-regression
    constrain_equal of two deltype levels (a contrast matrix)."""
    c = CASES[name]
    res = robust(_fit(c), c["cluster"])
    w = res.wald_test(np.atleast_1d(c["wald_which"]) - 1)
    for got, ref in ((w.F, "wald_F"), (w.delta, "wald_delta"), (w.df_denom, "wald_df_denom"),
                     (w.pval, "wald_p"), (w.Q / w.df_num, "wald_chisq_F")):  # fmt: skip
        assert got == pytest.approx(c[ref], rel=1e-9), ref
    assert w.df_num == np.size(c["wald_which"])
    default = res.wald_test()  # every coefficient but the intercept (or the intercept alone)
    assert default.F == pytest.approx(w.F, rel=1e-12)
    if "equal_F" in c:
        ix = np.atleast_1d(c["equal_which"]) - 1
        C = np.zeros((len(ix) - 1, len(res.beta)))
        C[:, ix[0]] = -1.0
        C[np.arange(len(ix) - 1), ix[1:]] = 1.0
        eq = res.wald_test(C)
        assert eq.F == pytest.approx(c["equal_F"], rel=1e-9)
        assert eq.df_denom == pytest.approx(c["equal_df_denom"], rel=1e-9)
        assert eq.pval == pytest.approx(c["equal_p"], rel=1e-9)
    assert "HTZ test (CR2): F(" in w.summary()


def test_wald_test_contrasts_by_name_and_bad_ones():
    c = CASES["assink2016_REML_mods"]
    res = robust(_fit(c), c["cluster"])
    by_name = res.wald_test([res.coef_names[1]])
    assert by_name.F == pytest.approx(res.tval[1] ** 2, rel=1e-12)  # q = 1: F = t^2
    assert by_name.df_denom == pytest.approx(res.df[1], rel=1e-10)  # and df = Satterthwaite's
    with pytest.raises(ValueError, match=r"no coefficient 'nope'"):
        res.wald_test(["nope"])
    with pytest.raises(ValueError, match=r"index 9 is not in 0..3"):
        res.wald_test([9])
    with pytest.raises(ValueError, match=r"needs 4 columns; got 2"):
        res.wald_test(np.ones((1, 2)))


MV = {c["name"]: c for c in json.loads((Path(__file__).resolve().parents[1] / "reference" /
                                        "robust_reference.json").read_text())["mv"]}  # fmt: skip


@pytest.mark.parametrize("name", sorted(MV))
def test_robust_on_three_level_models_equals_clubsandwich(name):
    """coef_test(rma.mv(...), vcov = "CR2", cluster = outer level): the working covariance
    is the fitted Sigma's blocks (not diagonal); agreement is bounded by the variance
    components' (1e-7), so 1e-7 here."""
    from spatialmeta.meta_analysis.multilevel import pool_mv

    c = MV[name]
    mods = None if not c["mods"] else np.array(c["mods"])[:, None]
    outer, inner = np.array(c["outer"]), np.array(c["inner"])
    fit = pool_mv(c["yi"], c["vi"], random=[outer, (outer, inner)], mods=mods)
    res = robust(fit, c["cluster"])
    np.testing.assert_allclose(res.se, c["se_CR2"], rtol=1e-7)
    np.testing.assert_allclose(res.df, c["df_CR2"], rtol=1e-7)
    np.testing.assert_allclose(res.pval, c["p_CR2"], rtol=1e-7)
    np.testing.assert_allclose(robust(fit, c["cluster"], type="CR1").vcov,
                               np.column_stack(c["vcov_CR1"]), rtol=1e-7)  # fmt: skip
    with pytest.raises(ValueError, match=r"links effects of different clusters"):
        robust(fit, np.arange(len(c["yi"])))  # clusters below the model's outer level

"""subgroups() against metafor (separate and common tau^2), batching, reports and errors."""

from __future__ import annotations

import importlib
import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from spatialmeta.meta_analysis import fitted
from spatialmeta.meta_analysis.pool import PoolResult, pool
from spatialmeta.meta_analysis.subgroups import SubgroupResult, subgroups
from spatialmeta.tasks.estimates import Estimates

# the package exports the function subgroups, which hides the module of the same name
subgroups_module = importlib.import_module("spatialmeta.meta_analysis.subgroups")

REFERENCE = Path(__file__).resolve().parents[1] / "reference" / "diagnostics_reference.json"
DATA = json.loads(REFERENCE.read_text())
RTOL, ATOL = 1e-6, 1e-8
GROUP_FIELDS = (
    "k", "estimate", "se", "zval", "pval", "ci_lb", "ci_ub", "tau2", "se_tau2", "I2", "H2",
    "QE", "QEp", "pi_lb", "pi_ub",
)  # fmt: skip
COMMON_FIELDS = ("estimate", "se", "zval", "pval", "ci_lb", "ci_ub", "pi_lb", "pi_ub")


def _num(x) -> float:
    return np.nan if x is None else float(x)


def _arr(values, n: int) -> np.ndarray:
    # metafor's predict() gives no prediction interval (NULL -> []) for common-effect models.
    return np.full(n, np.nan) if not values else np.array([_num(x) for x in values])


def _data(name: str) -> tuple[np.ndarray, np.ndarray]:
    ds = DATA["datasets"][name]
    return np.array(ds["yi"], dtype=float), np.array(ds["vi"], dtype=float)


def _id(e: dict) -> str:
    return f"{e['dataset']}-{e['grouping']}-{e['method']}-{e['test']}"


def _quiet(*args, **kwargs) -> SubgroupResult:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return subgroups(*args, **kwargs)


def _entry(dataset: str, grouping: str, method: str, test: str) -> dict:
    for e in DATA["subgroups"]:
        if (e["dataset"], e["grouping"], e["method"], e["test"]) == (
            dataset,
            grouping,
            method,
            test,
        ):
            return e
    raise KeyError((dataset, grouping, method, test))


def _check_separate(res: SubgroupResult, e: dict, index=()) -> None:
    for g, name in enumerate(e["levels"]):
        for f in GROUP_FIELDS:
            got = float(np.asarray(getattr(res, f))[(*index, g)])
            ref = _num(e["per_group"][name][f])
            np.testing.assert_allclose(got, ref, rtol=RTOL, atol=ATOL, err_msg=f"{name} {f}")
    for f in ("Qb", "Qb_pval"):
        got = float(np.asarray(getattr(res, f))[index])
        np.testing.assert_allclose(got, _num(e[f]), rtol=RTOL, atol=ATOL, err_msg=f)
    assert int(np.asarray(res.Qb_df)[index]) == e["Qb_df"]


def test_reference_covers_the_requested_groupings():
    got = {(e["dataset"], e["grouping"]) for e in DATA["subgroups"]}
    assert ("bcg", "alloc") in got and len(got) >= 3
    alloc = _entry("bcg", "alloc", "REML", "z")
    assert alloc["levels"] == ["alternate", "random", "systematic"]
    for method in ("EE", "DL", "REML"):
        for test in ("z", "knha"):
            _entry("bcg", "alloc", method, test)


@pytest.mark.parametrize("e", DATA["subgroups"], ids=_id)
def test_separate_tau2_matches_metafor(e):
    yi, vi = _data(e["dataset"])
    res = _quiet(yi, vi, e["groups"], method=e["method"], test=e["test"])
    assert isinstance(res, SubgroupResult) and res.tau2_model == "separate"
    assert res.levels == e["levels"]
    _check_separate(res, e)
    assert np.isnan(res.Qb_ddf) and res.model is None
    assert (res.QM, res.QMdf, res.QMp) == (res.Qb, res.Qb_df, res.Qb_pval)


@pytest.mark.parametrize("e", DATA["subgroups"], ids=_id)
def test_common_tau2_matches_metafor(e):
    yi, vi = _data(e["dataset"])
    c = e["common"]
    n = len(e["levels"])
    res = _quiet(yi, vi, e["groups"], method=e["method"], test=e["test"], tau2="common")
    assert res.tau2_model == "common"
    for f in COMMON_FIELDS:
        np.testing.assert_allclose(getattr(res, f), _arr(c[f], n), rtol=RTOL, atol=ATOL,
                                   err_msg=f)  # fmt: skip
    np.testing.assert_allclose(res.tau2, np.full(n, _num(c["tau2"])), rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(res.Qb, _num(c["QM"]), rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(res.Qb_pval, _num(c["QMp"]), rtol=RTOL, atol=ATOL)
    assert res.Qb_df == c["QMdf"][0]
    np.testing.assert_equal(res.Qb_ddf, _num(c["QMdf"][1]))
    for f in ("tau2", "QE", "QEp", "I2", "H2"):
        np.testing.assert_allclose(getattr(res.model, f), _num(c[f]), rtol=RTOL, atol=ATOL,
                                   err_msg=f"model {f}")  # fmt: skip
    # per-subgroup Cochran Q does not involve tau^2: the same as each subgroup's own fit
    for g, name in enumerate(e["levels"]):
        for f in ("QE", "QEp"):
            np.testing.assert_allclose(res.__getattribute__(f)[g], _num(e["per_group"][name][f]),
                                       rtol=RTOL, atol=ATOL)  # fmt: skip


def test_fixed_effect_conventions_coincide():
    # With a common effect there is no tau^2, so both conventions give the same estimates.
    e = _entry("bcg", "alloc", "EE", "z")
    yi, vi = _data("bcg")
    sep = subgroups(yi, vi, e["groups"], method="FE")
    com = subgroups(yi, vi, e["groups"], method="FE", tau2="common")
    np.testing.assert_allclose(com.estimate, sep.estimate, rtol=1e-12)
    np.testing.assert_allclose(com.Qb, sep.Qb, rtol=1e-10)


# --------------------------------------------------------------------------- batching


def test_batch_with_shared_groups_matches_metafor_per_row():
    e = _entry("bcg", "alloc", "REML", "knha")
    yi, vi = _data("bcg")
    y = np.stack([yi, yi + 0.5, yi])
    v = np.stack([vi, vi, vi])
    res = _quiet(y, v, e["groups"], method="REML", test="knha")
    assert res.estimate.shape == (3, 3) and res.Qb.shape == (3,)
    _check_separate(res, e, (0,))
    _check_separate(res, e, (2,))
    np.testing.assert_allclose(res.estimate[1] - 0.5, res.estimate[0], rtol=1e-9)
    np.testing.assert_allclose(res.Qb[1], res.Qb[0], rtol=1e-9)
    frame = res.to_frame()
    assert isinstance(frame.index, pd.MultiIndex) and len(frame) == 9
    assert frame.loc[(2, "random"), "tval"] == pytest.approx(e["per_group"]["random"]["zval"])


def test_batch_with_per_row_groups_padding_and_empty_subgroups():
    # Row 0: dat.bcg by allocation; row 1: dat.molloy2014 by design, padded to k = 16.
    # Levels are the union; a subgroup without studies in a row is NaN with k = 0.
    e0 = _entry("bcg", "alloc", "DL", "z")
    e1 = _entry("molloy2014", "design", "DL", "z")
    y0, v0 = _data("bcg")
    y1, v1 = _data("molloy2014")
    k = y1.size
    y = np.full((2, k), np.nan)
    v = np.full((2, k), np.nan)
    g = np.full((2, k), None, dtype=object)
    y[0, : y0.size], v[0, : y0.size], g[0, : y0.size] = y0, v0, e0["groups"]
    y[1], v[1], g[1] = y1, v1, e1["groups"]
    res = _quiet(y, v, g, method="DL")
    assert res.levels == sorted(e0["levels"] + e1["levels"])
    for row, e in ((0, e0), (1, e1)):
        for name in res.levels:
            j = res.levels.index(name)
            if name in e["levels"]:
                for f in GROUP_FIELDS:
                    np.testing.assert_allclose(
                        np.asarray(getattr(res, f))[row, j], _num(e["per_group"][name][f]),
                        rtol=RTOL, atol=ATOL, err_msg=f"{row} {name} {f}",
                    )  # fmt: skip
            else:
                assert res.k[row, j] == 0 and np.isnan(res.estimate[row, j])
        np.testing.assert_allclose(res.Qb[row], _num(e["Qb"]), rtol=RTOL, atol=ATOL)
        assert res.Qb_df[row] == e["Qb_df"]
    with pytest.raises(ValueError, match=r"tau2=\"common\" needs every subgroup.*row \[0\]"):
        subgroups(y, v, g, method="DL", tau2="common")


def test_one_pool_call_for_all_subgroups(monkeypatch):
    calls = []
    real = subgroups_module.pool

    def counting(yi, vi=None, **kw):
        calls.append(np.shape(yi))
        return real(yi, vi, **kw)

    monkeypatch.setattr(subgroups_module, "pool", counting)
    monkeypatch.setattr(fitted, "pool", counting)  # the overall fit of raw arrays
    yi, vi = _data("bcg")
    groups = _entry("bcg", "alloc", "REML", "z")["groups"]
    subgroups(np.stack([yi] * 4), np.stack([vi] * 4), groups, method="REML")
    assert calls == [(4, 13), (12, 13)]  # the overall fit, then all 4 x 3 subgroup rows


# --------------------------------------------------------------------------- results


def test_group_returns_a_pool_result_and_frames_and_reports():
    e = _entry("bcg", "alloc", "REML", "z")
    yi, vi = _data("bcg")
    labels = DATA["datasets"]["bcg"]["labels"]
    res = subgroups(yi, vi, e["groups"], method="REML", labels=labels)
    alt = res.group("alternate")
    assert isinstance(alt, PoolResult) and alt.k == 2
    assert alt.estimate == pytest.approx(_num(e["per_group"]["alternate"]["estimate"]), rel=RTOL)
    assert list(alt.labels) == [labels[4], labels[5]]
    with pytest.raises(KeyError, match="no subgroup 'other'"):
        res.group("other")

    frame = res.to_frame()
    assert list(frame.index) == e["levels"]
    assert list(frame.columns) == [*GROUP_FIELDS, "converged"]
    assert frame.loc["random", "k"] == 7

    text = res.summary()
    assert f"QM(df = 2) = {_num(e['Qb']):.4f}, p-val = {_num(e['Qb_pval']):.4f}" in text
    assert "separate tau^2 (REML)" in text and str(res) == text
    md = res.to_markdown()
    assert md.count("\n| ") == 4  # header + three subgroups
    assert "| systematic | 4 |" in md and "Test for subgroup differences: QM(df = 2)" in md

    common = subgroups(yi, vi, e["groups"], method="REML", test="knha", tau2="common")
    c = _entry("bcg", "alloc", "REML", "knha")["common"]
    assert f"F(df1 = 2, df2 = 10) = {_num(c['QM']):.4f}" in common.summary()
    assert f"Common tau^2 = {_num(c['tau2']):.4f}" in common.to_markdown()

    out = res.to_dict()
    json.dumps(out)
    assert out["levels"] == e["levels"] and out["Qb_df"] == 2
    assert out["overall"]["estimate"] == pytest.approx(pool(yi, vi).estimate)

    batch = subgroups(np.stack([yi, yi]), np.stack([vi, vi]), e["groups"])
    with pytest.raises(ValueError, match="single meta-analysis"):
        batch.group("random")
    assert batch.summary().count("Test for Subgroup Differences") == 2


def test_categorical_order_and_moderator_column():
    e = _entry("hackshaw1998", "design", "DL", "z")
    yi, vi = _data("hackshaw1998")
    cat = pd.Categorical(e["groups"], categories=["cohort", "case-control"])
    res = subgroups(yi, vi, cat, method="DL")
    assert res.levels == ["cohort", "case-control"]
    assert res.estimate[0] == pytest.approx(_num(e["per_group"]["cohort"]["estimate"]), rel=RTOL)
    est = Estimates(yi=yi, vi=vi, mods=pd.DataFrame({"design": e["groups"]}))
    res2 = subgroups(est, groups="design", method="DL")
    np.testing.assert_allclose(res2.estimate[::-1], res.estimate, rtol=1e-12)
    with pytest.raises(ValueError, match=r"no such column \(moderators: \['design'\]\)"):
        subgroups(est, groups="country")


# --------------------------------------------------------------------------- bad input


def test_groups_length_mismatch_and_missing_groups():
    yi, vi = _data("bcg")
    groups = _entry("bcg", "alloc", "DL", "z")["groups"]
    with pytest.raises(ValueError, match=r"`groups` has 12 entries but `yi` has 13 studies"):
        subgroups(yi, vi, groups[:-1])
    bad = list(groups)
    bad[4] = None
    with pytest.raises(ValueError, match="missing \\(None/NaN\\) for study 4"):
        subgroups(yi, vi, bad)
    with pytest.raises(TypeError, match="`groups` is missing"):
        subgroups(yi, vi)
    with pytest.raises(ValueError, match="`tau2` must be"):
        subgroups(yi, vi, groups, tau2="pooled")
    with pytest.raises(ValueError, match="`single_study` must be"):
        subgroups(yi, vi, groups, single_study="drop")
    with pytest.raises(ValueError, match="`method` must be one of"):
        subgroups(yi, vi, groups, method="XX")
    # a missing group is fine where the study itself is missing
    y, v = yi.copy(), vi.copy()
    y[4] = v[4] = np.nan
    res = subgroups(y, v, bad, method="FE")
    assert res.k.tolist() == [1, 7, 4]


def test_single_study_subgroup_under_random_effects():
    yi, vi = _data("bcg")
    groups = ["a"] * 12 + ["b"]
    labels = DATA["datasets"]["bcg"]["labels"]
    with pytest.raises(
        ValueError,
        match=r"subgroup 'b' has a single study \(study 12 \(Comstock et al, 1976\)\).*"
        r"single_study='fixed'",
    ):
        subgroups(yi, vi, groups, method="REML", labels=labels)
    res = subgroups(yi, vi, groups, method="REML", test="knha", single_study="fixed")
    # metafor's rma() on one study: tau^2 = 0 and a z test
    assert res.estimate[1] == pytest.approx(yi[12]) and res.se[1] == pytest.approx(np.sqrt(vi[12]))
    assert res.tau2[1] == 0 and res.k.tolist() == [12, 1]
    a = pool(yi[:12], vi[:12], method="REML", test="knha")
    w = np.array([1 / a.se**2, 1 / vi[12]])
    b = np.array([a.estimate, yi[12]])
    bar = (w * b).sum() / w.sum()
    assert res.Qb == pytest.approx((w * (b - bar) ** 2).sum(), rel=1e-10)
    # a common effect or a common tau^2 needs nothing special
    assert subgroups(yi, vi, groups, method="FE").k.tolist() == [12, 1]
    common = subgroups(yi, vi, groups, method="REML", tau2="common")
    assert common.estimate[1] == pytest.approx(yi[12])
    assert common.se[1] == pytest.approx(np.sqrt(vi[12] + common.model.tau2))


def test_common_tau2_in_a_batch_with_shared_and_per_row_groups():
    e = _entry("bcg", "alloc", "REML", "z")
    yi, vi = _data("bcg")
    y, v = np.stack([yi, yi + 0.5]), np.stack([vi, vi])
    res = _quiet(y, v, e["groups"], method="REML", tau2="common")
    c = e["common"]
    np.testing.assert_allclose(res.estimate[0], _arr(c["estimate"], 3), rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(res.estimate[1] - 0.5, res.estimate[0], rtol=1e-9)
    np.testing.assert_allclose(res.Qb, [_num(c["QM"])] * 2, rtol=RTOL, atol=ATOL)
    # one design per row: the second row's groups are a rotation of the first's
    g = np.array([e["groups"], np.roll(e["groups"], 3)], dtype=object)
    per_row = _quiet(y, v, g, method="REML", tau2="common")
    one = _quiet(y[1], v[1], g[1], method="REML", tau2="common")
    np.testing.assert_allclose(per_row.estimate[0], _arr(c["estimate"], 3), rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(per_row.estimate[1], one.estimate, rtol=1e-10)
    np.testing.assert_allclose(per_row.Qb[1], one.Qb, rtol=1e-10)
    assert per_row.summary().count("Common tau^2") == 2

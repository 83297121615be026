"""leave1out, cumul, influence, rstudent and rstandard against metafor, batching and errors."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from spatialmeta.meta_analysis import diagnostics, fitted
from spatialmeta.meta_analysis.diagnostics import (
    CumulResult,
    InfluenceResult,
    LeaveOneOutResult,
    ResidualResult,
    cumul,
    influence,
    leave1out,
    rstandard,
    rstudent,
)
from spatialmeta.meta_analysis.pool import pool
from spatialmeta.tasks.estimates import Estimates

REFERENCE = Path(__file__).resolve().parents[1] / "reference" / "diagnostics_reference.json"
DATA = json.loads(REFERENCE.read_text())
METAFOR = json.loads((REFERENCE.parent / "metafor_reference.json").read_text())
RTOL, ATOL = 1e-6, 1e-8
FIT_FIELDS = ("estimate", "se", "zval", "pval", "ci_lb", "ci_ub", "Q", "Qp", "tau2", "I2", "H2")
INF_FIELDS = (
    "rstudent", "dffits", "cook_d", "cov_r", "tau2_del", "QE_del", "hat", "weight", "dfbs",
    "resid", "resid_se",
)  # fmt: skip
METHODS = ("EE", "DL", "HE", "HS", "SJ", "ML", "REML", "EB", "PM")


def _arr(values) -> np.ndarray:
    """JSON list -> float array (null -> NaN, "Inf" -> inf)."""
    return np.array([np.nan if x is None else float(x) for x in values])


def _data(name: str) -> tuple[np.ndarray, np.ndarray]:
    ds = DATA["datasets"][name]
    return _arr(ds["yi"]), _arr(ds["vi"])


def _labels(name: str) -> list[str]:
    return DATA["datasets"][name]["labels"]


def _id(entry: dict) -> str:
    extra = entry.get("type", "")
    if "order" in entry and entry["order"] != sorted(entry["order"]):
        extra = "permuted"
    return "-".join(x for x in (entry["dataset"], entry["method"], entry["test"], extra) if x)


def _close(got, ref, what: str) -> None:
    np.testing.assert_allclose(np.asarray(got, dtype=float), _arr(ref), rtol=RTOL, atol=ATOL,
                               err_msg=what)  # fmt: skip


def _quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


# --------------------------------------------------------------------------- reference grid


def test_reference_inputs_are_those_of_metafor_reference():
    for name, ds in DATA["datasets"].items():
        src = METAFOR["datasets"][name]
        np.testing.assert_array_equal(_arr(ds["yi"]), np.array(src["yi"], dtype=float))
        np.testing.assert_array_equal(_arr(ds["vi"]), np.array(src["vi"], dtype=float))


def test_reference_covers_the_requested_grid():
    names = {"bcg", "normand1999", "hackshaw1998", "raudenbush1985", "molloy2014", "pritz1997"}
    for key in ("leave1out", "cumul", "influence", "rstandard"):
        grid = {(e["dataset"], e["method"], e["test"]) for e in DATA[key]}
        for name in names:
            for method in METHODS:
                for test in ("z", "knha"):
                    assert (name, method, test) in grid, (key, name, method, test)
    permuted = {
        (e["dataset"], e["method"]) for e in DATA["cumul"] if e["order"] != sorted(e["order"])
    }
    assert {(n, m) for n in names for m in ("EE", "DL", "REML")} <= permuted


@pytest.mark.parametrize("entry", DATA["leave1out"], ids=_id)
def test_leave1out_matches_metafor(entry):
    yi, vi = _data(entry["dataset"])
    res = _quiet(leave1out, yi, vi, method=entry["method"], test=entry["test"])
    assert isinstance(res, LeaveOneOutResult)
    for f in FIT_FIELDS:
        _close(getattr(res, f), entry[f], f)
    assert res.converged.all()
    np.testing.assert_array_equal(res.k, np.full(yi.size, yi.size - 1))


@pytest.mark.parametrize("entry", DATA["cumul"], ids=_id)
def test_cumul_matches_metafor(entry):
    yi, vi = _data(entry["dataset"])
    order = None if entry["order"] == sorted(entry["order"]) else entry["order"]
    res = _quiet(cumul, yi, vi, order=order, method=entry["method"], test=entry["test"])
    assert isinstance(res, CumulResult)
    for f in FIT_FIELDS:
        _close(getattr(res, f), entry[f], f)
    np.testing.assert_array_equal(res.order, entry["order"])
    np.testing.assert_array_equal(res.k, np.arange(1, yi.size + 1))


@pytest.mark.parametrize("entry", DATA["influence"], ids=_id)
def test_influence_matches_metafor(entry):
    yi, vi = _data(entry["dataset"])
    if "error" in entry:
        # metafor stops (Var(b) = 0 with a Knapp-Hartung scale of 0); we return NaN and warn.
        assert entry["dataset"] == "identical" and entry["test"] == "knha"
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            res = influence(yi, vi, method=entry["method"], test=entry["test"])
        assert any("scale factor is 0" in str(w.message) for w in caught)
        for f in ("dffits", "cook_d", "cov_r", "dfbs", "rstudent"):
            assert np.isnan(getattr(res, f)).all(), f
        assert not res.is_infl.any()
        return
    res = _quiet(influence, yi, vi, method=entry["method"], test=entry["test"])
    assert isinstance(res, InfluenceResult)
    for f in INF_FIELDS:
        _close(getattr(res, f), entry[f], f)
    np.testing.assert_array_equal(res.is_infl, entry["inf"])
    np.testing.assert_array_equal(res.inf, np.where(entry["inf"], "*", ""))


@pytest.mark.parametrize(
    "entry", [e for e in DATA["influence"] if "error" not in e and e["test"] == "z"], ids=_id
)
def test_rstudent_matches_metafor(entry):
    yi, vi = _data(entry["dataset"])
    res = _quiet(rstudent, yi, vi, method=entry["method"], test=entry["test"])
    assert isinstance(res, ResidualResult) and res.type == "deleted"
    _close(res.resid, entry["resid"], "resid")
    _close(res.se, entry["resid_se"], "se")
    _close(res.z, entry["rstudent"], "z")


@pytest.mark.parametrize("entry", DATA["rstandard"], ids=_id)
def test_rstandard_matches_metafor(entry):
    # rstandard does not depend on the test; metafor's knha fits give the same values.
    yi, vi = _data(entry["dataset"])
    res = _quiet(rstandard, yi, vi, method=entry["method"], type=entry["type"])
    for f in ("resid", "se", "z"):
        _close(getattr(res, f), entry[f], f)


def test_influence_flags_known_outliers_in_bcg():
    # metafor flags TPT Madras, 1980 (study 8) under REML with a z test.
    entry = next(
        e
        for e in DATA["influence"]
        if (e["dataset"], e["method"], e["test"]) == ("bcg", "REML", "z")
    )
    res = influence(*_data("bcg"), method="REML", labels=_labels("bcg"))
    flagged = [lab for lab, f in zip(_labels("bcg"), res.is_infl, strict=True) if f]
    assert flagged == [lab for lab, f in zip(_labels("bcg"), entry["inf"], strict=True) if f]


# --------------------------------------------------------------------------- batching


def _padded(names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    k = max(len(DATA["datasets"][n]["yi"]) for n in names)
    y = np.full((len(names), k), np.nan)
    v = np.full((len(names), k), np.nan)
    for i, n in enumerate(names):
        yi, vi = _data(n)
        y[i, : yi.size], v[i, : vi.size] = yi, vi
    return y, v


def _ref(key: str, name: str, method: str, test: str, permuted: bool = False) -> dict:
    for e in DATA[key]:
        if (e["dataset"], e["method"], e["test"]) == (name, method, test):
            if key != "cumul" or (e["order"] != sorted(e["order"])) == permuted:
                return e
    raise KeyError((key, name, method, test))


@pytest.mark.parametrize("method", ["DL", "REML", "PM"])
def test_leave1out_batch_with_padding_matches_metafor_row_by_row(method):
    names = ["bcg", "normand1999", "molloy2014", "pritz1997"]
    y, v = _padded(names)
    res = _quiet(leave1out, y, v, method=method, test="knha")
    assert res.estimate.shape == y.shape
    for i, n in enumerate(names):
        k = len(DATA["datasets"][n]["yi"])
        entry = _ref("leave1out", n, method, "knha")
        for f in FIT_FIELDS:
            _close(getattr(res, f)[i, :k], entry[f], f"{n} {f}")
            assert np.isnan(getattr(res, f)[i, k:]).all()
        assert (res.k[i, :k] == k - 1).all()


def test_influence_and_cumul_batch_in_two_batch_dims_match_metafor():
    names = ["bcg", "normand1999", "raudenbush1985", "molloy2014"]
    y, v = _padded(names)
    y4, v4 = y.reshape(2, 2, -1), v.reshape(2, 2, -1)
    inf = _quiet(influence, y4, v4, method="REML")
    cum = _quiet(cumul, y4, v4, method="REML")
    assert inf.rstudent.shape == y4.shape and cum.estimate.shape == y4.shape
    for i, n in enumerate(names):
        k = len(DATA["datasets"][n]["yi"])
        idx = np.unravel_index(i, (2, 2))
        e_inf = _ref("influence", n, "REML", "z")
        e_cum = _ref("cumul", n, "REML", "z")
        for f in INF_FIELDS:
            _close(getattr(inf, f)[idx][:k], e_inf[f], f"{n} {f}")
        np.testing.assert_array_equal(inf.is_infl[idx][:k], e_inf["inf"])
        for f in FIT_FIELDS:
            _close(getattr(cum, f)[idx][:k], e_cum[f], f"{n} {f}")
            assert np.isnan(getattr(cum, f)[idx][k:]).all()


def test_cumul_permuted_order_in_a_batch():
    names = ["bcg", "bcg"]
    y, v = _padded(names)
    y[1] += 0.25  # shifting every effect shifts estimate and CI only
    entry = _ref("cumul", "bcg", "DL", "z", permuted=True)
    res = cumul(y, v, order=entry["order"], method="DL")
    _close(res.estimate[0], entry["estimate"], "estimate")
    _close(res.estimate[1] - 0.25, entry["estimate"], "shifted estimate")
    _close(res.tau2[1], entry["tau2"], "tau2")


def test_one_pool_call_for_all_subsets(monkeypatch):
    calls = []
    real = fitted.pool

    def counting(yi, vi=None, **kw):
        calls.append(np.shape(yi))
        return real(yi, vi, **kw)

    # every fit of the diagnostics goes through fitted: the full fit of raw arrays, and the
    # subsets (fitted.fits_by_k)
    monkeypatch.setattr(fitted, "pool", counting)
    y, v = _padded(["bcg", "normand1999", "hackshaw1998"])
    _quiet(leave1out, y, v, method="REML")
    # the full fit, then the whole (3 x 37) batch of leave-one-out subsets at once
    assert calls == [(3, 37), (sum(len(DATA["datasets"][n]["yi"]) for n in
                                  ("bcg", "normand1999", "hackshaw1998")), 37)]  # fmt: skip
    calls.clear()
    _quiet(cumul, *_data("bcg"), method="REML")
    assert calls == [(13,), (12, 13), (1, 13)]  # full fit, k >= 2 steps, the k = 1 step


def test_chunked_fits_agree_with_one_block(monkeypatch):
    y, v = _padded(["bcg", "normand1999", "molloy2014", "pritz1997"])
    whole = _quiet(influence, y, v, method="ML")
    monkeypatch.setattr(diagnostics, "_CHUNK_ELEMENTS", 50)  # a row or so per block
    parts = _quiet(influence, y, v, method="ML")
    for f in INF_FIELDS:
        np.testing.assert_allclose(getattr(parts, f), getattr(whole, f), rtol=1e-12, equal_nan=True)


def test_missing_study_in_cumul_is_na_and_skipped():
    yi, vi = _data("molloy2014")
    y, v = yi.copy(), vi.copy()
    y[3] = v[3] = np.nan
    res = cumul(y, v, method="REML")
    assert np.isnan(res.estimate[3]) and np.isnan(res.tau2[3])
    keep = np.arange(yi.size) != 3
    full = pool(yi[keep], vi[keep], method="REML")
    assert res.estimate[-1] == pytest.approx(full.estimate, rel=1e-12)
    assert res.k[-1] == yi.size - 1
    mid = pool(yi[[0, 1, 2, 4]], vi[[0, 1, 2, 4]], method="REML")
    assert res.estimate[4] == pytest.approx(mid.estimate, rel=1e-12)
    assert res.tau2[4] == pytest.approx(mid.tau2, rel=1e-12)


def test_leave1out_where_fisher_scoring_fails_matches_metafors_damped_fit():
    # Leaving out the last study leaves the set on which metafor's REML Fisher scoring
    # does not converge (metafor's leave1out gives NA there); ours is rescued, and every
    # fit agrees with metafor's leave1out of the damped fit (make_rescue_reference.R)
    ds = METAFOR["datasets"]["nonconverge"]
    yi = np.array([*ds["yi"], 0.3])
    vi = np.array([*ds["vi"], 0.05])
    want = json.loads((REFERENCE.parent / "rescue_reference.json").read_text())
    want = want["nonconverge"]["leave1out"]
    res = leave1out(yi, vi, method="REML")
    assert res.converged.all()
    for f in ("estimate", "tau2", "se"):
        got, ref = getattr(res, f), np.asarray(want[f])
        np.testing.assert_allclose(got[7], ref[7], rtol=1e-9, err_msg=f)  # the rescued fit
        # the others converge by Fisher scoring, within its threshold of the optimum
        np.testing.assert_allclose(got[:7], ref[:7], rtol=1e-4, atol=1e-5, err_msg=f)


# --------------------------------------------------------------------------- results


def test_frames_use_metafor_columns_and_labels():
    yi, vi = _data("bcg")
    labels = _labels("bcg")
    l1o = leave1out(yi, vi, method="REML", test="knha", labels=labels)
    frame = l1o.to_frame()
    assert list(frame.columns) == [
        "estimate", "se", "tval", "pval", "ci_lb", "ci_ub", "Q", "Qp", "tau2", "I2", "H2",
        "k", "converged",
    ]  # fmt: skip
    assert list(frame.index) == labels
    assert l1o.tval is l1o.zval
    fe = leave1out(yi, vi, method="FE").to_frame()
    assert "tau2" not in fe.columns and "zval" in fe.columns  # metafor drops tau2 for FE
    with pytest.raises(AttributeError, match="tval"):
        _ = leave1out(yi, vi, method="FE").tval

    order = np.argsort(np.array(DATA["datasets"]["bcg"]["yi"]), kind="stable")
    cum = cumul(yi, vi, order=order, labels=labels, method="DL").to_frame()
    assert list(cum.index) == [labels[i] for i in order]
    assert cumul(yi, vi, order=order).to_frame().index.tolist() == order.tolist()

    inf = influence(yi, vi, labels=labels).to_frame()
    assert list(inf.columns) == [
        "rstudent", "dffits", "cook_d", "cov_r", "tau2_del", "QE_del", "hat", "weight",
        "dfbs", "inf",
    ]  # fmt: skip
    assert set(inf["inf"]) <= {"*", ""}

    y, v = _padded(["bcg", "normand1999"])
    batch = leave1out(y, v, method="DL").to_frame()
    assert isinstance(batch.index, pd.MultiIndex) and len(batch) == y.size
    assert batch.loc[(1, 12), "estimate"] != batch.loc[(1, 12), "estimate"]  # NaN (padding)


def test_to_dict_is_json_ready():
    yi, vi = _data("normand1999")
    for res in (
        leave1out(yi, vi, test="knha"),
        cumul(yi, vi),
        influence(yi, vi),
        rstandard(yi, vi),
        rstudent(yi, vi),
    ):
        out = res.to_dict()
        text = json.dumps(out)
        assert "NaN" not in text
    d = leave1out(yi, vi, test="knha").to_dict()
    assert "tval" in d and "zval" not in d and len(d["estimate"]) == yi.size
    assert d["full"]["estimate"] == pytest.approx(pool(yi, vi).estimate)


def test_estimates_input_keeps_labels():
    yi, vi = _data("pritz1997")
    est = Estimates(yi=yi, vi=vi, labels=np.array(_labels("pritz1997")))
    res = leave1out(est, method="DL")
    assert list(res.to_frame().index) == _labels("pritz1997")
    _close(res.estimate, _ref("leave1out", "pritz1997", "DL", "z")["estimate"], "estimate")
    with pytest.raises(TypeError, match="`vi` must be None"):
        influence(est, vi)


# --------------------------------------------------------------------------- bad input


def test_leave1out_needs_three_studies_under_random_effects():
    with pytest.raises(ValueError, match=r"at least 3 studies.*k - 1 >= 2.*k = 2.*method='FE'"):
        leave1out([0.1, 0.2], [0.01, 0.02], method="REML")
    y = np.array([[0.1, 0.2, 0.3], [0.1, 0.2, np.nan]])
    v = np.full(y.shape, 0.02)
    v[1, 2] = np.nan
    with pytest.raises(ValueError, match=r"row \[1\] of `yi` has k = 2"):
        leave1out(y, v, method="DL")
    with pytest.raises(ValueError, match=r"row \[1\] of `yi` has k = 2"):
        influence(y, v, method="PM")
    # a common effect needs only two
    res = leave1out(y, v, method="FE")
    assert res.k[1, :2].tolist() == [1, 1] and res.estimate[1, 0] == pytest.approx(0.2)
    with pytest.raises(ValueError, match=r"at least 2 studies.*k = 1"):
        leave1out([0.1], [0.01], method="FE")


def test_cumul_order_must_be_a_permutation():
    yi, vi = _data("normand1999")
    with pytest.raises(ValueError, match=r"permutation of 0\.\.8.*shape \(8,\)"):
        cumul(yi, vi, order=list(range(8)))
    with pytest.raises(ValueError, match="study 2 appears 2 times and study 3 is missing"):
        cumul(yi, vi, order=[0, 1, 2, 2, 4, 5, 6, 7, 8])
    with pytest.raises(ValueError, match=r"`order\[0\]` = 9 is not a study position"):
        cumul(yi, vi, order=[9, 1, 2, 3, 4, 5, 6, 7, 8])
    with pytest.raises(ValueError, match=r"`order\[1\]` = 1\.5 is not an integer"):
        cumul(yi, vi, order=[0, 1.5, 2, 3, 4, 5, 6, 7, 8])
    with pytest.raises(ValueError, match="integer study positions"):
        cumul(yi, vi, order=list("abcdefghi"))
    # an order given as floats that are whole numbers is accepted
    res = cumul(yi, vi, order=np.arange(9.0)[::-1], method="DL")
    assert res.order.tolist() == list(range(8, -1, -1))


def test_other_bad_input_is_reported_by_pool_or_named():
    yi, vi = _data("bcg")
    with pytest.raises(ValueError, match="`vi` has shape"):
        leave1out(yi, vi[:-1])
    with pytest.raises(ValueError, match=r"`vi` must be > 0.*vi\[2\]"):
        influence(yi, np.where(np.arange(yi.size) == 2, 0.0, vi))
    with pytest.raises(ValueError, match="`method` must be one of"):
        cumul(yi, vi, method="XX")
    with pytest.raises(ValueError, match="`test` must be"):
        leave1out(yi, vi, test="t")
    with pytest.raises(ValueError, match="`type` must be 'marginal' or 'conditional'"):
        rstandard(yi, vi, type="deleted")
    with pytest.raises(TypeError, match="`vi` is missing"):
        leave1out(yi)

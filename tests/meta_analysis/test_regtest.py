"""Egger's regression test (regtest) and PET-PEESE against metafor::regtest; batching; errors."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from spatialmeta.meta_analysis.pool import pool
from spatialmeta.meta_analysis.regtest import PetPeeseResult, RegtestResult, pet_peese, regtest

REF = Path(__file__).resolve().parents[1] / "reference"
DATA = json.loads((REF / "regression_reference.json").read_text())
# regtest(predictor = "vi") of metafor's damped REML fit of `nonconverge`, per test
RESCUE = json.loads((REF / "rescue_reference.json").read_text())["nonconverge"]["regtest_vi"]
BASE = json.loads((REF / "metafor_reference.json").read_text())["datasets"]
RTOL, ATOL = 1e-6, 1e-8
FIELDS = ("zval", "pval", "dfs", "est", "ci_lb", "ci_ub", "est_pval")


def _data(name):
    ds = BASE[name]
    return np.array(ds["yi"], dtype=float), np.array(ds["vi"], dtype=float)


def _kwargs(row):
    kw = dict(model=row["model"], predictor=row["predictor"])
    if row["model"] == "rma":
        kw.update(method=row["method"], test=row["test"])
    return kw


def _id(row):
    setting = "lm" if row["model"] == "lm" else f"rma-{row['method']}-{row['test']}"
    return f"{row['dataset']}-{setting}-{row['predictor']}"


def _quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


def test_reference_covers_models_and_predictors():
    grid = {(r["dataset"], r["model"], r["method"], r["predictor"]) for r in DATA["regtest"]}
    for name in ("bcg", "normand1999", "hackshaw1998", "raudenbush1985", "molloy2014"):
        for predictor in ("sei", "vi"):
            assert (name, "lm", None, predictor) in grid
            for method in ("REML", "DL", "EE"):
                assert (name, "rma", method, predictor) in grid


@pytest.mark.parametrize("row", DATA["regtest"], ids=_id)
def test_matches_metafor(row):
    yi, vi = _data(row["dataset"])
    if "error" in row:
        # metafor's default stops (Fisher scoring did not converge); ours is rescued and
        # equals regtest() of metafor's damped fit (stepadj 0.5)
        assert "did not converge" in row["error"] and row["predictor"] == "vi"
        row = {**row, **RESCUE[row["test"]]}
    res = _quiet(regtest, yi, vi, **_kwargs(row))
    assert isinstance(res, RegtestResult)
    for name in FIELDS:
        want = np.nan if row[name] is None else row[name]
        np.testing.assert_allclose(
            getattr(res, name), want, rtol=RTOL, atol=ATOL, equal_nan=True, err_msg=name
        )


@pytest.mark.parametrize("model", ["lm", "rma"])
def test_pet_peese_follows_the_conditional_rule(model):
    chosen = set()
    names = ["bcg", "normand1999", "hackshaw1998", "raudenbush1985", "molloy2014", "pritz1997"]
    if model == "lm":
        names.append("nonconverge")  # (metafor's REML fit of PEESE does not converge there)
    for name in names:
        rows = {
            r["predictor"]: r
            for r in DATA["regtest"]
            if r["dataset"] == name
            and r["model"] == model
            and (model == "lm" or (r["method"], r["test"]) == ("REML", "z"))
        }
        pet, peese = rows["sei"], rows["vi"]
        res = pet_peese(*_data(name), model=model)
        assert isinstance(res, PetPeeseResult)
        use_peese = pet["est_pval"] < 0.10
        want = peese if use_peese else pet
        assert res.use_peese is use_peese and res.chosen == ("PEESE" if use_peese else "PET")
        chosen.add(res.chosen)
        for ours, theirs in (("estimate", "est"), ("ci_lb", "ci_lb"), ("ci_ub", "ci_ub"),
                             ("pval", "est_pval")):  # fmt: skip
            np.testing.assert_allclose(getattr(res, ours), want[theirs], rtol=RTOL, atol=ATOL)
        assert res.pet.est == pytest.approx(pet["est"], rel=RTOL)
        assert res.peese.est == pytest.approx(peese["est"], rel=RTOL)
    assert chosen == {"PET", "PEESE"}  # both branches of the rule are exercised


def test_alpha_moves_the_rule():
    yi, vi = _data("bcg")
    p = pet_peese(yi, vi).pet.est_pval
    assert pet_peese(yi, vi, alpha=min(0.99, p * 1.01)).use_peese is True
    assert pet_peese(yi, vi, alpha=p * 0.99).use_peese is False


def _padded(names):
    kmax = max(len(BASE[n]["yi"]) for n in names)
    y = np.full((len(names), kmax), np.nan)
    v = np.full((len(names), kmax), np.nan)
    for i, n in enumerate(names):
        yi, vi = _data(n)
        y[i, : yi.size], v[i, : vi.size] = yi, vi
    return y, v


@pytest.mark.parametrize(
    "kwargs",
    [dict(model="lm"), dict(model="rma"), dict(model="rma", test="knha", method="DL")],
    ids=["lm", "rma", "rma-DL-knha"],
)
def test_batched_rows_equal_single_tests(kwargs):
    names = ["bcg", "normand1999", "hackshaw1998", "raudenbush1985", "molloy2014", "pritz1997"]
    y, v = _padded(names)
    y[1], v[1] = np.roll(y[1], 3), np.roll(v[1], 3)
    batch = regtest(y, v, **kwargs)
    assert batch.batch_shape == (len(names),)
    pp = pet_peese(y, v, **kwargs)
    for i, n in enumerate(names):
        single = regtest(*_data(n), **kwargs)
        for f in FIELDS:
            np.testing.assert_allclose(
                getattr(batch, f)[i], getattr(single, f), rtol=1e-9, atol=1e-12, equal_nan=True
            )
        assert pp.estimate[i] == pytest.approx(pet_peese(*_data(n), **kwargs).estimate, rel=1e-9)
    frame = batch.to_frame()
    assert len(frame) == len(names) and list(frame["model"].unique()) == [kwargs["model"]]
    json.dumps(batch.to_dict(), allow_nan=False)
    assert "Row 5:" in batch.summary() and "Row 2:" in pp.summary()


def test_from_a_fitted_model():
    yi, vi = _data("bcg")
    res = pool(yi, vi, method="DL", test="knha")
    a = regtest(res)
    b = regtest(yi, vi, method="DL", test="knha")
    for f in FIELDS:
        assert getattr(a, f) == pytest.approx(getattr(b, f), rel=1e-12)
    assert a.tval == a.zval and a.dfs == 11
    # With moderators: sei is added to the model's design; no limit estimate.
    ds = DATA["mods_datasets"]["bcg"]
    lat = np.array(ds["columns"]["ablat"], dtype=float)
    reg = pool(yi, vi, mods=pd.DataFrame({"ablat": lat}))
    with_mods = regtest(reg)
    direct = pool(yi, vi, mods=pd.DataFrame({"ablat": lat, "sei": np.sqrt(vi)}))
    assert with_mods.zval == pytest.approx(direct.zval[2], rel=1e-12)
    assert np.isnan(with_mods.est) and np.isnan(with_mods.ci_lb)
    assert with_mods.fit.coef_names == ("intrcpt", "ablat", "sei")
    # user weights travel with the model
    w = 1 / np.sqrt(vi)
    weighted = regtest(pool(yi, vi, weights=w))
    assert weighted.zval == pytest.approx(regtest(yi, vi, weights=w).zval, rel=1e-12)
    assert weighted.zval != pytest.approx(regtest(yi, vi).zval, rel=1e-6)


def test_sample_size_predictors():
    yi, vi = _data("bcg")
    ni = np.round(1.0 / vi) + 10
    res = regtest(yi, vi, predictor="ninv", ni=ni)
    direct = pool(yi, vi, mods={"ninv": 1.0 / ni})
    assert res.zval == pytest.approx(direct.zval[1], rel=1e-12)
    assert res.est == pytest.approx(direct.beta[0], rel=1e-12)
    sq = regtest(yi, vi, predictor="sqrtni", ni=ni)
    assert np.isnan(sq.est)  # no limit at infinite precision for sqrt(ni)
    assert "Predictor: square root sample size" in sq.summary()


def test_summary_reads_like_metafor():
    yi, vi = _data("bcg")
    text = regtest(yi, vi).summary()
    assert "Model:     mixed-effects meta-regression model" in text
    assert "Predictor: standard error" in text
    assert "Test for Funnel Plot Asymmetry: z = -0.8033, p = 0.4218" in text
    assert "Limit Estimate (as sei -> 0):   b = -0.5104 (CI: -1.1182, 0.0974)" in text
    lm = regtest(yi, vi, model="lm").summary()
    assert "Model:     weighted regression with multiplicative dispersion" in lm
    assert "Test for Funnel Plot Asymmetry: t = -1.4013, df = 11, p = 0.1887" in lm
    assert "Limit Estimate (as sei -> 0):   b = -0.1909 (CI: -0.6753, 0.2935)" in lm
    pp = pet_peese(yi, vi).summary()
    assert "PET-PEESE" in pp and "use PET" in pp
    json.dumps(pet_peese(yi, vi).to_dict(), allow_nan=False)
    with pytest.raises(AttributeError, match="tval"):
        _ = regtest(yi, vi).tval


def test_errors():
    yi, vi = _data("bcg")
    with pytest.raises(ValueError, match=r"`model` must be 'rma' or 'lm'; got 'glm'"):
        regtest(yi, vi, model="glm")
    with pytest.raises(ValueError, match=r"`predictor` must be one of .*got 'se'"):
        regtest(yi, vi, predictor="se")
    with pytest.raises(ValueError, match=r"needs the sample sizes: pass `ni`"):
        regtest(yi, vi, predictor="ni")
    with pytest.raises(ValueError, match=r"`ni` must be finite and > 0.*ni\[2\]"):
        regtest(yi, vi, predictor="ninv", ni=np.where(np.arange(13) == 2, 0.0, 50.0))
    with pytest.raises(ValueError, match=r"rank-deficient design.*'intrcpt', 'sei' are collinear"):
        regtest(yi, np.full(13, 0.1))
    with pytest.raises(ValueError, match=r"too few studies.*k = 2 studies but the model has p = 2"):
        regtest(yi[:2], vi[:2])
    with pytest.raises(TypeError, match="do not pass `vi`"):
        regtest(pool(yi, vi), vi)
    with pytest.raises(ValueError, match=r"`alpha` must be between 0 and 1"):
        pet_peese(yi, vi, alpha=5)

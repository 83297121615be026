"""Meta-regression, pool(..., mods=...), against metafor reference values; batching; errors."""

from __future__ import annotations

import importlib
import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from spatialmeta.meta_analysis import estimators, regression
from spatialmeta.meta_analysis.pool import PoolResult, pool
from spatialmeta.tasks.estimates import Estimates

REF = Path(__file__).resolve().parents[1] / "reference"
DATA = json.loads((REF / "regression_reference.json").read_text())
BASE = json.loads((REF / "metafor_reference.json").read_text())["datasets"]
RTOL, ATOL = 1e-6, 1e-8
METHODS = ("EE", "DL", "HE", "HS", "SJ", "ML", "REML", "EB", "PM")
# model name -> (dataset, columns, intercept, user weights)
MODELS = {
    "bcg_ablat": ("bcg", ["ablat"], True, False),
    "bcg_ablat_year": ("bcg", ["ablat", "year"], True, False),
    "bcg_ablat_noint": ("bcg", ["ablat"], False, False),
    "bcg_ablat_weights": ("bcg", ["ablat"], True, True),
    "molloy2014_meanage_design": ("molloy2014", ["meanage", "design"], True, False),
    "raudenbush1985_tester_weeks": ("raudenbush1985", ["tester", "weeks"], True, False),
}
FIELDS = (
    "beta", "se", "zval", "pval", "ci_lb", "ci_ub", "vb", "tau2", "se_tau2", "I2", "H2",
    "R2", "vt", "QE", "QEp", "QM", "QMp", "QMdf",
)  # fmt: skip

regression_module = importlib.import_module("spatialmeta.meta_analysis.regression")


def _num(x):
    """JSON (nested) -> float array with NaN for null."""
    if isinstance(x, list):
        return np.array([_num(v) for v in x], dtype=float)
    return np.nan if x is None else float(x)


def _inputs(model: str):
    name, cols, intercept, weighted = MODELS[model]
    ds = DATA["mods_datasets"][name]
    yi, vi = np.array(ds["yi"]), np.array(ds["vi"])
    frame = pd.DataFrame({c: ds["columns"][c] for c in cols})
    kwargs = dict(intercept=intercept)
    if weighted:
        kwargs["weights"] = 1 / np.sqrt(vi)  # as the R script (there rounded to 15 digits)
    return yi, vi, frame, kwargs


def _quiet(*args, **kwargs) -> PoolResult:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pool(*args, **kwargs)


def _close(got, want, what):
    np.testing.assert_allclose(
        np.asarray(got, dtype=float), _num(want), rtol=RTOL, atol=ATOL, equal_nan=True,
        err_msg=what,
    )  # fmt: skip


def _fit_id(fit):
    extra = "" if fit["level"] == 95 else f"-level{fit['level']}"
    return f"{fit['model']}-{fit['method']}-{fit['test']}{extra}"


def test_reference_covers_every_estimator_and_test():
    grid = {(f["model"], f["method"], f["test"]) for f in DATA["mods_fits"]}
    for model in MODELS:
        for method in METHODS:
            for test in ("z", "knha"):
                assert (model, method, test) in grid
    assert not [f for f in DATA["mods_fits"] if "error" in f]  # metafor converged on all


@pytest.mark.parametrize("fit", DATA["mods_fits"], ids=_fit_id)
def test_matches_metafor(fit):
    yi, vi, frame, kwargs = _inputs(fit["model"])
    res = _quiet(yi, vi, mods=frame, method=fit["method"], test=fit["test"], level=fit["level"],
                 **kwargs)  # fmt: skip
    assert res.has_mods and res.converged is True
    assert res.k == fit["k"] and res.p == fit["p"]
    assert list(res.coef_names) == fit["coef_names"]
    for name in FIELDS:
        _close(getattr(res, name), fit[name], name)
    _close(res.estimate, fit["beta"], "estimate")
    _close(res.weights, fit["weights_pct"], "weights")
    pr = fit["predict"]
    got = res.predict(np.array(pr["newmods"]))
    for name in ("pred", "se", "ci_lb", "ci_ub", "pi_lb", "pi_ub"):
        if fit["method"] == "EE" and name.startswith("pi"):
            assert np.isnan(getattr(got, name)).all()  # as pool(): no prediction interval for EE
            continue
        _close(getattr(got, name), pr[name], f"predict {name}")
    if "confint" in fit:
        from spatialmeta.meta_analysis.profile import confint_tau2

        ci = confint_tau2(res)
        for name in ("tau2", "tau", "I2", "H2"):
            got = [getattr(ci, name), getattr(ci, name + "_lb"), getattr(ci, name + "_ub")]
            _close(got, fit["confint"][name], f"confint {name}")
        assert (ci.lb_sign, ci.ub_sign, ci.ci_null) == (
            fit["confint"]["lb_sign"], fit["confint"]["ub_sign"], fit["confint"]["ci_null"],
        )  # fmt: skip


def test_r2_is_zero_when_the_model_without_moderators_has_no_heterogeneity():
    # molloy2014 with DL: tau^2 of the intercept-only model is positive, but the
    # moderators explain more than all of it: metafor truncates R^2 at 0.
    fits = [f for f in DATA["mods_fits"] if f["model"].startswith("molloy") and f["R2"] == 0]
    assert fits
    for fit in fits:
        yi, vi, frame, kwargs = _inputs(fit["model"])
        res = _quiet(yi, vi, mods=frame, method=fit["method"], test=fit["test"], **kwargs)
        assert res.R2 == 0.0


# ------------------------------------------------------------ input forms ----


def test_frame_dict_array_and_formula_dummies_agree():
    yi, vi, frame, _ = _inputs("molloy2014_meanage_design")
    a = pool(yi, vi, mods=frame)
    dummy = (frame["design"] == "prospective").astype(float).to_numpy()
    b = pool(yi, vi, mods=np.column_stack([frame["meanage"], dummy]))
    c = pool(yi, vi, mods={"meanage": frame["meanage"].to_numpy(), "design": list(frame["design"])})
    assert a.coef_names == ("intrcpt", "meanage", "designprospective")
    assert b.coef_names == ("intrcpt", "mod1", "mod2")
    assert c.coef_names == a.coef_names
    for other in (b, c):
        np.testing.assert_allclose(other.beta, a.beta, rtol=1e-12)
        np.testing.assert_allclose(other.vb, a.vb, rtol=1e-12)
        assert other.tau2 == pytest.approx(a.tau2, rel=1e-12)


def test_categorical_order_bool_and_series():
    yi, vi, frame, _ = _inputs("raudenbush1985_tester_weeks")
    cat = frame.assign(tester=pd.Categorical(frame["tester"], categories=["blind", "aware"]))
    res = pool(yi, vi, mods=cat)
    assert res.coef_names == ("intrcpt", "testeraware", "weeks")
    flag = frame.assign(tester=frame["tester"] == "blind")
    assert pool(yi, vi, mods=flag).coef_names == ("intrcpt", "testerTRUE", "weeks")
    ref = pool(yi, vi, mods=frame)
    np.testing.assert_allclose(pool(yi, vi, mods=flag).beta, ref.beta, rtol=1e-12)
    series = pool(yi, vi, mods=frame["weeks"])
    assert series.coef_names == ("intrcpt", "weeks")
    np.testing.assert_allclose(series.beta, pool(yi, vi, mods=frame["weeks"].to_numpy()).beta)


def test_estimates_moderator_table_by_name():
    yi, vi, frame, _ = _inputs("bcg_ablat_year")
    est = Estimates(yi=yi, vi=vi, mods=frame, measure="log RR")
    res = pool(est, mods=["ablat"])
    direct = pool(yi, vi, mods=frame[["ablat"]])
    np.testing.assert_allclose(res.beta, direct.beta, rtol=1e-14)
    assert res.measure == "log RR" and res.coef_names == ("intrcpt", "ablat")
    assert pool(est, mods="year").coef_names == ("intrcpt", "year")
    with pytest.raises(ValueError, match=r"not columns of the moderator table.*'ablat', 'year'"):
        pool(est, mods=["lat"])
    with pytest.raises(ValueError, match="`yi` has no moderator table"):
        pool(yi, vi, mods=["ablat"])


def test_intercept_column_among_mods_is_detected_as_metafor():
    yi, vi, frame, _ = _inputs("bcg_ablat")
    x = np.column_stack([frame["ablat"], np.ones(len(yi))])
    res = pool(yi, vi, mods=x, intercept=False)
    assert res.int_incl and res.coef_names == ("intrcpt", "mod1")
    np.testing.assert_allclose(res.beta, pool(yi, vi, mods=frame).beta, rtol=1e-12)
    assert res.QMdf[0] == 1  # the intercept is left out of the omnibus test


@pytest.mark.parametrize("test", ["z", "knha"])
@pytest.mark.parametrize("method", METHODS)
def test_intercept_only_design_reproduces_pool(method, test):
    # The design-matrix engine on a column of ones must be the intercept-only model,
    # including the iteration count of Fisher scoring / Brent's method.
    for name in ("bcg", "hackshaw1998", "nonconverge", "identical"):
        yi, vi = np.array(BASE[name]["yi"]), np.array(BASE[name]["vi"])
        a = _quiet(yi, vi, method=method, test=test)
        b = _quiet(yi, vi, mods=np.ones((yi.size, 1)), intercept=False, method=method, test=test)
        assert b.coef_names == ("intrcpt",) and np.isnan(b.R2)
        for f in ("estimate", "se", "pval", "ci_lb", "ci_ub", "tau2", "se_tau2", "I2", "H2",
                  "QE", "QEp", "QM", "QMp", "vt", "converged", "iterations"):  # fmt: skip
            np.testing.assert_allclose(
                np.asarray(getattr(b, f), dtype=float).ravel(),
                np.asarray(getattr(a, f), dtype=float).ravel(),
                rtol=1e-9, atol=1e-12, equal_nan=True, err_msg=f"{name} {f}",
            )  # fmt: skip


# ---------------------------------------------------------------- batches ----


def _padded_batch():
    """bcg ~ ablat + year and molloy ~ meanage + design in one (2, kmax, 3) batch."""
    rows = []
    for model in ("bcg_ablat_year", "molloy2014_meanage_design"):
        yi, vi, frame, _ = _inputs(model)
        x = regression.read_mods(frame, yi.shape)[0]
        rows.append((yi, vi, x))
    kmax = max(r[0].size for r in rows)
    y = np.full((2, kmax), np.nan)
    v = np.full((2, kmax), np.nan)
    x = np.full((2, kmax, 2), np.nan)
    for i, (yi, vi, xi) in enumerate(rows):
        y[i, : yi.size], v[i, : vi.size], x[i, : yi.size] = yi, vi, xi
    # scatter the missing studies of row 0 instead of only padding the tail
    y[0], v[0], x[0] = np.roll(y[0], 2), np.roll(v[0], 2), np.roll(x[0], 2, axis=0)
    return y, v, x, rows


@pytest.mark.parametrize("test", ["z", "knha"])
@pytest.mark.parametrize("method", METHODS)
def test_batched_rows_equal_single_fits(method, test):
    y, v, x, rows = _padded_batch()
    batch = _quiet(y, v, mods=x, method=method, test=test)
    assert batch.batch_shape == (2,) and batch.beta.shape == (2, 3)
    assert batch.vb.shape == (2, 3, 3) and batch.X.shape == (2, y.shape[1], 3)
    for i, (yi, vi, xi) in enumerate(rows):
        single = _quiet(yi, vi, mods=xi, method=method, test=test)
        for f in FIELDS + ("k", "converged", "iterations", "estimate"):
            np.testing.assert_allclose(
                np.asarray(getattr(batch, f), dtype=float)[i],
                np.asarray(getattr(single, f), dtype=float),
                rtol=1e-9, atol=1e-12, equal_nan=True, err_msg=f"row {i} {f}",
            )  # fmt: skip
        row = batch.row(i)
        assert row.k == single.k and row.X.shape == (single.k, 3)
        np.testing.assert_allclose(row.beta, single.beta, rtol=1e-9)
        assert isinstance(row.QMdf, tuple) and len(row.QMdf) == 2
        assert "Mixed-Effects" in row.summary() or "Fixed-Effects" in row.summary()
        np.testing.assert_allclose(
            batch.predict([[30.0, 1.0]]).pred[i], single.predict([[30.0, 1.0]]).pred
        )


def test_shared_design_broadcasts_over_rows_and_nan_mods_of_missing_studies_are_ignored():
    yi, vi, frame, _ = _inputs("bcg_ablat")
    x = frame[["ablat"]].to_numpy(dtype=float)
    y = np.stack([yi, yi + 0.3, yi])
    v = np.stack([vi, vi, vi])
    y[2, 4], v[2, 4] = np.nan, np.nan
    xb = np.broadcast_to(x, (3,) + x.shape).copy()
    xb[2, 4, 0] = np.nan  # moderator of a missing study: ignored
    a = pool(y, v, mods=x)
    b = pool(y, v, mods=xb)
    np.testing.assert_allclose(a.beta, b.beta, rtol=1e-12)
    np.testing.assert_allclose(a.beta[1, 0] - a.beta[0, 0], 0.3, rtol=1e-9)
    single = pool(np.delete(yi, 4), np.delete(vi, 4), mods=np.delete(x, 4, axis=0))
    np.testing.assert_allclose(a.beta[2], single.beta, rtol=1e-9)
    frame_out = a.to_frame()
    assert {"estimate_intrcpt", "estimate_mod1", "se_mod1", "QM", "R2"} <= set(frame_out)
    assert len(frame_out) == 3


class _Counter:
    def __init__(self, fn):
        self.fn, self.calls = fn, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.fn(*args, **kwargs)


@pytest.mark.parametrize("method", ["REML", "ML", "EB", "PM", "SJ"])
def test_thousands_of_meta_regressions_iterate_together(method, monkeypatch):
    rng = np.random.default_rng(7)
    n, kmax = 3000, 15
    k = rng.integers(5, kmax + 1, n)
    x = rng.normal(size=(n, kmax, 2))
    vi = rng.uniform(0.01, 0.3, (n, kmax))
    tau = rng.uniform(0.0, 0.5, n)[:, None]
    yi = 0.1 + 0.3 * x[..., 0] + rng.normal(0, np.sqrt(vi + tau**2))
    missing = np.arange(kmax) >= k[:, None]
    yi[missing] = vi[missing] = np.nan
    counter = _Counter(regression._proj)
    monkeypatch.setattr(regression_module, "_proj", counter)
    res = _quiet(yi, vi, mods=x, method=method)
    # Rows looped in Python would call _proj thousands of times (Fisher scoring's steps,
    # then the rescue's grid and Brent steps on the rows it failed on, all rows at once)
    assert counter.calls <= 2 * estimators.MAXITER + estimators.GRID + 12
    monkeypatch.undo()
    assert res.beta.shape == (n, 3) and res.converged.mean() > 0.99
    for i in rng.choice(n, 4, replace=False):
        keep = ~missing[i]
        single = _quiet(yi[i][keep], vi[i][keep], mods=x[i][keep], method=method)
        assert single.iterations == res.iterations[i]
        for f in ("beta", "se", "tau2", "se_tau2", "QM", "QE", "R2", "I2"):
            np.testing.assert_allclose(
                np.asarray(getattr(res, f))[i], getattr(single, f), rtol=1e-9, atol=1e-12,
                equal_nan=True, err_msg=f"row {i} {f}",
            )  # fmt: skip


# ---------------------------------------------------------------- outputs ----


def test_summary_reads_like_metafor():
    yi, vi, frame, _ = _inputs("bcg_ablat_year")
    text = pool(yi, vi, mods=frame).summary()
    assert "Mixed-Effects Model (k = 13; tau^2 estimator: REML)" in text
    assert "tau^2 (estimated amount of residual heterogeneity):     0.1108 (SE = 0.0845)" in text
    assert "I^2 (residual heterogeneity / unaccounted variability): 71.98%" in text
    assert "R^2 (amount of heterogeneity accounted for):            64.63%" in text
    assert "QE(df = 10) = 28.3251, p-val = 0.0016" in text
    assert "Test of Moderators (coefficients 2:3):" in text
    assert "QM(df = 2) = 12.2043, p-val = 0.0022" in text
    assert "ablat     -0.0280   0.0102  -2.7371  0.0062   -0.0481  -0.0080  **" in text
    kh = pool(yi, vi, mods=frame[["ablat"]], method="DL", test="knha").summary()
    assert "F(df1 = 1, df2 = 11) =" in kh and "tval  df" in kh
    with pytest.warns(UserWarning, match="not meant for common-effect"):
        fe = pool(yi, vi, mods=frame[["ablat"]], method="EE", test="knha")
    text = fe.summary()
    assert "Fixed-Effects with Moderators Model (k = 13)" in text
    assert "F(df1 = 1, df2 = 11) = 43.4873, p-val < .0001" in text
    assert "R^2 (amount of heterogeneity accounted for):            77.98%" in text
    noint = pool(yi, vi, mods=frame[["ablat"]], intercept=False).summary()
    assert "Test of Moderators (coefficient 1):" in noint and "R^2" not in noint


def test_to_dict_is_json_and_intercept_only_results_keep_scalars():
    yi, vi, frame, _ = _inputs("bcg_ablat")
    d = pool(yi, vi, mods=frame).to_dict()
    json.dumps(d, allow_nan=False)
    assert d["coef_names"] == ["intrcpt", "ablat"] and len(d["beta"]) == 2
    assert d["QMdf"] == [1.0, None] and len(d["vb"]) == 2
    plain = pool(yi, vi)
    assert isinstance(plain.estimate, float) and plain.R2 is None and not plain.has_mods
    assert plain.beta.shape == (1,) and plain.QM == pytest.approx(plain.zval**2)
    assert plain.predict().pred == plain.estimate
    with pytest.raises(ValueError, match="no moderators"):
        plain.predict([1.0])


def test_predict_without_newmods_gives_fitted_values():
    yi, vi, frame, _ = _inputs("bcg_ablat")
    res = pool(yi, vi, mods=frame)
    fitted = res.predict().pred
    np.testing.assert_allclose(fitted, res.beta[0] + res.beta[1] * frame["ablat"], rtol=1e-12)
    full = res.predict(np.array([[1.0, 20.0]]), intercept=False).pred
    np.testing.assert_allclose(full, res.predict([20.0]).pred)
    with pytest.raises(ValueError, match=r"`newmods` has 3 columns but the model has 2"):
        res.predict(np.ones((2, 3)))


# ----------------------------------------------------------------- errors ----


def _bcg():
    yi, vi, frame, _ = _inputs("bcg_ablat_year")
    return yi, vi, frame


@pytest.mark.parametrize(
    ("make", "exc", "match"),
    [
        (lambda y, v, f: dict(mods=f.iloc[:10]), ValueError,
         r"`mods` has 10 rows but `yi` has k = 13 studies"),
        (lambda y, v, f: dict(mods=np.ones((12, 2))), ValueError,
         r"`mods` has shape \(12, 2\): 12 rows but `yi` has k = 13"),
        (lambda y, v, f: dict(mods=f.assign(year=f["year"].where(f.index != 3))), ValueError,
         r"`mods` column 'year' is nan at study index \[3\].*set yi and vi to NaN"),
        (lambda y, v, f: dict(mods=f.assign(ablat=f["ablat"].where(f.index != 5, np.inf))),
         ValueError, r"`mods` column 'ablat' is inf at study index \[5\]"),
        (lambda y, v, f: dict(mods=f.assign(twice=2 * f["ablat"])), ValueError,
         r"rank-deficient design.*'ablat', 'twice' are collinear.*drop one of them"),
        (lambda y, v, f: dict(mods=f.assign(one=1.0)), ValueError,
         r"rank-deficient design.*'intrcpt', 'one' are collinear"),
        (lambda y, v, f: dict(mods=f.assign(zero=0.0)), ValueError,
         r"column 'zero' is 0 for every observed study"),
        (lambda y, v, f: dict(mods=np.random.default_rng(0).normal(size=(13, 12))), ValueError,
         r"too few studies for the number of coefficients: row \[\] has k = 13 studies but "
         r"the model has p = 13 coefficients.*k >= p \+ 1"),
        (lambda y, v, f: dict(mods=np.array(["a"] * 13)), TypeError,
         r"`mods` must be numeric.*DataFrame"),
        (lambda y, v, f: dict(mods=f.assign(g="x")), ValueError,
         r"`mods` column 'g' has a single category"),
        (lambda y, v, f: dict(mods=f.assign(g=["a", None] + ["b"] * 11)), ValueError,
         r"`mods` column 'g' is missing at study index \[1\]"),
        (lambda y, v, f: dict(mods=np.zeros((13, 0)), intercept=False), ValueError,
         r"no coefficients"),
        (lambda y, v, f: dict(mods=3.0), ValueError, r"one row per study"),
    ],
)  # fmt: skip
def test_errors_name_the_row_column_and_fix(make, exc, match):
    yi, vi, frame = _bcg()
    kwargs = make(yi, vi, frame)
    with pytest.raises(exc, match=match):
        pool(yi, vi, **kwargs)


def test_batch_errors_name_the_row():
    yi, vi, frame = _bcg()
    y = np.stack([yi, yi])
    v = np.stack([vi, vi])
    x = np.broadcast_to(frame.to_numpy(dtype=float), (2, 13, 2)).copy()
    x[1, 7, 1] = np.nan
    with pytest.raises(ValueError, match=r"column 'mod2' is nan at study index \[1, 7\]"):
        pool(y, v, mods=x)
    y[1, 3:] = v[1, 3:] = np.nan  # row 1 keeps 3 studies: too few for 3 coefficients
    with pytest.raises(ValueError, match=r"row \[1\] has k = 3 studies but the model has p = 3"):
        pool(y, v, mods=frame)
    assert pool(y, v, mods=frame, method="EE").k.tolist() == [13, 3]  # k >= p suffices for EE
    x = np.broadcast_to(frame.to_numpy(dtype=float), (2, 13, 2)).copy()
    x[1, :, 1] = 3 * x[1, :, 0]
    with pytest.raises(ValueError, match=r"rank-deficient design in row \[1\]"):
        pool(np.stack([yi, yi]), np.stack([vi, vi]), mods=x)
    with pytest.raises(ValueError, match=r"does not match the batch of `yi`"):
        pool(np.stack([yi, yi]), np.stack([vi, vi]), mods=np.ones((3, 13, 1)))

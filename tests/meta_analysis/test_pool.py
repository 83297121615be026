"""pool() against metafor reference values, batching, edge cases and errors."""

from __future__ import annotations

import doctest
import importlib
import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from spatialmeta.meta_analysis import estimators
from spatialmeta.meta_analysis import pool as pool_from_package
from spatialmeta.meta_analysis.pool import PoolResult, pool
from spatialmeta.tasks.estimates import Estimates

# The package re-exports the function `pool`, which shadows the submodule attribute.
pool_module = importlib.import_module("spatialmeta.meta_analysis.pool")

REFERENCE = Path(__file__).resolve().parents[1] / "reference" / "metafor_reference.json"
DATA = json.loads(REFERENCE.read_text())
# metafor's damped fits of the `nonconverge` set (make_rescue_reference.R), per test
RESCUE = json.loads((REFERENCE.parent / "rescue_reference.json").read_text())["nonconverge"]["fit"]
FIELDS = (
    "estimate", "se", "zval", "pval", "ci_lb", "ci_ub", "tau2", "se_tau2",
    "I2", "H2", "QE", "QEp", "pi_lb", "pi_ub",
)  # fmt: skip
METHODS = ("EE", "DL", "HE", "HS", "SJ", "ML", "REML", "EB", "PM")
RTOL, ATOL = 1e-6, 1e-8


def _value(x) -> float:
    """JSON null -> NaN, "Inf"/"-Inf" -> +-inf."""
    return np.nan if x is None else float(x)


def _data(name: str) -> tuple[np.ndarray, np.ndarray]:
    ds = DATA["datasets"][name]
    return np.array(ds["yi"]), np.array(ds["vi"])


def _quiet_pool(*args, **kwargs) -> PoolResult:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pool(*args, **kwargs)


def _fit_id(fit: dict) -> str:
    extra = "" if fit["level"] == 95 else f"-level{fit['level']}"
    extra += "" if fit["weights"] is None else "-weights"
    return f"{fit['dataset']}-{fit['method']}-{fit['test']}{extra}"


def test_reference_covers_the_requested_grid():
    names = {"bcg", "normand1999", "hackshaw1998", "raudenbush1985", "molloy2014", "pritz1997"}
    assert names <= set(DATA["datasets"])
    grid = {(f["dataset"], f["method"], f["test"]) for f in DATA["fits"]}
    for name in names:
        for method in METHODS:
            for test in ("z", "knha"):
                assert (name, method, test) in grid


@pytest.mark.parametrize("fit", DATA["fits"], ids=_fit_id)
def test_matches_metafor(fit):
    yi, vi = _data(fit["dataset"])
    kwargs = dict(method=fit["method"], test=fit["test"], level=fit["level"])
    if fit["weights"] is not None:
        kwargs["weights"] = np.array(fit["weights"])
    if "error" in fit:
        # metafor stops ("Fisher scoring algorithm did not converge"); our Fisher scoring
        # fails too, and the bracketed solve finds the optimum metafor's damped iteration
        # (control = list(stepadj = 0.5)) converges to
        assert "did not converge" in fit["error"]
        res = pool(yi, vi, **kwargs)
        assert res.converged is True and res.iterations > estimators.MAXITER
        for name, want in RESCUE[fit["test"]].items():
            np.testing.assert_allclose(getattr(res, name), want, rtol=1e-9, err_msg=name)
        return
    res = _quiet_pool(yi, vi, **kwargs)
    assert res.converged is True
    assert res.k == fit["k"]
    for name in FIELDS:
        got, want = getattr(res, name), _value(fit[name])
        np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL, equal_nan=True, err_msg=name)
    np.testing.assert_allclose(res.weights, fit["weights_pct"], rtol=RTOL, atol=ATOL)


def _padded(names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    kmax = max(len(DATA["datasets"][n]["yi"]) for n in names)
    yi = np.full((len(names), kmax), np.nan)
    vi = np.full((len(names), kmax), np.nan)
    for i, n in enumerate(names):
        y, v = _data(n)
        yi[i, : y.size], vi[i, : v.size] = y, v
    return yi, vi


@pytest.mark.parametrize("test", ["z", "knha"])
@pytest.mark.parametrize("method", METHODS)
def test_batched_rows_equal_unbatched(method, test):
    names = ["bcg", "normand1999", "hackshaw1998", "raudenbush1985", "molloy2014", "pritz1997"]
    yi, vi = _padded(names)
    # Also scatter the missing studies instead of only padding the tail.
    yi[0], vi[0] = np.roll(yi[0], 7), np.roll(vi[0], 7)
    batch = _quiet_pool(yi, vi, method=method, test=test)
    assert batch.batch_shape == (len(names),)
    assert batch.converged.shape == (len(names),) and batch.converged.dtype == bool
    np.testing.assert_array_equal(batch.k, [len(DATA["datasets"][n]["yi"]) for n in names])
    for i, n in enumerate(names):
        single = _quiet_pool(*_data(n), method=method, test=test)
        for name in FIELDS + ("k", "converged", "iterations"):
            np.testing.assert_allclose(
                getattr(batch, name)[i], getattr(single, name), rtol=1e-10, atol=1e-12,
                equal_nan=True, err_msg=f"{n} {name}",
            )  # fmt: skip
        row = batch.row(i)
        assert row.k == single.k
        np.testing.assert_allclose(row.weights, single.weights, rtol=1e-10)
        np.testing.assert_allclose(np.sort(row.yi), np.sort(single.yi))


def test_batch_of_two_axes_keeps_its_shape():
    yi, vi = _padded(["bcg", "molloy2014", "pritz1997", "normand1999"])
    res = pool(yi.reshape(2, 2, -1), vi.reshape(2, 2, -1))
    assert res.batch_shape == (2, 2)
    assert res.weights.shape == (2, 2, yi.shape[-1])
    single = pool(*_data("pritz1997"))
    np.testing.assert_allclose(res.estimate[1, 0], single.estimate, rtol=1e-10)
    frame = res.to_frame()
    assert len(frame) == 4 and frame.index.nlevels == 2


class _Counter:
    def __init__(self, fn):
        self.fn, self.calls = fn, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.fn(*args, **kwargs)


@pytest.mark.parametrize("method", ["ML", "REML", "EB", "PM", "DL", "SJ"])
def test_ten_thousand_rows_iterate_together(method, monkeypatch):
    rng = np.random.default_rng(20240601)
    n, kmax = 10_000, 25
    k = rng.integers(2, kmax + 1, n)
    tau = rng.uniform(0.0, 0.8, n)[:, None]
    vi = rng.uniform(0.01, 0.5, (n, kmax))
    yi = rng.normal(0.2, np.sqrt(vi + tau**2))
    missing = np.arange(kmax) >= k[:, None]
    yi[missing] = np.nan
    vi[missing] = np.nan

    # In the numpy path every weighted sum goes through _wstats: if rows were looped in
    # Python it would be called thousands of times; batched, it is called once per
    # iteration (at most maxiter + 1 for Fisher scoring and Brent). ML/REML/EB normally
    # run in the compiled kernel (no _wstats calls); the numpy path is its reference.
    counter = _Counter(estimators._wstats)
    monkeypatch.setattr(estimators, "_wstats", counter)
    monkeypatch.setattr(estimators, "_COMPILED", False)
    numpy_path = _quiet_pool(yi, vi, method=method)
    assert 0 < counter.calls <= estimators.MAXITER + 5
    monkeypatch.undo()
    res = _quiet_pool(yi, vi, method=method)
    assert res.converged.shape == (n,) and res.converged.dtype == bool
    assert res.converged.mean() > 0.99
    np.testing.assert_array_equal(res.converged, numpy_path.converged)
    # both stop once a step is under metafor's threshold (1e-10): slowly converging rows
    # may stop one rounding apart
    np.testing.assert_allclose(res.tau2, numpy_path.tau2, rtol=1e-9, atol=1e-9)

    rows = list(rng.choice(n, 5, replace=False)) + list(np.flatnonzero(~res.converged)[:3])
    for i in rows:
        keep = ~np.isnan(yi[i])
        single = _quiet_pool(yi[i][keep], vi[i][keep], method=method)
        assert single.converged == res.converged[i]
        assert single.iterations == res.iterations[i]
        for name in FIELDS:
            np.testing.assert_allclose(
                getattr(res, name)[i], getattr(single, name), rtol=1e-10, atol=1e-12,
                equal_nan=True, err_msg=f"row {i} {name}",
            )  # fmt: skip


@pytest.mark.parametrize("method", METHODS)
def test_identical_effects_sit_on_the_boundary(method):
    yi = np.full(6, 0.25)
    vi = np.array([0.1, 0.05, 0.2, 0.3, 0.02, 0.08])
    res = pool(yi, vi, method=method)
    assert res.tau2 == 0.0
    assert res.QE == pytest.approx(0.0, abs=1e-20)
    assert res.QEp == pytest.approx(1.0)
    assert res.I2 == 0.0
    assert res.converged is True
    assert res.estimate == pytest.approx(0.25, rel=1e-14)
    assert res.se == pytest.approx(1 / np.sqrt(np.sum(1 / vi)), rel=1e-12)
    if method == "EE":
        assert res.H2 == 0.0  # metafor: QE / (k - 1)
        assert np.isnan(res.pi_lb)
    else:
        assert res.H2 == 1.0
        assert res.pi_lb == pytest.approx(res.ci_lb)


def test_identical_effects_knha_has_zero_scale():
    res = pool(np.full(4, 1.5), np.array([0.1, 0.2, 0.3, 0.4]), test="knha")
    assert res.se == 0.0 and np.isinf(res.tval) and res.pval == 0.0
    assert res.ci_lb == res.ci_ub == 1.5


class _Task:
    def __init__(self, est):
        self._est = est

    def estimates(self) -> Estimates:
        return self._est


def test_pool_reads_estimates_objects():
    yi, vi = _data("bcg")
    labels = np.array(DATA["datasets"]["bcg"]["labels"])
    est = Estimates(yi=yi, vi=vi, labels=labels, measure="log RR")
    plain = pool(yi, vi)
    for source in (_Task(est), est):
        res = pool(source, method="REML")
        assert res.estimate == pytest.approx(plain.estimate, rel=1e-14)
        assert res.tau2 == pytest.approx(plain.tau2, rel=1e-14)
        np.testing.assert_array_equal(res.labels, labels)
        assert res.measure == "log RR"
    with pytest.raises(TypeError, match="`vi` must be None"):
        pool(_Task(est), vi)


def test_single_study_common_effect():
    res = pool([0.4], [0.04], method="FE")
    assert res.estimate == pytest.approx(0.4) and res.se == pytest.approx(0.2)
    assert res.QE == 0.0 and res.QEp == 1.0 and res.I2 == 0.0 and res.H2 == 1.0


def test_level_as_fraction_and_aliases():
    yi, vi = _data("molloy2014")
    a = pool(yi, vi, level=90)
    b = pool(yi, vi, level=0.90)
    assert a.ci_lb == b.ci_lb and a.level == b.level == 90
    ee, fe, ce = (pool(yi, vi, method=m) for m in ("EE", "fe", "CE"))
    assert ee.estimate == fe.estimate == ce.estimate
    assert fe.method == "FE"


def test_outputs_summary_dict_frame():
    yi, vi = _data("bcg")
    res = pool(yi, vi)
    text = res.summary()
    assert "Random-Effects Model (k = 13; tau^2 estimator: REML)" in text
    assert "tau^2 (estimated amount of total heterogeneity): 0.3132 (SE = 0.1664)" in text
    assert "I^2 (total heterogeneity / total variability):   92.22%" in text
    assert "H^2 (total variability / sampling variability):  12.86" in text
    assert "Q(df = 12) = 152.2330, p-val < .0001" in text
    assert "-0.7145  0.1798  -3.9744  <.0001  -1.0669  -0.3622  ***" in text
    assert str(res) == text
    kh = pool(yi, vi, method="DL", test="knha").summary()
    assert "tval  df" in kh and "tau^2 estimator: DL" in kh
    assert "Equal-Effects Model (k = 13)" in pool(yi, vi, method="EE").summary()

    d = res.to_dict()
    json.dumps(d, allow_nan=False)
    assert d["estimate"] == pytest.approx(-0.7145, abs=1e-4) and d["k"] == 13
    assert isinstance(d["converged"], bool) and d["se_tau2"] == pytest.approx(0.1664, abs=1e-4)
    assert "tval" in pool(yi, vi, test="knha").to_dict()

    frame = res.to_frame()
    assert isinstance(frame, pd.DataFrame) and len(frame) == 1
    assert frame.loc[0, "tau2"] == pytest.approx(res.tau2)

    batch = pool(*_padded(["bcg", "pritz1997", "molloy2014"]), method="PM")
    json.dumps(batch.to_dict(), allow_nan=False)
    frame = batch.to_frame()
    assert len(frame) == 3 and list(frame["k"]) == [13, 14, 16]
    assert "Row 2:" in batch.summary()
    with pytest.raises(AttributeError, match="knha"):
        _ = res.tval


def test_docstring_example_runs():
    failures, tried = doctest.testmod(pool_module, verbose=False)
    assert tried > 0 and failures == 0
    assert pool_from_package is pool


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(yi=[0.1, 0.2, 0.3], vi=[0.1, 0.2]), r"`vi` has shape \(2,\) but `yi` has shape \(3,\)"),
        (dict(yi=[0.1, 0.2, 0.3], vi=[0.1, -0.2, 0.1]), r"`vi` must be > 0.*vi\[1\] = -0\.2.*squared standard errors"),
        (dict(yi=[0.1, 0.2, 0.3], vi=[0.1, 0.2, 0.0]), r"vi\[2\] = 0\.0"),
        (dict(yi=[0.1, np.nan, 0.3], vi=[0.1, 0.2, 0.1]), r"`yi` is NaN at study index \[1\] but vi = 0\.2.*set vi to NaN"),
        (dict(yi=[0.1, 0.2, 0.3], vi=[0.1, np.nan, 0.1]), r"`vi` is NaN at study index \[1\] where yi = 0\.2"),
        (dict(yi=[[0.1, 0.2], [0.3, np.nan]], vi=[[0.1, 0.2], [0.1, np.nan]]), r"random effects undefined with one study.*row \[1\].*method=\"FE\""),
        (dict(yi=[0.5], vi=[0.1]), r"random effects undefined with one study.*use method=\"FE\""),
        (dict(yi=[0.1, 0.2], vi=[0.1, 0.1], method="XYZ"), r"`method` must be one of .*'REML'.*got 'XYZ'"),
        (dict(yi=[0.1, 0.2], vi=[0.1, 0.1], test="t"), r"`test` must be 'z' .* or 'knha' .*got 't'"),
        (dict(yi=[0.1, 0.2], vi=[0.1, 0.1], level=120), r"`level` must be .*got 120"),
        (dict(yi=[0.1, np.inf], vi=[0.1, 0.1]), r"`yi` must be finite.*yi\[1\] = inf"),
        (dict(yi=[[0.1, 0.2], [np.nan, np.nan]], vi=[[0.1, 0.1], [np.nan, np.nan]]), r"row \[1\] has no observed studies"),
        (dict(yi=[0.1, 0.2], vi=[0.1, 0.1], weights=[1.0, -1.0]), r"`weights` must be finite and > 0.*weights\[1\] = -1\.0"),
        (dict(yi=[0.1, 0.2], vi=[0.1, 0.1], weights=[1.0]), r"`weights` has shape \(1,\)"),
        (dict(yi=0.3, vi=0.1), r"`yi` must have a study axis"),
        (dict(yi=[0.1, 0.2], vi=[0.1, 0.1], labels=["a"]), r"`labels` has shape \(1,\)"),
    ],
)  # fmt: skip
def test_errors_name_the_argument_and_the_fix(kwargs, match):
    yi, vi = kwargs.pop("yi"), kwargs.pop("vi")
    with pytest.raises(ValueError, match=match):
        pool(yi, vi, **kwargs)


def test_missing_vi_is_a_type_error():
    with pytest.raises(TypeError, match="`vi` is missing"):
        pool([0.1, 0.2])


def test_knha_with_common_effect_warns_like_metafor():
    with pytest.warns(UserWarning, match="not meant for common-effect"):
        pool([0.1, 0.3, 0.2], [0.1, 0.1, 0.2], method="EE", test="knha")


def test_pm_beyond_metafor_tau2_max_widens_the_bracket():
    # metafor's tau2.max is max(100, 10 mad(yi)^2) = 100 here (mad = 0.15) and it stops
    # with "Value of 'tau2.max' too low"; we widen the bracket instead.
    yi = np.array([0.0, 0.1, -0.1, 0.05, 500.0])
    vi = np.array([1.0, 2.0, 3.0, 1.0, 2.0])
    assert estimators.tau2_max(yi[None], np.ones((1, 5), bool), np.array([5])) == 100.0
    res = pool(yi, vi, method="PM")
    assert res.converged is True and res.tau2 > 100
    w = 1 / (vi + res.tau2)
    q = np.sum(w * (yi - np.sum(w * yi) / np.sum(w)) ** 2)
    assert q == pytest.approx(len(yi) - 1, rel=1e-6)  # the PM estimating equation


def test_common_effect_single_study_rows_in_a_batch():
    yi = np.array([[0.4, np.nan], [0.1, 0.3]])
    vi = np.array([[0.04, np.nan], [0.1, 0.2]])
    res = pool(yi, vi, method="FE")
    np.testing.assert_allclose(res.estimate, [0.4, (0.1 / 0.1 + 0.3 / 0.2) / (1 / 0.1 + 1 / 0.2)])
    np.testing.assert_array_equal(res.k, [1, 2])
    with pytest.warns(UserWarning):
        kh = pool(yi, vi, method="FE", test="knha")
    assert np.isnan(kh.pval[0]) and np.isfinite(kh.pval[1])  # t with 0 df is undefined


def test_pm_search_interval_is_metafors_max_100_10_mad2():
    # mad(yi) = 22.239 (R's constant 1.4826), so metafor searches [0, 4945.8]; the root
    # is found step for step as uniroot on that interval (tighter than the 1e-6 of the
    # fixtures: a different interval gives a different root within uniroot's tolerance).
    reg = json.loads((REFERENCE.parent / "regression_reference.json").read_text())
    wide = reg["confint_extra_datasets"]["wide"]
    yi, vi = np.array(wide["yi"], dtype=float), np.array(wide["vi"], dtype=float)
    upper = estimators.tau2_max(yi[None], np.ones((1, 5), bool), np.array([5]))
    assert upper[0] == pytest.approx(10 * (1.4826 * 15.0) ** 2, rel=1e-12)
    want = next(r for r in reg["confint"] if (r["dataset"], r["method"]) == ("wide", "PM"))
    assert pool(yi, vi, method="PM").tau2 == pytest.approx(want["tau2"][0], rel=1e-12)


def test_intercept_only_results_carry_the_regression_fields():
    yi, vi = _data("bcg")
    for test in ("z", "knha"):
        res = pool(yi, vi, test=test)
        assert res.beta.shape == (1,) and res.beta[0] == res.estimate
        assert res.vb.shape == (1, 1) and res.vb[0, 0] == pytest.approx(res.se**2)
        assert res.QM == pytest.approx(res.zval**2) and res.QMp == res.pval
        assert res.coef_names == ("intrcpt",) and res.p == 1 and res.R2 is None
        assert res.QMdf[0] == 1.0 and (np.isnan(res.QMdf[1]) if test == "z" else res.QMdf[1] == 12)
        assert res.vt > 0 and not res.has_mods
    batch = pool(*_padded(["bcg", "pritz1997"]), test="knha")
    assert batch.beta.shape == (2, 1) and batch.QMdf.shape == (2, 2)
    np.testing.assert_array_equal(batch.QMdf[:, 1], [12, 13])
    assert batch.row(1).QMdf == (1.0, 13.0)
    json.dumps(batch.to_dict(), allow_nan=False)
    # metafor: QM is NA when the Knapp-Hartung scale (hence vb) is 0
    flat = pool(np.full(4, 1.5), np.array([0.1, 0.2, 0.3, 0.4]), test="knha")
    assert np.isnan(flat.QM) and np.isnan(flat.QMp)

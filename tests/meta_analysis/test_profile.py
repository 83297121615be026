"""Q-profile intervals for tau^2 (confint_tau2) against metafor's confint(); batching; errors."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from spatialmeta.meta_analysis import estimators
from spatialmeta.meta_analysis import profile as profile_module
from spatialmeta.meta_analysis.pool import pool
from spatialmeta.meta_analysis.profile import Tau2Interval, confint_tau2

REF = Path(__file__).resolve().parents[1] / "reference"
DATA = json.loads((REF / "regression_reference.json").read_text())
# confint() of metafor's damped fit of `nonconverge`, per level (make_rescue_reference.R)
RESCUE = json.loads((REF / "rescue_reference.json").read_text())["nonconverge"]["confint"]
BASE = json.loads((REF / "metafor_reference.json").read_text())["datasets"]
DATASETS = {**BASE, **DATA["confint_extra_datasets"]}
RTOL, ATOL = 1e-6, 1e-8
RANDOM = ("DL", "HE", "HS", "SJ", "ML", "REML", "EB", "PM")


def _num(x):
    return np.array([np.nan if v is None else v for v in x], dtype=float)


def _data(name):
    ds = DATASETS[name]
    return np.array(ds["yi"], dtype=float), np.array(ds["vi"], dtype=float)


def _quiet(*args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pool(*args, **kwargs)


def _id(row):
    return f"{row['dataset']}-{row['method']}-level{row['level']}"


def test_reference_covers_every_dataset_and_estimator():
    grid = {(r["dataset"], r["method"]) for r in DATA["confint"]}
    for name in BASE:
        for method in RANDOM:
            assert (name, method) in grid
    assert any(r.get("ub_sign") == ">" for r in DATA["confint"])
    assert any(r.get("ci_null") for r in DATA["confint"])


@pytest.mark.parametrize("row", DATA["confint"], ids=_id)
def test_matches_metafor(row):
    yi, vi = _data(row["dataset"])
    res = _quiet(yi, vi, method=row["method"], level=row["level"])
    if "error" in row:
        # metafor's default fit stops (Fisher scoring did not converge); ours is rescued,
        # and its interval is confint() of metafor's damped fit (stepadj 0.5)
        assert "did not converge" in row["error"] and res.converged is True
        row = {**row, **RESCUE[str(int(row["level"]))]}
    ci = confint_tau2(res)
    assert isinstance(ci, Tau2Interval) and ci.level == row["level"]
    for name in ("tau2", "tau", "I2", "H2"):
        got = np.array([getattr(ci, name), getattr(ci, name + "_lb"), getattr(ci, name + "_ub")])
        np.testing.assert_allclose(got, _num(row[name]), rtol=RTOL, atol=ATOL, err_msg=name)
    assert (ci.lb_sign, ci.ub_sign, ci.ci_null) == (row["lb_sign"], row["ub_sign"], row["ci_null"])
    assert ci.converged is True


def test_null_interval_and_summary():
    ci = confint_tau2(*_data("identical"), method="REML")
    assert ci.ci_null is True and ci.tau2_lb == ci.tau2_ub == 0.0
    text = ci.summary()
    assert "tau^2    0.0000 <0.0000 <0.0000" in text
    assert "both fall below 0" in text
    bcg = confint_tau2(*_data("bcg"), method="DL")
    lines = bcg.summary().splitlines()
    assert lines[1].split() == ["estimate", "ci.lb", "ci.ub"]
    assert lines[2].split() == ["tau^2", "0.3088", "0.1197", "1.1115"]
    assert lines[4].split() == ["I^2(%)", "92.1173", "81.9177", "97.6781"]
    assert str(bcg) == bcg.summary()
    wide = confint_tau2(*_data("wide"), method="ML")
    assert wide.ub_sign == ">" and wide.tau2_ub == wide.tau2_max == pytest.approx(10 * wide.tau2)
    assert ">" + f"{wide.tau2_ub:.4f}" in wide.summary()


def test_inputs_or_result_and_level_override():
    yi, vi = _data("molloy2014")
    a = confint_tau2(yi, vi, method="PM", level=90)
    b = confint_tau2(pool(yi, vi, method="PM"), level=90)
    c = confint_tau2(pool(yi, vi, method="PM", level=90))
    for f in ("tau2_lb", "tau2_ub", "I2_lb", "H2_ub"):
        assert getattr(a, f) == getattr(b, f) == getattr(c, f)
    assert confint_tau2(yi, vi, method="PM").tau2_lb < a.tau2_lb


def _padded(names):
    kmax = max(len(DATASETS[n]["yi"]) for n in names)
    y = np.full((len(names), kmax), np.nan)
    v = np.full((len(names), kmax), np.nan)
    for i, n in enumerate(names):
        yi, vi = _data(n)
        y[i, : yi.size], v[i, : vi.size] = yi, vi
    return y, v


@pytest.mark.parametrize("method", ["DL", "REML", "ML"])
def test_batched_rows_equal_single_intervals(method):
    names = list(DATASETS)
    y, v = _padded(names)
    y[0], v[0] = np.roll(y[0], 5), np.roll(v[0], 5)
    batch = confint_tau2(_quiet(y, v, method=method))
    assert batch.batch_shape == (len(names),)
    frame = batch.to_frame()
    assert len(frame) == len(names) and {"tau2_lb", "ub_sign"} <= set(frame)
    json.dumps(batch.to_dict(), allow_nan=False)
    for i, n in enumerate(names):
        single = confint_tau2(_quiet(*_data(n), method=method))
        for f in ("tau2_lb", "tau2_ub", "tau_lb", "I2_lb", "I2_ub", "H2_lb", "H2_ub"):
            np.testing.assert_allclose(
                getattr(batch, f)[i], getattr(single, f), rtol=1e-10, atol=1e-12, err_msg=f"{n} {f}"
            )
        assert batch.ub_sign[i] == single.ub_sign and batch.ci_null[i] == single.ci_null
    assert "Row 0:" in batch.summary()


def test_meta_regression_interval_in_a_batch():
    ds = DATA["mods_datasets"]["bcg"]
    yi, vi = np.array(ds["yi"]), np.array(ds["vi"])
    x = np.array(ds["columns"]["ablat"], dtype=float)[:, None]
    single = confint_tau2(pool(yi, vi, mods=x))
    batch = confint_tau2(pool(np.stack([yi, yi[::-1]]), np.stack([vi, vi[::-1]]), mods=x))
    assert batch.tau2_lb[0] == pytest.approx(single.tau2_lb, rel=1e-10)
    assert batch.tau2_ub[0] == pytest.approx(single.tau2_ub, rel=1e-10)
    assert batch.tau2_ub[1] != pytest.approx(single.tau2_ub, rel=1e-3)


class _Counter:
    def __init__(self, fn):
        self.fn, self.calls = fn, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.fn(*args, **kwargs)


def test_thousands_of_intervals_are_solved_together(monkeypatch):
    rng = np.random.default_rng(3)
    n, kmax = 5000, 12
    k = rng.integers(3, kmax + 1, n)
    vi = rng.uniform(0.01, 0.3, (n, kmax))
    yi = rng.normal(0, np.sqrt(vi + rng.uniform(0, 0.3, n)[:, None]))
    miss = np.arange(kmax) >= k[:, None]
    yi[miss] = vi[miss] = np.nan
    res = _quiet(yi, vi, method="DL")
    counter = _Counter(estimators._rss)
    monkeypatch.setattr(estimators, "_rss", counter)
    ci = confint_tau2(res)
    # two end points + at most ~60 Brent steps per bound, never one call per row
    assert counter.calls < 150
    monkeypatch.undo()
    assert ci.converged.all()
    for i in rng.choice(n, 4, replace=False):
        keep = ~miss[i]
        single = confint_tau2(_quiet(yi[i][keep], vi[i][keep], method="DL"))
        assert ci.tau2_lb[i] == pytest.approx(single.tau2_lb, rel=1e-10, abs=1e-14)
        assert ci.tau2_ub[i] == pytest.approx(single.tau2_ub, rel=1e-10, abs=1e-14)


def test_bound_conventions_on_a_synthetic_q_profile():
    # Q(t) = c / (1 + t): decreasing, as the generalized Q statistic.
    c = np.array([0.01, 5.0, 20.0, 1e6])
    df = np.full(4, 4)
    tau2 = np.array([0.0, 0.5, 10.0, 0.0])

    def qstat(t, rows):
        return c[rows] / (1.0 + t[rows])

    lb, ub, lbs, ubs, null, ok, tmax = profile_module._qprofile(qstat, df, tau2, 95.0)
    # row 0: Q(0) below the lower critical value -> null set at 0
    assert (lb[0], ub[0], lbs[0], ubs[0], null[0]) == (0.0, 0.0, "<", "<", True)
    # row 1: Q(0) below the upper critical value -> lower bound 0, upper bound a root
    assert lb[1] == 0.0 and lbs[1] == "" and 0 < ub[1] < tmax[1] and ubs[1] == ""
    assert c[1] / (1.0 + ub[1]) == pytest.approx(stats.chi2.ppf(0.025, 4), rel=1e-4)
    # row 2: both bounds are roots
    assert 0 < lb[2] < ub[2] < tmax[2] and not null[2]
    # row 3: Q stays above the upper critical value at tau2_max -> both bounds at tau2_max
    assert (lb[3], ub[3], lbs[3], ubs[3]) == (100.0, 100.0, ">", ">")
    assert ok.all()


def test_errors():
    yi, vi = _data("bcg")
    with pytest.raises(ValueError, match=r"no random-effects component \(method='EE'\)"):
        confint_tau2(pool(yi, vi, method="EE"))
    with pytest.raises(TypeError, match="takes a PoolResult alone"):
        confint_tau2(pool(yi, vi), vi)
    with pytest.raises(ValueError, match="`level` must be"):
        confint_tau2(pool(yi, vi), level=150)

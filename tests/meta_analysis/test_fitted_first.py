"""Fitted-first analyses: every analysis of a fitted result refits with the fit's settings.

The metafor fixtures of ``diagnostics_reference.json`` were made as metafor makes them,
``leave1out(rma(yi, vi, method = m, test = t))``: here the same calls on a
:class:`PoolResult` are checked against them, every analysis is checked to equal its
raw-array form with the fit's settings, and settings that contradict the fit, or parts
of it an analysis would drop, are refused by name.
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from pathlib import Path

import numpy as np
import pytest

from spatialmeta.meta_analysis import (
    FitSpec,
    baujat,
    confint_tau2,
    cumul,
    influence,
    leave1out,
    pet_peese,
    pool,
    ranktest,
    regtest,
    rstandard,
    rstudent,
    subgroups,
    trimfill,
)

REFERENCE = Path(__file__).resolve().parents[1] / "reference" / "diagnostics_reference.json"
DATA = json.loads(REFERENCE.read_text())
METHODS = ("EE", "DL", "HE", "HS", "SJ", "ML", "REML", "EB", "PM")
FIT_FIELDS = ("estimate", "se", "zval", "pval", "ci_lb", "ci_ub", "Q", "Qp", "tau2", "I2", "H2")
INF_FIELDS = ("rstudent", "dffits", "cook_d", "cov_r", "tau2_del", "QE_del", "hat", "dfbs")


def _arr(values) -> np.ndarray:
    return np.array([np.nan if x is None else float(x) for x in values])


def _data(name: str):
    ds = DATA["datasets"][name]
    return _arr(ds["yi"]), _arr(ds["vi"])


def _quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


def _same(a, b, path="result") -> None:
    """Field-by-field equality of two results (arrays to 1e-12, NaN equal to NaN)."""
    if dataclasses.is_dataclass(a):
        assert type(a) is type(b), path
        for f in dataclasses.fields(a):
            _same(getattr(a, f.name), getattr(b, f.name), f"{path}.{f.name}")
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for key in a:
            _same(a[key], b[key], f"{path}[{key!r}]")
    elif isinstance(a, list | tuple) and not (a and isinstance(a[0], int | float)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _same(x, y, f"{path}[{i}]")
    elif a is None or isinstance(a, str):
        assert a == b, path
    else:
        x, y = np.asarray(a), np.asarray(b)
        if x.dtype.kind in "fiub" and y.dtype.kind in "fiub":
            np.testing.assert_allclose(x.astype(float), y.astype(float), rtol=1e-12, atol=1e-14,
                                       equal_nan=True, err_msg=path)  # fmt: skip
        else:
            assert np.array_equal(x, y), path


# --------------------------------------------------------------------------- metafor


def _ref_id(e: dict) -> str:
    return f"{e['dataset']}-{e['method']}-{e['test']}"


@pytest.mark.parametrize("entry", DATA["leave1out"], ids=_ref_id)
def test_leave1out_of_a_fit_matches_metafor(entry):
    fit = _quiet(pool, *_data(entry["dataset"]), method=entry["method"], test=entry["test"])
    res = _quiet(leave1out, fit)
    assert res.method == fit.method and res.full is fit
    for f in FIT_FIELDS:
        np.testing.assert_allclose(getattr(res, f), _arr(entry[f]), rtol=1e-6, atol=1e-8,
                                   err_msg=f)  # fmt: skip


@pytest.mark.parametrize("entry", [e for e in DATA["influence"] if "rstudent" in e], ids=_ref_id)
def test_influence_of_a_fit_matches_metafor(entry):
    fit = _quiet(pool, *_data(entry["dataset"]), method=entry["method"], test=entry["test"])
    res = _quiet(influence, fit)
    for f in INF_FIELDS:
        np.testing.assert_allclose(getattr(res, f), _arr(entry[f]), rtol=1e-6, atol=1e-8,
                                   err_msg=f)  # fmt: skip


@pytest.mark.parametrize("entry", DATA["cumul"], ids=_ref_id)
def test_cumul_of_a_fit_matches_metafor(entry):
    fit = _quiet(pool, *_data(entry["dataset"]), method=entry["method"], test=entry["test"])
    res = _quiet(cumul, fit, order=entry["order"])
    for f in ("estimate", "se", "tau2", "ci_lb", "ci_ub"):
        np.testing.assert_allclose(getattr(res, f), _arr(entry[f]), rtol=1e-6, atol=1e-8,
                                   err_msg=f)  # fmt: skip


# --------------------------------------------------------------------------- the defect


@pytest.mark.parametrize("method", ["DL", "PM", "SJ", "HE", "ML", "EB"])
@pytest.mark.parametrize("analysis", [leave1out, cumul, influence])
def test_refits_of_a_fit_use_its_estimator_not_reml(analysis, method):
    # the defect: given a DL/PM/SJ fit, these refitted every model with REML
    yi, vi = _data("bcg")
    res = _quiet(analysis, pool(yi, vi, method=method))
    key = "tau2_del" if analysis is influence else "tau2"
    own = getattr(_quiet(analysis, yi, vi, method=method), key)
    reml = getattr(_quiet(analysis, yi, vi, method="REML"), key)
    np.testing.assert_allclose(getattr(res, key), own, rtol=1e-12)
    assert res.method == method
    assert not np.allclose(own, reml, rtol=1e-3, equal_nan=True)  # the two can be told apart


# --------------------------------------------------------------------------- every analysis


def _groups(k: int) -> np.ndarray:
    return np.array(["a", "b"])[np.arange(k) % 2]


ANALYSES = {
    "leave1out": lambda f, **kw: leave1out(f, **kw),
    "cumul": lambda f, **kw: cumul(f, **kw),
    "influence": lambda f, **kw: influence(f, **kw),
    "rstudent": lambda f, **kw: rstudent(f, **kw),
    "rstandard": lambda f, **kw: rstandard(f, **{k: v for k, v in kw.items() if k == "method"}),
    "subgroups": lambda f, **kw: subgroups(f, groups=_groups(13), **kw),
    "regtest": lambda f, **kw: regtest(f, **kw),
    "pet_peese": lambda f, **kw: pet_peese(f, model="rma", **kw),
    "trimfill": lambda f, **kw: trimfill(f, **kw),
    "baujat": lambda f, **kw: baujat(f, **{k: v for k, v in kw.items() if k != "level"}),
}
RAW = {
    "leave1out": lambda y, v, **kw: leave1out(y, v, **kw),
    "cumul": lambda y, v, **kw: cumul(y, v, **kw),
    "influence": lambda y, v, **kw: influence(y, v, **kw),
    "rstudent": lambda y, v, **kw: rstudent(y, v, **kw),
    "rstandard": lambda y, v, **kw: rstandard(y, v, method=kw["method"]),
    "subgroups": lambda y, v, **kw: subgroups(y, v, _groups(13), **kw),
    "regtest": lambda y, v, **kw: regtest(y, v, **kw),
    "pet_peese": lambda y, v, **kw: pet_peese(y, v, model="rma", **kw),
    "trimfill": lambda y, v, **kw: trimfill(y, v, **kw),
    "baujat": lambda y, v, **kw: baujat(y, v, method=kw["method"], test=kw["test"]),
}


def _fields_without_full(res):
    """The result minus the fit it carries (compared separately: same settings)."""
    return {f.name: getattr(res, f.name) for f in dataclasses.fields(res)
            if f.name not in ("full", "overall", "result", "fit")}  # fmt: skip


@pytest.mark.parametrize("test", ["z", "knha"])
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("name", list(ANALYSES))
def test_every_analysis_of_a_fit_equals_the_raw_call_with_its_settings(name, method, test):
    yi, vi = _data("bcg")
    fit = _quiet(pool, yi, vi, method=method, test=test, level=90)
    got = _quiet(ANALYSES[name], fit)
    want = _quiet(RAW[name], yi, vi, method=method, test=test, level=90)
    _same(_fields_without_full(got), _fields_without_full(want), name)
    # the settings were the fit's, not the defaults (REML, z, 95)
    for attr in ("method", "test", "level"):
        if hasattr(got, attr) and getattr(got, attr) is not None:
            assert getattr(got, attr) == getattr(fit, attr), attr
    # and the same call with the fit's settings spelled out is accepted
    spelled = _quiet(ANALYSES[name], fit, method=method.lower(), test=test.upper())
    _same(_fields_without_full(spelled), _fields_without_full(got), name)


@pytest.mark.parametrize("method", [m for m in METHODS if m != "EE"])
def test_confint_tau2_of_a_fit_equals_the_raw_call(method):
    yi, vi = _data("bcg")
    fit = _quiet(pool, yi, vi, method=method, level=90)
    _same(confint_tau2(fit), confint_tau2(yi, vi, method=method, level=90))


def test_ranktest_of_a_fit_reads_its_studies():
    yi, vi = _data("bcg")
    _same(ranktest(pool(yi, vi, method="DL")), ranktest(yi, vi))


# --------------------------------------------------------------------------- refusals


CONTRADICTIONS = [
    (name, given, word)
    for name in ANALYSES
    for given, word in ((dict(method="REML"), "method='REML'"), (dict(test="knha"), "test='knha'"))
    if not (name == "rstandard" and "test" in given)  # rstandard takes no test
]


@pytest.mark.parametrize(("name", "given", "word"), CONTRADICTIONS)
def test_settings_that_contradict_the_fit_are_refused(name, given, word):
    fit = _quiet(pool, *_data("bcg"), method="DL")
    with pytest.raises(ValueError, match=rf"{name}: `{word}` differs from the fitted result's"):
        _quiet(ANALYSES[name], fit, **given)


def test_level_that_contradicts_the_fit_is_refused():
    fit = pool(*_data("bcg"), method="DL", level=90)
    with pytest.raises(ValueError, match=r"leave1out: `level=95.0` differs .* level 90.0"):
        leave1out(fit, level=95)
    assert leave1out(fit, level=0.9).level == 90.0  # the same level as a fraction


@pytest.mark.parametrize(
    "analysis", [leave1out, cumul, influence, rstudent, rstandard, trimfill, baujat, ranktest]
)
def test_moderators_and_user_weights_are_refused_not_dropped(analysis):
    yi, vi = _data("bcg")
    ablat = np.array([44, 55, 42, 52, 13, 44, 19, 13, 27, 42, 18, 33, 33], dtype=float)  # dat.bcg
    reg = pool(yi, vi, mods={"ablat": ablat})
    with pytest.raises(ValueError, match=r"meta-regression on ablat; its moderators would be"):
        _quiet(analysis, reg)
    weighted = pool(yi, vi, weights=np.arange(1.0, 14.0))
    with pytest.raises(ValueError, match=r"user `weights`, which would be dropped"):
        _quiet(analysis, weighted)


def test_a_fit_takes_no_second_set_of_studies():
    yi, vi = _data("bcg")
    fit = pool(yi, vi)
    with pytest.raises(TypeError, match=r"leave1out\(res\) takes the studies .* `vi`"):
        leave1out(fit, vi)
    with pytest.raises(TypeError, match=r"cumul\(res\) takes .* `labels`"):
        cumul(fit, labels=list("abcdefghijklm"))


def test_fitspec_canonicalises_once():
    assert FitSpec.make("dl", "KNHA", 0.9) == FitSpec("DL", "knha", 90.0)
    assert FitSpec.of(pool(*_data("bcg"), method="pm", level=80)) == FitSpec("PM", "z", 80.0)
    with pytest.raises(ValueError, match=r"^leave1out: `method` must be one of .*got 'XYZ'"):
        leave1out(*_data("bcg"), method="XYZ")
    with pytest.raises(ValueError, match=r"`level` must be a confidence level .* got True"):
        FitSpec.make(level=True)

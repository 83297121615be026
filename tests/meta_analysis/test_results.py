"""One result model: every result of the engine is a frozen Result with one to_dict and one
number formatter (meta_analysis/results.py)."""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import json
import pkgutil

import numpy as np
import pytest

import spatialmeta.meta_analysis as ma
from spatialmeta.meta_analysis import (
    baujat,
    confint_tau2,
    cumul,
    fsn,
    influence,
    leave1out,
    pet_peese,
    pool,
    ranktest,
    regtest,
    rstandard,
    subgroups,
    trimfill,
)
from spatialmeta.meta_analysis.results import Prediction, Result, fmt_num, fmt_p

YI = np.array([-0.89, -1.59, -1.35, -1.44, -0.22, -0.79, -1.62, 0.01, -0.47, -1.37, -0.34,
               0.45, -0.02])  # fmt: skip
VI = np.array([0.33, 0.19, 0.42, 0.02, 0.05, 0.01, 0.22, 0.004, 0.06, 0.07, 0.01, 0.53, 0.07])


def _result_classes():
    out = []
    for info in pkgutil.iter_modules(ma.__path__):
        mod = importlib.import_module(f"spatialmeta.meta_analysis.{info.name}")
        for _, cls in inspect.getmembers(mod, inspect.isclass):
            named = cls.__name__.endswith(("Result", "Interval")) and cls is not Result
            if cls.__module__ == mod.__name__ and named:
                out.append(cls)
    return out


@pytest.mark.parametrize("cls", _result_classes(), ids=lambda c: c.__name__)
def test_every_result_is_a_frozen_result_with_the_one_to_dict(cls):
    assert issubclass(cls, Result), f"{cls.__name__} is not a meta_analysis.results.Result"
    assert dataclasses.is_dataclass(cls) or cls.__name__ == "_PerStudy"
    if dataclasses.is_dataclass(cls):
        assert cls.__dataclass_params__.frozen, f"{cls.__name__} is not frozen"
    assert cls.to_dict is Result.to_dict, f"{cls.__name__} re-implements to_dict"


def _all_results():
    fit = pool(YI, VI, method="DL", test="knha")
    reg = pool(YI, VI, mods={"x": np.arange(13.0)})
    return {
        "pool": fit,
        "meta-regression": reg,
        "predict": reg.predict([[3.0], [5.0]]),
        "confint": confint_tau2(fit),
        "leave1out": leave1out(fit),
        "cumul": cumul(fit),
        "influence": influence(fit),
        "rstandard": rstandard(fit),
        "subgroups": subgroups(fit, groups=np.arange(13) % 2),
        "regtest": regtest(fit),
        "pet_peese": pet_peese(fit),
        "ranktest": ranktest(fit),
        "trimfill": trimfill(fit),
        "fsn": fsn(YI, VI),
        "baujat": baujat(fit),
    }


@pytest.mark.parametrize("name", list(_all_results()))
def test_to_dict_is_plain_json(name):
    res = _all_results()[name]
    text = json.dumps(res.to_dict(), allow_nan=False)  # NaN became None, numpy became lists
    back = json.loads(text)
    if getattr(res, "test", None) == "knha" and "zval" in {f.name for f in dataclasses.fields(res)}:
        assert "tval" in back and "zval" not in back  # metafor's name under Knapp-Hartung
    assert str(res)  # every result prints its summary


def test_prediction_is_a_frozen_result():
    reg = pool(YI, VI, mods={"x": np.arange(13.0)})
    pr = reg.predict([[3.0], [5.0]])
    assert isinstance(pr, Prediction) and pr.pred.shape == (2,)
    np.testing.assert_allclose(pr.pred, reg.beta[0] + reg.beta[1] * np.array([3.0, 5.0]))
    with pytest.raises(dataclasses.FrozenInstanceError):
        pr.pred = None
    assert list(pr.to_frame().columns) == ["pred", "se", "ci_lb", "ci_ub", "pi_lb", "pi_ub"]
    plain = pool(YI, VI).predict()
    assert plain.pred == pool(YI, VI).estimate  # the pooled estimate, same field name


def test_one_formatter_for_numbers_and_p_values():
    assert [fmt_p(x) for x in (0.5, 1e-4, 9.9e-5, np.nan, None)] == [
        "0.5000", "0.0001", "<.0001", "NA", "NA",
    ]  # fmt: skip
    assert fmt_p(3e-9, eq=True) == "< .0001" and fmt_p(0.2, eq=True) == "= 0.2000"
    assert fmt_p(3e-9, style="report") == "< 0.0001"
    assert fmt_num(-0.00001) == "-0.0000" and fmt_num("x") == "NA" and fmt_num(np.inf) == "NA"
    with pytest.raises(ValueError, match="`style` must be 'metafor' or 'report'"):
        fmt_p(0.1, style="apa")
    # the printed summaries use it: metafor's p-value style in pool's print
    assert "p-val <.0001" in str(pool(YI, VI, method="DL")) or "<.0001" in str(
        pool(YI * 10, VI, method="DL")
    )


def test_a_meta_regression_is_its_own_type():
    from spatialmeta.meta_analysis import MetaRegressionResult, PoolResult

    plain, reg = pool(YI, VI), pool(YI, VI, mods={"x": np.arange(13.0)})
    assert type(plain) is PoolResult and not plain.has_mods
    assert type(reg) is MetaRegressionResult and isinstance(reg, PoolResult) and reg.has_mods
    assert "Test of Moderators" in reg.summary() and "Test of Moderators" not in plain.summary()
    with pytest.raises(ValueError, match="no moderators, so `newmods` cannot be used"):
        plain.predict([1.0])
    batch = pool(np.stack([YI, YI]), np.stack([VI, VI]), mods={"x": np.arange(13.0)})
    assert type(batch.row(1)) is MetaRegressionResult
    np.testing.assert_allclose(batch.row(1).beta, reg.beta)

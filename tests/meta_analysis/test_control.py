"""FitSpec's control (metafor's threshold, maxiter, stepadj): used by the fit, kept on the
result, inherited by every refit. Reference: metafor 3.8 with control = list(threshold =
1e-8, maxiter = 1000, stepadj = 0.5) (tests/reference/make_control_reference.R)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from spatialmeta.meta_analysis import cumul, influence, leave1out, pool, subgroups, trimfill
from spatialmeta.meta_analysis.spec import Control, FitSpec

REF = Path(__file__).resolve().parents[1] / "reference"
FITS = json.loads((REF / "control_reference.json").read_text())["fits"]
DATA = json.loads((REF / "metafor_reference.json").read_text())["datasets"]
DAMPED = {"threshold": 1e-8, "maxiter": 1000, "stepadj": 0.5}


def _data(name):
    return np.array(DATA[name]["yi"], dtype=float), np.array(DATA[name]["vi"], dtype=float)


@pytest.mark.parametrize("ref", FITS, ids=lambda r: f"{r['dataset']}-{r['method']}")
def test_a_fit_with_control_matches_metafor_and_its_refits_keep_it(ref):
    yi, vi = _data(ref["dataset"])
    fit = pool(yi, vi, method=ref["method"], control=ref["control"])
    assert fit.control == Control(1e-8, 1000, 0.5) and FitSpec.of(fit).control == fit.control
    for f in ("tau2", "se_tau2", "estimate", "se"):
        np.testing.assert_allclose(getattr(fit, f), ref[f], rtol=1e-10, atol=1e-14, err_msg=f)
    loo = leave1out(fit)  # metafor's leave1out refits with the fit's control
    for f in ("tau2", "estimate", "se"):
        np.testing.assert_allclose(getattr(loo, f), ref["leave1out"][f], rtol=1e-10,
                                   atol=1e-14, err_msg=f)  # fmt: skip


def test_control_changes_the_iteration_and_every_analysis_inherits_it():
    yi, vi = _data("raudenbush1985")
    plain, damped = pool(yi, vi), pool(yi, vi, control=DAMPED)
    assert damped.iterations > plain.iterations  # half steps, tighter threshold
    assert abs(damped.tau2 - plain.tau2) > 0  # the default stops within 1e-5 of the optimum
    for analysis in (leave1out, cumul, influence):
        a = analysis(damped)
        b = analysis(yi, vi, control=DAMPED)
        c = analysis(yi, vi)
        key = "tau2_del" if analysis is influence else "tau2"
        np.testing.assert_array_equal(getattr(a, key), getattr(b, key))
        assert not np.array_equal(getattr(a, key), getattr(c, key))
    g = np.arange(yi.size) % 2
    np.testing.assert_array_equal(
        subgroups(damped, groups=g).tau2, subgroups(yi, vi, g, control=DAMPED).tau2
    )
    assert trimfill(damped).result.control == damped.control
    batch = pool(np.stack([yi, yi]), np.stack([vi, vi]), control=DAMPED)
    assert batch.row(0).control == batch.control


def test_control_that_contradicts_the_fit_or_is_malformed_is_refused():
    yi, vi = _data("bcg")
    fit = pool(yi, vi, control=DAMPED)
    with pytest.raises(ValueError, match=r"leave1out: `control=Control\(.*maxiter=5.*differs"):
        leave1out(fit, control={"maxiter": 5})
    np.testing.assert_array_equal(leave1out(fit, control=DAMPED).tau2, leave1out(fit).tau2)
    with pytest.raises(ValueError, match=r"`control` takes threshold, maxiter and stepadj.*'iter'"):
        pool(yi, vi, control={"iter": 5})
    with pytest.raises(ValueError, match=r"`control\['maxiter'\]` must be an integer >= 1"):
        pool(yi, vi, control={"maxiter": 0})
    with pytest.raises(ValueError, match=r"`control\['stepadj'\]` must be a number > 0"):
        pool(yi, vi, control={"stepadj": -1})
    with pytest.raises(TypeError, match=r"`control` must be a dict"):
        pool(yi, vi, control=[1])


def test_a_tiny_maxiter_is_rescued_to_the_same_optimum():
    # Fisher scoring stopped after 2 steps: the bracketed solve still finds the maximum
    yi, vi = _data("raudenbush1985")
    short = pool(yi, vi, method="REML", control={"maxiter": 2})
    tight = pool(yi, vi, method="REML", control={"threshold": 1e-14, "maxiter": 10_000})
    assert short.converged and short.iterations == 3
    assert short.tau2 == pytest.approx(tight.tau2, rel=1e-9)

"""ranktest, trimfill, fsn and baujat against metafor reference values, batching and errors."""

from __future__ import annotations

import itertools
import json
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from spatialmeta.meta_analysis import bias
from spatialmeta.meta_analysis.bias import baujat, fsn, ranktest, trimfill
from spatialmeta.meta_analysis.pool import pool
from spatialmeta.tasks.estimates import Estimates

REFERENCE = Path(__file__).resolve().parents[1] / "reference" / "bias_reference.json"
DATA = json.loads(REFERENCE.read_text())
# metafor's fits of the `nonconverge` set with damped Fisher scoring (stepadj 0.5,
# threshold 1e-12), where its default control stops: make_rescue_reference.R
_RESCUE = json.loads((REFERENCE.parent / "rescue_reference.json").read_text())
RESCUE, RESCUE_RANDOM = _RESCUE["nonconverge"], _RESCUE["random_trimfill"]
# the refits whose Fisher scoring converges stop within metafor's threshold (1e-5 on
# tau^2) of the optimum the damped reference iterates to 1e-12; compared at this tolerance
FS_RTOL = 1e-4
RTOL, ATOL = 1e-6, 1e-8
METHODS = ("FE", "DL", "HE", "HS", "SJ", "ML", "REML", "EB", "PM")


def _value(x) -> float:
    """JSON null -> NaN, "Inf"/"-Inf" -> +-inf."""
    return np.nan if x is None else float(x)


def _values(xs) -> np.ndarray:
    return np.array([_value(x) for x in xs])


def _data(name: str) -> tuple[np.ndarray, np.ndarray]:
    ds = DATA["datasets"][name]
    return np.array(ds["yi"], dtype=float), np.array(ds["vi"], dtype=float)


def _close(got, expected) -> None:
    np.testing.assert_allclose(
        np.asarray(got, dtype=float), np.asarray(expected, dtype=float),
        rtol=RTOL, atol=ATOL, equal_nan=True,
    )  # fmt: skip


def _padded(names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """The named datasets as one NaN-padded batch (rows of different k)."""
    kmax = max(len(DATA["datasets"][n]["yi"]) for n in names)
    y = np.full((len(names), kmax), np.nan)
    v = np.full((len(names), kmax), np.nan)
    for i, n in enumerate(names):
        yi, vi = _data(n)
        y[i, : yi.size], v[i, : vi.size] = yi, vi
    return y, v


def _quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


# ------------------------------------------------------------------ the reference itself


def test_reference_covers_the_requested_grid():
    names = set(DATA["datasets"])
    assert {"bcg", "normand1999", "hackshaw1998", "raudenbush1985", "molloy2014",
            "pritz1997", "egger2001", "collins1985b"} <= names  # fmt: skip
    assert {r["dataset"] for r in DATA["ranktest"]} == names
    grid = {(r["dataset"], r["method"], r["estimator"], r["side_arg"]) for r in DATA["trimfill"]}
    for name, method, est, side in itertools.product(
        names, ("FE", "REML"), ("L0", "R0"), ("auto", "left", "right")
    ):
        assert (name, method, est, side) in grid
    assert {(r["dataset"], r["method"]) for r in DATA["side_fits"]} == set(
        itertools.product(names, METHODS)
    )
    assert {r["type"] for r in DATA["fsn"]} == {"Rosenthal", "Orwin", "Rosenberg"}
    assert {(r["method"], r["test"]) for r in DATA["baujat"]} == set(
        itertools.product(("FE", "DL", "REML", "PM"), ("z", "knha"))
    )
    # The inputs of the shared datasets are the very doubles of metafor_reference.json.
    base = json.loads((REFERENCE.parent / "metafor_reference.json").read_text())["datasets"]
    for name, ds in base.items():
        assert DATA["datasets"][name]["yi"] == ds["yi"]
        assert DATA["datasets"][name]["vi"] == ds["vi"]


# ------------------------------------------------------------------ ranktest


@pytest.mark.parametrize("ref", DATA["ranktest"], ids=lambda r: r["dataset"])
def test_ranktest_matches_metafor(ref):
    yi, vi = _data(ref["dataset"])
    res = ranktest(yi, vi)
    _close([res.tau, res.pval], [_value(ref["tau"]), _value(ref["pval"])])
    assert res.k == yi.size
    ties = any("ties" in w for w in ref["warnings"])
    if ref["tau"] is not None:
        # R falls back to the normal approximation (and warns) exactly when there are ties.
        assert res.exact is (not ties)


def test_ranktest_batch_matches_rows():
    names = [r["dataset"] for r in DATA["ranktest"]]
    y, v = _padded(names)
    res = ranktest(y, v)
    assert res.tau.shape == (len(names),)
    for i, ref in enumerate(DATA["ranktest"]):
        _close([res.tau[i], res.pval[i]], [_value(ref["tau"]), _value(ref["pval"])])
    # Leading batch axes of any rank.
    res2 = ranktest(np.stack([y, -y]), np.stack([v, v]))
    assert res2.tau.shape == (2, len(names))
    _close(res2.tau[1], -res.tau)


@pytest.mark.parametrize("k", [3, 4, 9, 25, 60, 180])
def test_ranktest_exact_pvalue_matches_scipy(k):
    # An independent oracle for the exact null distribution (scipy's own recursion),
    # including k > 170, where R's cor.test returns NaN.
    rng = np.random.default_rng(k)
    yi = rng.normal(0.2, 0.3, k) + np.linspace(0, 0.5, k)
    vi = np.linspace(0.01, 0.2, k) + rng.uniform(0, 1e-3, k)
    res = ranktest(yi, vi)
    w = 1 / vi
    ystar = (yi - (w * yi).sum() / w.sum()) / np.sqrt(vi - 1 / w.sum())
    ref = stats.kendalltau(ystar, vi, method="exact")
    assert res.exact is True
    _close([res.tau, res.pval], [ref.statistic, ref.pvalue])


@pytest.mark.parametrize("n", range(2, 8))
def test_kendall_null_distribution_by_enumeration(n):
    counts = np.zeros(n * (n - 1) // 2 + 1)
    for perm in itertools.permutations(range(n)):
        counts[sum(perm[i] < perm[j] for i in range(n) for j in range(i + 1, n))] += 1
    expected = np.cumsum(counts / math.factorial(n))[: n * (n - 1) // 4 + 1]
    np.testing.assert_allclose(bias._kendall_lower_cdf(n), expected, rtol=1e-13)


def test_ranktest_normal_approximation_when_not_exact_or_too_large(monkeypatch):
    yi, vi = _data("bcg")
    res = ranktest(yi, vi, exact=False)
    w = 1 / vi
    ystar = (yi - (w * yi).sum() / w.sum()) / np.sqrt(vi - 1 / w.sum())
    ref = stats.kendalltau(ystar, vi, method="asymptotic")
    assert res.exact is False
    _close([res.tau, res.pval], [ref.statistic, ref.pvalue])
    monkeypatch.setattr(bias, "EXACT_MAX_K", 10)
    assert ranktest(yi, vi).exact is False  # k = 13 > 10


def test_ranktest_constant_effects_give_nan():
    res = ranktest([0.3] * 5, [0.1, 0.2, 0.05, 0.3, 0.1])
    assert math.isnan(res.tau) and math.isnan(res.pval)


def test_ranktest_reads_estimates():
    yi, vi = _data("bcg")
    res = ranktest(Estimates(yi=yi, vi=vi))
    ref = next(r for r in DATA["ranktest"] if r["dataset"] == "bcg")
    _close(res.tau, ref["tau"])
    assert "Kendall's tau" in str(res)


def test_ranktest_bad_input():
    with pytest.raises(ValueError, match=r"at least 3 studies.*row \[1\] has k = 2"):
        ranktest([[0.1, 0.2, 0.3], [0.1, 0.2, np.nan]], [[0.1, 0.1, 0.2], [0.1, 0.1, np.nan]])
    with pytest.raises(ValueError, match="at least 3 studies.*the data has k = 2"):
        ranktest([0.1, 0.2], [0.1, 0.1])
    with pytest.raises(ValueError, match=r"`vi` has shape \(3,\) but `yi` has shape \(4,\)"):
        ranktest([0.1, 0.2, 0.3, 0.4], [0.1, 0.1, 0.2])
    with pytest.raises(ValueError, match=r"`yi` is NaN for study \[1\] but vi = 0.1"):
        ranktest([0.1, np.nan, 0.3, 0.4], [0.1, 0.1, 0.2, 0.2])
    with pytest.raises(ValueError, match=r"`vi` must be > 0.*vi\[2\] = -0.2"):
        ranktest([0.1, 0.2, 0.3, 0.4], [0.1, 0.1, -0.2, 0.2])
    with pytest.raises(ValueError, match=r"`vi` must be > 0.*vi\[0\] = 0.0"):
        ranktest([0.1, 0.2, 0.3], [0.0, 0.1, 0.2])
    with pytest.raises(ValueError, match=r"must be finite.*yi\[1\] = inf"):
        ranktest([0.1, np.inf, 0.3], [0.1, 0.1, 0.2])
    with pytest.raises(TypeError, match="`vi` is missing"):
        ranktest([0.1, 0.2, 0.3])
    with pytest.raises(TypeError, match="numeric"):
        ranktest(["a", "b", "c"], [0.1, 0.1, 0.2])
    with pytest.raises(ValueError, match="study axis"):
        ranktest(0.3, 0.1)


# ------------------------------------------------------------------ trimfill


def _tf_id(r: dict) -> str:
    return f"{r['dataset']}-{r['method']}-{r['estimator']}-{r['side_arg']}"


def _check_trimfill(res, ref) -> None:
    assert res.side == ref["side"]
    assert res.k0 == ref["k0"]
    _close(
        [res.se_k0, res.p_k0, res.estimate, res.se, res.result.zval, res.pval, res.ci_lb,
         res.ci_ub, res.tau2, res.result.QE, res.result.QEp, res.result.I2, res.result.H2],
        [_value(ref[f]) for f in ("se_k0", "p_k0", "estimate", "se", "zval", "pval", "ci_lb",
                                  "ci_ub", "tau2", "QE", "QEp", "I2", "H2")],
    )  # fmt: skip
    assert res.result.k == ref["k"]
    keep = ~np.isnan(res.yi)
    _close(res.yi[keep], _values(ref["yi"]))
    _close(res.vi[keep], _values(ref["vi"]))
    assert res.fill[keep].tolist() == ref["fill"]


@pytest.mark.parametrize("ref", DATA["trimfill"], ids=_tf_id)
def test_trimfill_matches_metafor(ref):
    yi, vi = _data(ref["dataset"])
    side = None if ref["side_arg"] == "auto" else ref["side_arg"]
    kwargs = dict(estimator=ref["estimator"], side=side, method=ref["method"])
    if "error" in ref:
        if ref["error"].startswith("rma: Fisher scoring"):
            # metafor's default Fisher scoring stops; ours is rescued by the bracketed solve
            # and matches metafor's damped iteration (trimfill(fit, control = ...))
            assert ref["dataset"] == "nonconverge"
            want = next(t for t in RESCUE["trimfill"]
                        if (t["estimator"], t["side_arg"]) == (ref["estimator"], ref["side_arg"]))  # fmt: skip
            res = trimfill(yi, vi, **kwargs)
            assert res.converged is True and (res.side, res.k0) == (want["side"], want["k0"])
            np.testing.assert_allclose([res.estimate, res.se, res.tau2],
                                       [want["estimate"], want["se"], want["tau2"]],
                                       rtol=FS_RTOL)  # fmt: skip
        else:
            # R0 with every effect equal to the trimmed estimate: metafor takes the max of
            # an empty set and stops; nothing is asymmetric, so we report k0 = 0.
            assert ref["dataset"] == "identical" and ref["estimator"] == "R0"
            res = trimfill(yi, vi, **kwargs)
            assert res.k0 == 0 and res.converged is True and res.se_k0 == pytest.approx(2**0.5)
        return
    res = _quiet(trimfill, yi, vi, **kwargs)
    if ref["dataset"] == "identical" and ref["k0"] > 0:
        # All five effects equal 0.3: metafor's trimmed estimate is 0.3 minus one ulp, so
        # every centred effect is positive and L0 "finds" 3 missing studies. Ours is 0.3
        # exactly (all centred effects 0), so nothing is trimmed.
        assert res.k0 == 0 and res.estimate == pytest.approx(0.3)
        return
    assert res.converged is True
    if ref["dataset"] == "identical" and side is None:
        # Equal effects: the side regression's slope is 0. metafor's -1.2e-15 is rounding
        # and says "right"; ours is exactly 0, and slope >= 0 means "left" (metafor's rule).
        assert res.side == "left"
        ref = {**ref, "side": "left"}
    _check_trimfill(res, ref)


@pytest.mark.parametrize("ref", DATA["side_fits"], ids=lambda r: f"{r['dataset']}-{r['method']}")
def test_trimfill_side_regression_matches_metafor(ref):
    yi, vi = _data(ref["dataset"])
    m = np.ones((1, yi.size), dtype=bool)
    tau2, slope, conv = bias._sei_regression(yi[None], vi[None], m, m.sum(-1), ref["method"])
    assert conv[0]
    if ref["dataset"] == "identical":
        # The slope is 0 up to rounding (metafor: -1.2e-15); only tau2 is meaningful.
        _close(tau2[0], ref["tau2"])
        assert abs(slope[0]) < 1e-12
        return
    _close([tau2[0], slope[0]], [ref["tau2"], ref["slope"]])
    res = _quiet(trimfill, yi, vi, method=ref["method"])
    assert res.side == ref["side"]


@pytest.mark.parametrize("method", ["FE", "REML"])
@pytest.mark.parametrize("estimator", ["L0", "R0"])
def test_trimfill_batch_matches_rows(method, estimator):
    names = ["bcg", "normand1999", "hackshaw1998", "pritz1997", "egger2001", "collins1985b"]
    y, v = _padded(names)
    res = trimfill(np.stack([y, y]), np.stack([v, v]), estimator=estimator, method=method)
    assert res.k0.shape == (2, len(names))
    assert res.converged.all()
    for i, name in enumerate(names):
        ref = next(
            r for r in DATA["trimfill"]
            if (r["dataset"], r["method"], r["estimator"], r["side_arg"])
            == (name, method, estimator, "auto")
        )  # fmt: skip
        for j in (0, 1):
            _check_trimfill(res.row((j, i)), ref)


@pytest.mark.parametrize("spec", ["REML_L0", "FE_R0", "DL_L0"])
def test_trimfill_random_sample_in_one_batch(spec):
    rows = DATA["random"]
    y = np.array([r["yi"] for r in rows])
    v = np.array([r["vi"] for r in rows])
    method, estimator = spec.split("_")
    res = _quiet(trimfill, y, v, method=method, estimator=estimator)
    for i, r in enumerate(rows):
        ref = r[spec]
        if "error" in ref:
            # metafor: "Fisher scoring algorithm did not converge" in a trimmed fit; ours
            # is rescued and matches trimfill(..., control = list(stepadj = 0.5))
            assert "did not converge" in ref["error"]
            want = next(t for t in RESCUE_RANDOM if t["row"] == i)
            assert res.converged[i] and (res.k0[i], res.side[i]) == (want["k0"], want["side"])
            np.testing.assert_allclose([res.estimate[i], res.se[i], res.tau2[i]],
                                       [want["estimate"], want["se"], want["tau2"]],
                                       rtol=FS_RTOL)  # fmt: skip
            continue
        assert res.converged[i]
        assert (res.k0[i], res.side[i]) == (ref["k0"], ref["side"])
        _close([res.estimate[i], res.se[i], res.tau2[i]], [ref["estimate"], ref["se"], ref["tau2"]])


def test_ranktest_random_sample_in_one_batch():
    rows = DATA["random"]
    res = ranktest(np.array([r["yi"] for r in rows]), np.array([r["vi"] for r in rows]))
    _close(res.tau, [r["ranktest"]["tau"] for r in rows])
    _close(res.pval, [r["ranktest"]["pval"] for r in rows])


def test_trimfill_result_api():
    yi, vi = _data("hackshaw1998")
    labels = DATA["datasets"]["hackshaw1998"]["labels"]
    res = trimfill(yi, vi, method="REML", labels=labels)
    assert res.k0 == 7
    assert list(res.result.labels[-7:]) == [f"Filled {i}" for i in range(1, 8)]
    d = res.to_dict()
    assert d["k0"] == 7 and d["side"] == "left" and d["result"]["k"] == 44
    text = res.summary()
    assert "Estimated number of missing studies on the left side: 7 (SE = 4.0399)" in text
    assert "Random-Effects Model (k = 44" in text
    r0 = trimfill(Estimates(yi=yi, vi=vi), estimator="R0")
    assert "no missing studies on the left side" in r0.summary() and r0.p_k0 == 2.0**-8
    batch = trimfill(np.stack([yi, yi]), np.stack([vi, vi]))
    assert "Row 1:" in batch.summary()
    with pytest.raises(IndexError):
        res.row(0)


def test_trimfill_and_baujat_take_a_fit_like_metafor():
    # trimfill(rma(...)) / baujat(rma(...)): the fit's studies, method, test and level.
    yi, vi = _data("pritz1997")
    ref = next(r for r in DATA["trimfill"] if (r["dataset"], r["method"], r["estimator"],
               r["side_arg"]) == ("pritz1997", "FE", "R0", "auto"))  # fmt: skip
    fit = pool(yi, vi, method="FE", level=90)
    res = trimfill(fit, estimator="R0")
    assert res.method == "FE" and res.result.level == 90 and res.k0 == ref["k0"]
    _close(res.estimate, ref["estimate"])
    assert trimfill(fit, method="fe").method == "FE"  # the fit's own method, spelled freely
    with pytest.raises(ValueError, match=r"trimfill: `method='REML'` differs from the fitted"):
        trimfill(fit, method="REML")  # another estimator than the fit's is refused, not used
    bref = next(r for r in DATA["baujat"] if (r["dataset"], r["method"], r["test"])
                == ("pritz1997", "PM", "knha"))  # fmt: skip
    _close(baujat(pool(yi, vi, method="PM", test="knha")).y, _values(bref["y"]))


def test_trimfill_ilim_clamps_imputed_effects():
    yi, vi = _data("hackshaw1998")
    free = trimfill(yi, vi, method="FE")
    lo = float(np.min(free.yi[free.fill])) + 0.1
    res = trimfill(yi, vi, method="FE", ilim=(5.0, lo))
    assert res.k0 == free.k0
    assert np.min(res.yi[res.fill]) == pytest.approx(lo)
    assert np.array_equal(res.yi[~res.fill], yi)


def test_trimfill_equal_variances_need_a_side():
    yi = np.array([0.1, 0.3, 0.5, 0.9, 1.2])
    vi = np.full(5, 0.04)
    with pytest.raises(ValueError, match=r"variances of the data are all equal.*side='left'"):
        trimfill(yi, vi)
    with pytest.raises(ValueError, match=r"row \[1\] are all equal"):
        trimfill(np.stack([yi, yi]), np.stack([np.linspace(0.01, 0.05, 5), vi]))
    res = trimfill(yi, vi, side="left", method="FE")
    assert res.side == "left" and res.converged is True


def test_trimfill_bad_input():
    yi, vi = _data("bcg")
    with pytest.raises(ValueError, match="`estimator` must be 'L0' or 'R0'"):
        trimfill(yi, vi, estimator="Q0")
    with pytest.raises(ValueError, match="`side` must be 'left', 'right' or None"):
        trimfill(yi, vi, side="up")
    with pytest.raises(ValueError, match="`method` must be one of"):
        trimfill(yi, vi, method="XX")
    with pytest.raises(ValueError, match="`test` must be 'z' .* or 'knha'"):
        trimfill(yi, vi, test="t")
    with pytest.raises(ValueError, match=r"trimfill needs at least 3 studies.*row \[0\] has k = 2"):
        trimfill([[0.1, 0.2, np.nan], [0.1, 0.2, 0.4]], [[0.1, 0.2, np.nan], [0.1, 0.2, 0.3]])
    with pytest.raises(ValueError, match=r"`vi` is NaN for study \[2\]"):
        trimfill([0.1, 0.2, 0.3], [0.1, 0.2, np.nan])
    with pytest.raises(ValueError, match=r"vi\[1\] = -1.0"):
        trimfill([0.1, 0.2, 0.3], [0.1, -1.0, 0.2])


def test_trimfill_flags_rows_that_do_not_settle():
    yi, vi = _data("hackshaw1998")
    with pytest.warns(RuntimeWarning, match="1 of 1 meta-analyses did not converge"):
        res = trimfill(yi, vi, method="FE", maxiter=1)
    assert res.converged is False and res.iterations == 1


# ------------------------------------------------------------------ fsn


def _fsn_id(r: dict) -> str:
    extra = "" if r["target_arg"] is None else f"-target{r['target_arg']}"
    return f"{r['dataset']}-{r['type']}-a{r['alpha']}-w{r['weighted']}{extra}"


def _fsn_kwargs(ref: dict) -> dict:
    kw = dict(type=ref["type"], alpha=ref["alpha"], weighted=ref["weighted"])
    if ref["target_arg"] is not None:
        kw["target"] = ref["target_arg"]
    return kw


@pytest.mark.parametrize("ref", DATA["fsn"], ids=_fsn_id)
def test_fsn_matches_metafor(ref):
    yi, vi = _data(ref["dataset"])
    res = fsn(yi, vi, **_fsn_kwargs(ref))
    _close(
        [res.fsnum, res.pval, res.meanes, res.target],
        [_value(ref[f]) for f in ("fsnum", "pval", "meanes", "target")],
    )
    assert res.type == ref["type"] and res.alpha == ref["alpha"] and res.k == yi.size


@pytest.mark.parametrize("kind", ["Rosenthal", "Orwin", "Rosenberg"])
def test_fsn_batch_matches_rows(kind):
    names = ["bcg", "normand1999", "hackshaw1998", "molloy2014", "egger2001"]
    y, v = _padded(names)
    res = fsn(y, v, type=kind)
    for i, name in enumerate(names):
        ref = next(
            r for r in DATA["fsn"]
            if r["dataset"] == name and r["type"] == kind and r["alpha"] == 0.05
            and not r["weighted"] and r["target_arg"] is None
        )  # fmt: skip
        _close(
            [res.fsnum[i], res.pval[i], res.meanes[i], res.target[i]],
            [_value(ref[f]) for f in ("fsnum", "pval", "meanes", "target")],
        )


def test_fsn_orwin_without_variances_and_targets():
    yi, _ = _data("bcg")
    ref = next(r for r in DATA["fsn"] if r["dataset"] == "bcg" and r["type"] == "Orwin"
               and not r["weighted"] and r["target_arg"] is None)  # fmt: skip
    assert fsn(yi, type="orwin").fsnum == ref["fsnum"]
    assert fsn(yi, type="Orwin", target=0).fsnum == math.inf
    per_row = fsn(np.stack([yi, yi]), type="Orwin", target=[-0.1, 0.2])
    assert per_row.target.tolist() == [-0.1, -0.2]  # sign follows the (negative) mean
    d = per_row.to_dict()
    assert d["type"] == "Orwin" and d["pval"] == [None, None]
    assert "Fail-safe N" in str(fsn(yi, type="Orwin"))


def test_fsn_bad_input():
    yi, vi = _data("bcg")
    with pytest.raises(ValueError, match="`type` must be one of.*'REM'"):
        fsn(yi, vi, type="REM")
    with pytest.raises(ValueError, match=r"`alpha` must be a significance level in \(0, 1\)"):
        fsn(yi, vi, alpha=5)
    with pytest.raises(TypeError, match="`vi` is missing"):
        fsn(yi, type="Rosenberg")
    with pytest.raises(ValueError, match=r"`target` must be a scalar or one value per"):
        fsn(np.stack([yi, yi]), type="Orwin", target=[0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match=r"fsn needs at least 1 studies.*row \[1\] has k = 0"):
        fsn([[0.1, 0.2], [np.nan, np.nan]], [[0.1, 0.1], [np.nan, np.nan]])
    with pytest.raises(ValueError, match=r"vi\[0\] = 0.0"):
        fsn([0.1, 0.2], [0.0, 0.1])


# ------------------------------------------------------------------ baujat


def _bj_id(r: dict) -> str:
    return f"{r['dataset']}-{r['method']}-{r['test']}"


@pytest.mark.parametrize("ref", DATA["baujat"], ids=_bj_id)
def test_baujat_matches_metafor(ref):
    yi, vi = _data(ref["dataset"])
    if "error" in ref:
        if ref["error"].startswith("rma:"):
            # metafor's default stops; against its damped fit (baujat refits with its control)
            want = RESCUE["baujat"][ref["test"]]
            res = baujat(yi, vi, method=ref["method"], test=ref["test"])
            np.testing.assert_allclose(res.x, want["x"], rtol=1e-9)  # from the rescued fit
            # the converged refits, within Fisher scoring's threshold of the optimum (y
            # spans 4e-5 to 8.5 here)
            np.testing.assert_allclose(res.y, want["y"], rtol=FS_RTOL, atol=1e-6)
        else:
            # Identical effects under knha: every leave-one-out scale factor is 0, so metafor
            # gets 0/0 everywhere and cannot draw; the numbers are NaN here too.
            res = baujat(yi, vi, method=ref["method"], test=ref["test"])
            assert np.isnan(res.y).all()
        return
    res = _quiet(baujat, yi, vi, method=ref["method"], test=ref["test"])
    _close(res.x, _values(ref["x"]))
    _close(res.y, _values(ref["y"]))


def test_baujat_batch_matches_rows():
    names = ["bcg", "normand1999", "molloy2014", "collins1985b"]
    y, v = _padded(names)
    res = baujat(y, v, method="REML", test="knha")
    assert res.x.shape == y.shape
    for i, name in enumerate(names):
        ref = next(r for r in DATA["baujat"] if (r["dataset"], r["method"], r["test"])
                   == (name, "REML", "knha"))  # fmt: skip
        k = len(ref["x"])
        _close(res.x[i, :k], _values(ref["x"]))
        _close(res.y[i, :k], _values(ref["y"]))
        assert np.isnan(res.x[i, k:]).all() and np.isnan(res.y[i, k:]).all()


def test_baujat_small_and_frame():
    # k = 2 under REML: each leave-one-out fit has one study (tau2 = 0, metafor's k1 rule).
    # metafor: baujat(rma(c(0.1, 0.5), c(0.02, 0.03))) and the same with method = "FE".
    res = baujat([0.1, 0.5], [0.02, 0.03])
    _close(res.x, [0.46875, 0.53125])
    _close(res.y, [1.50520833333333, 1.7578125])
    _close(baujat([0.1, 0.5], [0.02, 0.03], method="FE").y, [1.92, 1.28])
    frame = res.to_frame()
    assert list(frame.columns) == ["x", "y", "label"] and frame["label"].tolist() == [1, 2]
    with pytest.raises(ValueError, match="single meta-analysis"):
        baujat([[0.1, 0.5]], [[0.02, 0.03]]).to_frame()


def test_baujat_bad_input():
    with pytest.raises(ValueError, match="baujat needs at least 2 studies.*k = 1"):
        baujat([0.1], [0.1])
    with pytest.raises(ValueError, match="`method` must be one of"):
        baujat([0.1, 0.2], [0.1, 0.1], method="foo")
    with pytest.raises(ValueError, match="`test` must be 'z' .* or 'knha'"):
        baujat([0.1, 0.2], [0.1, 0.1], test="t")
    with pytest.raises(ValueError, match=r"`vi` has shape \(2, 2\) but `yi` has shape \(2, 3\)"):
        baujat(np.zeros((2, 3)), np.ones((2, 2)))
    with pytest.raises(ValueError, match=r"`labels` has shape \(3,\)"):
        baujat([0.1, 0.2], [0.1, 0.1], labels=["a", "b", "c"])

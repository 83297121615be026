"""The compiled per-row kernels against the array-at-a-time numpy path they replace."""

from __future__ import annotations

import subprocess
import sys
import warnings

import numpy as np
import pytest

from spatialmeta.meta_analysis import _kernels, estimators, pool
from spatialmeta.meta_analysis.estimators import MAXITER, THRESHOLD, estimate_tau2

POOL = sys.modules["spatialmeta.meta_analysis.pool"]
FIELDS = (
    "estimate", "se", "zval", "pval", "ci_lb", "ci_ub", "tau2", "se_tau2",
    "I2", "H2", "QE", "QEp", "pi_lb", "pi_ub", "vt", "df",
)  # fmt: skip


def _batch(n=20_000, kmax=20, seed=7):
    """Random meta-analyses with k = 2..kmax studies, the missing ones scattered (NaN),
    a third of them homogeneous; some rows have identical effects (tau2 = 0 exactly)."""
    rng = np.random.default_rng(seed)
    k = rng.integers(2, kmax + 1, n)
    k[:50] = 2
    vi = rng.uniform(0.01, 0.2, (n, kmax))
    tau2 = rng.choice([0.0, 0.02, 0.1], size=(n, 1))
    yi = 0.3 + rng.normal(size=(n, 1)) * 0.1 + rng.normal(size=(n, kmax)) * np.sqrt(vi + tau2)
    yi[50:60] = 0.25
    order = rng.permuted(np.tile(np.arange(kmax), (n, 1)), axis=1)
    missing = order >= k[:, None]
    yi[missing] = np.nan
    vi[missing] = np.nan
    return yi, vi


def _numpy_path(monkeypatch):
    monkeypatch.setattr(estimators, "_COMPILED", False)


def _quiet(*args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # unconverged rows; knha with common effects
        return pool(*args, **kwargs)


@pytest.mark.parametrize("method", ["ML", "REML", "EB"])
def test_tau2_kernel_matches_numpy_path(method, monkeypatch):
    yi, vi = _batch()
    m = ~np.isnan(yi)
    k = m.sum(axis=-1)
    got = estimate_tau2(yi, vi, m, k, method)
    _numpy_path(monkeypatch)
    ref = estimate_tau2(yi, vi, m, k, method)

    np.testing.assert_array_equal(got.converged, ref.converged)
    np.testing.assert_array_equal(got.iterations, ref.iterations)
    # Fisher scoring fails on some rows (MAXITER + 1 steps of an oscillation); both paths
    # then rescue them with the same bracketed solve, so every row converges
    rescued = ref.iterations == MAXITER + 1
    assert rescued.any() and ref.converged.all()
    assert (ref.tau2 == 0.0).any() and (ref.tau2 > 0.0).any()
    np.testing.assert_array_equal(got.tau2[ref.tau2 == 0.0], 0.0)  # the boundary, exactly
    np.testing.assert_allclose(got.tau2, ref.tau2, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(got.se_tau2, ref.se_tau2, rtol=1e-10)
    assert (got.tau2[50:60] == 0.0).all() and got.converged[50:60].all()  # identical effects


@pytest.mark.parametrize("method", ["ML", "REML"])
def test_loglik_check_sets_the_same_rows_to_zero(method, monkeypatch):
    """metafor's loglik(0) > loglik(tau2) + LL_TOL check bites on the same rows."""
    yi, vi = _batch(n=40_000, seed=11)
    m = ~np.isnan(yi)
    k = m.sum(axis=-1)
    kf = k.astype(float)
    got = estimate_tau2(yi, vi, m, k, method)
    _numpy_path(monkeypatch)
    ref = estimate_tau2(yi, vi, m, k, method)
    yc = np.where(m, yi - np.nanmean(yi, axis=-1, keepdims=True), 0.0)
    v1 = np.where(m, vi, 1.0)
    start = np.maximum(0.0, estimators._he(yc, v1, m, kf)[0])
    t, conv, _ = estimators._fisher_scoring(yc, v1, m, kf, method, start)
    bites = conv & (t > THRESHOLD) & (ref.tau2 == 0.0)
    assert bites.any()
    np.testing.assert_array_equal(got.tau2[bites], 0.0)


def test_two_studies_and_all_methods_through_pool(monkeypatch):
    """Every field of pool(), for every estimator and both tests: kernels vs numpy."""
    yi, vi = _batch(n=3000, kmax=12, seed=3)  # rows 0-49 have k = 2
    got, ref = {}, {}
    cases = [(mth, tst) for mth in estimators.METHODS for tst in ("z", "knha")]
    for mth, tst in cases:
        got[mth, tst] = _quiet(yi, vi, method=mth, test=tst)
    _numpy_path(monkeypatch)
    for mth, tst in cases:
        ref[mth, tst] = _quiet(yi, vi, method=mth, test=tst)
    for key in cases:
        a, b = got[key], ref[key]
        np.testing.assert_array_equal(a.converged, b.converged)
        np.testing.assert_array_equal(a.iterations, b.iterations)
        ok = b.converged
        for name in FIELDS:
            np.testing.assert_allclose(
                getattr(a, name)[ok], getattr(b, name)[ok], rtol=1e-9, atol=1e-12,
                equal_nan=True, err_msg=f"{key} {name}",
            )  # fmt: skip
        np.testing.assert_allclose(a.weights[ok], b.weights[ok], rtol=1e-10, equal_nan=True)


def test_user_weights_use_the_kernel_sums(monkeypatch):
    yi, vi = _batch(n=500, kmax=8, seed=5)
    w = np.where(np.isnan(yi), np.nan, np.random.default_rng(0).uniform(0.5, 2.0, yi.shape))
    got = _quiet(yi, vi, weights=w, test="knha")
    _numpy_path(monkeypatch)
    ref = _quiet(yi, vi, weights=w, test="knha")
    for name in FIELDS:
        np.testing.assert_allclose(getattr(got, name), getattr(ref, name), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(got.weights, ref.weights, rtol=1e-12, equal_nan=True)


@pytest.mark.parametrize("method", ["ML", "REML", "EB"])
def test_results_do_not_depend_on_blocks_threads_or_batch(method, monkeypatch):
    """Each row's result depends on that row only: bitwise equal whatever the blocking.

    (The closed-form estimators still sum with BLAS, whose kernels treat the last rows of
    a block differently, so for them this holds to rounding only.)"""
    yi, vi = _batch(n=30_000, seed=13)
    fields = FIELDS + ("weights", "converged", "iterations", "k")
    ref = _quiet(yi, vi, method=method)
    sub = _quiet(yi[1234:1300], vi[1234:1300], method=method)  # a small batch: one block
    for name in fields:
        np.testing.assert_array_equal(getattr(sub, name), getattr(ref, name)[1234:1300], name)
    for block in (2**12, 2**16 + 20, (yi.shape[0] - 1) * yi.shape[1]):  # last: was 29999 + 1 rows
        monkeypatch.setattr(POOL, "_BLOCK_VALUES", block)
        got = _quiet(yi, vi, method=method)
        for name in fields:
            np.testing.assert_array_equal(getattr(got, name), getattr(ref, name), name)
    m = ~np.isnan(yi)
    k = m.sum(axis=-1)
    one = POOL._fit_rows(yi, vi, m, k, method, "z", 95.0, None, workers=1)
    three = POOL._fit_rows(yi, vi, m, k, method, "z", 95.0, None, workers=3)
    for key in one:
        np.testing.assert_array_equal(one[key], three[key], key)


def test_kernels_take_any_memory_layout():
    yi, vi = _batch(n=400, kmax=9, seed=2)
    m = ~np.isnan(yi)
    ref = _kernels.tau2_iterative(yi, vi, m, "REML")
    got = _kernels.tau2_iterative(np.asfortranarray(yi), vi[:, ::1], np.asfortranarray(m), "REML")
    for a, b in zip(got, ref, strict=True):
        np.testing.assert_array_equal(a, b)


def test_importing_the_package_does_not_import_numba():
    code = "import sys, spatialmeta.meta_analysis; assert 'numba' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)

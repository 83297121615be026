"""pool() on dask arrays: out of core, block by block, the same numbers as in memory."""

import warnings

import dask.array as dsa
import numpy as np
import pytest

from spatialmeta.meta_analysis import estimators, pool


def _batch(n=6000, k=12, seed=0):
    rng = np.random.default_rng(seed)
    vi = rng.uniform(0.01, 0.2, size=(n, k))
    yi = 0.3 + rng.normal(size=(n, 1)) * 0.1 + rng.normal(size=(n, k)) * np.sqrt(vi + 0.05)
    drop = rng.random((n, k)) < 0.2  # rows with their own k
    drop[:, :3] = False
    yi[drop] = np.nan
    vi[drop] = np.nan
    return yi.reshape(2, n // 2, k), vi.reshape(2, n // 2, k)


@pytest.mark.parametrize("method", ["REML", "DL", "PM"])
def test_dask_equals_numpy_block_by_block(method):
    yi, vi = _batch()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        ref = pool(yi, vi, method=method)
        got = pool(
            dsa.from_array(yi, chunks=(1, 700, 5)), dsa.from_array(vi, chunks=(1, 700, 12)),
            method=method,
        )  # fmt: skip
    assert got.estimate.shape == (2, 3000)
    ok = ref.converged  # unconverged rows stop after 100 steps: their last iterate is noise
    np.testing.assert_array_equal(got.converged, ref.converged)
    np.testing.assert_array_equal(got.k, ref.k)
    for name in ("estimate", "se", "tau2", "I2", "QE", "pval", "pi_lb", "ci_ub"):
        np.testing.assert_allclose(
            getattr(got, name)[ok], getattr(ref, name)[ok], rtol=1e-12, atol=1e-15, err_msg=name
        )
    assert isinstance(got.yi, dsa.Array) and got.weights is None


def test_dask_reports_unconverged_rows_once(monkeypatch):
    # Fisher scoring fails on a few rows, which the bracketed solve rescues; without the
    # rescue they stay flagged, and the blocks' warnings are reported once
    monkeypatch.setattr(estimators, "rescue_tau2", lambda *a: a[-3:])
    yi, vi = _batch(n=4000, seed=3)
    with pytest.warns(RuntimeWarning) as rec:
        got = pool(dsa.from_array(yi, chunks=(1, 500, 12)), dsa.from_array(vi, chunks=(1, 500, 12)))
    mine = [w for w in rec if "did not converge" in str(w.message)]
    assert (~got.converged).any()
    assert len(mine) == 1 and f"for {int((~got.converged).sum())} of 4000" in str(mine[0].message)


def test_dask_bad_input_is_named():
    yi, vi = _batch(n=200)
    y = dsa.from_array(yi, chunks=(1, 50, 12))
    with pytest.raises(ValueError, match="without moderators"):
        pool(y, dsa.from_array(vi), mods=np.ones(12))
    with pytest.raises(ValueError, match="`vi` has shape"):
        pool(y, dsa.from_array(vi[..., :-1]))
    bad = vi.copy()
    bad[1, 60, 4] = -1.0
    bad_yi = yi.copy()
    bad_yi[1, 60, 4] = 0.1
    with pytest.raises(ValueError, match="rows 150-199 of the flattened batch.*must be > 0"):
        pool(dsa.from_array(bad_yi, chunks=(1, 50, 12)), dsa.from_array(bad, chunks=(1, 50, 12)))

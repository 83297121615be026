"""The compiled zonal kernels against plain dense numpy on random patterns."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from spatialmeta.raster._kernels import clip_half, run_fields, runs_of


def _pattern(rng, n_reg, ny, nx, density=0.4):
    dense = (rng.random((n_reg, ny * nx)) < density) * rng.random((n_reg, ny * nx))
    dense[:, : nx + 3] = rng.random((n_reg, nx + 3))  # runs across a row end
    return sp.csr_matrix(dense)


def test_runs_cover_the_pattern_once_and_stop_at_row_ends():
    rng = np.random.default_rng(1)
    ny, nx = 7, 9
    f = _pattern(rng, 4, ny, nx)
    start, length, region, offset = runs_of(f.indptr, f.indices, nx)
    assert np.all(np.diff(start) >= 0)  # memory order
    assert length.sum() == f.nnz and np.all(length > 0)
    assert np.all(start // nx == (start + length - 1) // nx)  # within one grid row
    seen = np.zeros(f.nnz, int)
    for s, n, r, o in zip(start, length, region, offset, strict=True):
        np.testing.assert_array_equal(f.indices[o : o + n], np.arange(s, s + n))
        assert f.indptr[r] <= o and o + n <= f.indptr[r + 1]
        seen[o : o + n] += 1
    assert np.all(seen == 1)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int16])
def test_run_fields_match_dense_sums_with_nan_cells(dtype):
    rng = np.random.default_rng(2)
    ny, nx, nt = 6, 11, 13
    frac = _pattern(rng, 5, ny, nx)
    area = rng.uniform(1.0, 2.0, ny * nx)
    w = sp.csr_matrix((frac.data * area[frac.indices], frac.indices, frac.indptr), frac.shape)
    x = (rng.normal(280, 5, (nt, ny * nx))).astype(dtype)
    if np.issubdtype(dtype, np.floating):
        x[3, 5] = np.nan
        x[7, :20] = np.nan
        x[9, :] = np.nan
    out = np.empty((nt, 5, 5))
    run_fields(x, *runs_of(w.indptr, w.indices, nx), w.data, frac.data, True, True, True, out)
    xf = x.astype(np.float64)
    ok = np.isfinite(xf)
    xz = np.where(ok, xf, 0.0)
    W, F = w.toarray(), frac.toarray()
    expect = np.stack(
        [ok @ W.T, xz @ W.T, (xz * xz) @ W.T, xz @ F.T, ok @ F.T], axis=-1
    )  # (t, region, field)
    np.testing.assert_allclose(out, expect, rtol=1e-12, atol=1e-12)
    if np.issubdtype(dtype, np.floating):
        assert np.all(out[9, :, :2] == 0.0)  # all-NaN step: no valid weight, nothing summed


def test_clip_half_matches_a_hand_clipped_square():
    # unit square (ring 0) and a triangle (ring 1), clipped to x >= 0.25
    a = np.array([0.0, 1.0, 1.0, 0.0, 0.0, 0.2, 0.1])
    b = np.array([0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.5])
    rid = np.array([0, 0, 0, 0, 1, 1, 1])
    edge = np.arange(7)
    none = np.full(7, -1)
    oa, ob, orid, tout, ton, tax = clip_half(
        a, b, rid, np.array([0.25, 0.25]), True, edge, none, np.zeros(7, np.int8), 0
    )
    # the triangle lies wholly left of the line and vanishes; the square keeps 4 vertices
    np.testing.assert_array_equal(orid, [0, 0, 0, 0])
    np.testing.assert_allclose(np.c_[oa, ob], [[0.25, 0], [1, 0], [1, 1], [0.25, 1]])
    # crossing points lie on original edges 0 (entering) and 2 (leaving, then the outline)
    np.testing.assert_array_equal(ton, [0, -1, -1, 2])
    np.testing.assert_array_equal(tout, [0, 1, 2, -1])

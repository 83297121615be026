"""Per-cell trends of the CCSM ensemble pooled at every grid cell, against R.

References: ``tests/reference/gridded_reference.json`` (lm + sandwich::NeweyWest for the
trends, metafor::rma.uni for the pooling; made by make_gridded_reference.{py,R}).
"""

import json
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from spatialmeta.meta_analysis import pool
from spatialmeta.meta_analysis.gridded import GRID_FIELDS, pool_gridded
from spatialmeta.raster import open_raster
from spatialmeta.tasks.trend import ols_trend, trend_field
from tests.conftest import shared_path

REF = json.loads((Path(__file__).parents[1] / "reference" / "gridded_reference.json").read_text())
FIELDS = ("estimate", "se", "zval", "pval", "ci_lb", "ci_ub", "tau2", "se_tau2", "I2", "H2",
          "QE", "QEp", "pi_lb", "pi_ub")  # fmt: skip


@pytest.fixture(scope="module")
def ensemble():
    ds = open_raster(str(shared_path("trefht_ccsm_ensemble")) + "/TREFHT.*.nc")
    return ds.TREFHT.chunk({"member": 1, "lat": 16, "lon": -1})


@pytest.fixture(scope="module")
def trends(ensemble):
    return trend_field(ensemble).compute()


def test_reference_series_are_what_open_raster_reads(ensemble):
    for cell in REF["cells"]:
        got = ensemble.isel(lat=cell["lat_index"], lon=cell["lon_index"]).values
        np.testing.assert_array_equal(got, np.asarray(cell["series"], dtype=np.float32))


def test_trends_match_lm_and_sandwich_newey_west(trends):
    assert trends.attrs["newey_west_lags"] == REF["lags"]
    assert trends.trend.attrs["units"] == "K per 10 years"
    for cell, res in zip(REF["cells"], REF["results"], strict=True):
        at = trends.isel(lat=cell["lat_index"], lon=cell["lon_index"])
        np.testing.assert_allclose(at.trend.values, res["yi"], rtol=1e-6)
        np.testing.assert_allclose(at.trend_var.values, res["vi"], rtol=1e-6)
        assert (at.n.values == len(REF["t_decades"])).all()


@pytest.mark.parametrize("fit", ["REML_z", "REML_knha", "DL_z", "DL_knha"])
def test_pooled_cells_match_metafor(fit):
    method, test = fit.split("_")
    yi = xr.DataArray(np.array([r["yi"] for r in REF["results"]]), dims=("cell", "member"))
    vi = xr.DataArray(np.array([r["vi"] for r in REF["results"]]), dims=("cell", "member"))
    out = pool_gridded(yi.chunk({"cell": 3}), vi, method=method, test=test).compute()
    for name in FIELDS:
        want = np.array([r["fits"][fit][name] for r in REF["results"]], dtype=float)
        np.testing.assert_allclose(out[name].values, want, rtol=1e-6, atol=1e-8, err_msg=name)
    assert (out.k.values == 8).all() and (out.converged.values == 1).all()


def test_pooled_trend_map_of_the_ensemble(trends):
    maps = pool_gridded(trends.trend.chunk({"lat": 16}), trends.trend_var, method="REML")
    assert maps.estimate.chunks is not None  # lazy until computed
    maps = maps.compute()
    assert dict(maps.estimate.sizes) == {"lat": 64, "lon": 128}
    assert set(GRID_FIELDS) <= set(maps.data_vars)
    assert maps.estimate.attrs["units"] == "K per 10 years"
    # every cell is its own meta-analysis: equal to pooling that cell alone
    for i, j in [(0, 0), (17, 45), (63, 127)]:
        cell = pool(trends.trend[:, i, j].values, trends.trend_var[:, i, j].values)
        for name in ("estimate", "tau2", "I2", "pi_lb"):
            np.testing.assert_allclose(maps[name][i, j], getattr(cell, name), rtol=1e-12)
    ok = maps.converged.values == 1
    assert ok.mean() > 0.99
    i2 = maps.I2.values[ok]
    assert (i2 >= 0).all() and (i2 <= 100).all() and (maps.tau2.values[ok] >= 0).all()
    # the 20th-century ensemble warms on average: most cells have a positive pooled trend
    assert (maps.estimate.values > 0).mean() > 0.7


def test_missing_members_drop_out_per_cell():
    rng = np.random.default_rng(1)
    v = rng.uniform(0.01, 0.1, (6, 4))
    y = rng.normal(size=(6, 4))
    y[2, 1] = np.nan  # member 2 missing at cell 1
    y[:, 3] = np.nan
    y[0, 3] = 0.2  # cell 3: a single member, random effects undefined
    out = pool_gridded(
        xr.DataArray(y, dims=("member", "cell")), xr.DataArray(v, dims=("member", "cell"))
    )
    assert out.k.values.tolist() == [6, 5, 6, 1]
    alone = pool(np.delete(y[:, 1], 2), np.delete(v[:, 1], 2))
    np.testing.assert_allclose(out.estimate[1], alone.estimate, rtol=1e-12)
    assert np.isnan(out.estimate[3]) and np.isnan(out.tau2[3])
    fe = pool_gridded(
        xr.DataArray(y, dims=("member", "cell")), xr.DataArray(v, dims=("member", "cell")),
        method="FE",
    )  # fmt: skip
    np.testing.assert_allclose(fe.estimate[3], 0.2)


def test_bad_input_names_the_dimension():
    y = xr.DataArray(np.zeros((3, 2)), dims=("study", "cell"))
    with pytest.raises(ValueError, match="no study dimension 'member'.*pass dim="):
        pool_gridded(y, y + 0.1)
    with pytest.raises(ValueError, match="no dimension 'time'"):
        trend_field(y)
    with pytest.raises(ValueError, match="not datetime"):
        trend_field(y, dim="study")


def test_ols_trend_matches_scipy_and_masks_nan():
    from scipy import stats

    rng = np.random.default_rng(3)
    t = np.arange(30.0)
    y = rng.normal(size=(4, 30)) + 0.1 * t
    y[1, [3, 8, 20]] = np.nan
    slope, var, n = ols_trend(y, t, lags=0)
    for r in range(4):
        keep = np.isfinite(y[r])
        ref = stats.linregress(t[keep], y[r, keep])
        np.testing.assert_allclose(slope[r], ref.slope, rtol=1e-12)
    assert n.tolist() == [30, 27, 30, 30]
    # lags = 0 is White's heteroskedasticity-consistent variance (HC0)
    keep = np.isfinite(y[1])
    tt, yy = t[keep], y[1, keep]
    X = np.column_stack([np.ones_like(tt), tt])
    e = yy - X @ np.linalg.lstsq(X, yy, rcond=None)[0]
    bread = np.linalg.inv(X.T @ X)
    hc0 = bread @ (X.T * e**2) @ X @ bread
    np.testing.assert_allclose(var[1], hc0[1, 1], rtol=1e-10)
    short, _, _ = ols_trend(np.array([[1.0, 2.0, np.nan]]), np.arange(3.0))
    assert np.isnan(short[0])  # fewer than three values: no trend

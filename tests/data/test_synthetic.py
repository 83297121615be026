import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import rasterio
import shapely
import xarray as xr
from scipy import stats

from spatialmeta.data import synthetic_climate, synthetic_regions
from spatialmeta.data.synthetic import LAPSE_RATE_K_PER_KM, gaussian_random_field
from spatialmeta.raster import open_raster


@pytest.fixture(scope="module")
def ds():
    return synthetic_climate(years=30, seed=11)


def test_deterministic_for_a_seed():
    a = synthetic_climate(bbox=(0, 40, 10, 50), years=3, seed=5)
    b = synthetic_climate(bbox=(0, 40, 10, 50), years=3, seed=5)
    c = synthetic_climate(bbox=(0, 40, 10, 50), years=3, seed=6)
    xr.testing.assert_identical(a, b)
    assert not np.allclose(a.tas.values, c.tas.values)


def test_grid_time_and_crs(ds):
    assert str(ds.rio.crs) == "EPSG:4326"
    assert (np.diff(ds.lat.values) > 0).all() and (np.diff(ds.lon.values) > 0).all()
    np.testing.assert_allclose(ds.lat_bnds.mean("bnds"), ds.lat)
    np.testing.assert_allclose(ds.lon_bnds.diff("bnds").squeeze(), 1.0)
    assert ds.sizes["time"] == 360
    t = pd.DatetimeIndex(ds.time.values)
    assert (t.day == 1).all() and (np.diff(t.month) % 12 == 1).all()
    assert ds.tas.attrs["units"] == "K"


def test_seasonal_amplitude_grows_with_latitude(ds):
    clim = ds.tas.groupby("time.month").mean()
    amp = (clim.max("month") - clim.min("month")).mean("lon")
    rho = stats.spearmanr(ds.lat.values, amp.values).statistic
    assert rho > 0.95
    assert float(amp[-1] - amp[0]) > 15.0  # 40 degrees of latitude: > 15 K more amplitude


def test_lapse_rate_from_terrain(ds):
    mean = ds.tas.mean("time").values
    lat2d = np.broadcast_to(ds.lat.values[:, None], mean.shape)
    trend_term = ds.trend.values * 1.45  # mean decades elapsed over 30 years = 1.45
    x = np.column_stack(
        [np.ones(mean.size), np.abs(lat2d).ravel(), ds.orog.values.ravel() / 1000.0]
    )
    coef, *_ = np.linalg.lstsq(x, (mean - trend_term).ravel(), rcond=None)
    assert coef[2] == pytest.approx(-LAPSE_RATE_K_PER_KM, abs=0.3)


def test_anomalies_ar1_and_trend(ds):
    clim = ds.tas.groupby("time.month").mean()
    anom = (ds.tas.groupby("time.month") - clim).values
    t = np.arange(ds.sizes["time"]) / 120.0
    tc = t - t.mean()
    slope = np.einsum("t,tij->ij", tc, anom) / (tc**2).sum()
    # the fitted trends track the generator's regional trends (noise from AR(1) anomalies is
    # larger than the spatial spread of trends, as in real records) and are unbiased
    assert stats.pearsonr(slope.ravel(), ds.trend.values.ravel()).statistic > 0.3
    assert slope.mean() == pytest.approx(float(ds.trend.mean()), abs=0.03)
    resid = anom - slope[None] * tc[:, None, None]
    r1 = np.mean(np.sum(resid[1:] * resid[:-1], 0) / np.sum(resid**2, 0))
    assert r1 == pytest.approx(0.6, abs=0.06)


def test_anomalies_spatially_correlated(ds):
    a = ds.tas.groupby("time.month") - ds.tas.groupby("time.month").mean()
    a = a.values
    near = np.corrcoef(a[:, 20, 30], a[:, 20, 31])[0, 1]
    far = np.corrcoef(a[:, 20, 0], a[:, 20, 59])[0, 1]
    assert near > 0.9 and abs(far) < 0.5


def test_precipitation_skewed_and_positive(ds):
    pr = ds.pr.values.ravel()
    assert (pr >= 0).all()
    assert stats.skew(pr) > 0.8


def test_grf_unit_variance_and_correlation_length():
    rng = np.random.default_rng(0)
    lat, lon = np.arange(0.5, 60), np.arange(0.5, 120)
    f = gaussian_random_field((50,), lat, lon, 400.0, rng)
    np.testing.assert_allclose(f.std(axis=(1, 2)), 1.0, rtol=1e-9)
    short = np.mean(f[:, :, :-1] * f[:, :, 1:])
    long = np.mean(f[:, :, :-20] * f[:, :, 20:])
    assert short > 0.9 and long < 0.2


def test_bad_bbox():
    with pytest.raises(ValueError, match="west < east"):
        synthetic_climate(bbox=(10, 0, 0, 10))


def test_regions_tessellate_domain():
    g = synthetic_regions((-20, 30, 40, 70), 80, seed=2)
    assert g.is_valid.all() and g.region_id.is_unique
    union = g.geometry.union_all()
    assert union.area == pytest.approx(2400.0, abs=1e-6)  # covers the box ...
    assert shapely.area(g.geometry.to_numpy()).sum() == pytest.approx(
        2400.0, abs=1e-6
    )  # ... no overlap
    assert union.bounds == pytest.approx((-20, 30, 40, 70))
    with pytest.raises(ValueError, match="at least 2"):
        synthetic_regions(n_regions=1)


def test_written_formats_round_trip(small_data):
    nc, tif, zarr = (
        open_raster(p) for p in (small_data.netcdf, small_data.geotiff, small_data.zarr)
    )
    np.testing.assert_array_equal(nc.tas.values, tif.tas.values)
    np.testing.assert_array_equal(nc.tas.values, zarr.tas.values)
    np.testing.assert_array_equal(nc.time.values, tif.time.values)
    with rasterio.open(small_data.geotiff) as src:
        assert src.crs.to_epsg() == 4326
        assert src.count == nc.sizes["time"]
        assert src.tags(1)["time"] == "1981-01-01T00:00:00"
        assert src.transform.a == pytest.approx(1.0) and src.transform.e == pytest.approx(-1.0)
        assert src.bounds.top == pytest.approx(60.0)
    regions = gpd.read_file(small_data.regions)
    assert regions.crs.to_epsg() == 4326 and len(regions) > 10

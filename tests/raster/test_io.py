import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from spatialmeta.raster import RasterError, normalize, open_raster, write_netcdf
from tests.conftest import shared_path


def _grid(lon, lat, lon_name="longitude", lat_name="latitude"):
    rng = np.random.default_rng(0)
    data = rng.normal(size=(2, len(lat), len(lon)))
    return xr.Dataset(
        {"t": (("time", lat_name, lon_name), data)},
        coords={"time": pd.date_range("2000", periods=2, freq="MS"), lat_name: lat, lon_name: lon},
    )


def test_normalize_wraps_longitudes_and_flips_latitude():
    lon360 = np.arange(0.0, 360.0, 30.0)
    lat_desc = np.array([45.0, 15.0, -15.0, -45.0])
    raw = _grid(lon360, lat_desc)
    ds = normalize(raw)
    assert list(ds.t.dims) == ["time", "lat", "lon"]
    assert (np.diff(ds.lon.values) > 0).all() and ds.lon.min() >= -180 and ds.lon.max() < 180
    assert (np.diff(ds.lat.values) > 0).all()
    assert str(ds.rio.crs) == "EPSG:4326"
    # the same values sit at the same places
    for lon in (0.0, 30.0, 210.0, 330.0):
        wrapped = ((lon + 180) % 360) - 180
        np.testing.assert_array_equal(
            ds.t.sel(lon=wrapped, lat=15.0).values, raw.t.sel(longitude=lon, latitude=15.0).values
        )


def test_open_netcdf_is_lazy(tmp_path):
    p = write_netcdf(_grid(np.arange(-10.0, 10.0, 5), np.arange(40.0, 50.0, 5)), tmp_path / "g.nc")
    ds = open_raster(p)
    assert ds.t.chunks is not None


def test_missing_and_unknown_and_corrupt_files(tmp_path):
    with pytest.raises(RasterError, match="does not exist"):
        open_raster(tmp_path / "nope.nc")
    odd = tmp_path / "data.xyz"
    odd.write_text("x")
    with pytest.raises(RasterError, match="cannot tell the format of .*data.xyz"):
        open_raster(odd)
    bad = tmp_path / "broken.nc"
    bad.write_bytes(b"not a netcdf file at all")
    with pytest.raises(RasterError, match="cannot read raster .*broken.nc"):
        open_raster(bad)


def test_projected_without_crs_needs_assume_crs():
    ds = _grid(np.arange(0.0, 5e5, 1e5), np.arange(0.0, 4e5, 1e5), "x", "y")
    with pytest.raises(RasterError, match="`assume_crs`"):
        normalize(ds)
    out = normalize(ds, assume_crs="EPSG:3035")
    assert out.rio.crs.to_epsg() == 3035 and "x" in out.dims


def test_grib_reads_and_exits_cleanly():
    grib = shared_path("era5_t2m_uk_2019-03.grib")
    code = (
        "from spatialmeta.raster import open_raster\n"
        f"ds = open_raster({str(grib)!r})\n"
        "print(dict(ds.sizes), float(ds.t2m.isel(time=0).mean()))\n"
    )
    # eccodes builds have crashed at interpreter exit beside pyproj: check the exit code
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "'time': 744, 'lat': 33, 'lon': 49" in proc.stdout
    mean_k = float(proc.stdout.split()[-1])
    assert 260 < mean_k < 290


def test_geotiff_nodata_and_band_scales_are_decoded(tmp_path):
    """A packed int16 GeoTIFF with a nodata value: the nodata cell is NaN (it must never
    enter a regional mean as -1), and values are scale * stored + offset, as GDAL states."""
    import geopandas as gpd
    import rasterio
    import shapely
    from rasterio.transform import from_bounds

    from spatialmeta.raster import zonal_mean, zonal_weights

    stored = (np.arange(2 * 4 * 5).reshape(2, 4, 5) + 100).astype("int16")
    stored[0, 1, 1] = -1
    path = tmp_path / "packed.tif"
    profile = dict(driver="GTiff", count=2, height=4, width=5, dtype="int16", crs="EPSG:4326",
                   transform=from_bounds(0, 0, 5, 4, 5, 4), nodata=-1)  # fmt: skip
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(stored)
        dst.scales, dst.offsets = (0.5, 0.5), (200.0, 200.0)
    da = open_raster(path).band_data
    expect = np.where(stored == -1, np.nan, 200.0 + 0.5 * stored)[:, ::-1, :]  # lat ascends
    np.testing.assert_array_equal(da.values, expect)
    # one region over the whole raster: the mean skips the nodata cell
    region = gpd.GeoDataFrame({"region_id": ["all"]}, geometry=[shapely.box(0, 0, 5, 4)],
                              crs="EPSG:4326")  # fmt: skip
    w = zonal_weights(da.to_dataset(), region)
    got = zonal_mean(da, w).values[:, 0]
    area = w.cell_area.reshape(4, 5)
    for t in range(2):
        ok = np.isfinite(expect[t])
        ref = (expect[t][ok] * area[ok]).sum() / area[ok].sum()
        np.testing.assert_allclose(got[t], ref, rtol=1e-12)

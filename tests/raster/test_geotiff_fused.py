"""Zonal statistics read straight from an unmodified band-interleaved GeoTIFF.

The fused path (bands read a few at a time and reduced in cache) must give the numbers of
the generic chunked path, and must only be taken when the variable is exactly what
open_raster returned from a band-interleaved, unpacked file.
"""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
from rasterio.transform import from_bounds

from spatialmeta.raster import RasterError, open_raster, zonal_stats, zonal_weights
from spatialmeta.raster.io import geotiff_source

STATS = ("mean", "std", "sum", "count")


def _write(path, data, *, north_up=True, interleave="band", nodata=None):
    nt, ny, nx = data.shape
    west, south, east, north = 0.0, 40.0, 6.0, 44.0
    if not north_up:  # a south-up file: first row at the southern edge
        transform = rasterio.Affine(6.0 / nx, 0, west, 0, 4.0 / ny, south)
    else:
        transform = from_bounds(west, south, east, north, nx, ny)
    profile = dict(driver="GTiff", count=nt, height=ny, width=nx, dtype=data.dtype.name,
                   crs="EPSG:4326", transform=transform, tiled=True, blockxsize=16,
                   blockysize=16, interleave=interleave, nodata=nodata)  # fmt: skip
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    return path


@pytest.fixture(scope="module")
def regions():
    boxes = [shapely.box(0.3, 40.2, 2.7, 43.1), shapely.box(2.5, 41.0, 5.9, 43.9),
             shapely.Point(3.0, 42.0).buffer(0.9)]  # fmt: skip
    return gpd.GeoDataFrame({"region_id": ["a", "b", "c"]}, geometry=boxes, crs="EPSG:4326")


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(5)
    x = (280 + 5 * rng.normal(size=(23, 32, 48))).astype("float32")
    x[3, 10:14, 20:30] = np.nan  # NaN cells inside regions (no nodata tag: plain NaN)
    x[7] = np.nan
    return x


@pytest.mark.parametrize("north_up", [True, False])
def test_fused_path_matches_the_chunked_path(tmp_path, regions, data, north_up):
    path = _write(tmp_path / "band.tif", data, north_up=north_up)
    ds = open_raster(path)
    src = geotiff_source(ds.band_data)
    assert src is not None and src.rows_reversed == north_up
    np.testing.assert_array_equal(src.bands, np.arange(1, 24))
    w = zonal_weights(ds, regions)
    fused = zonal_stats(ds, w, stats=STATS).compute()
    # any arithmetic gives a new graph: the generic path over dask chunks
    plain = ds.copy()
    plain["band_data"] = ds.band_data + 0.0
    assert geotiff_source(plain.band_data) is None
    chunked = zonal_stats(plain, w, stats=STATS).compute()
    for name in fused.data_vars:
        np.testing.assert_allclose(
            fused[name].values, chunked[name].values, rtol=1e-12, atol=1e-9, err_msg=name
        )
    assert np.isnan(fused.band_data_mean.values[7]).all()  # an all-NaN step


def test_only_unmodified_band_interleaved_unpacked_variables_qualify(tmp_path, data):
    band = open_raster(_write(tmp_path / "band.tif", data))
    assert geotiff_source(band.band_data) is not None
    assert geotiff_source(band.band_data.isel(band=slice(0, 5))) is None
    assert geotiff_source(band.band_data * 2) is None
    pixel = open_raster(_write(tmp_path / "pixel.tif", data, interleave="pixel"))
    assert geotiff_source(pixel.band_data) is None
    packed = open_raster(_write(tmp_path / "nd.tif", np.nan_to_num(data, nan=-9999.0),
                                nodata=-9999.0))  # fmt: skip
    assert geotiff_source(packed.band_data) is None  # decoded (masked) on read instead
    assert np.isnan(packed.band_data.values[7]).all()


def test_a_file_gone_before_compute_is_named(tmp_path, regions, data):
    path = _write(tmp_path / "gone.tif", data)
    ds = open_raster(path)
    w = zonal_weights(ds, regions)
    lazy = zonal_stats(ds, w)
    path.unlink()
    with pytest.raises(RasterError, match="gone.tif"):
        lazy.compute()

"""Zonal means on the shared real data against exactextract, and invariants of normalization.

exactextract reads rasters through GDAL, which sees only regular grids; the CCSM file's
Gaussian latitudes are therefore compared on the regular grid GDAL reports for it, and the
Gaussian bounds themselves are checked against the Gauss–Legendre quadrature weights.
"""

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import xarray as xr
from rasterio.transform import Affine

from spatialmeta.data import synthetic_regions
from spatialmeta.raster import open_raster, spherical_cell_area, zonal_mean, zonal_weights
from spatialmeta.raster.grid import EARTH_RADIUS_M
from tests.conftest import shared_path

exactextract = pytest.importorskip("exactextract")


def _geotiff(path, data, west, top, dx, dy):
    """Write (band, row, col) data, rows north→south, on a regular grid."""
    profile = dict(driver="GTiff", count=data.shape[0], height=data.shape[1], width=data.shape[2],
                   dtype=str(data.dtype), crs="EPSG:4326", transform=Affine(dx, 0, west, 0, -dy, top))  # fmt: skip
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    return path


def _exactextract_means(values_tif, area_tif, polygons, id_column):
    ref = exactextract.exact_extract(
        str(values_tif), polygons, "weighted_mean", weights=str(area_tif),
        include_cols=[id_column], output="pandas", strategy="raster-sequential",
    )  # fmt: skip
    cols = [c for c in ref.columns if c.endswith("weighted_mean")]
    return ref.set_index(id_column)[cols]


@pytest.fixture(scope="module")
def trefht():
    return open_raster(str(shared_path("trefht_ccsm_ensemble")) + "/TREFHT.*.nc")


@pytest.fixture(scope="module")
def states():
    return gpd.read_file(shared_path("us_states", "states.shp"))


def test_members_combined_with_labels_and_decoded_time(trefht):
    assert list(trefht.member.values) == ["57", "59", "60", "61", "66", "67", "68", "69"]
    assert trefht.TREFHT.dims == ("member", "time", "lat", "lon")
    t = trefht.time.to_index()
    assert t[0].year == 1890 and t[-1].year == 1999 and len(t) == 110
    assert (t.month == 7).all()  # annual means stamped mid-year in a 365-day calendar
    assert "noleap" in trefht.time.attrs["decoded_from"]
    assert trefht.lon.min() == -180 and (np.diff(trefht.lon) > 0).all()
    assert (np.diff(trefht.lat) > 0).all()


def test_gaussian_bounds_match_quadrature_weights(trefht):
    _, w = np.polynomial.legendre.leggauss(trefht.sizes["lat"])
    band_area = spherical_cell_area(trefht.lat_bnds.values, np.array([[-180.0, 180.0]]))[:, 0]
    np.testing.assert_allclose(band_area, w * 2 * np.pi * EARTH_RADIUS_M**2, rtol=1e-12)
    assert trefht.lat_bnds.values[0, 0] == -90 and trefht.lat_bnds.values[-1, 1] == 90


def test_trefht_states_match_exactextract_all_members(trefht, states, tmp_path):
    # the regular grid GDAL reports for this file (average latitude spacing from the pole)
    with rasterio.open(f"netcdf:{trefht.attrs['source_path'][0]}:TREFHT") as src:
        dy, top = -src.transform.e, src.transform.f
    ny = trefht.sizes["lat"]
    edges = top - dy * np.arange(ny + 1)[::-1]  # ascending
    reg = trefht.assign(lat_bnds=(("lat", "bnds"), np.stack([edges[:-1], edges[1:]], 1)))
    lon_b = trefht.lon_bnds.values
    w = zonal_weights(reg, states, id_column="STATE_NAME")
    ours = zonal_mean(reg.TREFHT, w).compute()  # (member, time, region)
    area = spherical_cell_area(reg.lat_bnds.values, lon_b)[::-1][None].astype("float64")
    area_tif = _geotiff(
        tmp_path / "area.tif", area, lon_b[0, 0], top, lon_b[0, 1] - lon_b[0, 0], dy
    )
    for m, member in enumerate(trefht.member.values):
        data = reg.TREFHT.isel(member=m).values[:, ::-1, :]
        tif = _geotiff(
            tmp_path / f"m{member}.tif", data, lon_b[0, 0], top, lon_b[0, 1] - lon_b[0, 0], dy
        )
        ref = _exactextract_means(tif, area_tif, states, "STATE_NAME")
        theirs = ref.loc[ours.region.values].to_numpy().T
        np.testing.assert_allclose(ours.isel(member=m).values, theirs, rtol=1e-6)
    # and the true Gaussian bounds move the means only slightly (the grids differ by < 0.05°)
    gauss = zonal_mean(
        trefht.TREFHT.isel(member=0, time=slice(0, 5)),
        zonal_weights(trefht, states, id_column="STATE_NAME"),
    )
    diff = np.abs(gauss.values - ours.isel(member=0, time=slice(0, 5)).values)
    assert 0 < diff.max() < 0.5


def test_population_weighted_state_means_match_exactextract(trefht, states, tmp_path):
    """Issue 18's acceptance: population-weighted state means of every member of the TREFHT
    ensemble equal exactextract's weighted_mean (its default coverage weight, the fraction)
    with the same synthetic population grid."""
    with rasterio.open(f"netcdf:{trefht.attrs['source_path'][0]}:TREFHT") as src:
        dy, top = -src.transform.e, src.transform.f
    ny, nx = trefht.sizes["lat"], trefht.sizes["lon"]
    edges = top - dy * np.arange(ny + 1)[::-1]
    reg = trefht.assign(lat_bnds=(("lat", "bnds"), np.stack([edges[:-1], edges[1:]], 1)))
    lon_b = trefht.lon_bnds.values
    dx = lon_b[0, 1] - lon_b[0, 0]
    # people cluster: a few lognormal "cities" over a smooth background, zero over the sea
    rng = np.random.default_rng(18)
    lat, lon = np.meshgrid(reg.lat.values, reg.lon.values, indexing="ij")
    pop = 5 + 3 * np.cos(np.radians(lat)) + rng.lognormal(0, 1.5, (ny, nx))
    pop[rng.random((ny, nx)) < 0.2] = 0.0
    pop_da = xr.DataArray(pop, dims=("lat", "lon"), coords={"lat": reg.lat, "lon": reg.lon})
    pop_tif = _geotiff(tmp_path / "pop.tif", pop[::-1][None], lon_b[0, 0], top, dx, dy)
    w = zonal_weights(reg, states, id_column="STATE_NAME")
    from spatialmeta.raster import zonal_stats

    ours = zonal_stats(reg[["TREFHT"]], w, stats=("weighted_mean",), weight=pop_da,
                       coverage_weight="fraction")["TREFHT_weighted_mean"].compute()  # fmt: skip
    plain = zonal_mean(reg.TREFHT, w).compute()
    assert float(np.abs(ours - plain).max()) > 0.05  # the weighting matters
    for m, member in enumerate(trefht.member.values):
        data = reg.TREFHT.isel(member=m).values[:, ::-1, :]
        tif = _geotiff(tmp_path / f"m{member}.tif", data, lon_b[0, 0], top, dx, dy)
        ref = _exactextract_means(tif, pop_tif, states, "STATE_NAME")
        theirs = ref.loc[ours.region.values].to_numpy().T
        np.testing.assert_allclose(ours.isel(member=m).values, theirs, rtol=1e-6)


def test_zero_to_360_and_minus180_inputs_agree(trefht, states, tmp_path):
    raw = xr.open_dataset(trefht.attrs["source_path"][0], decode_times=False)
    assert float(raw.lon.max()) > 180  # the file is 0..360
    rolled = raw.roll(lon=64, roll_coords=True)
    rolled = rolled.assign_coords(lon=((rolled.lon + 180) % 360) - 180)
    rolled.to_netcdf(tmp_path / "minus180.nc")
    a = open_raster(trefht.attrs["source_path"][0])
    b = open_raster(tmp_path / "minus180.nc")
    wa = zonal_weights(a, states, id_column="STATE_NAME")
    wb = zonal_weights(b, states, id_column="STATE_NAME")
    np.testing.assert_array_equal(zonal_mean(a.TREFHT, wa).values, zonal_mean(b.TREFHT, wb).values)


def test_era5_grib_tiles_and_regions_match_exactextract(tmp_path):
    ds = open_raster(shared_path("era5_t2m_uk_2019-03.grib"))
    assert (np.diff(ds.lat) > 0).all()  # the file's latitude is descending
    t2m = ds.t2m.isel(time=slice(0, 48))
    lat_b, lon_b = ds.lat_bnds.values, ds.lon_bnds.values
    top, west = lat_b[-1, 1], lon_b[0, 0]
    data = t2m.values[:, ::-1, :]
    tif = _geotiff(tmp_path / "t2m.tif", data, west, top, 0.25, 0.25)
    area = spherical_cell_area(lat_b, lon_b)[::-1][None]
    area_tif = _geotiff(tmp_path / "area.tif", area, west, top, 0.25, 0.25)
    from spatialmeta.raster.tiles import tile

    regions = {
        "tiles": tile(ds, 8).regions,
        "voronoi": synthetic_regions((-9.9, 50.1, 1.9, 57.9), 12, seed=5),
    }
    for name, polys in regions.items():
        ours = zonal_mean(t2m, zonal_weights(ds, polys)).compute()
        ref = _exactextract_means(tif, area_tif, polys, "region_id")
        theirs = ref.loc[ours.region.values].to_numpy().T
        np.testing.assert_allclose(ours.values, theirs, rtol=1e-6, err_msg=name)


def test_polygon_across_the_antimeridian():
    lat = np.arange(-10, 10, 1.0) + 0.5
    lon = np.arange(-180, 180, 1.0) + 0.5
    rng = np.random.default_rng(0)
    da = xr.DataArray(rng.normal(size=(3, lat.size, lon.size)), dims=("time", "lat", "lon"),
                      coords={"lat": lat, "lon": lon}, name="v")  # fmt: skip
    from spatialmeta.raster import normalize

    ds = normalize(da.to_dataset())
    import shapely

    across = shapely.box(175, -5, 185, 5)  # coordinates past 180
    split = shapely.MultiPolygon([shapely.box(175, -5, 180, 5), shapely.box(-180, -5, -175, 5)])
    polys = gpd.GeoDataFrame(
        {"region_id": ["across", "split"]}, geometry=[across, split], crs="EPSG:4326"
    )
    w = zonal_weights(ds, polys)
    np.testing.assert_allclose(w.coverage, 1.0)
    got = zonal_mean(ds.v, w).values
    np.testing.assert_allclose(got[:, 0], got[:, 1], rtol=1e-12)
    cells = ((np.abs(ds.lat) < 5).values[:, None]) & ((np.abs(ds.lon) > 175).values[None, :])
    area = spherical_cell_area(ds.lat_bnds.values, ds.lon_bnds.values) * cells
    expected = (ds.v.values * area).sum(axis=(1, 2)) / area.sum()
    np.testing.assert_allclose(got[:, 0], expected, rtol=1e-12)

import dask
import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
import xarray as xr

from spatialmeta.data import synthetic_climate, synthetic_regions
from spatialmeta.raster import (
    ZonalWeights,
    open_raster,
    spherical_cell_area,
    zonal_mean,
    zonal_stats,
    zonal_weights,
)
from spatialmeta.raster.zonal import EARTH_RADIUS_M


@pytest.fixture(scope="module")
def small():
    ds = synthetic_climate(bbox=(0, 40, 8, 46), resolution=1.0, years=2, seed=4)
    regions = synthetic_regions((0, 40, 8, 46), 6, seed=4)
    return ds, regions


def test_weights_match_naive_oracle(small):
    ds, regions = small
    w = zonal_weights(ds, regions).matrix.toarray()
    area = spherical_cell_area(ds.lat_bnds.values, ds.lon_bnds.values)
    oracle = np.zeros_like(w)
    for r, geom in enumerate(regions.geometry):  # the slow, obvious way
        for i, (s, n) in enumerate(ds.lat_bnds.values):
            for j, (west, east) in enumerate(ds.lon_bnds.values):
                cell = shapely.box(west, s, east, n)
                oracle[r, i * ds.sizes["lon"] + j] = (
                    geom.intersection(cell).area / cell.area * area[i, j]
                )
    np.testing.assert_allclose(w, oracle, rtol=1e-12, atol=1e-6)


def test_tessellation_covers_every_cell_once(small):
    ds, regions = small
    w = zonal_weights(ds, regions)
    area = spherical_cell_area(ds.lat_bnds.values, ds.lon_bnds.values).ravel()
    np.testing.assert_allclose(np.asarray(w.matrix.sum(axis=0)).ravel(), area, rtol=1e-12)
    np.testing.assert_allclose(w.coverage, 1.0)


def test_spherical_area_of_whole_globe():
    lat_b = np.stack([np.arange(-90, 90, 1.0), np.arange(-89, 91, 1.0)], 1)
    lon_b = np.stack([np.arange(-180, 180, 1.0), np.arange(-179, 181, 1.0)], 1)
    total = spherical_cell_area(lat_b, lon_b).sum()
    assert total == pytest.approx(4 * np.pi * EARTH_RADIUS_M**2, rel=1e-12)


def test_zonal_mean_equals_weighted_average_and_is_lazy(small):
    ds, regions = small
    w = zonal_weights(ds, regions)
    lazy = ds.tas.chunk({"time": 5})
    with dask.config.set(scheduler=_raise_if_computed):
        out = zonal_mean(lazy, w)  # building the graph computes nothing
    assert out.chunks is not None and out.dims == ("time", "region")
    got = out.compute().values
    flat = ds.tas.values.reshape(ds.sizes["time"], -1)
    dense = w.matrix.toarray()
    expected = flat @ dense.T / dense.sum(axis=1)
    np.testing.assert_allclose(got, expected, rtol=1e-6)


def _raise_if_computed(*args, **kwargs):
    raise RuntimeError("computed too early")


def test_nan_cells_renormalized_and_min_coverage(small):
    ds, regions = small
    w = zonal_weights(ds, regions)
    tas = ds.tas.copy()
    tas[0, 0, 0] = np.nan
    out = zonal_mean(tas, w, min_coverage=0.0).values
    dense = w.matrix.toarray()
    row = np.flatnonzero(dense[:, 0] > 0)[0]
    x = tas.values[0].ravel()
    ok = np.isfinite(x)
    expected = (dense[row, ok] * x[ok]).sum() / dense[row, ok].sum()
    assert out[0, row] == pytest.approx(expected, rel=1e-9)
    all_nan = ds.tas.copy()
    all_nan[1] = np.nan
    assert np.isnan(zonal_mean(all_nan, w).values[1]).all()


def test_polygon_outside_raster_warns_and_is_nan(small):
    ds, regions = small
    outside = gpd.GeoDataFrame(
        {"region_id": ["far"]}, geometry=[shapely.box(100, 10, 101, 11)], crs="EPSG:4326"
    )
    both = gpd.GeoDataFrame(
        {"region_id": list(regions.region_id) + ["far"]},
        geometry=list(regions.geometry) + list(outside.geometry),
        crs="EPSG:4326",
    )
    with pytest.warns(UserWarning, match="do not overlap the raster.*far"):
        w = zonal_weights(ds, both)
    assert w.coverage[-1] == 0.0
    assert np.isnan(zonal_mean(ds.tas, w).values[:, -1]).all()


def test_reprojected_polygons_give_same_weights(small):
    ds, regions = small
    a = zonal_weights(ds, regions).matrix.toarray()
    b = zonal_weights(ds, regions.to_crs("EPSG:3035").to_crs("EPSG:4326")).matrix.toarray()
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1.0)


def test_weights_save_load_round_trip(small, tmp_path):
    ds, regions = small
    w = zonal_weights(ds, regions)
    w.save(tmp_path / "w.npz")
    v = ZonalWeights.load(tmp_path / "w.npz")
    assert (v.matrix != w.matrix).nnz == 0
    np.testing.assert_array_equal(v.region_ids, w.region_ids.astype(str))
    assert v.shape == w.shape


def test_bad_inputs(small):
    ds, regions = small
    with pytest.raises(KeyError, match="no column 'NAME'"):
        zonal_weights(ds, regions, id_column="NAME")
    dup = regions.assign(region_id="same")
    with pytest.raises(ValueError, match="not unique"):
        zonal_weights(ds, dup)
    w = zonal_weights(ds, regions)
    with pytest.raises(ValueError, match="does not match the weights' grid"):
        zonal_mean(ds.tas.isel(lat=slice(0, 3)), w)


def test_matches_exactextract_area_weighted_mean(small_data):
    exactextract = pytest.importorskip("exactextract")
    ds = open_raster(small_data.geotiff)
    regions = gpd.read_file(small_data.regions)
    ours = zonal_mean(ds.tas.isel(time=slice(0, 6)), zonal_weights(ds, regions)).compute()
    # a cell-area weights raster with the same grid, the documented exactextract recipe
    with rasterio.open(small_data.geotiff) as src:
        profile = src.profile
    nc = xr.open_dataset(small_data.netcdf)
    area = spherical_cell_area(nc.lat_bnds.values, nc.lon_bnds.values)[::-1]
    wpath = small_data.geotiff.parent / "cell_area.tif"
    profile.update(count=1, dtype="float64", nodata=None)
    with rasterio.open(wpath, "w", **profile) as dst:
        dst.write(area, 1)
    with rasterio.open(small_data.geotiff) as src:
        first6 = src.read(list(range(1, 7)))
    bands = small_data.geotiff.parent / "first6.tif"
    profile.update(count=6, dtype="float32", nodata=np.nan)
    with rasterio.open(bands, "w", **profile) as dst:
        dst.write(first6)
    ref = exactextract.exact_extract(
        str(bands),
        regions,
        "weighted_mean",
        weights=str(wpath),
        include_cols=["region_id"],
        output="pandas",
    )
    cols = [c for c in ref.columns if c.endswith("weighted_mean")]
    theirs = ref.set_index("region_id").loc[ours.region.values, cols].to_numpy().T
    np.testing.assert_allclose(ours.values, theirs, rtol=1e-6)


def test_vectorized_rectangle_clip_matches_shapely():
    from spatialmeta.raster.zonal import _clipped_area

    donut = shapely.Polygon(
        [(0, 0), (10, 0), (10, 10), (0, 10)], [[(3, 3), (7, 3), (7, 7), (3, 7)]]
    )
    multi = shapely.MultiPolygon([donut, shapely.box(20, 20, 22, 22)])
    star = shapely.Polygon([(5, 0), (6, 4), (10, 5), (6, 6), (5, 10), (4, 6), (0, 5), (4, 4)])
    geoms = np.array([donut, donut, multi, multi, star, star, star])
    boxes = np.array([[2, 2, 8, 8], [4, 4, 5, 5], [5, 5, 21, 21], [-1, -1, 30, 30], [4.5, 4.5, 5.5, 5.5],
                      [5.5, 3.5, 9, 6], [11, 11, 12, 12]], dtype=float)  # fmt: skip
    ref = shapely.area(shapely.intersection(geoms, shapely.box(*boxes.T)))
    np.testing.assert_allclose(_clipped_area(geoms, *boxes.T), ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("stats", [("mean", "std", "sum", "count"), ("min", "max"), ("quantile",)])
def test_row_reversed_blocks_give_the_same_numbers(small, stats):
    """North-up rasters reach the products as row-reversed views, read without a copy."""
    ds, regions = small
    w = zonal_weights(ds, regions)
    values = ds.tas.values.copy()
    values[3, 2, 4] = np.nan  # a NaN cell, so the renormalizing branch runs too
    plain = ds.tas.copy(data=values)
    north_up = np.ascontiguousarray(values[:, ::-1, :])[:, ::-1, :]  # same values, reversed view
    assert not north_up.flags.c_contiguous
    for chunks in [(7, -1, -1), (7, 3, -1)]:  # whole-grid blocks: read in place; else copied
        a = zonal_stats(plain.chunk(dict(zip(plain.dims, chunks, strict=True))), w, stats=stats)
        reversed_ = plain.copy(data=dask.array.from_array(north_up, chunks=chunks))
        b = zonal_stats(reversed_, w, stats=stats)
        for name in a.data_vars:
            # only the order of the cells in each sum differs; the variance's E[x^2] - m^2
            # magnifies that rounding by (mean / sd)^2
            rtol = 1e-9 if name.endswith("std") else 1e-12
            np.testing.assert_allclose(b[name].values, a[name].values, rtol=rtol, err_msg=name)


def test_rows_reads_a_reversed_whole_grid_block_in_place(small):
    from spatialmeta.raster.zonal import _BlockWeights, _rows

    ds, regions = small
    w = zonal_weights(ds, regions)
    bw = _BlockWeights(w, (ds.sizes["lat"],), (ds.sizes["lon"],))
    base = ds.tas.values[:4].copy()
    view = base[:, ::-1, :]
    x, fr, wr, _ = _rows(view, bw, 0, 0)
    assert np.shares_memory(x, base) and wr is bw.get(0, 0, flipped=True)[1]
    flat = np.ascontiguousarray(view).reshape(4, -1)
    frac, wn, _ = bw.get(0, 0)
    np.testing.assert_allclose(wr @ x[0], wn @ flat[0], rtol=1e-13)
    np.testing.assert_allclose(fr @ x[0], frac @ flat[0], rtol=1e-13)
    # the natural order is the weights' own columns for the block's cells, times cell area
    np.testing.assert_allclose(frac.toarray(), w.fraction.toarray(), rtol=0, atol=0)
    np.testing.assert_allclose(wn.toarray(), w.matrix.toarray(), rtol=1e-15)


def test_block_weights_survive_pickling_and_split_blocks(small):
    """Sent to cluster workers by pickling: the memo is dropped and rebuilt there; blocks
    of a split grid together hold every weight exactly once."""
    import pickle

    from spatialmeta.raster.zonal import _BlockWeights

    ds, regions = small
    w = zonal_weights(ds, regions)
    ny, nx = w.shape
    ych, xch = (ny // 2, ny - ny // 2), (3, nx - 3)
    bw = pickle.loads(pickle.dumps(_BlockWeights(w, ych, xch)))
    total = sum(bw.get(iy, ix)[1].sum() for iy in range(2) for ix in range(2))
    np.testing.assert_allclose(total, w.matrix.sum(), rtol=1e-13)
    assert bw.get(1, 1) is bw.get(1, 1)


def test_multilevel_descent_matches_per_cell_shapely():
    """A grid deep enough for several quadtree levels: pieces are clipped level by level,
    blocks with no polygon edge inside count as covered, and crossing points are
    recomputed at the cells; every cell must still agree with shapely."""
    from spatialmeta.raster import normalize

    lat, lon = np.arange(0.05, 4.0, 0.1), np.arange(0.05, 7.0, 0.1)  # 40 x 70 cells
    grid = normalize(
        xr.Dataset(coords={"lat": lat, "lon": lon}).assign(
            v=(("lat", "lon"), np.zeros((lat.size, lon.size)))
        )
    )
    t = np.linspace(0, 2 * np.pi, 91)[:-1]
    r = 1.6 + 0.5 * np.sin(7 * t)
    star = shapely.Polygon(np.c_[2 + r * np.cos(t), 2 + r * np.sin(t)])
    holed = shapely.Polygon(
        shapely.box(3.93, 0.31, 6.62, 3.47).exterior, [shapely.box(4.6, 1.2, 5.7, 2.6).exterior]
    )
    multi = shapely.MultiPolygon(
        [shapely.box(0.5, 3.6, 2.43, 4.8), shapely.box(6.8, -1, 7.5, 0.77)]
    )
    tiny = shapely.box(1.01, 0.51, 1.04, 0.53)  # inside one cell
    geoms = [star, holed, multi, tiny]
    regions = gpd.GeoDataFrame({"region_id": list("abcd")}, geometry=geoms, crs="EPSG:4326")
    frac = zonal_weights(grid, regions).fraction.toarray()
    lo, la = np.meshgrid(lon, lat)
    cells = shapely.box(lo - 0.05, la - 0.05, lo + 0.05, la + 0.05).ravel()
    cell_area = shapely.area(cells)
    for k, g in enumerate(geoms):
        oracle = shapely.area(shapely.intersection(g, cells)) / cell_area
        np.testing.assert_allclose(frac[k], oracle, rtol=0, atol=1e-12, err_msg=str(k))

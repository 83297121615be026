import doctest

import dask
import dask.array as dsa
import numpy as np
import pytest
import rioxarray  # noqa: F401
import shapely
import xarray as xr

from spatialmeta.data import synthetic_climate
from spatialmeta.raster import normalize, zonal_weights
from spatialmeta.raster import tiles as tiles_module
from spatialmeta.raster.tiles import Tiles, tile, untile

# 11 x 13 cells: not a multiple of most tile sizes below
BBOX = (0.0, 40.0, 13.0, 51.0)

COMBOS = [
    (1, 0),
    (4, 0),
    (4, 1),
    ((3, 5), (2, 1)),
    (5, 7),  # halo wider than the tile
    ((11, 13), 3),  # one tile, the whole grid
    (11, 0),
    (2, (0, 3)),
]


def _raise_on_compute(*args, **kwargs):
    raise AssertionError("something was computed before .compute()")


@pytest.fixture(scope="module")
def ds():
    return synthetic_climate(bbox=BBOX, resolution=1.0, years=1, seed=2)


@pytest.mark.parametrize("size,halo", COMBOS)
def test_round_trip_numpy_is_identical(ds, size, halo):
    t = tile(ds, size, halo=halo)
    st = t.stack(ds.tas)
    assert st.dims == ("tile", "time", "wy", "wx")
    assert st.shape == (len(t), 12, *t.window_shape)
    assert list(st.tile.values) == list(t.regions.region_id)
    xr.testing.assert_identical(untile(st, t), ds.tas)


@pytest.mark.parametrize("size,halo", COMBOS)
def test_round_trip_dask_is_identical_and_lazy(ds, size, halo):
    lazy = ds.tas.chunk({"time": 5, "lat": 3, "lon": 4})  # chunks unrelated to the tiles
    with dask.config.set(scheduler=_raise_on_compute):
        t = tile(lazy, size, halo=halo)
        st = t.stack(lazy)
        back = untile(st, t)
        window = t[len(t) // 2]
    assert isinstance(st.data, dsa.Array) and isinstance(back.data, dsa.Array)
    assert isinstance(window.data, dsa.Array)
    xr.testing.assert_identical(back.compute(), ds.tas)
    np.testing.assert_array_equal(st.compute().values, tile(ds, size, halo=halo).stack(ds.tas))
    xr.testing.assert_identical(window.compute(), ds.tas.isel(t.window_slices(len(t) // 2)))


@pytest.mark.parametrize("chunked", [False, True])
@pytest.mark.parametrize("size,halo", [(4, 1), ((3, 5), 2), ((11, 13), 0)])
def test_round_trip_dataset(ds, chunked, size, halo):
    for d in (ds[["tas", "pr"]], ds):  # two variables with time; everything incl. bounds
        src = d.chunk({"time": 4, "lat": 5, "lon": 6}) if chunked else d
        with dask.config.set(scheduler=_raise_on_compute):
            t = tile(src, size, halo=halo)
            st = t.stack(src)
            back = untile(st, t)
        assert set(st.data_vars) == set(d.data_vars) - {"lat_bnds", "lon_bnds"}
        assert st.tas.dims == ("tile", "time", "wy", "wx")
        assert "orog" not in d or st.orog.dims == ("tile", "wy", "wx")
        assert "lat_bnds" not in st and "lat" not in st.dims
        if chunked:
            assert isinstance(back.tas.data, dsa.Array)
        xr.testing.assert_identical(back.compute(), d)
        assert back.rio.crs == ds.rio.crs


def test_time_only_variables_pass_through(ds):
    d = ds[["tas"]].assign(gmst=("time", np.arange(12.0)))
    t = tile(d, 5, halo=2)
    st = t.stack(d)
    assert st.gmst.dims == ("time",)
    xr.testing.assert_identical(untile(st, t), d)


def test_integer_data_keeps_dtype_with_an_integer_fill(ds):
    classes = (ds.orog // 100).astype("int16").rename("cls")
    t = tile(ds, 4, halo=1)
    st = t.stack(classes, fill_value=-1)
    assert st.dtype == np.int16 and int(st.min()) == -1
    xr.testing.assert_identical(untile(st, t), classes)
    assert t.stack(classes).dtype == np.float64  # NaN padding promotes


def test_core_only_pieces_untile(ds):
    t = tile(ds, (3, 4), halo=2)
    cores = t.stack(ds.tas).isel(wy=slice(2, 5), wx=slice(2, 6))
    xr.testing.assert_identical(untile(cores, t), ds.tas)


def test_regions_layout_and_ids(ds):
    t = tile(ds, (4, 5), halo=1, id_prefix="R")
    assert t.shape == (11, 13) and t.layout == (3, 3) and len(t) == 9
    assert t.size == (4, 5) and t.halo == (1, 1) and t.dims == ("lat", "lon")
    r = t.regions
    assert list(r.columns) == ["region_id", "row", "col", "y0", "y1", "x0", "x1", "geometry"]
    assert list(r.region_id) == [f"R{k:04d}" for k in range(9)]
    assert list(r.row) == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert list(r.col) == [0, 1, 2] * 3
    assert list(r.y0) == [0, 0, 0, 4, 4, 4, 8, 8, 8]
    assert list(r.y1) == [4, 4, 4, 8, 8, 8, 11, 11, 11]  # last row of tiles is smaller
    assert list(r.x0) == [0, 5, 10] * 3 and list(r.x1) == [5, 10, 13] * 3
    assert r.crs == ds.rio.crs


def test_tile_polygons_tessellate_the_grid_on_cell_edges(ds):
    t = tile(ds, (4, 5), halo=2)
    geoms = t.regions.geometry.to_numpy()
    lat_b, lon_b = ds.lat_bnds.values, ds.lon_bnds.values
    outer = shapely.box(lon_b.min(), lat_b.min(), lon_b.max(), lat_b.max())
    union = shapely.union_all(geoms)
    assert union.area == pytest.approx(outer.area, rel=1e-9)
    assert shapely.symmetric_difference(union, outer).area == pytest.approx(0, abs=1e-9)
    assert shapely.area(geoms).sum() == pytest.approx(union.area, rel=1e-9)  # no overlaps
    for g, r in zip(geoms, t.regions.itertuples(), strict=True):
        assert g.bounds == (
            lon_b[r.x0, 0],
            lat_b[r.y0, 0],
            lon_b[r.x1 - 1, 1],
            lat_b[r.y1 - 1, 1],
        )


def test_zonal_weights_give_each_tile_exactly_its_cells(ds):
    t = tile(ds, (4, 5), halo=1)
    w = zonal_weights(ds, t.regions)
    assert list(w.region_ids) == list(t.regions.region_id)
    ny, nx = t.shape
    expected = np.zeros((len(t), ny * nx), dtype=bool)
    for k, r in enumerate(t.regions.itertuples()):
        cells = np.zeros((ny, nx), dtype=bool)
        cells[r.y0 : r.y1, r.x0 : r.x1] = True
        expected[k] = cells.ravel()
    m = w.matrix.tocsr()
    np.testing.assert_array_equal(m.toarray() > 0, expected)
    # coverage fraction 1: each weight is the cell's whole area
    from spatialmeta.raster.zonal import spherical_cell_area

    area = spherical_cell_area(ds.lat_bnds.values, ds.lon_bnds.values).ravel()
    np.testing.assert_allclose(
        m.toarray()[expected], np.broadcast_to(area, expected.shape)[expected], rtol=1e-12
    )
    np.testing.assert_allclose(w.coverage, 1.0, rtol=1e-12)


def test_cell_edges_come_from_bounds_or_midpoints():
    lat = np.array([0.0, 1.0, 3.0, 6.0])  # irregular spacing
    da = xr.DataArray(
        np.zeros((4, 3)), dims=("lat", "lon"), coords={"lat": lat, "lon": [0.0, 1.0, 2.0]}
    ).rio.write_crs("EPSG:4326")
    t = tile(da, 2)
    assert t.regions.geometry.iloc[0].bounds == (-0.5, -0.5, 1.5, 2.0)
    assert t.regions.geometry.iloc[2].bounds == (-0.5, 2.0, 1.5, 7.5)
    ds = da.to_dataset(name="v")
    ds["lat_bnds"] = (("lat", "bnds"), np.array([[-1, 0.5], [0.5, 2], [2, 4], [4, 8.0]]))
    ds.lat.attrs["bounds"] = "lat_bnds"
    t = tile(ds, 2)
    assert t.regions.geometry.iloc[0].bounds == (-0.5, -1.0, 1.5, 2.0)
    assert t.regions.geometry.iloc[2].bounds == (-0.5, 2.0, 1.5, 8.0)


def test_halo_windows_hold_the_neighbouring_cells(ds):
    t = tile(ds, (3, 4), halo=(2, 1))
    i = 5  # row 1, col 1: an interior tile
    r = t.regions.iloc[i]
    assert (r.row, r.col, r.y0, r.y1, r.x0, r.x1) == (1, 1, 3, 6, 4, 8)
    direct = ds.tas.isel(lat=slice(1, 8), lon=slice(3, 9))
    win = t[i].tas
    xr.testing.assert_identical(win, direct)
    xr.testing.assert_identical(t[r.region_id].tas, direct)
    st = t.stack(ds.tas)
    np.testing.assert_array_equal(st.isel(tile=i).values, direct.values)
    np.testing.assert_array_equal(st.isel(tile=i).lat.values, direct.lat.values)
    np.testing.assert_array_equal(st.isel(tile=i).lon.values, direct.lon.values)
    # corner tile: halo clipped in the window, NaN-padded in the stack
    assert dict(t[0].tas.sizes) == {"time": 12, "lat": 5, "lon": 5}
    corner = st.isel(tile=0)
    assert np.isnan(corner.values[:, :2, :]).all() and np.isnan(corner.values[:, :, :1]).all()
    np.testing.assert_array_equal(corner.values[:, 2:, 1:], t[0].tas.values)
    assert np.isnan(corner.lat.values[:2]).all() and np.isnan(corner.lon.values[:1]).all()
    # edge tile past the grid: only the real cells hold data
    last = st.isel(tile=-1).values
    assert np.isfinite(last[:, 2:4, 1:2]).all() and np.isnan(last[:, 4:, :]).all()


def test_windows_iterate_lazily_over_every_tile(ds):
    t = tile(ds, 4, halo=1)
    wins = list(t.windows(ds.tas))
    assert len(wins) == len(t) == 12
    for w, i in zip(wins, range(len(t)), strict=True):
        xr.testing.assert_identical(w, ds.tas.isel(t.window_slices(i)))
    assert len(list(t)) == len(t)
    with pytest.raises(IndexError, match="out of range"):
        t[12]
    with pytest.raises(KeyError, match="T9999"):
        t["T9999"]


def test_projected_grid_with_y_x_dims():
    y, x = np.arange(5) * 1000.0 + 500, np.arange(7) * 1000.0 + 500
    da = xr.DataArray(
        np.arange(35.0).reshape(5, 7), dims=("y", "x"), coords={"y": y, "x": x}, name="v"
    ).rio.write_crs("EPSG:3035")
    t = tile(da, 3, halo=1)
    assert t.dims == ("y", "x") and t.regions.crs == da.rio.crs
    assert t.regions.geometry.iloc[-1].bounds == (6000.0, 3000.0, 7000.0, 5000.0)
    st = t.stack(da)
    assert st.dims == ("tile", "wy", "wx")
    xr.testing.assert_identical(untile(st, t), da)


def test_descending_latitude_is_refused_then_normalized(ds):
    flipped = ds.isel(lat=slice(None, None, -1))
    with pytest.raises(ValueError, match=r"'lat' is not ascending.*spatialmeta\.raster\.normalize"):
        tile(flipped, 4)
    t = tile(normalize(flipped), 4)
    assert t.regions.geometry.iloc[0].bounds[1] == 40.0


@pytest.mark.parametrize(
    "size,halo,match",
    [
        (0, 0, r"`size` must be >= 1 .* got 0"),
        ((3, 0), 0, r"`size` must be >= 1 .* got \(3, 0\)"),
        (3, -1, r"`halo` must be >= 0 .* got -1"),
        (12, 0, r"`size` \(12, 12\) is larger than the grid \(11, 13\).*at most \(11, 13\)"),
        ((4, 14), 0, r"`size` \(4, 14\) is larger than the grid"),
    ],
)
def test_bad_size_and_halo(ds, size, halo, match):
    with pytest.raises(ValueError, match=match):
        tile(ds, size, halo=halo)


def test_bad_types_and_objects(ds):
    with pytest.raises(TypeError, match=r"`size` must be an int or a pair"):
        tile(ds, 2.5)
    with pytest.raises(ValueError, match=r"`obj` has no spatial dimensions .*'time'.*normalize"):
        tile(ds.tas.isel(lat=0, lon=0), 2)
    t = tile(ds, 4)
    with pytest.raises(
        ValueError, match=r"`obj` has no dims \(.lat., .lon.\) \(dims: \[.time., .lon.\]\)"
    ):
        t.stack(ds.tas.isel(lat=0))
    with pytest.raises(ValueError, match=r"`obj` is on a different grid \(shape \(10, 13\)\)"):
        t.stack(ds.tas.isel(lat=slice(1, None)))
    with pytest.raises(ValueError, match=r"`obj` has no data variable with both dims"):
        t.stack(ds[["lat_bnds", "lon_bnds"]])


def test_untile_refuses_mismatched_pieces(ds):
    t = tile(ds, 4, halo=1)
    st = t.stack(ds.tas)
    with pytest.raises(ValueError, match=r"`pieces` has 11 tiles along 'tile' but `tiles` has 12"):
        untile(st.isel(tile=slice(0, 11)), t)
    with pytest.raises(ValueError, match=r"windows have shape \(5, 6\) .* windows of \(6, 6\)"):
        untile(st.isel(wy=slice(0, 5)), t)
    with pytest.raises(ValueError, match=r"`pieces` windows have shape \(6, 6\)"):
        untile(st, tile(ds, 4, halo=2))
    with pytest.raises(ValueError, match=r"`pieces` .*lacks dims \['wx'\]"):
        untile(st.isel(wx=0), t)
    with pytest.raises(ValueError, match=r"'tile' coordinate does not list this tiling"):
        untile(st.isel(tile=np.arange(12)[::-1]), t)


def test_tiles_is_frozen(ds):
    t = tile(ds, 4)
    assert isinstance(t, Tiles)
    with pytest.raises(AttributeError):
        t.halo = (2, 2)


def test_docstring_examples_run():
    failures, tried = doctest.testmod(tiles_module, verbose=False)
    assert tried >= 10 and failures == 0

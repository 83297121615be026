"""Zonal statistics on a curvilinear ocean grid (2-D lat/lon with cell corners), checked
cell by cell against shapely run on the corners as the file gives them, and by invariants
of a global tessellation."""

import geopandas as gpd
import numpy as np
import pytest
import shapely

from spatialmeta.raster import open_raster, zonal_stats, zonal_weights
from spatialmeta.raster.grid import EARTH_RADIUS_M
from tests.conftest import shared_path

BOXES = {
    "atlantic": shapely.box(-40, 10, -20, 30),
    "dateline": shapely.box(170, -20, 180, 0).union(shapely.box(-180, -20, -170, 0)),
    "arctic": shapely.box(-10, 70, 30, 80),
    "pacific": shapely.Point(-150, 20).buffer(8),
}


@pytest.fixture(scope="module")
def tos():
    return open_raster(shared_path("curvilinear", "tos_ocean_bipolar_grid.nc"))


@pytest.fixture(scope="module")
def regions():
    return gpd.GeoDataFrame({"region_id": list(BOXES)}, geometry=list(BOXES.values()), crs=4326)


def test_opened_as_curvilinear_on_its_own_dims(tos):
    assert tos.tos.dims == ("time", "y", "x") and tos.lat.dims == ("y", "x")
    assert tos.rio.crs.to_epsg() == 4326 and tos.attrs["grid_type"] == "curvilinear"
    assert float(tos.lon.max()) > 180  # kept as the model wrote it: nothing sorted or wrapped


def _oracle_fraction(lon4, lat4, geom):
    """Coverage of one cell by ``geom``, the slow obvious way: the cell's polygon from its
    corners (unwrapped by hand), tried at -360, 0 and +360 degrees."""
    lon4 = np.array(lon4, dtype=float)
    for k in range(1, 4):  # walk around the cell, never jumping more than 180 degrees
        while lon4[k] - lon4[k - 1] > 180:
            lon4[k] -= 360
        while lon4[k] - lon4[k - 1] < -180:
            lon4[k] += 360
    cell = shapely.make_valid(shapely.Polygon(np.c_[lon4, lat4]))
    if cell.area == 0:
        return 0.0
    got = sum(
        shapely.affinity.translate(cell, xoff=s).intersection(geom).area
        for s in (-720, -360, 0, 360, 720)
    )
    return got / cell.area


def test_coverage_equals_shapely_on_a_sample_of_cells(tos, regions):
    w = zonal_weights(tos, regions)
    frac = w.fraction.toarray()
    lon_c, lat_c = tos.lon_bnds.values.reshape(-1, 4), tos.lat_bnds.values.reshape(-1, 4)
    rng = np.random.default_rng(0)
    for r, geom in enumerate(regions.geometry):
        touched = np.flatnonzero(frac[r] > 0)
        near = np.flatnonzero(  # cells around the region, touched or not
            np.abs(tos.lat.values.ravel() - geom.centroid.y) < 15
        )
        sample = np.unique(np.r_[rng.choice(touched, 40), rng.choice(near, 60)])
        oracle = [_oracle_fraction(lon_c[c], lat_c[c], geom) for c in sample]
        np.testing.assert_allclose(frac[r, sample], oracle, atol=1e-9, err_msg=regions.region_id[r])
    np.testing.assert_allclose(w.coverage, 1.0, rtol=1e-12)


def test_a_global_tessellation_covers_every_cell_once(tos):
    quads = [shapely.box(x, y, x + 90, y + 90) for x in (-180, -90, 0, 90) for y in (-90, 0)]
    g = gpd.GeoDataFrame({"region_id": [f"q{i}" for i in range(8)]}, geometry=quads, crs=4326)
    w = zonal_weights(tos, g)
    np.testing.assert_allclose(np.asarray(w.fraction.sum(axis=0)).ravel(), 1.0, atol=1e-9)
    # the cells' areas on the sphere add up to the globe (skewed polar cells: within 0.5 %)
    assert w.cell_area.sum() == pytest.approx(4 * np.pi * EARTH_RADIUS_M**2, rel=5e-3)


def test_zonal_mean_equals_the_weighted_average_of_the_cells(tos, regions):
    w = zonal_weights(tos, regions)
    out = zonal_stats(tos[["tos"]], w, stats=("mean", "count"), min_coverage=0).compute()
    x = tos.tos.isel(time=0).values.ravel()
    wts = w.fraction.toarray() * w.cell_area
    ok = np.isfinite(x)
    expect = (wts[:, ok] * x[ok]).sum(1) / wts[:, ok].sum(1)
    np.testing.assert_allclose(out.tos_mean.isel(time=0).values, expect, rtol=1e-12)
    # the dateline box is met on both sides of ±180: both halves are counted
    dl = list(BOXES).index("dateline")
    lon = tos.lon.values.ravel() % 360
    inside = w.fraction.toarray()[dl] > 0
    assert (lon[inside] < 180).any() and (lon[inside] > 180).any()

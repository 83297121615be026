import subprocess
import sys

import dask
import geopandas as gpd
import numpy as np
import pytest
import xarray as xr

from spatialmeta.data import synthetic_climate, synthetic_regions
from spatialmeta.raster import (
    RasterError,
    ZonalWeights,
    aggregate,
    dask_client,
    open_raster,
    write_netcdf,
    zonal_stats,
    zonal_weights,
)


@pytest.fixture(scope="module")
def grid():
    ds = synthetic_climate(bbox=(0, 40, 12, 48), resolution=0.5, years=1, seed=2)
    regions = synthetic_regions((0, 40, 12, 48), 8, seed=2)
    tas = ds.tas.copy()
    tas[0, :4, :6] = np.nan  # some missing cells
    return ds.assign(tas=tas), regions


def test_stats_match_brute_force(grid):
    ds, regions = grid
    w = zonal_weights(ds, regions)
    out = zonal_stats(
        ds[["tas"]], w, stats=("mean", "std", "sum", "count", "min", "max"), min_coverage=0.0
    )
    frac = w.fraction.toarray()
    area = w.cell_area
    x = ds.tas.values.reshape(ds.sizes["time"], -1)
    for r in range(len(regions)):
        cov = frac[r] > 0
        for t in (0, 5):
            v, f, a = x[t, cov], frac[r, cov], area[cov]
            ok = np.isfinite(v)
            wt = f[ok] * a[ok]
            mean = (wt * v[ok]).sum() / wt.sum()
            std = np.sqrt((wt * (v[ok] - mean) ** 2).sum() / wt.sum())
            np.testing.assert_allclose(out.tas_mean.values[t, r], mean, rtol=1e-10)
            np.testing.assert_allclose(out.tas_std.values[t, r], std, rtol=1e-6)
            np.testing.assert_allclose(out.tas_sum.values[t, r], (f[ok] * v[ok]).sum(), rtol=1e-10)
            np.testing.assert_allclose(out.tas_count.values[t, r], f[ok].sum(), rtol=1e-12)
            assert (
                out.tas_min.values[t, r] == v[ok].min() and out.tas_max.values[t, r] == v[ok].max()
            )


def test_spatial_chunks_give_the_same_answer(grid):
    ds, regions = grid
    w = zonal_weights(ds, regions)
    whole = zonal_stats(ds[["tas"]], w, stats=("mean", "max")).compute()
    with dask.config.set(scheduler=_raise):
        lazy = zonal_stats(
            ds[["tas"]].chunk({"time": 5, "lat": 7, "lon": 9}), w, stats=("mean", "max")
        )
    chunked = lazy.compute()
    np.testing.assert_allclose(chunked.tas_mean.values, whole.tas_mean.values, rtol=1e-12)
    np.testing.assert_array_equal(chunked.tas_max.values, whole.tas_max.values)


def _raise(*a, **k):
    raise RuntimeError("computed too early")


def test_min_coverage_masks_mostly_missing_regions(grid):
    ds, regions = grid
    w = zonal_weights(ds, regions)
    tas = ds.tas.copy()
    tas[1] = np.nan
    tas[1, 0, 0] = 280.0
    out = zonal_stats(tas.to_dataset(), w, min_coverage=0.5).tas.values
    assert np.isnan(out[1]).all()


def test_local_cluster_gives_identical_numbers(grid, tmp_path):
    ds, regions = grid
    p = write_netcdf(ds, tmp_path / "g.nc")
    aggregate(p, tmp_path / "threads.zarr", regions=regions, stats=("mean", "max"), progress=False)
    with dask_client(n_workers=2, memory_limit="1GB"):
        aggregate(
            p, tmp_path / "cluster.zarr", regions=regions, stats=("mean", "max"), progress=False
        )
    a, b = xr.open_zarr(tmp_path / "threads.zarr"), xr.open_zarr(tmp_path / "cluster.zarr")
    for v in ("tas_mean", "tas_max", "pr_mean"):
        np.testing.assert_array_equal(a[v].values, b[v].values)


def test_weights_are_saved_and_reused(grid, tmp_path):
    ds, regions = grid
    p = write_netcdf(ds, tmp_path / "g.nc")
    r1 = aggregate(
        p, tmp_path / "a.zarr", regions=regions, weights_path=tmp_path / "w.npz", progress=False
    )
    assert r1.weights.exists()
    mtime = r1.weights.stat().st_mtime_ns
    aggregate(
        p, tmp_path / "b.zarr", regions=regions, weights_path=tmp_path / "w.npz", progress=False
    )
    assert r1.weights.stat().st_mtime_ns == mtime
    np.testing.assert_array_equal(
        xr.open_zarr(tmp_path / "a.zarr").tas.values, xr.open_zarr(tmp_path / "b.zarr").tas.values
    )
    # other polygons (fewer, or the same number moved): the weights are built again
    r3 = aggregate(p, tmp_path / "c.zarr", regions=regions.iloc[:3],
                   weights_path=tmp_path / "w.npz", progress=False)  # fmt: skip
    assert r3.n_regions == 3 and r3.weights.stat().st_mtime_ns != mtime
    assert len(ZonalWeights.load(r3.weights).region_ids) == 3
    moved = regions.copy()
    moved["geometry"] = moved.geometry.translate(xoff=0.25)
    fresh = aggregate(p, tmp_path / "d.zarr", regions=moved, progress=False)
    again = aggregate(p, tmp_path / "e.zarr", regions=moved, weights_path=tmp_path / "w.npz",
                      progress=False)  # fmt: skip
    xr.testing.assert_identical(xr.open_zarr(fresh.store).load(), xr.open_zarr(again.store).load())


def test_members_and_time_pieces(tmp_path):
    a = synthetic_climate(bbox=(0, 40, 4, 44), resolution=1, years=2, seed=1)
    b = synthetic_climate(bbox=(0, 40, 4, 44), resolution=1, years=2, seed=2)
    for name, d in (("run.m1.nc", a), ("run.m2.nc", b)):
        write_netcdf(d, tmp_path / name)
    ens = open_raster(str(tmp_path / "run.m*.nc"))
    assert list(ens.member.values) == ["m1", "m2"] and ens.tas.dims[0] == "member"
    np.testing.assert_array_equal(ens.tas.sel(member="m2").values, b.tas.values)
    later = synthetic_climate(bbox=(0, 40, 4, 44), resolution=1, years=2, seed=1, start="1983-01")
    write_netcdf(later, tmp_path / "piece2.nc")
    write_netcdf(a, tmp_path / "piece1.nc")
    whole = open_raster([tmp_path / "piece2.nc", tmp_path / "piece1.nc"])
    assert whole.sizes["time"] == 48 and whole.time.to_index().is_monotonic_increasing
    with pytest.raises(RasterError, match="overlap"):
        open_raster([tmp_path / "piece1.nc", tmp_path / "run.m1.nc"], combine="time")
    with pytest.raises(RasterError, match="different time axes: .*piece2.nc"):
        open_raster([tmp_path / "piece1.nc", tmp_path / "piece2.nc"], combine="member")
    coarse = synthetic_climate(bbox=(0, 40, 4, 44), resolution=2, years=2, seed=1)
    write_netcdf(coarse, tmp_path / "coarse.nc")
    with pytest.raises(RasterError, match="mismatched grids: .*coarse.nc"):
        open_raster([tmp_path / "piece1.nc", tmp_path / "coarse.nc"])
    with pytest.raises(RasterError, match="no file matches"):
        open_raster(str(tmp_path / "nothing*.nc"))


def test_time_units_made_explicit(tmp_path):
    raw = xr.Dataset(
        {"v": (("time", "lat", "lon"), np.zeros((3, 2, 2)))},
        coords={
            "time": ("time", [0, 1, 13], {"units": "months since 2000-01-01"}),
            "lat": [0.5, 1.5],
            "lon": [0.5, 1.5],
        },
    )
    raw.to_netcdf(tmp_path / "months.nc")
    ds = open_raster(tmp_path / "months.nc")
    assert [str(t)[:10] for t in ds.time.values] == ["2000-01-01", "2000-02-01", "2001-02-01"]
    assert "months since 2000-01-01" in ds.time.attrs["decoded_from"]
    leap = raw.assign_coords(
        time=("time", [0, 365, 730], {"units": "days since 2000-01-01", "calendar": "noleap"})
    )
    leap.to_netcdf(tmp_path / "noleap.nc")
    assert [str(t)[:10] for t in open_raster(tmp_path / "noleap.nc").time.values] == [
        "2000-01-01",
        "2001-01-01",
        "2002-01-01",
    ]


def test_cli_aggregate_tiles_and_errors(tmp_path, grid):
    ds, regions = grid
    p = write_netcdf(ds, tmp_path / "g.nc")
    out = tmp_path / "tiles.zarr"
    proc = subprocess.run(
        [sys.executable, "-m", "spatialmeta.cli", "aggregate", str(p), "--tiles", "4", "--out", str(out),
         "--local-threads", "--no-progress"], capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    agg = xr.open_zarr(out)
    assert agg.sizes["region"] == 4 * 6  # 16x24 cells in 4x4 tiles
    # the tile polygons come along, so that the store can go straight to `forecast --regions`
    tiles = gpd.read_parquet(tmp_path / "tiles_tiles.parquet")
    assert "tiles_tiles.parquet" in proc.stdout
    assert sorted(map(str, tiles.region_id)) == sorted(map(str, agg.region.values))
    assert tiles.crs is not None and tiles.geometry.is_valid.all()
    bad = tmp_path / "bad.nc"
    bad.write_bytes(b"garbage")
    proc = subprocess.run(
        [sys.executable, "-m", "spatialmeta.cli", "aggregate", str(bad), "--tiles", "4", "--out",
         str(tmp_path / "x.zarr"), "--local-threads"], capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode != 0
    assert proc.stderr.strip().startswith("error: cannot read raster") and "bad.nc" in proc.stderr
    assert "Traceback" not in proc.stderr
    # the library names its arguments; the command words them as its flags
    from spatialmeta.jobs.aggregate import aggregate_job

    with pytest.raises(ValueError, match=r"give either `regions` or a tile size \(`tiles`\)"):
        aggregate_job([str(p)], tmp_path / "y.zarr", local_threads=True, progress=False)
    proc = subprocess.run(
        [sys.executable, "-m", "spatialmeta.cli", "aggregate", str(p), "--out",
         str(tmp_path / "y.zarr"), "--local-threads"], capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "give either --regions or a tile size (--tiles)" in proc.stderr, proc.stderr


def test_weighted_quantiles_match_brute_force(grid):
    ds, regions = grid
    w = zonal_weights(ds, regions)
    q = (0.0, 0.1, 0.5, 0.9, 1.0)
    out = zonal_stats(
        ds[["tas"]].chunk({"time": 4, "lat": 5}), w, stats=("quantile", "min"), quantiles=q
    ).compute()
    assert out.tas_quantile.dims == ("time", "region", "quantile")
    wt_all = w.matrix.toarray()
    x = ds.tas.values.reshape(ds.sizes["time"], -1)
    for r in range(len(regions)):
        cov = wt_all[r] > 0
        for t in (0, 7):
            v, wt = x[t, cov], wt_all[r, cov]
            ok = np.isfinite(v)
            order = np.argsort(v[ok], kind="stable")
            vs, cw = v[ok][order], np.cumsum(wt[ok][order]) / wt[ok].sum()
            for j, qj in enumerate(q):
                expected = vs[min(np.searchsorted(cw, qj - 1e-12, side="left"), len(vs) - 1)]
                assert out.tas_quantile.values[t, r, j] == expected, (r, t, qj)
    np.testing.assert_array_equal(out.tas_quantile.sel(quantile=0.0).values, out.tas_min.values)
    with pytest.raises(ValueError, match=r"`quantiles` must lie in \[0, 1\]"):
        zonal_stats(ds[["tas"]], w, stats=("quantile",), quantiles=(1.5,))


def test_polygon_smaller_than_a_cell(grid):
    import geopandas as gpd
    import shapely

    ds, _ = grid
    tiny = gpd.GeoDataFrame({"region_id": ["tiny", "straddle"]},
                            geometry=[shapely.box(3.1, 41.1, 3.2, 41.2), shapely.box(2.95, 41.45, 3.05, 41.55)],
                            crs="EPSG:4326")  # fmt: skip
    w = zonal_weights(ds, tiny)
    assert w.fraction[0].nnz == 1 and w.fraction[1].nnz == 4  # inside one cell; across four
    np.testing.assert_allclose(w.coverage, 1.0)
    iy = int(np.argmin(np.abs(ds.lat.values - 41.25)))  # the cell holding the tiny box
    ix = int(np.argmin(np.abs(ds.lon.values - 3.25)))
    got = zonal_stats(ds[["tas"]], w).tas.values[:, 0]
    np.testing.assert_array_equal(got, ds.tas.values[:, iy, ix].astype(np.float64))


def test_scheduler_address_path(grid, tmp_path):
    from distributed import LocalCluster

    ds, regions = grid
    p = write_netcdf(ds, tmp_path / "g.nc")
    with LocalCluster(n_workers=1, threads_per_worker=1, dashboard_address=None) as cluster:
        with dask_client(cluster.scheduler_address) as client:
            assert client.scheduler.address == cluster.scheduler_address
            aggregate(p, tmp_path / "addr.zarr", regions=regions, progress=False)
    assert xr.open_zarr(tmp_path / "addr.zarr").sizes["region"] == len(regions)


def test_zarr_v2_store_opens(grid, tmp_path):
    ds, _ = grid
    ds.to_zarr(tmp_path / "v2.zarr", zarr_format=2, consolidated=True)
    back = open_raster(tmp_path / "v2.zarr")
    np.testing.assert_array_equal(back.tas.values, ds.tas.values)


def _monthly(tmp_path, months: int):
    """The first ``months`` months of a small synthetic climate, one NetCDF file per month."""
    ds = synthetic_climate(bbox=(0, 40, 6, 46), resolution=1, years=2, seed=4)[
        ["tas", "lat_bnds", "lon_bnds"]
    ]
    folder = tmp_path / "feed"
    folder.mkdir(exist_ok=True)
    for t in range(months):
        write_netcdf(ds.isel(time=[t]), folder / f"tas_{t:03d}.nc")
    return str(folder / "tas_*.nc"), synthetic_regions((0, 40, 6, 46), n_regions=5, seed=2)


def test_append_adds_only_new_months_and_equals_a_fresh_aggregation(tmp_path, monkeypatch):
    agg = sys.modules[
        "spatialmeta.raster.aggregate"
    ]  # the module (the package exports the function)
    opened = []
    real_open = agg.open_raster
    monkeypatch.setattr(agg, "open_raster", lambda p, **k: opened.append(p) or real_open(p, **k))
    pattern, regions = _monthly(tmp_path, 14)
    opts = dict(regions=regions, weights_path=tmp_path / "w.npz", progress=False, append=True)
    first = aggregate(pattern, tmp_path / "s.zarr", **opts)
    assert first.appended is None  # nothing to append to: written whole
    _monthly(tmp_path, 17)  # three months arrive
    grown = aggregate(pattern, tmp_path / "s.zarr", **opts)
    assert grown.appended == 3
    assert [p.name for p in opened[-1]] == ["tas_014.nc", "tas_015.nc", "tas_016.nc"]  # only
    fresh = aggregate(pattern, tmp_path / "fresh.zarr", regions=regions, progress=False)
    a, b = xr.open_zarr(grown.store).load(), xr.open_zarr(fresh.store).load()
    xr.testing.assert_identical(a, b)
    assert a.sizes["time"] == 17
    assert aggregate(pattern, tmp_path / "s.zarr", **opts).appended == 0  # nothing new
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp")]


def test_append_rewrites_when_an_old_file_changed_saying_which(tmp_path):
    import json

    pattern, regions = _monthly(tmp_path, 6)
    opts = dict(regions=regions, progress=False, append=True)
    aggregate(pattern, tmp_path / "s.zarr", **opts)
    one = tmp_path / "feed" / "tas_002.nc"
    ds = xr.open_dataset(one).load()
    write_netcdf(ds.assign(tas=ds.tas + 1.0), one)  # a corrected month, nothing new
    with pytest.warns(UserWarning, match="'tas_002.nc' changed or is gone"):
        again = aggregate(pattern, tmp_path / "s.zarr", **opts)
    assert again.appended is None
    fresh = aggregate(pattern, tmp_path / "fresh.zarr", regions=regions, progress=False)
    xr.testing.assert_identical(xr.open_zarr(again.store).load(), xr.open_zarr(fresh.store).load())
    sources = json.loads(xr.open_zarr(again.store).attrs["spatialmeta_sources"])
    assert sorted(sources) == [f"tas_{t:03d}.nc" for t in range(6)]


def test_append_refuses_another_region_set(tmp_path):
    pattern, regions = _monthly(tmp_path, 3)
    aggregate(pattern, tmp_path / "s.zarr", regions=regions, progress=False)
    with pytest.raises(ValueError, match="its regions are not the ones being aggregated"):
        aggregate(pattern, tmp_path / "s.zarr", regions=regions.iloc[:2], progress=False,
                  append=True)  # fmt: skip

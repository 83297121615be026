import json
import subprocess
import sys

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import xarray as xr

from spatialmeta.data import synthetic_regions
from spatialmeta.jobs.forecast import forecast_job
from spatialmeta.learn import LearnConfig
from spatialmeta.raster import write_zarr


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    d = tmp_path_factory.mktemp("fjob")
    regions = synthetic_regions((0, 40, 16, 52), 16, seed=0)
    regions.to_file(d / "regions.gpkg")
    rng = np.random.default_rng(0)
    t = np.arange(120)
    series = 280 + 8 * np.cos(2 * np.pi * t / 12)[:, None] + rng.normal(size=(120, len(regions)))
    series[50:53, 2] = np.nan  # a gap
    da = xr.DataArray(series, dims=("time", "region"), name="tas", attrs={"units": "K"},
                      coords={"time": pd.date_range("2000-01", periods=120, freq="MS"),
                              "region": regions.region_id.to_numpy().astype(object)})  # fmt: skip
    write_zarr(da.to_dataset(), d / "series.zarr")
    return d, regions


def test_forecast_job_writes_outputs_and_masks_gaps(store, tmp_path):
    d, regions = store
    res = forecast_job(d / "series.zarr", "tas", regions, tmp_path / "out", holdout="0.25", support=24,
                       test_start="2008-01", horizon=2, config=LearnConfig(episodes=10, val_every=5, hidden=8),
                       shots=(6, 12, 24, 48), progress=False)  # fmt: skip
    table = pd.read_csv(tmp_path / "out" / "skill.csv")
    methods = {"meta", "meta_noadapt", "global", "global_finetuned", "climatology", "persistence",
               "ridge_ar", "expanding_climatology", "neighbour_climatology", "eb_climatology",
               "anomaly_persistence"}  # fmt: skip
    assert set(table.method) == methods
    by_region = pd.read_csv(tmp_path / "out" / "skill_by_region.csv")
    assert (by_region.groupby("method").size() == 4).all()
    for name in ("checkpoint", "checkpoint_global"):  # both trainings log their metrics
        metrics = pd.read_csv(tmp_path / "out" / name / "metrics.csv")
        assert list(metrics.columns) == ["episode", "train_loss", "val_loss", "lr", "elapsed_s"]
        assert metrics.episode.tolist() == list(range(1, 11))
    shots = pd.read_csv(tmp_path / "out" / "shots.csv")
    assert list(shots.columns[:4]) == ["support", "method", "rmse", "crps"]
    assert sorted(set(shots.support)) == [6, 12, 24, 48]
    assert set(shots.method) == methods - {"meta_noadapt"}
    assert np.isfinite(shots[["rmse", "crps"]].to_numpy()).all()
    # the support-24 row of the curve is the main evaluation (the same trained networks)
    main = table.set_index("method").loc[shots.method[shots.support == 24]]
    np.testing.assert_allclose(shots.rmse[shots.support == 24], main.rmse, rtol=1e-12)
    assert (tmp_path / "out" / "shots.png").read_bytes()[:4] == b"\x89PNG"
    assert res.n_missing == 3
    # the report: summary, map and pooled skill, as the demo writes them
    text = (tmp_path / "out" / "summary.md").read_text()
    assert text == res.summary and res.outputs["summary"].endswith("summary.md")
    assert "Missing values: 3 of 1800 (region, time) values" in text and "masked" in text
    assert f"| {table.set_index('method').loc['meta', 'rmse']:.3f} |" in text
    assert "## Shots curve" in text and "48 steps" in text
    assert "held-out regions: 4 (--holdout 0.25)" in text
    assert json.loads((tmp_path / "out" / "pooled_skill.json").read_text())["k"] == 4
    for name in ("skill_map.png", "forest_skill.png"):
        assert (tmp_path / "out" / name).read_bytes()[:4] == b"\x89PNG"
    fc = xr.open_zarr(tmp_path / "out" / "forecasts.zarr")
    assert fc.sizes["horizon"] == 2 and np.isfinite(fc.forecast_mean.values).all()
    assert len(gpd.read_parquet(tmp_path / "out" / "forecasts.parquet")) == 4 * fc.sizes["time"] * 2


def test_holdout_from_a_file_of_ids(store, tmp_path):
    from spatialmeta.jobs.forecast import read_holdout

    d, regions = store
    ids = regions.region_id.to_numpy()
    f = tmp_path / "ids.txt"
    f.write_text(f"{ids[1]}\n{ids[4]}\n")
    np.testing.assert_array_equal(np.flatnonzero(read_holdout(str(f), ids)), [1, 4])
    f.write_text("R999\n")
    with pytest.raises(ValueError, match="names regions not in the series: \\['R999'\\]"):
        read_holdout(str(f), ids)


BAD_INPUT = [
    (["--test-start", "1990-01"], "outside the series"),
    (["--test-start", "2008-01", "--support", "500"], "does not fit before test_start"),
    (["--test-start", "2008-01", "--region-id", "name"], "has no region"),
    (["--test-start", "2008-01", "--shots", "6,200"], "support of 200 steps does not fit"),
    (["--test-start", "2008-01", "--shots", "6,a"], "--shots must be comma-separated integers"),
    (["--test-start", "2008-01", "--learner", "maml2"], "--learner must be one of"),
]


def _cli_args(d, tmp_path, args):
    return ["forecast", "--series", str(d / "series.zarr"), "--var", "tas", "--regions",
            str(d / "regions.gpkg"), "--out", str(tmp_path / "o"), "--episodes", "2",
            "--no-progress", *args]  # fmt: skip


@pytest.mark.parametrize(("args", "message"), BAD_INPUT[1:])
def test_cli_forecast_bad_input_is_one_line(store, tmp_path, args, message):
    from typer.testing import CliRunner

    from spatialmeta.cli import app

    d, _ = store
    res = CliRunner().invoke(app, _cli_args(d, tmp_path, args))
    assert res.exit_code != 0 and not isinstance(res.exception, AssertionError | TypeError)
    assert message in res.stderr and "Traceback" not in res.stderr, res.stderr[-2000:]
    assert len(res.stderr.strip().splitlines()) == 1


def test_cli_forecast_bad_input_in_a_real_process(store, tmp_path):
    d, _ = store
    args, message = BAD_INPUT[0]
    cmd = [sys.executable, "-m", "spatialmeta.cli", *_cli_args(d, tmp_path, args)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert len(proc.stderr.strip().splitlines()) == 1


def test_one_command_from_rasters_to_skill_on_the_grid(tmp_path):
    """A user's own rasters and polygons: one command aggregates, forecasts and writes the
    skill map and forecasts onto the rasters' grid, which GIS libraries open with the CRS,
    the regions' cells and the values of the region tables."""
    import rasterio

    from spatialmeta.data import synthetic_climate
    from spatialmeta.raster import open_raster, write_netcdf, zonal_weights
    from spatialmeta.raster.rasterize import dominant_region

    bbox = (0, 40, 8, 46)
    write_netcdf(synthetic_climate(bbox=bbox, resolution=0.5, years=8, seed=3), tmp_path / "c.nc")
    synthetic_regions(bbox, 10, seed=3).to_file(tmp_path / "regions.gpkg")
    out = tmp_path / "o"
    proc = subprocess.run(
        [sys.executable, "-m", "spatialmeta.cli", "forecast", "--rasters", str(tmp_path / "c.nc"),
         "--regions", str(tmp_path / "regions.gpkg"), "--var", "tas", "--test-start", "1987-01",
         "--support", "24", "--horizon", "2", "--episodes", "2", "--holdout", "0.4",
         "--out", str(out), "--no-progress"], capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "warning" not in proc.stderr.lower(), proc.stderr
    grid = open_raster(tmp_path / "c.nc")
    regions = gpd.read_file(tmp_path / "regions.gpkg")
    owner = dominant_region(zonal_weights(grid, regions)).ravel()
    ids = regions.region_id.astype(str).to_numpy()
    by_region = pd.read_csv(out / "skill_by_region.csv")
    col = next(c for c in by_region.columns if c.startswith("skill_vs_"))
    skill = by_region[by_region.method == "meta"].set_index("region_id")[col]
    with rasterio.open(out / "skill_map.tif") as src:
        assert src.crs.to_epsg() == 4326 and src.count == 1 and src.descriptions[0] == col
        cells = src.read(1)[::-1].ravel()  # rows north to south in the file
    for r, rid in enumerate(ids):
        mine = cells[owner == r]
        if rid in skill.index:
            np.testing.assert_allclose(mine, skill[rid], rtol=1e-6)  # float32 file
        else:
            assert np.isnan(mine).all()  # training regions: no skill to map
    fc = xr.open_zarr(out / "forecasts.zarr")
    nc = xr.open_dataset(out / "forecasts_grid.nc", decode_coords="all")
    assert nc.forecast_mean.dims == ("time", "horizon", "lat", "lon")
    assert nc.rio.crs.to_epsg() == 4326 and "lat_bnds" in nc.coords
    with rasterio.open(f"netcdf:{out / 'forecasts_grid.nc'}:forecast_mean") as src:  # GDAL, QGIS
        assert src.crs.to_epsg() == 4326 and (src.width, src.height) == (16, 12)
    r0 = str(fc.region.values[0])
    cell = np.flatnonzero(owner == list(ids).index(r0))[0]
    iy, ix = divmod(cell, grid.sizes["lon"])
    np.testing.assert_allclose(nc.forecast_mean.isel(lat=iy, lon=ix).values,
                               fc.forecast_mean.sel(region=r0).values, rtol=1e-6)  # fmt: skip
    table = gpd.read_parquet(out / "forecasts.parquet")  # GeoParquet: the regions' polygons
    assert table.crs.to_epsg() == 4326 and set(table.region) == {str(r) for r in fc.region.values}
    row = table[(table.region == r0) & (table.horizon == 1)].sort_values("time").iloc[-1]
    assert row.forecast_mean == pytest.approx(float(fc.forecast_mean.sel(region=r0, horizon=1)[-1]))
    assert row.geometry.equals(regions.set_index("region_id").geometry[r0])
    with rasterio.open(out / "forecast_latest.tif") as src:
        assert src.count == 2
        valid = pd.DatetimeIndex(fc.valid_time.isel(time=-1).values)
        assert [src.tags(b)["time"][:10] for b in (1, 2)] == [f"{t:%Y-%m-%d}" for t in valid]

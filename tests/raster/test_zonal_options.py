"""Zonal statistics users ask exactextract for: a weighting raster, coverage-weight modes,
min_coverage_frac, median/variance/CV, categorical rasters, and tables for GIS tools.
Every number is checked against exactextract itself on the same files."""

import re
import subprocess
import sys

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import pytest
import rasterio
import shapely
import xarray as xr
from rasterio.transform import from_origin

from spatialmeta.raster import open_raster, zonal_stats, zonal_weights
from spatialmeta.raster.categorical import zonal_categories
from spatialmeta.raster.tables import write_table, zonal_table

exactextract = pytest.importorskip("exactextract")

# ours -> exactextract's name
NAMES = {
    "mean": "mean", "sum": "sum", "count": "count", "std": "stdev", "variance": "variance",
    "coefficient_of_variation": "coefficient_of_variation", "median": "median",
    "weighted_mean": "weighted_mean", "weighted_sum": "weighted_sum",
    "weighted_std": "weighted_stdev", "weighted_variance": "weighted_variance",
}  # fmt: skip
PROFILE = dict(driver="GTiff", width=30, height=20, crs="EPSG:4326", nodata=np.nan,
               transform=from_origin(-10, 50, 0.5, 0.5))  # fmt: skip


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("zonal_options")
    rng = np.random.default_rng(0)
    x = rng.normal(10, 3, (3, 20, 30))
    x[0, 3, 4] = np.nan  # a missing cell inside a polygon
    w = rng.gamma(2, 50, (20, 30))  # a "population" grid
    classes = rng.choice([1, 2, 5, 7], size=(20, 30), p=[0.5, 0.3, 0.15, 0.05]).astype("int16")
    classes[2, 5] = -1  # nodata
    with rasterio.open(d / "x.tif", "w", count=3, dtype="float64", **PROFILE) as dst:
        dst.write(x)
    with rasterio.open(d / "w.tif", "w", count=1, dtype="float64", **PROFILE) as dst:
        dst.write(w, 1)
    with rasterio.open(d / "c.tif", "w", count=1, dtype="int16", **dict(PROFILE, nodata=-1)) as dst:
        dst.write(classes, 1)
    polys = [shapely.Point(-6 + 3 * i, 45 + (i % 3)).buffer(1.7 + 0.3 * i) for i in range(4)]
    polys.append(shapely.box(-7.9, 48.1, -7.6, 48.3))  # smaller than a cell
    regions = gpd.GeoDataFrame({"id": list("abcde"), "name": ["A", "B", "C", "D", "E"],
                                "pop_class": [1, 2, 3, 4, 5]}, geometry=polys, crs=4326)  # fmt: skip
    return d, regions


def _first(ds):
    return ds[next(iter(ds.data_vars))]


def _theirs(ref, stat, n_bands=3):
    cols = [
        c
        for c in ref.columns
        if c.endswith(f"_{stat}") and ("weighted" in stat) == ("weighted" in c)
    ]
    assert len(cols) == n_bands, (stat, list(ref.columns))
    return ref[cols].to_numpy()  # (region, band)


@pytest.mark.parametrize(
    "coverage_weight", ["fraction", "none", "area_cartesian", "area_spherical_m2"]
)
@pytest.mark.parametrize("min_frac", [0.0, 0.4])
def test_every_statistic_and_coverage_mode_equals_exactextract(files, coverage_weight, min_frac):
    d, regions = files
    x, w = _first(open_raster(d / "x.tif")), _first(open_raster(d / "w.tif")).isel(band=0)
    zw = zonal_weights(x, regions[:4], id_column="id")
    ours = zonal_stats(x.rename("x"), zw, stats=tuple(NAMES), weight=w, min_coverage=0,
                       coverage_weight=coverage_weight, min_coverage_frac=min_frac).compute()  # fmt: skip
    ops = [
        f"{e}(coverage_weight={coverage_weight},min_coverage_frac={min_frac})"
        for e in NAMES.values()
    ]
    ref = exactextract.exact_extract(str(d / "x.tif"), regions[:4], ops, weights=str(d / "w.tif"),
                                     output="pandas")  # fmt: skip
    for stat, theirs in NAMES.items():
        got = ours[f"x_{stat}"].transpose("region", "band").values
        np.testing.assert_allclose(got, _theirs(ref, theirs), rtol=1e-6, err_msg=stat)


def test_weighted_mean_is_nan_where_a_covered_cell_has_no_weight_as_exactextract(files, tmp_path):
    d, regions = files
    with rasterio.open(d / "w.tif") as src:
        w = src.read(1)
    w[8, 8] = np.nan  # a cell under polygon "a" only
    with rasterio.open(tmp_path / "wn.tif", "w", count=1, dtype="float64", **PROFILE) as dst:
        dst.write(w, 1)
    x = _first(open_raster(d / "x.tif"))
    wn = _first(open_raster(tmp_path / "wn.tif")).isel(band=0)
    zw = zonal_weights(x, regions[:4], id_column="id")
    ours = zonal_stats(
        x.rename("x"), zw, stats=("weighted_mean",), weight=wn, coverage_weight="fraction"
    ).compute()
    ref = exactextract.exact_extract(str(d / "x.tif"), regions[:4], "weighted_mean",
                                     weights=str(tmp_path / "wn.tif"), output="pandas")  # fmt: skip
    theirs = _theirs(ref, "weighted_mean")
    got = ours["x_weighted_mean"].transpose("region", "band").values
    assert np.isnan(theirs[0]).all() and np.isnan(got[0]).all()
    np.testing.assert_allclose(got[1:], theirs[1:], rtol=1e-6)


def test_weight_on_a_finer_grid_is_regridded_conservatively(files):
    d, regions = files
    x = _first(open_raster(d / "x.tif"))
    w = _first(open_raster(d / "w.tif")).isel(band=0)
    # the same weights on a grid twice as fine (each cell split in four) and shifted CRS-free
    fine = xr.DataArray(
        np.repeat(np.repeat(w.values, 2, 0), 2, 1), dims=("lat", "lon"),
        coords={"lat": np.arange(40) * 0.25 + w.lat.values[0] - 0.125,
                "lon": np.arange(60) * 0.25 + w.lon.values[0] - 0.125},
    ).rio.write_crs("EPSG:4326")  # fmt: skip
    zw = zonal_weights(x, regions, id_column="id")
    same = zonal_stats(x.rename("x"), zw, stats=("weighted_mean", "weighted_sum"), weight=w)
    regridded = zonal_stats(x.rename("x"), zw, stats=("weighted_mean", "weighted_sum"), weight=fine)
    for v in ("x_weighted_mean", "x_weighted_sum"):
        np.testing.assert_allclose(regridded[v].values, same[v].values, rtol=1e-9)


def test_categorical_statistics_equal_exactextract(files):
    d, regions = files
    c = _first(open_raster(d / "c.tif")).isel(band=0).rename("lc")
    w = _first(open_raster(d / "w.tif")).isel(band=0)
    zw = zonal_weights(c, regions, id_column="id")
    stats = ("frac", "weighted_frac", "majority", "minority", "variety", "unique")
    ours = zonal_categories(c, zw, stats=stats, weight=w, coverage_weight="fraction")
    ref = exactextract.exact_extract(str(d / "c.tif"), regions, list(stats), weights=str(d / "w.tif"),
                                     output="pandas")  # fmt: skip
    assert list(ours["class"].values) == [1, 2, 5, 7]  # nodata (-1) is no class
    for i in range(len(regions)):
        classes = [float(v) for v in ref["unique"][i]]
        for stat in ("frac", "weighted_frac"):
            got = ours[f"lc_{stat}"].isel(region=i).sel({"class": classes}).values
            np.testing.assert_allclose(got, ref[stat][i], rtol=1e-6, atol=1e-12)
        assert float(ours.lc_majority[i]) == ref["majority"][i]
        assert float(ours.lc_minority[i]) == ref["minority"][i]
        assert int(ours.lc_variety[i]) == ref["variety"][i]
        assert ours.lc_unique.values[i] == ",".join(str(int(v)) for v in sorted(classes))


def test_categorical_refuses_continuous_values(files):
    d, regions = files
    x = _first(open_raster(d / "x.tif")).isel(band=1)
    with pytest.raises(ValueError, match="not categorical: it has non-integer values"):
        zonal_categories(x, zonal_weights(x, regions, id_column="id"))


def test_bad_options_are_named(files):
    d, regions = files
    x = _first(open_raster(d / "x.tif")).rename("x")
    zw = zonal_weights(x, regions, id_column="id")
    with pytest.raises(ValueError, match=r"need a weighting raster; pass `weight`"):
        zonal_stats(x, zw, stats=("weighted_mean",))
    with pytest.raises(ValueError, match=r"unknown `coverage_weight` 'areal'; choose one of area"):
        zonal_stats(x, zw, coverage_weight="areal")
    with pytest.raises(ValueError, match=r"`min_coverage_frac` must lie in \[0, 1\]"):
        zonal_stats(x, zw, min_coverage_frac=1.5)
    with pytest.raises(ValueError, match="`weight` must be one 2-D grid"):
        zonal_stats(x, zw, stats=("weighted_mean",), weight=x)


@pytest.mark.parametrize("suffix", [".csv", ".gpkg", ".parquet"])
def test_tables_open_in_gis_tools_with_ids_values_and_columns(files, tmp_path, suffix):
    d, regions = files
    x = _first(open_raster(d / "x.tif")).rename("x")
    zw = zonal_weights(x, regions, id_column="id")
    res = zonal_stats(x, zw, stats=("mean", "quantile"), quantiles=(0.1, 0.9), min_coverage=0)
    table = zonal_table(res.compute(), regions, id_column="id", include_cols=["name", "pop_class"])
    path = write_table(table, tmp_path / f"zonal{suffix}")
    if suffix == ".csv":
        back = pd.read_csv(path)
    elif suffix == ".gpkg":
        assert pyogrio.list_layers(path)[0][0] == "zonal"
        back = gpd.read_file(path, engine="pyogrio")
    else:
        back = gpd.read_parquet(path)
    if suffix != ".csv":
        assert back.crs.to_epsg() == 4326 and back.geometry.notna().all()
        by_id = back.drop_duplicates("id").set_index("id").geometry
        for rid, geom in zip(regions.id, regions.geometry, strict=True):
            assert by_id[rid].equals_exact(geom, 1e-9)
    assert len(back) == 5 * 3  # region x band
    assert list(back.columns[:5]) == ["id", "band", "name", "pop_class", "x_mean"]
    assert {"x_quantile_0.1", "x_quantile_0.9"} <= set(back.columns)
    row = back[(back.id == "c") & (back.band == 2)].iloc[0]
    assert row["name"] == "C" and row["pop_class"] == 3
    assert row["x_mean"] == pytest.approx(float(res.x_mean.sel(region="c", band=2)), rel=1e-12)
    assert row["x_quantile_0.9"] == pytest.approx(
        float(res.x_quantile.sel(region="c", band=2, quantile=0.9)), rel=1e-12
    )


def test_table_errors_name_columns_and_suffixes(files, tmp_path):
    d, regions = files
    x = _first(open_raster(d / "x.tif")).rename("x")
    res = zonal_stats(x, zonal_weights(x, regions, id_column="id")).compute()
    with pytest.raises(
        KeyError, match=r"no column\(s\) \['STUSPS'\] \(columns: \['id', 'name', 'pop_class'\]\)"
    ):
        zonal_table(res, regions, id_column="id", include_cols=["STUSPS"])
    with pytest.raises(ValueError, match=r"use one of \.csv, \.gpkg, \.parquet"):
        write_table(zonal_table(res, regions, id_column="id"), tmp_path / "t.xlsx")
    with pytest.raises(ValueError, match="needs polygons to carry"):
        write_table(zonal_table(res), tmp_path / "t.gpkg")
    assert not list(tmp_path.iterdir())  # nothing half-written


def _cli(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "spatialmeta.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout)  # fmt: skip


def test_cli_weighted_table_and_a_raster_without_crs(files, tmp_path):
    d, regions = files
    regions.to_file(tmp_path / "regions.gpkg")
    with rasterio.open(d / "x.tif") as src:
        profile, data = src.profile, src.read()
    profile.pop("crs")
    with rasterio.open(tmp_path / "nocrs.tif", "w", **profile) as dst:
        dst.write(data)
    out = tmp_path / "pop_means.gpkg"
    args = ["aggregate", tmp_path / "nocrs.tif", "--regions", tmp_path / "regions.gpkg",
            "--id-column", "id", "--stats", "weighted_mean,median", "--weight-raster",
            d / "w.tif", "--include-cols", "name", "--out", out, "--local-threads",
            "--no-progress"]  # fmt: skip
    proc = _cli(*args)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip() == (
        f"error: raster '{tmp_path / 'nocrs.tif'}' has no CRS and nothing says what its "
        "coordinates are (no CF latitude/longitude); give its CRS with --crs, for example "
        "EPSG:4326 for longitude/latitude."
    )
    assert not out.exists()
    proc = _cli(*args, "--crs", "EPSG:4326")
    assert proc.returncode == 0, proc.stderr
    assert "warning" not in proc.stderr.lower()  # no library warning leaks
    back = gpd.read_file(out)
    assert back.crs.to_epsg() == 4326 and set(back.id) == set("abcde")
    ref = exactextract.exact_extract(str(d / "x.tif"), regions, "weighted_mean(coverage_weight=area_spherical_m2)",
                                     weights=str(d / "w.tif"), output="pandas")  # fmt: skip
    theirs = _theirs(ref, "weighted_mean")
    col = next(c for c in back.columns if c.endswith("_weighted_mean"))
    got = back.pivot(index="id", columns="band", values=col).loc[list("abcde")]
    np.testing.assert_allclose(got.to_numpy(), theirs, rtol=1e-6)
    assert (back.drop_duplicates("id").set_index("id").name == regions.set_index("id").name).all()
    # a flag the table cannot honour, named as the command's
    bad = _cli("aggregate", d / "x.tif", "--regions", tmp_path / "regions.gpkg", "--id-column",
               "id", "--include-cols", "name", "--out", tmp_path / "x.zarr", "--local-threads")  # fmt: skip
    assert bad.returncode != 0 and "--include-cols go into tables only" in bad.stderr


def test_cli_version_debug_and_help():
    from spatialmeta import __version__

    proc = _cli("--version")
    assert proc.returncode == 0 and proc.stdout.strip() == f"spatialmeta {__version__}"
    proc = _cli("--debug", "aggregate", "missing.tif", "--tiles", "2", "--out", "x.zarr",
                "--local-threads")  # fmt: skip
    assert proc.returncode != 0 and "Traceback" in proc.stderr and "missing.tif" in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "spatialmeta.cli", "aggregate", "--help"],
                          capture_output=True, text=True, env={"COLUMNS": "80", "PATH": ""})  # fmt: skip
    assert proc.returncode == 0
    lines = proc.stdout.splitlines()
    # examples stay whole (they paste into a shell); the prose wraps at the width
    assert any(ln.strip().startswith("spatialmeta aggregate tas.tif") and ln.strip().endswith(".gpkg")
               for ln in lines)  # fmt: skip
    prose = [ln for ln in lines if not ln.strip().startswith("spatialmeta ")]
    assert max(map(len, prose)) <= 80
    assert "…" not in proc.stdout  # nothing cut off
    # the --stats help is written out by hand: it must name every statistic there is
    from spatialmeta.raster import CATEGORICAL_STATS, STATS

    words = set(re.findall(r"[a-z_]+", proc.stdout))
    assert not [s for s in (*STATS, *CATEGORICAL_STATS) if s not in words]


def test_errors_show_plain_values_not_numpy_reprs():
    from spatialmeta.data import synthetic_climate

    ds = synthetic_climate(bbox=(0, 40, 4, 44), resolution=1, years=1)
    dup = gpd.GeoDataFrame({"region_id": np.array(["p", "p"])}, crs=4326,
                           geometry=[shapely.box(0, 40, 1, 41), shapely.box(1, 40, 2, 41)])  # fmt: skip
    with pytest.raises(ValueError) as err:
        zonal_weights(ds, dup)
    assert str(err.value) == "region ids in column 'region_id' are not unique: ['p']."

"""Zonal means: spatialmeta vs exactextract, against the floor of reading the file once;
then population-weighted means (a second, weighting raster: exactextract's weighted_mean
with its default fraction coverage) and land-cover fractions of a categorical raster, each
peer side by side on the same files.

Example:
    .venv/bin/python benchmarks/bench_zonal.py --resolution 0.25 --years 10
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import rasterio

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import best_of  # noqa: E402

import spatialmeta as sm  # noqa: E402


def main(argv=None) -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--resolution", type=float, default=0.25, help="grid spacing, degrees")
    p.add_argument("--years", type=int, default=10, help="years of monthly bands")
    p.add_argument("--regions", type=int, default=300)
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args(argv)

    work = Path(tempfile.mkdtemp())
    ds = sm.data.synthetic_climate(resolution=args.resolution, years=args.years, seed=0)
    tif = sm.raster.write_geotiff(ds.tas, work / "tas.tif")
    regions = sm.data.synthetic_regions(n_regions=args.regions, seed=0)
    regions.to_file(work / "regions.gpkg")
    print(
        f"raster {ds.sizes['lat']}x{ds.sizes['lon']} x {ds.sizes['time']} bands, {len(regions)} regions"
    )

    def read_once():
        with rasterio.open(tif) as src:
            return src.read()

    def ours():
        r = sm.raster.open_raster(tif)
        w = sm.raster.zonal_weights(r, regions)
        return sm.raster.zonal_mean(r.tas, w).compute(scheduler="threads").values

    t_read, _ = best_of(read_once, args.repeat)
    t_ours, got = best_of(ours, args.repeat)
    rows = [("rasterio read once (floor)", t_read), ("spatialmeta", t_ours)]
    try:
        import exactextract
        import xarray as xr

        area = sm.raster.spherical_cell_area(ds.lat_bnds.values, ds.lon_bnds.values)[::-1]
        with rasterio.open(tif) as src:
            profile = src.profile | {"count": 1, "dtype": "float64", "nodata": None}
        wpath = work / "area.tif"
        with rasterio.open(wpath, "w", **profile) as dst:
            dst.write(area, 1)

        def theirs():
            return exactextract.exact_extract(
                str(tif),
                regions,
                "weighted_mean",
                weights=str(wpath),
                output="pandas",
                include_cols=["region_id"],
                strategy="raster-sequential",
            )

        t_ee, ref = best_of(theirs, max(1, args.repeat - 1))
        rows.append(("exactextract (raster-sequential)", t_ee))
        cols = [c for c in ref.columns if c.endswith("weighted_mean")]
        diff = np.nanmax(np.abs(got - ref[cols].to_numpy().T) / np.abs(got))
        print(f"max relative difference vs exactextract: {diff:.2e}")
        del xr
    except ImportError:
        print("exactextract not installed: peer skipped")
    print(f"\n{'method':36s} {'seconds':>9s} {'x floor':>8s}")
    for name, t in rows:
        print(f"{name:36s} {t:9.3f} {t / t_read:8.2f}")
    if len(rows) == 3:
        print(f"\nspeed-up over exactextract: {rows[2][1] / t_ours:.2f}x")
    _weighted_and_categorical(ds, tif, regions, work, args.repeat)


def _weighted_and_categorical(ds, tif, regions, work, repeat) -> None:
    """Population-weighted means and class fractions, ours and exactextract's."""
    try:
        import exactextract
    except ImportError:
        return
    rng = np.random.default_rng(0)
    ny, nx = ds.sizes["lat"], ds.sizes["lon"]
    with rasterio.open(tif) as src:
        profile = src.profile | {"count": 1, "dtype": "float64", "nodata": None}
    pop_path, lc_path = work / "population.tif", work / "landcover.tif"
    with rasterio.open(pop_path, "w", **profile) as dst:
        dst.write(rng.lognormal(2, 1.5, (ny, nx)), 1)
    with rasterio.open(lc_path, "w", **(profile | {"dtype": "int16"})) as dst:
        dst.write(rng.integers(1, 8, (ny, nx)).astype("int16"), 1)

    def ours_weighted():
        r = sm.raster.open_raster(tif)
        pop = sm.raster.open_raster(pop_path)["band_data"].squeeze(drop=True)
        w = sm.raster.zonal_weights(r, regions)
        out = sm.raster.zonal_stats(r[["tas"]], w, stats=("weighted_mean",), weight=pop,
                                    coverage_weight="fraction")  # fmt: skip
        return out.tas_weighted_mean.compute(scheduler="threads").values

    def theirs_weighted():
        return exactextract.exact_extract(str(tif), regions, "weighted_mean", weights=str(pop_path),
                                          output="pandas", strategy="raster-sequential")  # fmt: skip

    def ours_frac():
        lc = sm.raster.open_raster(lc_path)["band_data"].squeeze(drop=True)
        w = sm.raster.zonal_weights(lc, regions)
        return sm.raster.zonal_categories(lc, w, stats=("frac",), coverage_weight="fraction")

    def theirs_frac():
        return exactextract.exact_extract(
            str(lc_path), regions, ["unique", "frac"], output="pandas"
        )

    t_w, got = best_of(ours_weighted, repeat)
    t_we, ref = best_of(theirs_weighted, max(1, repeat - 1))
    cols = [c for c in ref.columns if c.endswith("weighted_mean")]
    diff = np.nanmax(np.abs(got - ref[cols].to_numpy().T) / np.abs(got))
    t_f, frac = best_of(ours_frac, repeat)
    t_fe, fref = best_of(theirs_frac, max(1, repeat - 1))
    worst = 0.0
    for i in range(len(regions)):
        classes = [float(c) for c in fref["unique"][i]]
        mine = frac["band_data_frac"].isel(region=i).sel({"class": classes}).values
        worst = max(worst, float(np.max(np.abs(mine - np.asarray(fref["frac"][i])))))
    print(
        f"\n{'second raster':36s} {'ours s':>9s} {'exactextract s':>15s} {'speed-up':>9s} {'max diff':>9s}"
    )
    print(
        f"{'population-weighted mean':36s} {t_w:9.3f} {t_we:15.3f} {t_we / t_w:8.1f}x {diff:9.1e}"
    )
    print(
        f"{'land-cover fractions (one band)':36s} {t_f:9.3f} {t_fe:15.3f} {t_fe / t_f:8.1f}x {worst:9.1e}"
    )


if __name__ == "__main__":
    main()

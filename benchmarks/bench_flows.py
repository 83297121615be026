"""Scheduled-flow figures (issue 17): a re-run on unchanged inputs and an appended month,
each against computing from scratch, in one run.

1. ``pipeline`` on a feed of yearly NetCDF rasters (first run: every stage computed) and
   again unchanged (every stage ``Cached``): wall times and their ratio.
2. ``ingest`` after one more month arrives: appended to the store (only that month
   aggregated, saved weights) against aggregating the whole longer record afresh; the two
   stores are checked equal.

Example
-------
    python benchmarks/bench_flows.py --years 30 --episodes 300
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def write_feed(folder: Path, years: int, extra_months: int = 0) -> None:
    from spatialmeta.data.synthetic import synthetic_climate
    from spatialmeta.raster.io import write_netcdf

    folder.mkdir(parents=True, exist_ok=True)
    months = 12 * years + extra_months
    ds = synthetic_climate(resolution=1.0, years=-(-months // 12), seed=3)
    ds = ds[["tas", "lat_bnds", "lon_bnds"]].isel(time=slice(0, months))
    for year, part in ds.groupby("time.year"):
        if part.sizes["time"] == 12:
            name = folder / f"tas_{year}.nc"
            if not name.exists():
                write_netcdf(part, name)
        else:
            for t in range(part.sizes["time"]):
                write_netcdf(part.isel(time=[t]), folder / f"tas_{year}_{t + 1:02d}.nc")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--years", type=int, default=30)
    p.add_argument("--regions", type=int, default=60)
    p.add_argument("--episodes", type=int, default=300)
    a = p.parse_args(argv)

    import xarray as xr

    from flows._server import local_api
    from flows.ingest import ingest
    from flows.pipeline import pipeline
    from spatialmeta.data.regions import synthetic_regions
    from spatialmeta.jobs.aggregate import aggregate_job

    root = Path(tempfile.mkdtemp(prefix="bench_flows_"))
    write_feed(root / "rasters", a.years)
    regions = root / "regions.gpkg"
    synthetic_regions(n_regions=a.regions, seed=1).to_file(regions)
    test_start = f"{1981 + a.years - 3}-01"
    params = dict(rasters=[str(root / "rasters" / "tas_*.nc")], regions=str(regions), var="tas",
                  test_start=test_start, out=str(root / "out"), episodes=a.episodes,
                  result_storage=str(root / "results"))  # fmt: skip
    with local_api():
        t = time.perf_counter()
        pipeline(**params)
        first = time.perf_counter() - t
        t = time.perf_counter()
        pipeline(**params)
        cached = time.perf_counter() - t
        write_feed(root / "rasters2", a.years)  # the same feed, ingested, then one month more
        feed = [str(root / "rasters2" / "tas_*.nc")]
        ingest(rasters=feed, regions=str(regions), out=str(root / "s2.zarr"))
        aggregate_job(feed, root / "e2.zarr", regions=str(regions), weights=root / "e2_w.npz",
                      local_threads=True, progress=False)  # fmt: skip
        write_feed(root / "rasters2", a.years, extra_months=1)
        t = time.perf_counter()
        grown = ingest(rasters=feed, regions=str(regions), out=str(root / "s2.zarr"))
        append = time.perf_counter() - t
        t = time.perf_counter()
        ingest(rasters=feed, regions=str(regions), out=str(root / "s3.zarr"))  # a new store
        scratch = time.perf_counter() - t
    t = time.perf_counter()
    aggregate_job(feed, root / "e2.zarr", regions=str(regions), weights=root / "e2_w.npz",
                  append=True, local_threads=True, progress=False)  # fmt: skip
    e_append = time.perf_counter() - t
    t = time.perf_counter()
    aggregate_job(feed, root / "e3.zarr", regions=str(regions), local_threads=True,
                  progress=False)  # fmt: skip
    e_scratch = time.perf_counter() - t
    fresh = xr.open_zarr(root / "e3.zarr").load()
    for store in ("s2.zarr", "e2.zarr", "s3.zarr"):
        xr.testing.assert_identical(xr.open_zarr(root / store).load(), fresh)
    n = 12 * a.years
    print(f"pipeline, {a.years} years × {a.regions} regions, {a.episodes} episodes:")
    print(f"  first run {first:8.1f} s   unchanged re-run {cached:6.1f} s   "
          f"ratio {cached / first:.3f}")  # fmt: skip
    print(f"month {n + 1} arrives (appended={grown['appended']}), stores identical:")
    print(f"  ingest flow: append {append:6.2f} s   from scratch {scratch:6.2f} s   "
          f"ratio {append / scratch:.3f}")  # fmt: skip
    print(f"  aggregation alone: append {e_append:6.2f} s   from scratch {e_scratch:6.2f} s   "
          f"ratio {e_append / e_scratch:.3f}")  # fmt: skip


if __name__ == "__main__":
    main()

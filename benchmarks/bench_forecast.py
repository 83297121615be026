"""Batch forecasting at scale: adapt to and forecast 10,000 held-out regions.

Builds 12,500 synthetic regions (Voronoi polygons, queen contiguity) with 20 years of
monthly series (seasonal cycle growing with latitude + AR(1) anomalies), trains the
global network and meta-trains from it briefly on the 2,500 training regions (k-hop
subgraph batches), then times
``forecast_heldout`` — per-region adaptation from a 36-month support window and forecasts
of every test origin, horizons 1-3, for the 10,000 held-out regions — and the writing of
the forecasts to Zarr; then the global network baseline's batched per-region
fine-tuning with forecasts for the same 10,000 regions; then the scores and the whole
report of the run (``publish_report``: tables, pooled skill, map, GeoParquet, summary).

Example:
    .venv/bin/python benchmarks/bench_forecast.py --regions 12500 --holdout 0.8
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import xarray as xr

import spatialmeta as sm
from spatialmeta.learn.evaluate import observed


def main(argv=None) -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--regions", type=int, default=12_500)
    p.add_argument("--holdout", type=float, default=0.8)
    p.add_argument("--years", type=int, default=20)
    p.add_argument("--episodes", type=int, default=40)
    args = p.parse_args(argv)
    torch.set_num_threads(2)

    t = time.perf_counter()
    regions = sm.data.synthetic_regions((-125, 24.5, -65, 49.5), args.regions, seed=0)
    graph = sm.regions.contiguity_graph(regions)
    n, nt = graph.num_nodes, 12 * args.years
    rng = np.random.default_rng(0)
    lat = graph.data.pos[:, 1].numpy().astype(float)
    season = -(1.5 + 0.28 * lat)[:, None] * np.cos(2 * np.pi * (np.arange(nt) - 0.5) / 12)[None]
    eps = rng.normal(size=(n, nt))
    anom = np.zeros_like(eps)
    for k in range(1, nt):  # AR(1) in time, all regions at once
        anom[:, k] = 0.6 * anom[:, k - 1] + 0.8 * eps[:, k]
    series = 290 - 0.5 * lat[:, None] + season + anom
    da = xr.DataArray(series.T, dims=("time", "region"), name="tas", attrs={"units": "K"},
                      coords={"time": pd.date_range("2001-01", periods=nt, freq="MS"), "region": graph.region_ids})  # fmt: skip
    tasks = sm.tasks.RegionTaskSet.from_dataarray(da, graph)
    held = sm.tasks.spatial_holdout(n, args.holdout, seed=0)
    split = tasks.split(held_out=held, test_start=str(tasks.time[-36].date()), support=36)
    print(
        f"setup: {n} regions ({held.sum()} held out), {nt} months: {time.perf_counter() - t:.1f} s"
    )

    cfg = sm.learn.LearnConfig(episodes=args.episodes, val_every=20, subgraph_hops=1, device="cpu")
    t = time.perf_counter()
    glob = sm.learn.global_train(tasks, split, cfg, progress=False)
    print(f"global network, {len(glob.history)} supervised steps (and the choice of its "
          f"fine-tuning on validation): {time.perf_counter() - t:.1f} s")  # fmt: skip
    t = time.perf_counter()
    result = sm.learn.meta_train(tasks, split, cfg, init=glob, progress=False)
    print(
        f"meta-training {len(result.history)} episodes on subgraph batches, from the global "
        f"network: {time.perf_counter() - t:.1f} s"
    )

    t = time.perf_counter()
    fc = sm.learn.forecast_heldout(result.learner, tasks, split, cfg)
    dt = time.perf_counter() - t
    print(f"forecast_heldout: {len(fc.regions)} regions x {len(fc.origins)} origins x {cfg.horizon} horizons "
          f"in {dt:.1f} s ({len(fc.regions) / dt:.0f} regions/s)")  # fmt: skip
    t = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        sm.raster.write_zarr(sm.learn.forecast_dataset(tasks, fc), Path(tmp) / "forecasts.zarr")
    print(f"writing forecasts.zarr: {time.perf_counter() - t:.1f} s")
    t = time.perf_counter()
    tuned = sm.learn.forecast_heldout(glob.learner, tasks, split, cfg)
    dt = time.perf_counter() - t
    print(f"global_finetuned: {glob.learner.steps} batched fine-tuning steps and forecasts for "
          f"{len(tuned.regions)} regions in {dt:.1f} s")  # fmt: skip
    clim = sm.learn.climatology(tasks, split, cfg.horizon)
    y = observed(tasks, fc)
    rmse = lambda f: float(np.sqrt(np.nanmean((f.mean - y) ** 2)))  # noqa: E731
    print(f"held-out RMSE: meta {rmse(fc):.3f} K, global_finetuned {rmse(tuned):.3f} K, "
          f"climatology {rmse(clim):.3f} K")  # fmt: skip
    # the run's whole report, as `spatialmeta forecast` writes it for these regions
    t = time.perf_counter()
    forecasts = [fc, tuned, clim, sm.learn.persistence(tasks, split, cfg.horizon)]
    evaluation = sm.learn.evaluate(tasks, forecasts)
    with tempfile.TemporaryDirectory() as tmp:
        report = sm.learn.publish_report(tasks, forecasts, evaluation, regions, tmp,
                                         title="bench", setup={})  # fmt: skip
        sizes = {p.name: p.stat().st_size for p in Path(tmp).glob("*") if p.is_file()}
    print(f"scores and report (skill tables, pooled skill over {int(report.pooled.k)} regions, "
          f"map, GeoParquet of {sizes['forecasts.parquet'] / 1e6:.0f} MB, summary): "
          f"{time.perf_counter() - t:.1f} s")  # fmt: skip


if __name__ == "__main__":
    main()

"""The main job on the embedded synthetic data: rasters → regions → forecasts → pooled skill.

Stages, in order: :func:`make_data` (synthetic NetCDF/GeoTIFF/Zarr rasters and polygons),
:func:`aggregate_regions` (exact zonal means), :func:`build_tasks` (graph, region tasks,
spatial hold-out), :func:`~spatialmeta.jobs.stages.train_methods` (global network, then the
meta-learner), :func:`~spatialmeta.jobs.stages.forecast_all`,
:func:`~spatialmeta.learn.evaluate.evaluate` and :func:`publish`. :func:`demo_job` runs
them; ``flows/pipeline.py`` runs the same :func:`demo_job` with each stage wrapped in a
Prefect task (its ``stage`` argument), so the sequence is stated once, here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from spatialmeta._io import ensure_writable_dir
from spatialmeta.jobs.stages import as_is, forecast_all, train_methods, training_words
from spatialmeta.learn.config import LearnConfig
from spatialmeta.learn.evaluate import evaluate
from spatialmeta.learn.publish import publish_report

__all__ = ["DemoResult", "aggregate_regions", "build_tasks", "demo_job", "make_data", "publish"]

_log = logging.getLogger("spatialmeta.demo")
START_YEAR = 1981


@dataclass(frozen=True)
class DemoResult:
    """The summary (Markdown), the outputs written (name → path) and the skill table."""

    summary: str
    outputs: dict
    table: list


def make_data(data_dir, years: int, resolution: float, n_regions: int, seed: int):
    """Synthetic rasters (NetCDF, GeoTIFF, Zarr) and polygons (:mod:`spatialmeta.data`)."""
    from spatialmeta.data import write_default_data

    return write_default_data(
        data_dir, years=years, resolution=resolution, n_regions=n_regions, seed=seed
    )


def aggregate_regions(raster, regions_path, out_dir):
    """Zonal means of temperature and orography; the weights and the series are saved."""
    import geopandas as gpd

    from spatialmeta.raster import open_raster, write_zarr, zonal_mean, zonal_weights

    ds = open_raster(raster)
    regions = gpd.read_file(regions_path)
    weights = zonal_weights(ds, regions)
    weights.save(Path(out_dir) / "zonal_weights.npz")
    series = zonal_mean(ds["tas"], weights).compute()
    orog = zonal_mean(ds["orog"], weights).compute()
    write_zarr(series.to_dataset(name="tas"), Path(out_dir) / "series.zarr")
    return regions, series, orog.values


def build_tasks(regions, series, orog, holdout, support, test_start, seed, out_dir):
    """The region graph (saved as GeoParquet), the task set and its seeded split."""
    from spatialmeta.regions import contiguity_graph
    from spatialmeta.tasks import RegionTaskSet, spatial_holdout

    graph = contiguity_graph(regions, covariates={"elevation_m": orog})
    graph.to_geoparquet(Path(out_dir) / "region_graph.parquet")
    tasks = RegionTaskSet.from_dataarray(series, graph)
    held_out = spatial_holdout(tasks.n_regions, holdout, seed=seed)
    return tasks, tasks.split(held_out=held_out, test_start=test_start, support=support)


def publish(tasks, regions, forecasts, evaluation, setup: dict, out_dir, split=None, grid=None):
    """Every output and the summary (:func:`~spatialmeta.learn.publish.publish_report`)."""
    out = Path(out_dir)
    return publish_report(
        tasks,
        forecasts,
        evaluation,
        regions,
        out,
        title="spatialmeta demo: meta-learned regional forecasts",
        setup=setup,
        split=split,
        grid=grid,
        extra_outputs={
            "region series (Zarr)": str(out / "series.zarr"),
            "region graph (GeoParquet)": str(out / "region_graph.parquet"),
            "checkpoint": str(out / "checkpoint" / "model.pt"),
        },
    )


def demo_job(
    out="outputs/demo",
    *,
    years: int = 40,
    resolution: float = 1.0,
    n_regions: int = 80,
    holdout: float = 0.2,
    support: int = 36,
    test_start: str | None = None,
    episodes: int = 600,
    seed: int = 0,
    progress: bool = True,
    stage: Callable | None = None,
    log: Callable[[str], None] | None = None,
) -> DemoResult:
    """Run every stage on the embedded synthetic data and write every output into ``out``.

    ``stage`` wraps each stage function before it is called (a Prefect flow passes a task
    decorator; None calls them as they are); ``log`` receives one line per stage (default:
    the ``spatialmeta.demo`` logger). Torch runs on one intra-op thread meanwhile (the
    networks are small; more threads spin against other work), restored after.

    Example
    -------
    >>> demo_job("outputs/demo", episodes=300).summary[:20]  # doctest: +SKIP
    '# spatialmeta demo: m'
    """
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _demo(
            Path(out), years, resolution, n_regions, holdout, support, test_start, episodes,
            seed, progress, stage or as_is, log or _log.info,
        )  # fmt: skip
    finally:
        torch.set_num_threads(threads)


def _demo(
    out_dir, years, resolution, n_regions, holdout, support, test_start, episodes, seed,
    progress, run, say,
) -> DemoResult:  # fmt: skip
    ensure_writable_dir(out_dir)
    test_start = test_start or f"{START_YEAR + years - 5}-01"
    say("1/7 writing synthetic rasters (NetCDF, GeoTIFF, Zarr) and regions")
    data = run(make_data)(str(out_dir / "data"), years, resolution, n_regions, seed)
    say(f"2/7 zonal aggregation of {data.zarr.name} over {data.regions.name}")
    regions, series, orog = run(aggregate_regions)(str(data.zarr), str(data.regions), str(out_dir))
    say("3/7 region graph and region tasks")
    tasks, split = run(build_tasks)(
        regions, series, orog, holdout, support, test_start, seed, str(out_dir)
    )
    config = LearnConfig(episodes=episodes, seed=seed)
    say(f"4/7 global network, then the meta-learner, on {int((~split.held_out).sum())} regions")
    trained = train_methods(tasks, split, config, out_dir, progress=progress, stage=run)
    say(f"5/7 adapting to {int(split.held_out.sum())} held-out regions and forecasting")
    forecasts = run(forecast_all)(trained, tasks, split)
    say("6/7 skill per region")
    evaluation = run(evaluate)(tasks, forecasts)
    say("7/7 random-effects pooling; writing forecasts, tables, maps and the summary")
    setup = {
        "data": f"synthetic monthly climate, {years} years at {resolution}° ({data.zarr})",
        "regions": f"{tasks.n_regions} polygons ({data.regions}), queen contiguity graph",
        "held-out regions": f"{int(split.held_out.sum())} (seeded spatial hold-out, fraction {holdout})",
        "support": f"{support} months before {test_start} for held-out regions",
        "test period": f"{test_start} to {tasks.time[-1]:%Y-%m}, horizons 1–{config.horizon} months",
        "training": training_words(trained),
    }
    report = run(publish)(tasks, regions, forecasts, evaluation, setup, str(out_dir), split,
                          str(data.zarr))  # fmt: skip
    return DemoResult(report.summary, report.outputs, evaluation.table.to_dict(orient="records"))

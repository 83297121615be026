"""The main job as a Prefect flow: synthetic rasters → regions → forecasts → pooled skill.

Wiring only: every stage is a spatialmeta function; this module decides order, retries and
where outputs go. Runs without a Prefect server (Prefect starts a temporary local one).

Example
-------
    python -m flows.pipeline --out outputs/demo
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

import spatialmeta as sm
from spatialmeta import learn

__all__ = ["demo_pipeline"]


@task(cache_policy=NO_CACHE)
def make_data(data_dir: str, years: int, resolution: float, n_regions: int, seed: int):
    return sm.data.write_default_data(
        data_dir, years=years, resolution=resolution, n_regions=n_regions, seed=seed
    )


@task(cache_policy=NO_CACHE, retries=1)
def aggregate(raster: str, regions_path: str, out_dir: str):
    import geopandas as gpd

    ds = sm.raster.open_raster(raster)
    regions = gpd.read_file(regions_path)
    weights = sm.raster.zonal_weights(ds, regions)
    weights.save(Path(out_dir) / "zonal_weights.npz")
    series = sm.raster.zonal_mean(ds["tas"], weights).compute()
    orog = sm.raster.zonal_mean(ds["orog"], weights).compute()
    sm.raster.write_zarr(series.to_dataset(name="tas"), Path(out_dir) / "series.zarr")
    return regions, series, orog.values


@task(cache_policy=NO_CACHE)
def build_tasks(
    regions, series, orog, holdout: float, support: int, test_start: str, seed: int, out_dir: str
):
    graph = sm.regions.contiguity_graph(regions, covariates={"elevation_m": orog})
    graph.to_geoparquet(Path(out_dir) / "region_graph.parquet")
    tasks = sm.tasks.RegionTaskSet.from_dataarray(series, graph)
    held_out = sm.tasks.spatial_holdout(tasks.n_regions, holdout, seed=seed)
    return tasks, tasks.split(held_out=held_out, test_start=test_start, support=support)


@task(cache_policy=NO_CACHE)
def train(tasks, split, config: learn.LearnConfig, out_dir: str, progress: bool, init=None):
    return learn.meta_train(
        tasks,
        split,
        config,
        init=init,
        checkpoint_dir=Path(out_dir) / "checkpoint",
        progress=progress,
    )


@task(cache_policy=NO_CACHE)
def train_global(tasks, split, config: learn.LearnConfig, out_dir: str, progress: bool):
    return learn.global_train(
        tasks, split, config, checkpoint_dir=Path(out_dir) / "checkpoint_global", progress=progress
    )


@task(cache_policy=NO_CACHE)
def forecast_all(result, global_result, tasks, split):
    return learn.forecast_methods(tasks, split, result.config, meta=result, global_=global_result)


@task(cache_policy=NO_CACHE)
def score(tasks, forecasts):
    return learn.evaluate(tasks, forecasts)


@task(cache_policy=NO_CACHE)
def publish(tasks, regions, forecasts, evaluation, setup: dict, out_dir: str, split=None):
    out = Path(out_dir)
    return learn.publish_report(
        tasks,
        forecasts,
        evaluation,
        regions,
        out,
        title="spatialmeta demo: meta-learned regional forecasts",
        setup=setup,
        split=split,
        extra_outputs={
            "region series (Zarr)": str(out / "series.zarr"),
            "region graph (GeoParquet)": str(out / "region_graph.parquet"),
            "checkpoint": str(out / "checkpoint" / "model.pt"),
        },
    )


@flow(name="spatialmeta-demo")
def demo_pipeline(
    out: str = "outputs/demo",
    years: int = 40,
    resolution: float = 1.0,
    n_regions: int = 80,
    holdout: float = 0.2,
    support: int = 36,
    test_start: str | None = None,
    episodes: int = 600,
    seed: int = 0,
    progress: bool = True,
) -> dict:
    """Run the whole path on the embedded synthetic data and write every output into ``out``."""
    logger = get_run_logger()
    import torch

    # the networks are small: one intra-op thread is as fast, and does not spin against
    # other work on a shared machine
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _demo(
            logger, out, years, resolution, n_regions, holdout, support, test_start, episodes,
            seed, progress,
        )  # fmt: skip
    finally:
        torch.set_num_threads(threads)


LEARNER_WORDS = {
    "hier": "hierarchical Bayes learner (prior from a graph network over the neighbours' "
    "records, conjugate update on each held-out region's known record)",
    "ridge": "Bayesian ridge head on the graph network, adapted per region",
    "anil": "graph network whose heads are adapted per region by gradient steps (ANIL)",
    "maml": "graph network adapted per region by second-order MAML",
    "fomaml": "graph network adapted per region by first-order MAML",
    "reptile": "graph network meta-trained by Reptile, heads adapted per region",
    "protonet": "prototype mixture over the support windows' outcome bins (ProtoNet)",
}


def _demo(
    logger, out, years, resolution, n_regions, holdout, support, test_start, episodes, seed,
    progress,
) -> dict:  # fmt: skip
    out_dir = Path(out)
    sm.ensure_writable_dir(out_dir)
    start_year = 1981
    test_start = test_start or f"{start_year + years - 5}-01"
    logger.info("1/7 writing synthetic rasters (NetCDF, GeoTIFF, Zarr) and regions")
    data = make_data(str(out_dir / "data"), years, resolution, n_regions, seed)
    logger.info("2/7 zonal aggregation of %s over %s", data.zarr.name, data.regions.name)
    regions, series, orog = aggregate(str(data.zarr), str(data.regions), str(out_dir))
    logger.info("3/7 region graph and region tasks")
    tasks, split = build_tasks(
        regions, series, orog, holdout, support, test_start, seed, str(out_dir)
    )
    config = learn.LearnConfig(episodes=episodes, seed=seed)
    logger.info("4/7 global network on %d training regions", int((~split.held_out).sum()))
    global_result = train_global(tasks, split, config, str(out_dir), progress)
    logger.info("4/7 meta-training the per-region adaptation, from the global network")
    # a backbone learner's meta phase gets at most the global network's own number of steps
    # (the demo's budget); a learner with its own inputs (hier) its own budget, so that its
    # result does not move with where the global network stopped
    init = global_result if config.pretrain else None
    meta_config = config
    if learn.algorithms.learner_entry(config.learner).cls.needs_backbone:
        meta_config = dataclasses.replace(config, episodes=len(global_result.history))
    result = train(tasks, split, meta_config, str(out_dir), progress, init=init)
    logger.info("5/7 adapting to %d held-out regions and forecasting", int(split.held_out.sum()))
    forecasts = forecast_all(result, global_result, tasks, split)
    logger.info("6/7 skill per region")
    evaluation = score(tasks, forecasts)
    logger.info("7/7 random-effects pooling; writing forecasts, tables, maps and the summary")
    setup = {
        "data": f"synthetic monthly climate, {years} years at {resolution}° ({data.zarr})",
        "regions": f"{tasks.n_regions} polygons ({data.regions}), queen contiguity graph",
        "held-out regions": f"{int(split.held_out.sum())} (seeded spatial hold-out, fraction {holdout})",
        "support": f"{support} months before {test_start} for held-out regions",
        "test period": f"{test_start} to {tasks.time[-1]:%Y-%m}, horizons 1–{config.horizon} months",
        "training": f"global network {len(global_result.history)} steps (best at "
        f"{global_result.best_episode}); meta-training {len(result.history)} episodes "
        f"(best at {result.best_episode}): {LEARNER_WORDS.get(config.learner, config.learner)}; "
        "early stopping on validation regions over the last months before the test period",
    }
    report = publish(tasks, regions, forecasts, evaluation, setup, str(out_dir), split)
    return {
        "summary": report.summary,
        "outputs": report.outputs,
        "table": evaluation.table.to_dict(orient="records"),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", default="outputs/demo")
    parser.add_argument("--episodes", type=int, default=600)
    args = parser.parse_args(argv)
    print(demo_pipeline(out=args.out, episodes=args.episodes)["summary"])


if __name__ == "__main__":
    main()

"""The end-to-end flows: ``pipeline`` on your rasters, ``demo_pipeline`` on the embedded data.

Wiring only. ``pipeline``: rasters and polygons → region series (``flows.ingest``'s stage)
→ task set, training, forecasts, skill report (``flows.forecast``'s stages) → and, given a
study table, its meta-analysis (``flows.pool``'s stage). ``demo_pipeline``:
:func:`spatialmeta.jobs.demo.demo_job`, each stage a task. Every stage is keyed on content
(``flows._stage``): a second run on unchanged inputs computes nothing, a changed raster
reruns the ingest and what depends on it, and a run killed at any moment is finished by the
next from its last finished stage (outputs are written under temporary names, then renamed).

``run_pipeline`` runs either on a dask cluster through ``DaskTaskRunner``: a new
LocalCluster (``dask="local"``) or an existing scheduler (``dask="tcp://host:8786"``).

Example
-------
    python -m flows.pipeline --out outputs/demo --episodes 300
    python -m flows.pipeline --out outputs/demo --dask local --workers 2
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from prefect import flow, get_run_logger
from pydantic import Field

from flows._params import existing, fraction_or_file, max_age
from flows._stage import Stages, task_runner
from spatialmeta.jobs.aggregate import aggregate_job
from spatialmeta.jobs.demo import demo_job
from spatialmeta.jobs.forecast import LEARNERS, LearnConfig, check_settings, forecast_job
from spatialmeta.jobs.pool import pool_job

__all__ = ["demo_pipeline", "pipeline", "run_pipeline"]

Steps = Annotated[int, Field(ge=1)]
Learner = Literal[LEARNERS]  # type: ignore[valid-type]


@flow(name="spatialmeta-pipeline", task_runner=task_runner())
def pipeline(
    rasters: Annotated[list[str], Field(min_length=1)], regions: str, var: str,
    test_start: str, out: str, id_column: str = "region_id", holdout: str = "0.2",
    support: Steps = 36, horizon: Steps = 3, learner: Learner = "hier", episodes: Steps = 600,
    seed: int = 0, studies: str | None = None, retrain: bool = False,
    max_model_age_days: float | None = None, result_storage: str | None = None,
    progress: bool = False,
) -> dict:  # fmt: skip
    """Ingest ``rasters`` over ``regions``, forecast ``var`` and publish into ``out``;
    with ``studies``, pool that study table into ``out/pool`` as well."""
    existing("rasters", rasters)
    existing("regions", regions)
    fraction_or_file("holdout", holdout)
    if studies is not None:
        existing("studies", studies)
    config = LearnConfig(learner=learner, episodes=episodes, seed=seed)
    check_settings(support, horizon, config)
    run = Stages(result_storage, retrain=retrain, max_model_age=max_age(max_model_age_days))
    log = get_run_logger()
    out_dir = Path(out)
    store = out_dir / "series.zarr"
    log.info("ingest: %d raster path(s) over %s", len(rasters), regions)
    ingested = run(aggregate_job)(
        rasters, str(store), regions=regions, id_column=id_column,
        weights=str(out_dir / "series_weights.npz"), append=True, local_threads=True,
        progress=progress,
    )  # fmt: skip
    log.info("forecast: task set, training, forecasts and the skill report")
    result = forecast_job(
        ingested.store, var, regions, out_dir / "forecast",
        region_id=id_column, holdout=holdout, support=support, test_start=test_start,
        horizon=horizon, config=config,
        progress=progress, threads=1, stage=run, grid=list(rasters),
    )  # fmt: skip
    outputs = {"series (Zarr)": str(store), **result.outputs}
    if studies is not None:
        log.info("pool: %s", studies)
        pooled = run(pool_job)(studies, str(out_dir / "pool"))
        outputs.update({f"pool: {k}": str(v) for k, v in pooled.files.items()})
    return {"summary": result.summary, "outputs": outputs, "appended": ingested.appended}


@flow(name="spatialmeta-demo", task_runner=task_runner())
def demo_pipeline(
    out: str = "outputs/demo",
    years: Annotated[int, Field(ge=8)] = 40,
    resolution: Annotated[float, Field(gt=0)] = 1.0,
    n_regions: Annotated[int, Field(ge=8)] = 80,
    holdout: Annotated[float, Field(gt=0, lt=1)] = 0.2,
    support: Steps = 36,
    test_start: str | None = None,
    episodes: Steps = 600,
    seed: int = 0,
    retrain: bool = False,
    result_storage: str | None = None,
    progress: bool = True,
) -> dict:
    """Run the whole path on the embedded synthetic data and write every output into ``out``."""
    import dataclasses

    logger = get_run_logger()
    result = demo_job(
        out, years=years, resolution=resolution, n_regions=n_regions, holdout=holdout,
        support=support, test_start=test_start, episodes=episodes, seed=seed,
        progress=progress, stage=Stages(result_storage, retrain=retrain), log=logger.info,
    )  # fmt: skip
    return dataclasses.asdict(result)


def run_pipeline(flow_fn, *, dask: str | None = None, workers: int = 2, **parameters):
    """Run ``flow_fn`` (a flow of this module) with ``parameters``: on the default task
    runner, or with ``dask`` on a ``DaskTaskRunner`` ("local": a new LocalCluster of
    ``workers`` single-threaded processes; an address: that scheduler)."""
    if dask is None:
        return flow_fn(**parameters)
    from prefect_dask import DaskTaskRunner

    if dask == "local":
        runner = DaskTaskRunner(
            cluster_class="distributed.LocalCluster",
            cluster_kwargs={"n_workers": workers, "threads_per_worker": 1,
                            "dashboard_address": None, "processes": True},
        )  # fmt: skip
    else:
        runner = DaskTaskRunner(address=dask)
    return flow_fn.with_options(task_runner=runner)(**parameters)


def main(argv: list[str] | None = None) -> None:
    import argparse

    from flows._server import local_api

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", default="outputs/demo")
    parser.add_argument("--years", type=int, default=40)
    parser.add_argument("--regions", type=int, default=80)
    parser.add_argument("--episodes", type=int, default=600)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--retrain", action="store_true", help="Train again even if cached.")
    parser.add_argument("--dask", help='"local" (a LocalCluster) or a scheduler address.')
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    with local_api():
        result = run_pipeline(
            demo_pipeline, dask=args.dask, workers=args.workers, out=args.out, years=args.years,
            n_regions=args.regions, episodes=args.episodes, seed=args.seed, retrain=args.retrain,
            progress=not args.no_progress,
        )  # fmt: skip
    print(result["summary"])


if __name__ == "__main__":
    main()

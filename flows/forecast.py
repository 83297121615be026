"""Regional forecasting as flows: ``build_tasks``, ``meta_train`` and ``forecast``.

Wiring only, over :mod:`spatialmeta.jobs.forecast` and :mod:`spatialmeta.jobs.stages`:
every stage a content-keyed task (``flows._stage``), so the three flows share their
stages' results: ``forecast`` after ``meta_train`` on the same data and settings trains
nothing. A month appended after ``test_start`` reruns the task set and the forecasts
(their new origins) but not the training, whose key is what training sees; ``retrain``
forces it, and ``max_model_age_days`` lets a trained model expire.

Example
-------
    python -m flows.forecast --series outputs/series.zarr --var tas \\
        --regions regions.gpkg --test-start 2016-01 --out outputs/forecast
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from prefect import flow
from pydantic import Field

from flows._params import existing, fraction_or_file, max_age
from flows._stage import Stages, task_runner
from spatialmeta.jobs.forecast import (
    LEARNERS,
    LearnConfig,
    check_settings,
    forecast_job,
    read_series,
)  # fmt: skip
from spatialmeta.jobs.forecast import build_tasks as build_task_set
from spatialmeta.jobs.stages import train_methods, training_words

__all__ = ["build_tasks", "forecast", "meta_train"]

Learner = Literal[tuple(LEARNERS)]  # type: ignore[valid-type]
Steps = Annotated[int, Field(ge=1)]


def _check(series, regions, holdout, days=None):
    existing("series", series)
    existing("regions", regions)
    fraction_or_file("holdout", holdout)
    return max_age(days)


def _task_set(run, series, var, regions, region_id, holdout, support, test_start, seed, member):
    da = run(read_series)(Path(series), var, member)
    return run(build_task_set)(da, regions, region_id, holdout, support, test_start, seed)


@flow(name="spatialmeta-build-tasks", task_runner=task_runner())
def build_tasks(
    series: str, var: str, regions: str, test_start: str, region_id: str = "region_id",
    holdout: str = "0.2", support: Steps = 36, seed: int = 0, member: str | None = None,
    result_storage: str | None = None,
) -> dict:  # fmt: skip
    """The region graph, the task set and its split from a series store and polygons."""
    _check(series, regions, holdout)
    polys = regions
    tasks, split = _task_set(Stages(result_storage), series, var, polys, region_id, holdout,
                             support, test_start, seed, member)  # fmt: skip
    return {"regions": tasks.n_regions, "steps": tasks.n_time,
            "held_out": int(split.held_out.sum()), "test_start": int(split.test_start)}  # fmt: skip


@flow(name="spatialmeta-meta-train", task_runner=task_runner())
def meta_train(
    series: str, var: str, regions: str, test_start: str, out: str,
    region_id: str = "region_id", holdout: str = "0.2", support: Steps = 36,
    horizon: Steps = 3, learner: Learner = "hier", episodes: Steps = 600, seed: int = 0,
    member: str | None = None, retrain: bool = False, max_model_age_days: float | None = None,
    result_storage: str | None = None, progress: bool = False,
) -> dict:  # fmt: skip
    """Train the global network, then the meta-learner (checkpoints under ``out``)."""
    age = _check(series, regions, holdout, max_model_age_days)
    config = LearnConfig(learner=learner, episodes=episodes, seed=seed, horizon=horizon)
    check_settings(support, horizon, config)
    run = Stages(result_storage, retrain=retrain, max_model_age=age)
    tasks, split = _task_set(run, series, var, regions, region_id, holdout, support, test_start,
                             seed, member)  # fmt: skip
    Path(out).mkdir(parents=True, exist_ok=True)
    trained = train_methods(tasks, split, config, Path(out), progress=progress,
                            stage=run)  # fmt: skip
    return {"training": training_words(trained), "checkpoint": f"{out}/checkpoint/model.pt"}


@flow(name="spatialmeta-forecast", task_runner=task_runner())
def forecast(
    series: str, var: str, regions: str, test_start: str, out: str,
    region_id: str = "region_id", holdout: str = "0.2", support: Steps = 36,
    horizon: Steps = 3, learner: Learner = "hier", episodes: Steps = 600, seed: int = 0,
    member: str | None = None, retrain: bool = False, max_model_age_days: float | None = None,
    result_storage: str | None = None, progress: bool = False, grid: str | None = None,
) -> dict:  # fmt: skip
    """Forecast the held-out regions with every method and publish the skill report (with
    ``grid``, a raster the series came from, also on its cells: NetCDF and GeoTIFF)."""
    age = _check(series, regions, holdout, max_model_age_days)
    config = LearnConfig(learner=learner, episodes=episodes, seed=seed)
    check_settings(support, horizon, config)
    run = Stages(result_storage, retrain=retrain, max_model_age=age)
    result = forecast_job(
        series, var, regions, out, region_id=region_id, holdout=holdout,
        support=support, test_start=test_start, horizon=horizon, member=member, config=config,
        progress=progress, threads=1, stage=run, grid=grid,
    )  # fmt: skip
    return {"summary": result.summary, "outputs": result.outputs}


def main(argv: list[str] | None = None) -> None:
    import argparse

    from flows._server import local_api

    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    for name in ("--series", "--var", "--regions", "--test-start", "--out"):
        p.add_argument(name, required=True)
    p.add_argument("--region-id", default="region_id")
    p.add_argument("--episodes", type=int, default=600)
    p.add_argument("--retrain", action="store_true", help="Train again even if cached.")
    a = p.parse_args(argv)
    with local_api():
        result = forecast(series=a.series, var=a.var, regions=a.regions, out=a.out,
                          test_start=a.test_start, region_id=a.region_id, episodes=a.episodes,
                          retrain=a.retrain)  # fmt: skip
    print(result["summary"])


if __name__ == "__main__":
    main()

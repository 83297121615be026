"""The batch forecast job: a (region, time) series store + polygons → forecasts and skill tables.

Stages: read the series (:func:`read_series`), build the region tasks and the split, train
(:func:`~spatialmeta.jobs.stages.train_methods`), forecast and score every method, the
shots curve, and the report (:func:`~spatialmeta.learn.publish.publish_report`). Errors
name the argument (``holdout``, ``member``); the CLI words them as its flags.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from spatialmeta._io import ensure_writable_dir
from spatialmeta.jobs.stages import as_is, forecast_all, train_methods, training_words
from spatialmeta.learn.compare import shots_curve, with_support
from spatialmeta.learn.config import LEARNERS, LearnConfig
from spatialmeta.learn.evaluate import ForecastEvaluation, evaluate
from spatialmeta.learn.publish import publish_report

__all__ = [
    "LEARNERS", "ForecastJobResult", "LearnConfig", "build_tasks", "check_settings", "forecast_job", "read_holdout",
    "polygons", "read_series",
]  # fmt: skip


@dataclass(frozen=True)
class ForecastJobResult:
    """What :func:`forecast_job` wrote, and the evaluation."""

    out: Path
    evaluation: ForecastEvaluation
    n_missing: int
    shots: pd.DataFrame | None = None
    summary: str = ""
    outputs: dict | None = None


def read_holdout(spec: str, region_ids: np.ndarray, *, seed: int = 0) -> np.ndarray:
    """A hold-out mask from a fraction ("0.2") or a file of region ids (one per line)."""
    from spatialmeta.tasks.region import spatial_holdout

    try:
        fraction = float(spec)
    except ValueError:
        fraction = None
    if fraction is not None:
        return spatial_holdout(len(region_ids), fraction, seed=seed)
    path = Path(spec)
    if not path.exists():
        raise FileNotFoundError(
            f"`holdout` '{spec}' is neither a fraction nor an existing file of region ids."
        )
    wanted = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    ids = region_ids.astype(str)
    unknown = sorted(set(wanted) - set(ids))
    if unknown:
        raise ValueError(f"hold-out file '{path}' names regions not in the series: {unknown[:5]}.")
    return np.isin(ids, wanted)


def forecast_job(
    series: str | os.PathLike,
    var: str,
    regions,
    out: str | os.PathLike,
    *,
    region_id: str = "region_id",
    holdout: str = "0.2",
    support: int = 36,
    test_start: str,
    horizon: int = 3,
    member: str | None = None,
    config: LearnConfig | None = None,
    shots: Sequence[int] | None = None,
    progress: bool = True,
    threads: int | None = None,
    stage=None,
    grid=None,
) -> ForecastJobResult:
    """Meta-train on the training regions, forecast the held-out ones, score every method.

    Trains the global graph network by supervised learning (``out/checkpoint_global``),
    then the meta-learner (``config.learner``; ``out/checkpoint``) from it, then
    scores on the held-out regions: ``meta`` (adapted), ``meta_noadapt`` (the same network
    unadapted), ``global``, ``global_finetuned`` (fine-tuned on each region's support
    window), ``climatology``, ``persistence`` and ``ridge_ar``. ``regions``: the polygons
    (a GeoDataFrame, or a file that :func:`~spatialmeta.raster.aggregate.read_regions`
    reads with ``region_id`` as the id column).

    Writes into ``out`` (:func:`~spatialmeta.learn.publish.publish_report`):
    ``forecasts.zarr`` (region, time, horizon, quantile; CF attributes),
    ``forecasts.parquet`` (GeoParquet), ``skill.csv`` (one row per method, area-weighted),
    ``skill_by_region.csv``, ``skill_map.png``, the pooled skill against climatology
    (``pooled_skill.json``, ``forest_skill.png``) and ``summary.md``; with ``shots``
    (support lengths, e.g. ``(6, 12, 24, 48, "max")``; ``"max"``: every step before
    ``test_start``) also ``shots.csv`` (support, method, rmse,
    crps, ...; area-weighted) and ``shots.png``, from the same trained networks; with ``grid``
    (the rasters the series were aggregated from) ``forecasts_grid.nc`` (CF NetCDF),
    ``forecast_latest.tif`` and ``skill_map.tif`` on their cells. Missing
    values (NaN gaps) are masked: they never enter the inputs or the losses, scores skip
    them, and the summary says how many there were.

    ``threads`` sets torch's intra-op threads for the job (restored after; None: as they
    are). One thread suits these small networks, and does not spin against other work.
    ``stage`` wraps each stage (a Prefect flow passes a task decorator; None: plain calls).
    """
    import torch

    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(int(threads))
    try:
        return _forecast_job(
            series, var, regions, out, region_id=region_id, holdout=holdout, support=support,
            test_start=test_start, horizon=horizon, member=member, config=config, shots=shots,
            progress=progress, stage=stage, grid=grid,
        )  # fmt: skip
    finally:
        torch.set_num_threads(before)


def check_settings(support: int, horizon: int, config: LearnConfig) -> None:
    """Refuse, before any work, a ``support`` window too short for the lags and horizon."""
    need = config.lags + horizon
    if support < need:
        raise ValueError(
            f"`support` ({support} steps) must hold at least lags + horizon = {need} steps "
            f"(lags {config.lags}, horizon {horizon}); lengthen `support` or shorten the lags."
        )


def polygons(regions, region_id: str):
    """``regions`` as a GeoDataFrame: as given, or read from its file."""
    if isinstance(regions, str | os.PathLike):
        from spatialmeta.raster.aggregate import read_regions

        return read_regions(regions, id_column=region_id)
    return regions


def build_tasks(
    da, regions, region_id: str, holdout: str, support: int, test_start: str, seed: int
):
    """The region graph (queen contiguity of ``regions``), the task set and its split.

    Regions with no value at all (land-only tiles of an ocean field) are dropped, named in
    a warning; regions with some values keep their gaps, masked.
    """
    from spatialmeta.regions.graph import contiguity_graph
    from spatialmeta.tasks.region import RegionTaskSet

    graph = contiguity_graph(polygons(regions, region_id), id_column=region_id)
    tasks = RegionTaskSet.from_dataarray(da.load(), graph, on_invalid="drop")
    held = read_holdout(holdout, tasks.region_ids, seed=seed)
    return tasks, tasks.split(held_out=held, test_start=test_start, support=support)


def _forecast_job(
    series, var, regions, out, *, region_id, holdout, support, test_start, horizon, member,
    config, shots, progress, stage, grid=None,
) -> ForecastJobResult:  # fmt: skip
    run = stage or as_is
    check_settings(support, horizon, config or LearnConfig())
    out = ensure_writable_dir(out)
    regions = polygons(regions, region_id)
    path = Path(series)
    da = run(read_series)(path, var, member)
    cfg = config or LearnConfig()
    tasks, split = run(build_tasks)(da, regions, region_id, holdout, support, test_start, cfg.seed)
    cfg = LearnConfig(**{**cfg.to_dict(), "horizon": horizon})
    # "max": the longest support the record allows (everything before test_start)
    t0 = split.test_start
    shots = None if shots is None else [t0 if str(n) == "max" else int(n) for n in shots]
    for n in shots or ():  # bad shots fail before any training
        with_support(tasks, split, n)
    trained = train_methods(tasks, split, cfg, out, progress=progress, stage=stage)
    forecasts = run(forecast_all)(trained, tasks, split)
    evaluation = run(evaluate)(tasks, forecasts)
    curve = None
    if shots:
        curve = run(shots_curve)(tasks, split, cfg, shots, meta=trained.meta, global_=trained.glob)
    setup = {
        "series": f"{path} ({var!r}{f', member {member}' if member is not None else ''}; "
        f"{tasks.n_regions} regions × {tasks.n_time} steps, {tasks.time[0]:%Y-%m-%d} to "
        f"{tasks.time[-1]:%Y-%m-%d})",
        "held-out regions": f"{int(split.held_out.sum())} (--holdout {holdout}); the other "
        f"{int((~split.held_out).sum())} train with their full record",
        "support": f"{support} steps before {tasks.time[t0]:%Y-%m-%d} for held-out regions",
        "test period": f"{tasks.time[t0]:%Y-%m-%d} to {tasks.time[-1]:%Y-%m-%d}, horizons "
        f"1–{horizon}; every origin uses only data observed before it",
        "training": training_words(trained),
    }
    report = run(publish_report)(
        tasks, forecasts, evaluation, regions, out, title=f"spatialmeta forecast: {var}",
        setup=setup, region_id=region_id, shots=curve, split=split, horizon=horizon, grid=grid,
    )  # fmt: skip
    return ForecastJobResult(
        out, evaluation, int(np.isnan(tasks.series).sum()), curve, report.summary, report.outputs
    )


def read_series(path: Path, var: str, member: str | None = None) -> xr.DataArray:
    """The ``(region, time)`` series ``var`` of a Zarr or NetCDF store (one ``member``)."""
    if not path.exists():
        raise FileNotFoundError(f"series store '{path}' does not exist; check `series`.")
    try:
        ds = (
            xr.open_zarr(path) if path.is_dir() or path.suffix == ".zarr" else xr.open_dataset(path)
        )
    except Exception as exc:  # any reader failure becomes one message naming the store
        raise ValueError(f"cannot read series store '{path}': {exc}") from exc
    if var not in ds:
        raise KeyError(
            f"series store '{path}' has no variable {var!r}; it has {list(ds.data_vars)}."
        )
    da = ds[var]
    if "member" in da.dims:
        if member is None:
            raise ValueError(
                f"'{var}' has members {np.asarray(da.member.values[:5]).tolist()}...; choose one with --member."
            )
        da = da.sel(member=member)
    extra = [d for d in da.dims if d not in ("region", "time")]
    if extra:
        raise ValueError(
            f"'{var}' has dims {list(da.dims)}; expected (region, time) (extra: {extra})."
        )
    return da

"""Every output of a forecast run, for the analyst's tools: tables, forecasts, maps, summary.

One function, used by ``spatialmeta forecast`` (:func:`~spatialmeta.jobs.forecast.forecast_job`)
and by the demo flow alike, so that both runs report the same way.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import xarray as xr

from spatialmeta._io import atomic_path, write_csv
from spatialmeta.learn.evaluate import (
    ForecastEvaluation,
    compare_methods,
    region_lonlat,
    spatial_comparison,
)
from spatialmeta.learn.output import forecast_dataset, write_forecasts
from spatialmeta.learn.predictions import Forecast
from spatialmeta.tasks.region import RegionTaskSet

__all__ = ["Report", "publish_report", "missing_note", "region_values", "FOREST_MAX_REGIONS"]

# A forest plot gives each region a row of about a third of an inch: past this many held-out
# regions it stops being readable (and past ~600 matplotlib refuses the figure's size), so
# larger runs report the pooled skill in the summary and JSON, and per region in the CSV
# and the map.
FOREST_MAX_REGIONS = 80


@dataclass(frozen=True)
class Report:
    """What :func:`publish_report` wrote: the Markdown summary, output paths, pooled skill."""

    summary: str
    outputs: dict[str, str]
    pooled: object | None  # PoolResult, or None with fewer than two held-out regions


def missing_note(series: np.ndarray) -> str:
    """One sentence on the missing values of a ``(region, time)`` series and their handling.

    Examples
    --------
    >>> y = np.ones((2, 4)); y[0, 1] = np.nan
    >>> missing_note(y)  # doctest: +NORMALIZE_WHITESPACE
    'Missing values: 1 of 8 (region, time) values (12.5%), in 1 region; masked: never used
    as inputs, in training losses or in scores.'
    """
    gaps = ~np.isfinite(series)
    n = int(gaps.sum())
    if n == 0:
        return f"Missing values: none of the {gaps.size} (region, time) values."
    regions = int(gaps.any(axis=1).sum())
    return (
        f"Missing values: {n} of {gaps.size} (region, time) values ({n / gaps.size:.1%}), "
        f"in {regions} region{'s' if regions != 1 else ''}; masked: never used as inputs, in "
        "training losses or in scores."
    )


def region_values(region_ids: np.ndarray, rows: pd.DataFrame, column: str) -> np.ndarray:
    """``rows[column]`` placed at each row's ``region_id`` in ``region_ids`` order; NaN elsewhere.

    Examples
    --------
    >>> rows = pd.DataFrame({"region_id": ["c", "a"], "skill": [0.5, 0.25]})
    >>> region_values(np.array(["c", "b", "a"]), rows, "skill").tolist()
    [0.5, nan, 0.25]
    """
    out = np.full(len(region_ids), np.nan)
    idx = pd.Index(region_ids).get_indexer(rows["region_id"].to_numpy())
    if (idx < 0).any():
        raise ValueError(
            f"rows name regions not in the task set: {list(pd.unique(rows.region_id[idx < 0]))[:5]}."
        )
    out[idx] = rows[column].to_numpy(dtype=float)
    return out


def catch_up_note(shots: pd.DataFrame, method: str = "meta") -> str:
    """At which support each other method's RMSE first reaches the meta-learner's."""
    wide = shots.pivot_table(index="support", columns="method", values="rmse")
    if method not in wide:
        return f"Shots curve: no {method!r} rows."
    parts = []
    for other in wide.columns:
        if other == method:
            continue
        reached = wide.index[wide[other] <= wide[method]]
        parts.append(
            f"{other} at {int(reached[0])}"
            if len(reached)
            else f"{other} not up to {int(wide.index.max())}"
        )
    return (
        f"Shots curve: support (steps) at which each method's RMSE catches up with {method}'s: "
        + "; ".join(parts)
        + "."
    )


def plot_pit(pit_table: pd.DataFrame, path: str | os.PathLike):
    """PIT histograms (density per bin, one line per method; flat at 1 is calibrated)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=120)
    for m, g in pit_table.groupby("method", sort=False):
        centre = (g["bin_lower"] + g["bin_upper"]) / 2
        ax.plot(centre, g["density"], marker="o", label=m, linewidth=2.5 if m == "meta" else 1.2)
    ax.axhline(1.0, color="k", linestyle="--", linewidth=1)
    ax.set_xlabel("PIT value Φ((y − μ) / σ)")
    ax.set_ylabel("density (1 = calibrated)")
    ax.set_title("Held-out regions: PIT histograms (U-shape: too narrow; hump: too wide)")
    ax.legend(fontsize=7, ncol=2)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return fig


def spatial_skill(tasks, evaluation, pooled) -> dict | None:
    """The per-region log MSE ratios pooled with spatially correlated regions: an
    exponential correlation of the great-circle distance between region centroids (range
    fitted) plus an independent part, REML (:func:`~spatialmeta.learn.evaluate.
    spatial_comparison`, as metafor's ``rma.mv(random = list(~ lon + lat | const, ~ 1 |
    id), struct = "SPEXP", dist = "gcd")``). None without a graph (no centroids) or
    outside 5 to 1,000 regions."""
    idx = pd.Index(tasks.region_ids.astype(str)).get_indexer(
        np.asarray(evaluation.region_ids).astype(str)
    )
    y = np.where(idx >= 0, np.asarray(pooled.yi, dtype=float), np.nan)
    lonlat = region_lonlat(tasks, np.maximum(idx, 0))
    fit = spatial_comparison(y, np.asarray(pooled.vi, dtype=float), lonlat)
    if fit is None:
        return None
    res, used = fit
    typical = float(np.nanmedian(np.asarray(pooled.vi, dtype=float)[used]))
    return {
        "model": "exponential spatial correlation of centroid distance + independent part, REML",
        "k": int(used.sum()), "estimate": float(res.beta[0, 0]), "se": float(res.se[0, 0]),
        "ci_lb": float(res.ci_lb[0, 0]), "ci_ub": float(res.ci_ub[0, 0]),
        "pval": float(res.pval[0, 0]), "tau2_spatial": float(res.tau2[0]),
        # None: no spatial variance, so the range is not identified (any value fits)
        "range_km": float(res.rho[0]) if res.tau2[0] > 1e-6 * typical else None,
        "range_at_bound": bool(res.range_at_bound[0]),
        "sigma2_independent": float(res.sigma2[0, 0]),
        "logLik": float(res.logLik[0]), "converged": bool(res.converged[0]),
    }  # fmt: skip


def publish_report(
    tasks: RegionTaskSet,
    forecasts: list[Forecast],
    evaluation: ForecastEvaluation,
    regions: gpd.GeoDataFrame,
    out: str | os.PathLike,
    *,
    title: str,
    setup: dict[str, object],
    region_id: str = "region_id",
    shots: pd.DataFrame | None = None,
    extra_outputs: dict[str, str] | None = None,
    split=None,
    horizon: int | None = None,
    grid=None,
) -> Report:
    """Write every output of a scored forecast run into ``out`` (each file atomically).

    * ``skill.csv`` (one row per method, area-weighted) and ``skill_by_region.csv``;
    * ``forecasts.zarr`` (CF attributes) and ``forecasts.parquet`` (GeoParquet) of the
      first forecast (the meta-learner's);
    * ``pooled_skill.json`` and ``forest_skill.png``: the per-region log MSE ratios of
      ``evaluation`` (meta vs climatology) pooled by REML random effects, with at least two
      held-out regions (the forest plot up to :data:`FOREST_MAX_REGIONS` of them);
    * ``skill_comparison.csv``: the first method against every other, region by region,
      pooled by random effects (:func:`~spatialmeta.learn.evaluate.compare_methods`);
    * ``skill_map.png``: each held-out region's skill against climatology (training regions
      grey);
    * with ``shots`` (:func:`~spatialmeta.learn.compare.shots_curve`): ``shots.csv`` and
      ``shots.png``;
    * ``summary.md``: set-up, skill tables, pooled skill, the shots curve, how missing
      values were handled and where every output is.

    * with ``grid`` (the raster the series were aggregated from: a path or a normalized
      Dataset): ``forecasts_grid.nc``, ``forecast_latest.tif`` and ``skill_map.tif``, the
      forecasts and skill painted back onto its cells (:func:`~spatialmeta.learn.output.write_gridded`).

    ``regions`` holds one polygon per task region, ids in column ``region_id``. With
    ``split``, the summary also names held-out regions with no known neighbour or no value
    in their support window (:func:`~spatialmeta.learn.references.heldout_notes`).
    """
    from spatialmeta.learn.compare import plot_shots
    from spatialmeta.meta_analysis import forest_plot, pool
    from spatialmeta.report import forecast_summary
    from spatialmeta.viz import choropleth

    out = Path(out)
    # one polygon per task region, in task order, ids as in the series (matched as text, so
    # that integer ids in a store and text ids in a shapefile still meet)
    polys = regions.loc[~regions[region_id].astype(str).duplicated()]
    pos = pd.Index(polys[region_id].astype(str)).get_indexer(tasks.region_ids.astype(str))
    if (pos < 0).any():
        missing = tasks.region_ids[pos < 0]
        raise ValueError(
            f"regions have no polygon for {len(missing)} series region(s), e.g. "
            f"{np.asarray(missing[:5]).tolist()}; pass polygons whose column {region_id!r} holds every id."
        )
    ordered = polys.iloc[pos].assign(region_id=tasks.region_ids).reset_index(drop=True)

    outputs: dict[str, str] = {"summary": str(out / "summary.md")}
    write_csv(evaluation.table, out / "skill.csv")
    write_csv(evaluation.by_region, out / "skill_by_region.csv")
    # the forecasts written out are those of the evaluated method, found by name (not by
    # their place in the list)
    main = next((f for f in forecasts if f.method == evaluation.method), None)
    if main is None:
        raise ValueError(
            f"the evaluation scores method {evaluation.method!r}, but no forecast of that name "
            f"was given (methods: {[f.method for f in forecasts]}); pass its forecasts too."
        )
    forecast_ds = forecast_dataset(tasks, main)
    zarr_path, parquet_path = write_forecasts(forecast_ds, ordered, out)
    outputs["forecasts (Zarr)"] = str(zarr_path)
    outputs["forecasts (GeoParquet)"] = str(parquet_path)
    outputs["skill table"] = str(out / "skill.csv")
    outputs["skill by region"] = str(out / "skill_by_region.csv")
    comparison = compare_methods(tasks, forecasts, method=evaluation.method)
    if not comparison.empty:
        write_csv(comparison, out / "skill_comparison.csv")
        outputs["pooled comparison"] = str(out / "skill_comparison.csv")

    method, reference = evaluation.method, evaluation.reference
    rows = evaluation.by_region[evaluation.by_region.method == method]
    if f"skill_vs_{reference}" in rows:
        skill = region_values(tasks.region_ids, rows, f"skill_vs_{reference}")
        choropleth(
            ordered,
            skill,
            column_label=f"skill vs {reference} (1 − MSE ratio)",
            title=f"Held-out regions: {method} forecast skill (grey: training regions)",
            path=out / "skill_map.png",
        )
        outputs["skill map"] = str(out / "skill_map.png")

    if grid is not None:
        from spatialmeta.learn.output import write_gridded
        from spatialmeta.raster import open_raster, zonal_weights

        template = grid if isinstance(grid, xr.Dataset | xr.DataArray) else open_raster(grid)
        weights = zonal_weights(template, ordered, id_column="region_id")
        skill_da = None
        if f"skill_vs_{reference}" in rows:
            skill_da = xr.DataArray(
                region_values(tasks.region_ids, rows, f"skill_vs_{reference}"), dims="region",
                coords={"region": tasks.region_ids.astype(str)}, name=f"skill_vs_{reference}",
                attrs={"long_name": f"{method} forecast skill vs {reference} (1 - MSE ratio)",
                       "units": "1"},
            )  # fmt: skip
        for label, path in write_gridded(forecast_ds, skill_da, weights, template,
                                         out).items():  # fmt: skip
            outputs[label] = str(path)

    notes = [missing_note(tasks.series)]
    if split is not None:  # regions with no known neighbour, support gaps, short supports
        from spatialmeta.learn.references import heldout_notes

        notes += heldout_notes(tasks, split, horizon or main.mean.shape[-1])
    if evaluation.pit is not None:
        write_csv(evaluation.pit, out / "pit.csv")
        plot_pit(evaluation.pit, out / "pit.png")
        outputs["PIT histograms"] = str(out / "pit.csv")
        outputs["PIT plot"] = str(out / "pit.png")
    flagged = evaluation.calibration_flags()
    if flagged:
        notes.append(
            "Calibration: the 90 % intervals of " + ", ".join(flagged) + " cover outside "
            "85–95 % of the observations (too narrow below, too wide above); see pit.png."
        )
    if shots is not None:
        notes.append(catch_up_note(shots, method))
    pooled = spatial = None
    if len(evaluation.region_ids) >= 2:
        pooled = pool(evaluation, method="REML")
        spatial = spatial_skill(tasks, evaluation, pooled)
        doc = pooled.to_dict()
        if spatial is not None:
            doc["spatial"] = spatial
        with atomic_path(out / "pooled_skill.json") as tmp:
            tmp.write_text(json.dumps(doc, indent=1))
        outputs["pooled skill (JSON)"] = str(out / "pooled_skill.json")
        if pooled.k <= FOREST_MAX_REGIONS:
            forest_plot(
                pooled,
                path=out / "forest_skill.png",
                xlabel=f"MSE ratio, {method} / {reference} (log scale)",
                transform=np.exp,
                xscale="log",
                title="Per-region skill, pooled by random effects",
            )
            outputs["forest plot"] = str(out / "forest_skill.png")
        else:
            notes.append(
                f"No forest plot: {int(pooled.k)} held-out regions are more than a forest plot "
                f"shows legibly ({FOREST_MAX_REGIONS}); per-region skill is in the map and "
                "skill_by_region.csv."
            )
    if shots is not None:
        write_csv(shots, out / "shots.csv")
        plot_shots(shots, out / "shots.png", units=tasks.units)
        outputs["shots curve"] = str(out / "shots.csv")
        outputs["shots plot"] = str(out / "shots.png")
    outputs.update(extra_outputs or {})
    summary = forecast_summary(
        title=title,
        setup=setup,
        table=evaluation.table,
        pooled=pooled,
        spatial=spatial,
        units=tasks.units,
        outputs=outputs,
        shots=shots,
        notes=notes,
        comparison=comparison,
        method=evaluation.method,
    )
    with atomic_path(out / "summary.md") as tmp:
        tmp.write_text(summary)
    return Report(summary, outputs, pooled)

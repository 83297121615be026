"""Every method under the same information, and the shots curve (skill against support length).

:func:`forecast_methods` forecasts the held-out regions with the meta-learner and every
baseline; :func:`shots_curve` repeats that for several support lengths from one trained
meta-learner and one trained global network, and :func:`plot_shots` draws the curve.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence

import numpy as np
import pandas as pd

from spatialmeta.learn.baselines import climatology, persistence, ridge_ar
from spatialmeta.learn.config import LearnConfig
from spatialmeta.learn.evaluate import evaluate
from spatialmeta.learn.forecast import forecast_heldout
from spatialmeta.learn.loop import TrainResult
from spatialmeta.learn.predictions import Forecast
from spatialmeta.learn.references import references
from spatialmeta.tasks.region import RegionSplit, RegionTaskSet

__all__ = ["forecast_methods", "with_support", "shots_curve", "plot_shots", "SHOTS"]

SHOTS = (6, 12, 24, 48)


def forecast_methods(
    tasks: RegionTaskSet,
    split: RegionSplit,
    config: LearnConfig,
    *,
    meta: TrainResult | None = None,
    global_: TrainResult | None = None,
    noadapt: bool = True,
    refs: bool = True,
) -> list[Forecast]:
    """Forecasts of the held-out regions by every method, each from the same information.

    ``meta`` (from :func:`~spatialmeta.learn.train.meta_train`) gives ``meta`` and, with
    ``noadapt``, ``meta_noadapt`` (the meta-trained network without adaptation);
    ``global_`` (from :func:`~spatialmeta.learn.train.global_train`) gives ``global`` and
    ``global_finetuned``; ``climatology`` (the support window's calendar means), ``persistence`` (raw, the
    last value), ``ridge_ar`` and, with ``refs``, the statistician's references of
    :mod:`~spatialmeta.learn.references` (expanding, neighbour and eb climatologies,
    anomaly persistence) always come.
    The support window is ``split.support`` steps for every method.
    """
    out = []
    if meta is not None:
        out.append(forecast_heldout(meta.learner, tasks, split, config))
        if noadapt:
            out.append(forecast_heldout(meta.learner, tasks, split, config, adapt=False))
    if global_ is not None:
        out.append(forecast_heldout(global_.learner, tasks, split, config, adapt=False))
        out.append(forecast_heldout(global_.learner, tasks, split, config))
    h = config.horizon
    out += [
        climatology(tasks, split, h),
        persistence(tasks, split, h),
        ridge_ar(tasks, split, h, lags=config.lags),
    ]
    if refs:
        out += references(tasks, split, h)
    return out


def with_support(tasks: RegionTaskSet, split: RegionSplit, support: int) -> RegionSplit:
    """The same split with another support length for the held-out regions (checked)."""
    t0 = split.test_start
    if isinstance(support, bool) or not isinstance(support, int | np.integer) or support < 1:
        raise ValueError(f"a support length must be a positive integer; got {support!r}.")
    if support > t0:
        raise ValueError(
            f"support of {support} steps does not fit before test_start ({t0} steps of record); "
            f"choose shots <= {t0}."
        )
    empty = split.held_out & ~np.isfinite(tasks.series[:, t0 - support : t0]).any(axis=1)
    if empty.any():
        raise ValueError(
            f"held-out regions with no value in a {support}-step support window: "
            f"{list(tasks.region_ids[empty][:5])}; use longer shots."
        )
    return dataclasses.replace(split, support=int(support))


def shots_curve(
    tasks: RegionTaskSet,
    split: RegionSplit,
    config: LearnConfig,
    shots: Sequence[int] = SHOTS,
    *,
    meta: TrainResult | None = None,
    global_: TrainResult | None = None,
) -> pd.DataFrame:
    """Area-weighted scores of every method for each support length (the shots curve).

    The learners are trained once (on ``split``); each support length ``n`` then changes
    only what a held-out region is known from — ``n`` steps before ``test_start`` — for
    adaptation, normalization, the baselines' fits and the lag windows of the test
    origins alike. Windows shorter than ``lags + horizon`` use partly masked lag windows
    (:func:`~spatialmeta.learn.features.support_origins`).

    Returns
    -------
    pandas.DataFrame
        One row per (support, method): ``support``, ``method``, ``rmse``, ``crps``,
        ``mae``, ``bias`` and the skill scores, area-weighted over held-out regions.
    """
    shots = [int(n) for n in shots]
    if not shots:
        raise ValueError("give at least one support length for the shots curve, e.g. 6,12,24,48.")
    splits = [with_support(tasks, split, n) for n in shots]  # check every length first
    rows = []
    for n, sp in zip(shots, splits, strict=True):
        fc = forecast_methods(tasks, sp, config, meta=meta, global_=global_, noadapt=False)
        method = "meta" if meta is not None else fc[0].method
        table = evaluate(tasks, fc, method=method).table
        rows.append(table.assign(support=n))
    frame = pd.concat(rows, ignore_index=True)
    first = ["support", "method", "rmse", "crps"]
    return frame[first + [c for c in frame.columns if c not in first]]


def plot_shots(frame: pd.DataFrame, path: str | os.PathLike | None = None, *, units: str = ""):
    """RMSE and CRPS against support length, one line per method; saved as PNG at ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from spatialmeta._io import atomic_path

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), dpi=120)
    for ax, col in zip(axes, ("rmse", "crps"), strict=True):
        for method, g in frame.groupby("method", sort=False):
            g = g.sort_values("support")
            bold = method == "meta"
            ax.plot(
                g["support"], g[col], marker="o", label=method,
                linewidth=2.5 if bold else 1.2, zorder=3 if bold else 2,
            )  # fmt: skip
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")  # methods differ by orders of magnitude at short support
        ticks = sorted(frame["support"].unique())
        ax.set_xticks(ticks, [str(t) for t in ticks])
        ax.set_xlabel("support window of held-out regions (steps)")
        ax.set_ylabel(f"{col.upper()}" + (f" ({units})" if units else ""))
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle("Held-out regions: skill against support length (area-weighted)")
    fig.tight_layout()
    if path is not None:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png")
    plt.close(fig)
    return fig

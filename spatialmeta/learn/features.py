"""Array-at-a-time features for every (origin, region): lag windows, masks, calendar, covariates."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from spatialmeta.tasks.region import RegionTaskSet

__all__ = [
    "Window",
    "window_stats",
    "origin_batch",
    "OriginBatch",
    "calendar_phases",
    "CALENDAR_FEATURES",
    "support_origins",
    "extend_time",
]

CALENDAR_FEATURES = 4  # per horizon: sin/cos of the annual and of the diurnal phase


def extend_time(time: pd.DatetimeIndex, n: int) -> pd.DatetimeIndex:
    """The time axis continued ``n`` steps past its end (monthly-aware)."""
    if len(time) > 1 and (time.day == 1).all() and (np.diff(time.month) % 12 == 1).all():
        extra = pd.date_range(time[-1], periods=n + 1, freq="MS")[1:]
    else:
        step = time[-1] - time[-2] if len(time) > 1 else pd.Timedelta(days=1)
        extra = time[-1] + step * np.arange(1, n + 1)
    return time.append(pd.DatetimeIndex(extra))


def calendar_phases(time: pd.DatetimeIndex, extra: int) -> tuple[np.ndarray, np.ndarray]:
    """Annual and diurnal phases (radians) of every time step, continued ``extra`` steps.

    Monthly, daily and hourly records alike: the annual phase follows the day of year (a
    monthly record's months), the diurnal phase the time of day (constant for daily and
    coarser records, so it carries no information there).

    Examples
    --------
    >>> t = pd.date_range("2000-01-01", periods=3, freq="6h")
    >>> a, d = calendar_phases(t, 1)
    >>> np.round(d / (2 * np.pi), 2).tolist()
    [0.0, 0.25, 0.5, 0.75]
    """
    full = extend_time(pd.DatetimeIndex(time), extra)
    day = (full.day_of_year.to_numpy() - 1) + (
        full.hour.to_numpy() + full.minute.to_numpy() / 60
    ) / 24
    annual = 2 * np.pi * day / 365.25
    diurnal = 2 * np.pi * (full.hour.to_numpy() + full.minute.to_numpy() / 60) / 24
    return annual, diurnal


def support_origins(end: int, support: int, lags: int, horizon: int) -> np.ndarray:
    """Forecast origins of a support window ``[end - support, end)`` for adaptation.

    A window that holds ``lags + horizon`` steps gives the origins whose every lag and
    target lies inside it (as in meta-training: :func:`support_query_origins`). A shorter
    window (few shots) gives every origin with at least one lag and one target inside,
    ``end - support + 1 .. end - 1``: the lags before the window and the targets at or
    after ``end`` are then masked (unknown), never filled with made-up values.

    Examples
    --------
    >>> support_origins(100, 24, 12, 3).tolist() == list(range(88, 98))
    True
    >>> support_origins(100, 6, 12, 3).tolist()
    [95, 96, 97, 98, 99]
    """
    from spatialmeta.tasks.sampling import support_query_origins

    if support < 1:
        raise ValueError(f"`support` must be at least 1 step; got {support}.")
    if support >= lags + horizon:
        return support_query_origins(end, support, lags, horizon, 0)[0]
    return np.arange(end - support + 1, end)


@dataclass(frozen=True)
class Window:
    """Per-region normalization taken from one window ``[start, stop)`` of known values."""

    mean: np.ndarray  # (R,)
    std: np.ndarray  # (R,)


def window_stats(series: np.ndarray, known: np.ndarray, start: int, stop: int) -> Window:
    """Mean and standard deviation of each region's known values in ``[start, stop)``.

    Regions with no known value there get mean 0 and std 1 (they are masked anyway).
    """
    x = series[:, start:stop]
    k = known[:, start:stop] & np.isfinite(x)
    n = k.sum(axis=1)
    safe_n = np.maximum(n, 1)
    mean = np.where(k, x, 0.0).sum(axis=1) / safe_n
    var = np.where(k, (x - mean[:, None]) ** 2, 0.0).sum(axis=1) / np.maximum(n - 1, 1)
    std = np.sqrt(var)
    std = np.where((n > 1) & (std > 1e-6), std, 1.0)
    mean = np.where(n > 0, mean, 0.0)
    return Window(mean.astype(np.float32), std.astype(np.float32))


@dataclass(frozen=True)
class OriginBatch:
    """Model inputs for a set of forecast origins × all regions.

    Shapes: ``lags``/``lag_mask`` ``(O, R, L)``, ``calendar`` ``(O, 4 * H)``,
    ``target``/``target_mask`` ``(O, R, H)`` in normalized units; ``calendar`` is
    ``(O, CALENDAR_FEATURES * H)``.
    """

    origins: np.ndarray
    lags: torch.Tensor
    lag_mask: torch.Tensor
    calendar: torch.Tensor
    target: torch.Tensor
    target_mask: torch.Tensor


def origin_batch(
    tasks: RegionTaskSet,
    known: np.ndarray,
    origins: np.ndarray,
    norm: Window,
    *,
    lags: int,
    horizon: int,
    regions: np.ndarray | None = None,
    device: torch.device | str = "cpu",
) -> OriginBatch:
    """Gather lag windows and targets for ``origins`` (time indices) for every region at once.

    ``regions`` restricts the batch to some regions (rows of ``known`` and ``norm`` are
    those of the whole task set). ``known`` is the ``(R, T)`` mask of values available at this stage (from
    :meth:`RegionSplit.known`, cut at ``test_start`` while training). A lag value is used
    only if known — and since the lags of origin ``o`` are ``o-L .. o-1``, nothing at or
    after the origin ever enters the inputs. Targets are ``o .. o+H-1``, masked where
    unknown or past the record; lags before the record start are masked too.
    """
    origins = np.asarray(origins, dtype=np.int64)
    if origins.size and (origins.min() < 0 or origins.max() > tasks.n_time):
        raise ValueError(
            f"origins must lie in [0, {tasks.n_time}] (the record); got {origins.min()}..{origins.max()}."
        )
    series, mean, std = tasks.series, norm.mean, norm.std
    if regions is not None:  # only these regions (a subgraph), in this order
        series, known, mean, std = series[regions], known[regions], mean[regions], std[regions]
    r, t = series.shape
    known = known & np.isfinite(series)
    z = np.where(known, (series - mean[:, None]) / std[:, None], 0.0).astype(np.float32)
    # ``lags`` masked steps before the record and ``horizon`` after it: lag windows of early
    # origins and targets past the end are unknown (mask 0), not made-up values
    zp = np.concatenate([np.zeros((r, lags), np.float32), z, np.zeros((r, horizon), np.float32)], 1)
    kp = np.concatenate([np.zeros((r, lags), bool), known, np.zeros((r, horizon), bool)], 1)
    lag_idx = origins[:, None] + np.arange(-lags, 0)[None, :]  # (O, L)
    tgt_idx = origins[:, None] + np.arange(horizon)[None, :]  # (O, H)
    lag_v = np.transpose(zp[:, lag_idx + lags], (1, 0, 2))  # (O, R, L)
    lag_m = np.transpose(kp[:, lag_idx + lags], (1, 0, 2))
    tgt_v = np.transpose(zp[:, tgt_idx + lags], (1, 0, 2))
    tgt_m = np.transpose(kp[:, tgt_idx + lags], (1, 0, 2))
    annual, diurnal = calendar_phases(tasks.time, horizon)
    a, d = annual[tgt_idx], diurnal[tgt_idx]  # (O, H) phases of the target times
    cal = np.concatenate([np.sin(a), np.cos(a), np.sin(d), np.cos(d)], axis=1).astype(np.float32)

    def _t(a):
        return torch.from_numpy(np.ascontiguousarray(a)).to(device)

    return OriginBatch(
        origins=origins,
        lags=_t(lag_v),
        lag_mask=_t(lag_m).float(),
        calendar=_t(cal),
        target=_t(tgt_v),
        target_mask=_t(tgt_m),
    )

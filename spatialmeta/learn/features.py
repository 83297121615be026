"""Windows: array-at-a-time features for every (origin, region): lag windows, masks, calendar,
covariates, and the window rules of the test period (the lowest layer of ``learn``)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from spatialmeta.tasks.region import RegionTaskSet

__all__ = [
    "Window",
    "window_stats",
    "climatology_period",
    "SEASON_SHRINK",
    "SHRINK_GRID",
    "fit_season_shrink",
    "origin_batch",
    "OriginBatch",
    "calendar_phases",
    "CALENDAR_FEATURES",
    "support_origins",
    "extend_time",
    "test_origins",
    "standardized_covariates",
]

CALENDAR_FEATURES = 4  # per horizon: sin/cos of the annual and of the diurnal phase

# pseudo-count of the support window's seasonal departures: a slot seen n times keeps
# n / (n + shrink) of its departure from the window mean. SEASON_SHRINK is the value a
# network starts with; training fits it on the training regions (:func:`fit_season_shrink`)
SEASON_SHRINK = 4.0
# candidates of the fit: 0 (the support's own calendar means) to inf (the plain mean)
SHRINK_GRID = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, np.inf)


def climatology_period(time) -> int:
    """Steps per calendar cycle that a support window can resolve, from the time step.

    Monthly records: 12 (the annual cycle, calendar months); sub-daily records: the steps
    per day (the diurnal cycle, e.g. 24 for hourly); anything else (daily, annual): 1, the
    support mean (a short support window cannot hold a daily annual cycle twice).

    Examples
    --------
    >>> import pandas as pd
    >>> [climatology_period(pd.date_range("2000-01-01", periods=4, freq=f))
    ...  for f in ("MS", "h", "6h", "D", "YS")]
    [12, 24, 4, 1, 1]
    """
    t = pd.DatetimeIndex(time)
    if len(t) < 2:
        return 1
    step = pd.Series(t[1:] - t[:-1]).median()
    day = pd.Timedelta(days=1)
    if pd.Timedelta(days=27) <= step <= pd.Timedelta(days=32):
        return 12
    if step < day and (day % step) == pd.Timedelta(0):
        return int(day // step)
    return 1


def extend_time(time: pd.DatetimeIndex, n: int) -> pd.DatetimeIndex:
    """The time axis continued ``n`` steps past its end (monthly-aware)."""
    if len(time) > 1 and (time.day == 1).all() and (np.diff(time.month) % 12 == 1).all():
        extra = pd.date_range(time[-1], periods=n + 1, freq="MS")[1:]
    else:
        step = time[-1] - time[-2] if len(time) > 1 else pd.Timedelta(days=1)
        extra = time[-1] + step * np.arange(1, n + 1)
    return time.append(pd.DatetimeIndex(extra))


def test_origins(tasks: RegionTaskSet, split, horizon: int) -> np.ndarray:
    """Forecast origins of the test period whose every horizon lies inside the record."""
    origins = np.arange(split.test_start, tasks.n_time - horizon + 1)
    if len(origins) == 0:
        raise ValueError(
            f"no forecast origin fits between test_start and the end of the series with horizon "
            f"{horizon}; move test_start earlier."
        )
    return origins


def standardized_covariates(tasks: RegionTaskSet) -> torch.Tensor:
    """Static covariates scaled to zero mean and unit variance across regions."""
    c = tasks.covariates.astype(np.float64)
    sd = c.std(axis=0)
    z = (c - c.mean(axis=0)) / np.where(sd > 0, sd, 1.0)
    return torch.tensor(z, dtype=torch.float32)


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
    """Per-region normalization taken from one window ``[start, stop)`` of known values.

    A value at step ``t`` is normalized as ``(x - level(t)) / std``, with ``level`` the
    window mean plus the window's (shrunk) departure of the season slot ``t % period``.
    """

    mean: np.ndarray  # (R,)
    std: np.ndarray  # (R,)
    cycle: np.ndarray | None = None  # (R, P) seasonal departures from ``mean``; None: none

    @property
    def period(self) -> int:
        return 1 if self.cycle is None else int(self.cycle.shape[1])

    def level(self, steps: np.ndarray, regions: np.ndarray | None = None) -> np.ndarray:
        """``(R', *steps.shape)`` the level at time indices ``steps`` of ``regions``."""
        steps = np.asarray(steps)
        mean = self.mean if regions is None else self.mean[regions]
        out = np.broadcast_to(mean.reshape(-1, *([1] * steps.ndim)), (len(mean), *steps.shape))
        if self.cycle is None:
            return out
        cycle = self.cycle if regions is None else self.cycle[regions]
        return out + cycle[:, steps % self.period]


def window_stats(
    series: np.ndarray,
    known: np.ndarray,
    start: int,
    stop: int,
    period: int = 1,
    *,
    shrink: float = SEASON_SHRINK,
) -> Window:
    """Level and spread of each region's known values in ``[start, stop)``.

    With ``period > 1`` the level follows the season slots (``t % period``): each slot's
    mean departure from the window mean, shrunk by ``n / (n + shrink)`` for a slot
    known ``n`` times, so that a long support window gives the region's own seasonal
    cycle and a window shorter than a cycle keeps the plain mean for the slots it has not
    seen; the spread is then that of the values around the level. Regions with no known
    value there get level 0 and spread 1 (they are masked anyway). ``shrink`` is the
    pseudo-count (``inf``: the plain window mean); a trained network carries the one
    :func:`fit_season_shrink` chose.

    Examples
    --------
    >>> t = np.arange(24)
    >>> x = (10 + np.where(t % 2 == 0, 1.0, -1.0))[None, :]
    >>> w = window_stats(x, np.ones_like(x, dtype=bool), 0, 24, period=2)
    >>> w.mean.astype(float).round(3).tolist(), w.level(np.array([0, 1])).astype(float).round(3).tolist()
    ([10.0], [[10.75, 9.25]])
    """
    x = series[:, start:stop]
    k = known[:, start:stop] & np.isfinite(x)
    n = k.sum(axis=1)
    safe_n = np.maximum(n, 1)
    mean = np.where(k, x, 0.0).sum(axis=1) / safe_n
    dev = np.where(k, x - mean[:, None], 0.0)
    cycle = None
    if period > 1:
        slot = np.arange(start, stop) % period
        onehot = (slot[:, None] == np.arange(period)[None, :]).astype(np.float64)  # (W, P)
        count = k.astype(np.float64) @ onehot  # (R, P)
        cycle = _shrunk_cycle(dev @ onehot, count, shrink)
        dev = np.where(k, dev - cycle[:, slot], 0.0)
    var = (dev**2).sum(axis=1) / np.maximum(n - 1, 1)
    std = np.sqrt(var)
    std = np.where((n > 1) & (std > 1e-6), std, 1.0)
    mean = np.where(n > 0, mean, 0.0)
    if cycle is not None:
        cycle = np.where((n > 0)[:, None], cycle, 0.0).astype(np.float32)
    return Window(mean.astype(np.float32), std.astype(np.float32), cycle)


def _shrunk_cycle(dev_sum: np.ndarray, count: np.ndarray, shrink) -> np.ndarray:
    """Slot departures ``dev_sum / (count + shrink)`` (zero for ``shrink = inf``); ``shrink``
    a scalar or a ``(G, 1, 1)`` grid."""
    shrink = np.asarray(shrink, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = dev_sum / (count + shrink)
    return np.where(np.isfinite(shrink) & (count + shrink > 0), out, 0.0)


def fit_season_shrink(
    tasks: RegionTaskSet,
    known: np.ndarray,
    fit_regions: np.ndarray,
    ends: np.ndarray,
    val_regions: np.ndarray,
    val_end: int,
    *,
    support: int,
    span: int,
    lags: int,
    horizon: int,
    ridge: float = 1e-3,
) -> tuple[float, np.ndarray]:
    """The seasonal pseudo-count of :func:`window_stats` that suits a network's inputs best.

    How much of the support window's seasonal cycle to subtract depends on the data: a
    smooth cycle whose phase differs between regions (sea surface temperature across the
    hemispheres) is best removed whole, while where the cycle is shared and the recent
    lags say more than a few support years (US state temperatures) the network does
    better learning it itself from the lags and the calendar. Training a network per
    candidate would be costly; instead a *linear probe* of the network's own inputs
    stands in for it: for every candidate of :data:`SHRINK_GRID`, a ridge regression per
    horizon of the normalized targets on the normalized lags, their mask, the calendar
    phases and an intercept (:func:`origin_batch`'s inputs) is fitted on
    ``fit_regions`` with support windows ending at each of ``ends`` (``span`` origins
    after each) and scored in natural units on ``val_regions`` over the ``span`` origins
    from ``val_end`` (support window before it), as training validates the network. On
    the shared monthly data the probe's choice was the network's best in each case
    (SST 0, CCSM TS inf, FNOC winds 8: global network RMSE 0.41, 2.13 and 1.91).

    ``known`` must already be cut where training's information ends. With no seasonal
    cycle (annual data), or no known target, the result is :data:`SEASON_SHRINK`.

    Returns
    -------
    shrink : float
    rmse : ``(len(SHRINK_GRID),)`` the probe's validation RMSE per candidate

    Examples
    --------
    >>> from spatialmeta.data import synthetic_region_tasks
    >>> tasks = synthetic_region_tasks(16, 120, seed=0)  # 15 regions, monthly
    >>> known = np.ones(tasks.series.shape, dtype=bool)
    >>> shrink, rmse = fit_season_shrink(tasks, known, np.arange(11), np.array([40, 60]),
    ...     np.arange(11, 15), 90, support=24, span=12, lags=6, horizon=2)
    >>> float(shrink), rmse.round(3).tolist()[::4]
    (4.0, [0.577, 0.536, 0.543])
    """
    grid = np.asarray(SHRINK_GRID, dtype=np.float64)
    period = climatology_period(tasks.time)
    if period <= 1:
        return SEASON_SHRINK, np.full(len(grid), np.nan)
    fit_regions, val_regions = np.asarray(fit_regions), np.asarray(val_regions)

    def design(regions, end, shrink):
        norm = window_stats(tasks.series, known, end - support, end, period, shrink=shrink)
        orig = np.arange(end, end + span)
        b = origin_batch(tasks, known, orig, norm, lags=lags, horizon=horizon, regions=regions)
        o, r = len(orig), len(regions)
        cal = np.broadcast_to(b.calendar.numpy()[:, None], (o, r, b.calendar.shape[1]))
        x = np.concatenate([b.lags.numpy(), b.lag_mask.numpy(), cal, np.ones((o, r, 1))], -1)
        level = norm.level(orig[:, None] + np.arange(horizon)[None], regions)  # (R, O, H)
        return x, b.target.numpy(), b.target_mask.numpy(), norm.std[regions], level

    rmse = np.full(len(grid), np.nan)
    for g, shrink in enumerate(grid):  # a handful of candidates, each over whole arrays
        parts = [design(fit_regions, int(e), shrink) for e in ends]
        x = np.concatenate([p[0].reshape(-1, p[0].shape[-1]) for p in parts]).astype(np.float64)
        y = np.concatenate([p[1].reshape(-1, horizon) for p in parts]).astype(np.float64)
        m = np.concatenate([p[2].reshape(-1, horizon) for p in parts])
        xv, _, mv, sd, level = design(val_regions, int(val_end), shrink)
        truth = tasks.series.astype(np.float64)[val_regions]
        idx = int(val_end) + np.arange(span)[:, None] + np.arange(horizon)[None]  # (O, H)
        sse, n = 0.0, 0
        for h in range(horizon):  # a few horizons, one least-squares solve each
            a = x[m[:, h]]
            if len(a) <= a.shape[1] or not mv[:, :, h].any():
                continue
            coef = np.linalg.solve(
                a.T @ a + ridge * len(a) * np.eye(a.shape[1]), a.T @ y[m[:, h], h]
            )
            pred = (xv @ coef) * sd[None] + level[:, :, h].T  # (O, Rv) natural units
            ok = mv[:, :, h]
            sse += float((((pred - truth[:, idx[:, h]].T)[ok]) ** 2).sum())
            n += int(ok.sum())
        rmse[g] = np.sqrt(sse / n) if n else np.nan
    if not np.isfinite(rmse).any():
        return SEASON_SHRINK, rmse
    return float(grid[int(np.nanargmin(rmse))]), rmse


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
    series, std = tasks.series, norm.std
    if regions is not None:  # only these regions (a subgraph), in this order
        series, known, std = series[regions], known[regions], std[regions]
    r, t = series.shape
    known = known & np.isfinite(series)
    level = norm.level(np.arange(t), regions)
    z = np.where(known, (series - level) / std[:, None], 0.0).astype(np.float32)
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

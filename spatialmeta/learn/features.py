"""Array-at-a-time features for every (origin, region): lag windows, masks, calendar, covariates."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from spatialmeta.tasks.region import RegionTaskSet

__all__ = ["Window", "window_stats", "origin_batch", "OriginBatch"]


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

    Shapes: ``lags``/``lag_mask`` ``(O, R, L)``, ``calendar`` ``(O, 2 * H)``,
    ``target``/``target_mask`` ``(O, R, H)`` in normalized units.
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
    unknown or past the record.
    """
    origins = np.asarray(origins, dtype=np.int64)
    if origins.min() < lags:
        raise ValueError(f"origin {origins.min()} has fewer than {lags} lags before it.")
    series, mean, std = tasks.series, norm.mean, norm.std
    if regions is not None:  # only these regions (a subgraph), in this order
        series, known, mean, std = series[regions], known[regions], mean[regions], std[regions]
    r, t = series.shape
    known = known & np.isfinite(series)
    z = np.where(known, (series - mean[:, None]) / std[:, None], 0.0).astype(np.float32)
    pad = np.zeros((r, horizon), dtype=np.float32)
    zp = np.concatenate([z, pad], axis=1)
    kp = np.concatenate([known, np.zeros((r, horizon), dtype=bool)], axis=1)
    lag_idx = origins[:, None] + np.arange(-lags, 0)[None, :]  # (O, L)
    tgt_idx = origins[:, None] + np.arange(horizon)[None, :]  # (O, H)
    lag_v = np.transpose(zp[:, lag_idx], (1, 0, 2))  # (O, R, L)
    lag_m = np.transpose(kp[:, lag_idx], (1, 0, 2))
    tgt_v = np.transpose(zp[:, tgt_idx], (1, 0, 2))
    tgt_m = np.transpose(kp[:, tgt_idx], (1, 0, 2))
    month = np.concatenate([tasks.time.month.to_numpy(), np.zeros(horizon, dtype=int)])
    # months past the record continue the calendar
    last = tasks.time.month.to_numpy()[-1]
    month[t:] = (last + np.arange(1, horizon + 1) - 1) % 12 + 1
    ang = 2 * np.pi * month[tgt_idx] / 12.0  # (O, H)
    cal = np.concatenate([np.sin(ang), np.cos(ang)], axis=1).astype(np.float32)

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

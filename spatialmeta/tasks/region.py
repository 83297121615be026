"""Region tasks: every region's series, split in time into support and query windows.

A :class:`RegionTaskSet` is columnar: one ``(region, time)`` array, the static covariates
as one ``(region, covariate)`` array, and the region graph. Which values are *known* at a
given moment is one boolean array (:meth:`RegionSplit.known`), so the learner never needs
a Python object per task.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import xarray as xr

from spatialmeta.regions.graph import RegionGraph

__all__ = ["RegionTaskSet", "RegionSplit", "spatial_holdout"]


@dataclass(frozen=True)
class RegionSplit:
    """Who is held out, and from when each region is known.

    Training regions are known over their full record before ``test_start``; each held-out
    region is known only from ``test_start - support``. In the test period, every forecast
    origin may use all values observed before it (held-out regions from their record start)
    and nothing after.

    Attributes
    ----------
    held_out : numpy.ndarray of bool
        ``(R,)``, True for regions forecast from a short record.
    test_start : int
        Index of the first test time step.
    support : int
        Number of steps a held-out region is known before ``test_start``.
    """

    held_out: np.ndarray
    test_start: int
    support: int

    def record_start(self) -> np.ndarray:
        """First known time index of each region."""
        return np.where(self.held_out, self.test_start - self.support, 0)

    def known(self, n_time: int) -> np.ndarray:
        """``(R, T)`` mask of values that exist in the record (before any origin cut)."""
        t = np.arange(n_time)[None, :]
        return t >= self.record_start()[:, None]


def spatial_holdout(n_regions: int, fraction: float, *, seed: int = 0) -> np.ndarray:
    """Choose a random fraction of regions to hold out (seeded).

    Examples
    --------
    >>> spatial_holdout(10, 0.3, seed=1).sum()
    np.int64(3)
    """
    if not 0 < fraction < 1:
        raise ValueError(f"`fraction` must be in (0, 1); got {fraction}.")
    k = max(1, int(round(fraction * n_regions)))
    if k >= n_regions:
        raise ValueError(f"holding out {k} of {n_regions} regions leaves none to train on.")
    mask = np.zeros(n_regions, dtype=bool)
    mask[np.random.default_rng(seed).choice(n_regions, size=k, replace=False)] = True
    return mask


@dataclass(frozen=True)
class RegionTaskSet:
    """All regions' series as one array, with the graph and static covariates.

    Attributes
    ----------
    series : numpy.ndarray
        ``(R, T)`` float32, NaN where missing.
    time : pandas.DatetimeIndex
        ``(T,)`` time axis.
    region_ids : numpy.ndarray
        ``(R,)`` region ids, in graph node order.
    covariates : numpy.ndarray
        ``(R, C)`` static covariates.
    covariate_names : tuple of str
    graph : RegionGraph, optional
    variable : str
        Name (and units) of the forecast variable, for reports.
    """

    series: np.ndarray
    time: pd.DatetimeIndex
    region_ids: np.ndarray
    covariates: np.ndarray
    covariate_names: tuple[str, ...]
    graph: RegionGraph | None = None
    variable: str = "value"
    units: str = ""
    area_km2: np.ndarray | None = field(default=None)

    def __post_init__(self) -> None:
        r, t = self.series.shape
        if len(self.time) != t:
            raise ValueError(f"series has {t} time steps but `time` has {len(self.time)}.")
        if len(self.region_ids) != r:
            raise ValueError(f"series has {r} regions but `region_ids` has {len(self.region_ids)}.")
        if self.covariates.shape[0] != r:
            raise ValueError(f"`covariates` has {self.covariates.shape[0]} rows; expected {r}.")
        if self.graph is not None and not np.array_equal(self.graph.region_ids, self.region_ids):
            raise ValueError(
                "the graph's region ids are not the series' region ids in the same order."
            )
        empty = ~np.isfinite(self.series).any(axis=1)
        if empty.any():
            raise ValueError(
                f"regions with no finite value: {list(self.region_ids[empty][:10])}; "
                "drop them or check that the polygons overlap the raster."
            )

    @property
    def n_regions(self) -> int:
        return self.series.shape[0]

    @property
    def n_time(self) -> int:
        return self.series.shape[1]

    @classmethod
    def from_dataarray(
        cls,
        da: xr.DataArray,
        graph: RegionGraph,
        *,
        covariates: dict[str, np.ndarray] | None = None,
    ) -> RegionTaskSet:
        """Build from a ``(time, region)`` or ``(region, time)`` DataArray, ordered like the graph.

        Static covariates default to the graph's node attributes (centroid, area, and any
        covariates given when the graph was built).
        """
        da = da.transpose("region", "time")
        order = pd.Index(da.region.values.astype(str)).get_indexer(graph.region_ids.astype(str))
        if (order < 0).any():
            missing = graph.region_ids[order < 0][:5]
            raise ValueError(f"series has no values for graph regions {list(missing)}.")
        values = np.asarray(da.values, dtype=np.float32)[order]
        names = list(graph.node_features)
        cov = graph.data.x.numpy().astype(np.float64)
        for name, v in (covariates or {}).items():
            names.append(name)
            cov = np.column_stack([cov, np.asarray(v, dtype=float)])
        area = cov[:, names.index("area_km2")] if "area_km2" in names else None
        return cls(
            series=values,
            time=pd.DatetimeIndex(da.time.values),
            region_ids=graph.region_ids,
            covariates=cov,
            covariate_names=tuple(names),
            graph=graph,
            variable=str(da.name or "value"),
            units=str(da.attrs.get("units", "")),
            area_km2=area,
        )

    def split(
        self, *, held_out: np.ndarray, test_start: str | pd.Timestamp, support: int
    ) -> RegionSplit:
        """Spatial hold-out plus a time split, checked against the record.

        Parameters
        ----------
        held_out : array of bool
            ``(R,)`` mask from :func:`spatial_holdout` or the caller.
        test_start : str or Timestamp
            First time step of the test period (must lie inside the series).
        support : int
            Steps a held-out region is known before ``test_start``.
        """
        ts = pd.Timestamp(test_start)
        if ts < self.time[0] or ts > self.time[-1]:
            raise ValueError(
                f"`test_start` {ts.date()} is outside the series ({self.time[0].date()} to "
                f"{self.time[-1].date()}); choose a date inside it."
            )
        t0 = int(self.time.searchsorted(ts))
        if support < 1 or support > t0:
            raise ValueError(
                f"`support` = {support} steps does not fit before test_start {ts.date()} "
                f"({t0} steps of record); choose 1 <= support <= {t0}."
            )
        held_out = np.asarray(held_out, dtype=bool)
        if held_out.shape != (self.n_regions,):
            raise ValueError(
                f"`held_out` has shape {held_out.shape}; expected ({self.n_regions},)."
            )
        return RegionSplit(held_out=held_out, test_start=t0, support=int(support))

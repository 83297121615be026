"""Region tasks: every region's series, split in time into support and query windows.

A :class:`RegionTaskSet` is columnar: one ``(region, time)`` array, the static covariates
as one ``(region, covariate)`` array, and the region graph. Which values are *known* at a
given moment is one boolean array (:meth:`RegionSplit.known`), so the learner never needs
a Python object per task.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
import xarray as xr

from spatialmeta.regions.graph import RegionGraph
from spatialmeta.tasks.estimates import Estimates
from spatialmeta.tasks.trend import ols_trend

__all__ = ["RegionTaskSet", "RegionSplit", "spatial_holdout"]


@dataclass(frozen=True)
class RegionSplit:
    """Who is held out, and from when each region is known.

    Training regions are known over their full record before ``test_start``; each held-out
    region is known only from ``test_start - support``; buffer regions (neighbours of
    held-out regions kept out so that adjacent regions do not leak) are never known. In
    the test period, every forecast origin may use all values observed before it
    (held-out regions from their record start) and nothing after.

    Attributes
    ----------
    held_out : numpy.ndarray of bool
        ``(R,)``, True for regions forecast from a short record.
    test_start : int
        Index of the first test time step.
    support : int
        Number of steps a held-out region is known before ``test_start``.
    excluded : numpy.ndarray of bool, optional
        ``(R,)``, buffer regions used neither for training nor for evaluation.
    """

    held_out: np.ndarray
    test_start: int
    support: int
    excluded: np.ndarray | None = None

    @property
    def training(self) -> np.ndarray:
        """Regions whose full record before ``test_start`` trains the model."""
        out = ~self.held_out
        return out & ~self.excluded if self.excluded is not None else out

    def record_start(self) -> np.ndarray:
        """First known time index of each region (a large number for excluded regions)."""
        start = np.where(self.held_out, self.test_start - self.support, 0)
        if self.excluded is not None:
            start = np.where(self.excluded, np.iinfo(np.int64).max, start)
        return start

    def known(self, n_time: int) -> np.ndarray:
        """``(R, T)`` mask of values that exist in the record (before any origin cut)."""
        t = np.arange(n_time)[None, :]
        return t >= self.record_start()[:, None]


def subgraph(graph: RegionGraph, keep: np.ndarray) -> RegionGraph:
    """The graph restricted to the regions in ``keep`` (a boolean mask), relabelled."""
    from torch_geometric.data import Data
    from torch_geometric.utils import subgraph as pyg_subgraph

    mask = torch.as_tensor(np.asarray(keep, dtype=bool))
    d = graph.data
    ei, ea = pyg_subgraph(
        mask, d.edge_index, d.edge_attr, relabel_nodes=True, num_nodes=graph.num_nodes
    )
    kept = {k: d[k][mask] for k in ("x", "pos", "island") if k in d}
    data = Data(edge_index=ei, edge_attr=ea, num_nodes=int(mask.sum()), **kept)
    return RegionGraph(
        data,
        graph.region_ids[mask.numpy()],
        graph.node_features,
        graph.edge_features,
        graph.directed,
    )


def neighbourhood(graph: RegionGraph, seeds: np.ndarray, hops: int) -> np.ndarray:
    """Regions within ``hops`` graph steps of any seed region (seeds included), vectorized.

    Examples
    --------
    >>> from spatialmeta.data import synthetic_regions
    >>> from spatialmeta.regions import contiguity_graph
    >>> g = contiguity_graph(synthetic_regions((0, 0, 4, 4), 16, seed=0))
    >>> seeds = np.zeros(g.num_nodes, bool); seeds[0] = True
    >>> int(neighbourhood(g, seeds, 1).sum()) == 1 + int(g.degree()[0])
    True
    """
    import scipy.sparse as sp

    n = graph.num_nodes
    src, dst = graph.data.edge_index.numpy()
    adj = sp.csr_matrix((np.ones(len(src)), (src, dst)), shape=(n, n))
    reach = np.asarray(seeds, dtype=bool).copy()
    for _ in range(hops):  # one sparse product per hop, all regions at once
        reach |= (adj @ reach.astype(np.float64)) > 0
    return reach


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


def _time_index(values) -> pd.DatetimeIndex:
    """A DatetimeIndex from datetime64 or cftime values (model years before 1678 included:
    seconds resolution, which pandas holds for any year)."""
    values = np.asarray(values)
    if values.dtype == object:
        import xarray as xr

        index = xr.CFTimeIndex(values)
        try:
            return index.to_datetimeindex(unsafe=True, time_unit="ns")
        except ValueError:
            return index.to_datetimeindex(unsafe=True, time_unit="s")
    return pd.DatetimeIndex(values)


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
                f"regions with no finite value: {np.asarray(self.region_ids[empty][:10]).tolist()}; "
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
        min_length: int = 1,
        on_invalid: str = "raise",
    ) -> RegionTaskSet:
        """Build from a ``(time, region)`` or ``(region, time)`` DataArray, ordered like the graph.

        Static covariates default to the graph's node attributes (centroid, area, and any
        covariates given when the graph was built).

        Parameters
        ----------
        min_length : int
            Fewest finite values a region needs (for example support + query); regions
            with fewer (all-NaN ones included) are invalid.
        on_invalid : {"raise", "drop"}
            Raise an error naming the invalid regions, or drop them (and their graph
            nodes) with a warning naming them.
        """
        if on_invalid not in ("raise", "drop"):
            raise ValueError(f"`on_invalid` must be 'raise' or 'drop'; got {on_invalid!r}.")
        da = da.transpose("region", "time")
        # ids compared as text (Zarr v3 stores return numpy StringDType, which astype(str) refuses)
        store_ids = np.array(da.region.values.tolist(), dtype=str)
        order = pd.Index(store_ids).get_indexer(np.array(graph.region_ids.tolist(), dtype=str))
        if (order < 0).any():
            missing = graph.region_ids[order < 0][:5]
            raise ValueError(
                f"the series store has no region {np.asarray(missing).tolist()} of the graph (ids are matched "
                f"as strings; the store has e.g. {np.asarray(da.region.values[:3]).tolist()}); check `region_id`."
            )
        values = np.asarray(da.values, dtype=np.float32)[order]
        counts = np.isfinite(values).sum(axis=1)
        bad = counts < max(min_length, 1)
        if bad.any():
            names = [
                f"{r} ({c} values)"
                for r, c in zip(graph.region_ids[bad][:10], counts[bad][:10], strict=True)
            ]
            if on_invalid == "raise":
                raise ValueError(
                    f"{bad.sum()} region(s) have fewer than {max(min_length, 1)} values: {names}; "
                    "pass on_invalid='drop' to drop them."
                )
            warnings.warn(
                f"dropped {bad.sum()} region(s) with fewer than {max(min_length, 1)} values: {names}",
                stacklevel=2,
            )
            graph = subgraph(graph, ~bad)
            values = values[~bad]
        names = list(graph.node_features)
        cov = graph.data.x.numpy().astype(np.float64)
        for name, v in (covariates or {}).items():
            names.append(name)
            cov = np.column_stack([cov, np.asarray(v, dtype=float)])
        area = cov[:, names.index("area_km2")] if "area_km2" in names else None
        return cls(
            series=values,
            time=_time_index(da.time.values),
            region_ids=graph.region_ids,
            covariates=cov,
            covariate_names=tuple(names),
            graph=graph,
            variable=str(da.name or "value"),
            units=str(da.attrs.get("units", "")),
            area_km2=area,
        )

    def estimates(self, *, per_years: float = 10.0, hac_lags: int | None = None) -> Estimates:
        """Each region's linear trend (per ``per_years``) with a Newey–West variance.

        What a region task set reads directly, before any learning: pooled with
        :func:`spatialmeta.meta_analysis.pool`, it gives the mean regional trend, its
        heterogeneity and a prediction interval; the static covariates are the moderators.

        References
        ----------
        Newey, W. K., & West, K. D. (1987). Econometrica, 55(3). doi:10.2307/1913610
        """
        return _trend_estimates(self, per_years, hac_lags)

    def task(self, i: int | str) -> dict:
        """One region's task as a small record (for looking at, not for hot paths)."""
        idx = int(np.flatnonzero(self.region_ids == i)[0]) if isinstance(i, str) else int(i)
        return {
            "region_id": self.region_ids[idx],
            "index": idx,
            "series": pd.Series(self.series[idx], index=self.time, name=self.variable),
            "covariates": dict(zip(self.covariate_names, self.covariates[idx], strict=True)),
        }

    def to_zarr(self, path) -> None:
        """Save series, covariates and graph to a Zarr store (see :func:`load_region_tasks`)."""
        from spatialmeta.tasks.io import save_region_tasks

        save_region_tasks(self, path)

    def split(
        self,
        *,
        held_out: np.ndarray,
        test_start: str | pd.Timestamp,
        support: int,
        buffer: int = 0,
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
        buffer : int
            Graph hops around held-out regions whose regions are excluded altogether, so
            that no training region is adjacent to a held-out one.
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
        excluded = None
        if buffer:
            if self.graph is None:
                raise ValueError("`buffer` needs the region graph; build the task set with one.")
            excluded = neighbourhood(self.graph, held_out, buffer) & ~held_out
            if not (~held_out & ~excluded).any():
                raise ValueError(
                    f"a buffer of {buffer} hop(s) around {held_out.sum()} held-out regions leaves no "
                    "training region; hold out fewer regions or use a smaller buffer."
                )
        short = held_out & (np.isfinite(self.series[:, t0 - support : t0]).sum(axis=1) == 0)
        if short.any():
            raise ValueError(
                f"held-out regions with no value in their support window: "
                f"{np.asarray(self.region_ids[short][:10]).tolist()}; drop them or lengthen `support`."
            )
        return RegionSplit(
            held_out=held_out, test_start=t0, support=int(support), excluded=excluded
        )


def _trend_estimates(tasks: RegionTaskSet, per_years: float, lags: int | None) -> Estimates:
    """OLS trend of every region's known values, with Newey–West variance, all regions at once."""
    t = (tasks.time - tasks.time[0]).total_seconds().to_numpy() / (365.25 * 86400) / per_years
    slope, var, _ = ols_trend(tasks.series, t, lags)
    mods = pd.DataFrame(tasks.covariates, columns=list(tasks.covariate_names))
    unit = f"{tasks.units} per {per_years:g} years" if tasks.units else f"per {per_years:g} years"
    return Estimates(
        slope,
        np.maximum(var, 1e-300),
        labels=tasks.region_ids,
        mods=mods,
        measure=f"trend ({unit})",
    )

"""A small synthetic region task set, for notebooks, tests and benchmarks."""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["synthetic_region_tasks"]


def synthetic_region_tasks(
    n_regions: int = 16,
    n_time: int = 120,
    *,
    bbox: tuple[float, float, float, float] = (0.0, 40.0, 16.0, 52.0),
    amplitude_per_degree: float = 0.05,
    noise: float = 0.5,
    seed: int = 0,
):
    """Monthly series on synthetic regions: a seasonal cycle growing with latitude plus noise.

    Parameters
    ----------
    n_regions : int
        Approximate number of regions (a Voronoi tessellation of ``bbox``).
    n_time : int
        Monthly steps from January 2000.
    amplitude_per_degree : float
        Relative growth of the seasonal amplitude (8 K) per degree of latitude.
    noise : float
        Standard deviation of white noise (K).
    seed : int

    Returns
    -------
    spatialmeta.tasks.RegionTaskSet
        With its queen-contiguity graph; covariates are the graph's node attributes.

    Examples
    --------
    >>> ts = synthetic_region_tasks(9, 24, seed=1)
    >>> ts.series.shape[1], ts.units
    (24, 'K')
    """
    from spatialmeta.data.regions import synthetic_regions
    from spatialmeta.regions.graph import contiguity_graph
    from spatialmeta.tasks.region import RegionTaskSet

    graph = contiguity_graph(synthetic_regions(bbox, n_regions, seed=seed))
    rng = np.random.default_rng(seed)
    lat = graph.data.pos[:, 1].numpy()[:, None].astype(float)
    t = np.arange(n_time)
    season = 8 * np.cos(2 * np.pi * t / 12)[None, :] * (1 + amplitude_per_degree * lat)
    series = (280 + season + rng.normal(size=(graph.num_nodes, n_time)) * noise).astype(np.float32)
    x = graph.data.x.numpy().astype(float)
    return RegionTaskSet(
        series, pd.date_range("2000-01", periods=n_time, freq="MS"), graph.region_ids, x,
        graph.node_features, graph, "tas", "K", x[:, graph.node_features.index("area_km2")],
    )  # fmt: skip

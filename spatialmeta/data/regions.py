"""Synthetic region polygons matching the synthetic climate domain."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import shapely

__all__ = ["synthetic_regions"]


def synthetic_regions(
    bbox: tuple[float, float, float, float] = (-20.0, 30.0, 40.0, 70.0),
    n_regions: int = 80,
    *,
    seed: int = 0,
) -> gpd.GeoDataFrame:
    """Tessellate a lon/lat box into irregular regions (a clipped Voronoi diagram).

    The seeds are jittered grid points, so regions have comparable sizes (a few grid cells
    each at the default resolution) but irregular shapes and shared borders, as
    administrative regions do.

    Parameters
    ----------
    bbox : (west, south, east, north)
        Domain in degrees.
    n_regions : int
        Approximate number of regions (the exact count is ``nx * ny`` of the seed grid).
    seed : int
        Seed for the jitter.

    Returns
    -------
    geopandas.GeoDataFrame
        Columns ``region_id`` (``"R001"``, ...), ``name`` and ``geometry``, CRS EPSG:4326,
        ordered by ``region_id``. The regions cover the box exactly, without overlap.

    Examples
    --------
    >>> g = synthetic_regions((0, 0, 10, 10), 9, seed=1)
    >>> len(g), round(float(shapely.area(g.geometry.to_numpy()).sum()), 6)
    (9, 100.0)
    """
    if n_regions < 2:
        raise ValueError(f"`n_regions` must be at least 2; got {n_regions}.")
    west, south, east, north = bbox
    rng = np.random.default_rng(seed)
    aspect = (east - west) / (north - south)
    ny = max(1, int(round(np.sqrt(n_regions / aspect))))
    nx = max(1, int(round(n_regions / ny)))
    dx, dy = (east - west) / nx, (north - south) / ny
    gx, gy = np.meshgrid(west + dx * (np.arange(nx) + 0.5), south + dy * (np.arange(ny) + 0.5))
    px = gx.ravel() + rng.uniform(-0.35, 0.35, gx.size) * dx
    py = gy.ravel() + rng.uniform(-0.35, 0.35, gy.size) * dy
    box = shapely.box(west, south, east, north)
    points = shapely.multipoints(np.column_stack([px, py]))
    cells = shapely.get_parts(shapely.voronoi_polygons(points, extend_to=box))
    cells = shapely.intersection(cells, box)
    # order the cells like their seeds (voronoi_polygons does not promise an order)
    seeds = shapely.points(px, py)
    tree = shapely.STRtree(cells)
    seed_idx, cell_idx = tree.query(seeds, predicate="within")
    order = cell_idx[np.argsort(seed_idx)]
    geoms = cells[order]
    ids = np.array([f"R{i + 1:03d}" for i in range(len(geoms))])
    return gpd.GeoDataFrame(
        {"region_id": ids, "name": [f"Region {i + 1}" for i in range(len(geoms))]},
        geometry=geoms,
        crs="EPSG:4326",
    )

"""Polygons and the graphs between them."""

from spatialmeta.regions.graph import (
    EDGE_FEATURES,
    RegionGraph,
    contiguity_graph,
    distance_band_graph,
    grid_graph,
    haversine_km,
    knn_graph,
)

__all__ = [
    "EDGE_FEATURES",
    "RegionGraph",
    "contiguity_graph",
    "distance_band_graph",
    "grid_graph",
    "haversine_km",
    "knn_graph",
]

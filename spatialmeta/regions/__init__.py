"""Polygons and the graphs between them."""

from spatialmeta.regions.graph import RegionGraph, contiguity_graph, haversine_km

__all__ = ["RegionGraph", "contiguity_graph", "haversine_km"]

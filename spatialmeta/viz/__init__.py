"""Maps and shared plotting style."""

from spatialmeta.viz.maps import choropleth

__all__ = ["choropleth"]

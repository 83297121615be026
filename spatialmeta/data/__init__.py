"""Embedded default data: a synthetic climate generator and matching region polygons."""

from spatialmeta.data.regions import synthetic_regions
from spatialmeta.data.synthetic import gaussian_random_field, synthetic_climate
from spatialmeta.data.tasks import synthetic_region_tasks
from spatialmeta.data.write import write_default_data

__all__ = [
    "synthetic_climate", "synthetic_regions", "synthetic_region_tasks", "gaussian_random_field",
    "write_default_data",
]  # fmt: skip

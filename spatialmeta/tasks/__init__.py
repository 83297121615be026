"""Tasks: the one abstraction for a unit of evidence (regions and studies alike)."""

from spatialmeta.tasks.estimates import Estimates, HasEstimates
from spatialmeta.tasks.region import RegionSplit, RegionTaskSet, spatial_holdout
from spatialmeta.tasks.studies import StudyTaskSet

__all__ = [
    "Estimates",
    "HasEstimates",
    "RegionSplit",
    "RegionTaskSet",
    "spatial_holdout",
    "StudyTaskSet",
]

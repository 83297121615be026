"""Tasks: the one abstraction for a unit of evidence (regions and studies alike)."""

from spatialmeta.tasks.estimates import Estimates, HasEstimates
from spatialmeta.tasks.io import (
    load_region_tasks,
    load_study_tasks,
    save_region_tasks,
    save_study_tasks,
)
from spatialmeta.tasks.region import (
    RegionSplit,
    RegionTaskSet,
    neighbourhood,
    spatial_holdout,
    subgraph,
)
from spatialmeta.tasks.reviews import ReviewTaskSet, read_reviews
from spatialmeta.tasks.sampling import (
    Episode,
    EpisodeSampler,
    batch_subgraph,
    support_query_origins,
)
from spatialmeta.tasks.studies import StudyTaskSet

__all__ = [
    "Estimates", "HasEstimates", "RegionSplit", "RegionTaskSet", "neighbourhood", "spatial_holdout",
    "subgraph", "Episode", "EpisodeSampler", "batch_subgraph", "support_query_origins", "StudyTaskSet",
    "load_region_tasks", "ReviewTaskSet", "read_reviews",
    "load_study_tasks", "save_region_tasks", "save_study_tasks",
]  # fmt: skip

"""Meta-analysis: effect sizes (escalc), pooling as metafor's rma.uni does, forest plots."""

from typing import Any

from spatialmeta.meta_analysis.effect_sizes import MEASURES, escalc
from spatialmeta.meta_analysis.estimators import FIXED_METHODS, METHODS, RANDOM_METHODS
from spatialmeta.meta_analysis.pool import PoolResult, pool

__all__ = [
    "FIXED_METHODS", "MEASURES", "METHODS", "RANDOM_METHODS", "PoolResult", "escalc", "forest_plot", "pool",
]  # fmt: skip


def __getattr__(name: str) -> Any:
    # forest_plot pulls in matplotlib; load it only when asked for.
    if name == "forest_plot":
        from spatialmeta.meta_analysis.plots import forest_plot

        return forest_plot
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

"""Meta-analysis: pool effect sizes as metafor's rma.uni does, and draw forest plots."""

from typing import Any

from spatialmeta.meta_analysis.estimators import FIXED_METHODS, METHODS, RANDOM_METHODS
from spatialmeta.meta_analysis.pool import PoolResult, pool

__all__ = ["FIXED_METHODS", "METHODS", "RANDOM_METHODS", "PoolResult", "forest_plot", "pool"]


def __getattr__(name: str) -> Any:
    # forest_plot pulls in matplotlib; load it only when asked for.
    if name == "forest_plot":
        from spatialmeta.meta_analysis.plots import forest_plot

        return forest_plot
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

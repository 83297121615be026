"""Meta-analysis: effect sizes (escalc), pooling as metafor's rma.uni does, bias, plots."""

from typing import Any

from spatialmeta.meta_analysis.bias import (
    BaujatResult,
    FsnResult,
    RankTestResult,
    TrimFillResult,
    baujat,
    fsn,
    ranktest,
    trimfill,
)
from spatialmeta.meta_analysis.effect_sizes import MEASURES, escalc
from spatialmeta.meta_analysis.estimators import FIXED_METHODS, METHODS, RANDOM_METHODS
from spatialmeta.meta_analysis.gridded import pool_gridded
from spatialmeta.meta_analysis.pool import PoolResult, pool

__all__ = [
    "FIXED_METHODS", "MEASURES", "METHODS", "RANDOM_METHODS", "PoolResult", "escalc", "pool",
    "pool_gridded",
    "BaujatResult", "FsnResult", "RankTestResult", "TrimFillResult", "baujat", "fsn", "ranktest",
    "trimfill",
    "forest_plot", "funnel_plot", "baujat_plot", "radial_plot",
]  # fmt: skip

_PLOTS = {
    "forest_plot": "spatialmeta.meta_analysis.plots",
    "funnel_plot": "spatialmeta.meta_analysis.bias_plots",
    "baujat_plot": "spatialmeta.meta_analysis.bias_plots",
    "radial_plot": "spatialmeta.meta_analysis.bias_plots",
}


def __getattr__(name: str) -> Any:
    # the plots pull in matplotlib; load them only when asked for.
    if name in _PLOTS:
        import importlib

        return getattr(importlib.import_module(_PLOTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

"""Meta-analysis: effect sizes (escalc), pooling as metafor's rma.uni does, bias, plots."""

from typing import Any

from spatialmeta.meta_analysis.bayes import BayesPoolResult, bayes_pool
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
from spatialmeta.meta_analysis.corpus import Corpus, load_corpus
from spatialmeta.meta_analysis.diagnostics import (
    CumulResult,
    InfluenceResult,
    LeaveOneOutResult,
    ResidualResult,
    cumul,
    influence,
    leave1out,
    rstandard,
    rstudent,
)
from spatialmeta.meta_analysis.effect_sizes import MEASURES, escalc
from spatialmeta.meta_analysis.estimators import FIXED_METHODS, METHODS, RANDOM_METHODS
from spatialmeta.meta_analysis.gridded import pool_gridded
from spatialmeta.meta_analysis.learned import LearnedPrior, learn_tau_prior
from spatialmeta.meta_analysis.multilevel import MultilevelResult, pool_mv
from spatialmeta.meta_analysis.multilevel_batch import MultilevelBatchResult, pool_mv_batch
from spatialmeta.meta_analysis.pool import MetaRegressionResult, PoolResult, pool
from spatialmeta.meta_analysis.priors import MuPrior, TauPrior, published_prior
from spatialmeta.meta_analysis.profile import Tau2Interval, confint_tau2
from spatialmeta.meta_analysis.regtest import PetPeeseResult, RegtestResult, pet_peese, regtest
from spatialmeta.meta_analysis.robust import RobustResult, WaldResult, robust
from spatialmeta.meta_analysis.selection import SelectionResult, selmodel
from spatialmeta.meta_analysis.spec import FitSpec
from spatialmeta.meta_analysis.structures import KnownCorrelation, Spatial, Structured
from spatialmeta.meta_analysis.subgroups import SubgroupResult, subgroups
from spatialmeta.meta_analysis.vcov import impute_covariance_matrix, vcalc

__all__ = [
    "FIXED_METHODS", "MEASURES", "METHODS", "RANDOM_METHODS", "FitSpec", "MetaRegressionResult",
    "PoolResult", "escalc", "BayesPoolResult", "bayes_pool", "MuPrior", "TauPrior",
    "published_prior", "LearnedPrior", "learn_tau_prior", "Corpus", "load_corpus",
    "RobustResult", "WaldResult", "robust", "SelectionResult", "selmodel", "MultilevelResult",
    "pool_mv", "pool_mv_batch", "MultilevelBatchResult", "Structured", "Spatial",
    "KnownCorrelation", "vcalc", "impute_covariance_matrix", "pool",
    "pool_gridded", "Tau2Interval", "confint_tau2",
    "CumulResult", "InfluenceResult", "LeaveOneOutResult", "ResidualResult", "cumul", "influence",
    "leave1out", "rstandard", "rstudent", "SubgroupResult", "subgroups",
    "PetPeeseResult", "RegtestResult", "pet_peese", "regtest",
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

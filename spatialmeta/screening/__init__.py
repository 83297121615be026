"""Screening the records of a systematic review (issue 16): text features, screeners (the
per-review ASReview family, and the meta-learned ones of :mod:`.meta`), the simulated
active loop, the field's metrics, a statistical stopping test and the harness."""

from spatialmeta.screening.features import TextFeatures
from spatialmeta.screening.meta import (
    ANILScreener,
    EncoderConfig,
    MatchingScreener,
    MetaScreener,
    ProtoNetScreener,
    WeightedSVMScreener,
    train_encoder,
)
from spatialmeta.screening.metrics import ScreeningMetrics, screening_metrics
from spatialmeta.screening.screeners import (
    LogisticScreener,
    NaiveBayesScreener,
    Screener,
    SVMScreener,
)
from spatialmeta.screening.simulate import simulate
from spatialmeta.screening.stopping import remaining_relevant, stop_point, stopping_pvalues

__all__ = [
    "TextFeatures", "ScreeningMetrics", "screening_metrics", "Screener", "SVMScreener",
    "NaiveBayesScreener", "LogisticScreener", "simulate", "stop_point", "stopping_pvalues",
    "remaining_relevant", "MetaScreener", "EncoderConfig", "train_encoder", "ProtoNetScreener",
    "MatchingScreener", "ANILScreener", "WeightedSVMScreener",
]  # fmt: skip

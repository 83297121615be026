"""Screening the records of a systematic review (issue 16): text features, screeners (the
per-review ASReview family so far), the simulated active loop, the field's metrics and a
statistical stopping test. The meta-learned screeners and the harness follow."""

from spatialmeta.screening.features import TextFeatures
from spatialmeta.screening.metrics import ScreeningMetrics, screening_metrics
from spatialmeta.screening.screeners import (
    LogisticScreener,
    NaiveBayesScreener,
    Screener,
    SVMScreener,
)
from spatialmeta.screening.simulate import simulate
from spatialmeta.screening.stopping import stop_point, stopping_pvalues

__all__ = [
    "TextFeatures", "ScreeningMetrics", "screening_metrics", "Screener", "SVMScreener",
    "NaiveBayesScreener", "LogisticScreener", "simulate", "stop_point", "stopping_pvalues",
]  # fmt: skip

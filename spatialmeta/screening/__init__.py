"""Screening the records of a systematic review: metrics of a screening order and the
statistical stopping test (issue 16; the screeners and the simulation harness follow)."""

from spatialmeta.screening.metrics import ScreeningMetrics, screening_metrics
from spatialmeta.screening.stopping import stop_point, stopping_pvalues

__all__ = ["ScreeningMetrics", "screening_metrics", "stop_point", "stopping_pvalues"]

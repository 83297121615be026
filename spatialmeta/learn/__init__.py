"""Learning over region tasks: backbone, meta-learner, training, forecasting, baselines, scores."""

from spatialmeta.learn.baselines import climatology, persistence, ridge_ar
from spatialmeta.learn.compare import forecast_methods, plot_shots, shots_curve
from spatialmeta.learn.config import LearnConfig
from spatialmeta.learn.evaluate import ForecastEvaluation, evaluate
from spatialmeta.learn.finetune import GlobalLearner
from spatialmeta.learn.forecast import Forecast, forecast_heldout
from spatialmeta.learn.meta import RidgeMetaLearner
from spatialmeta.learn.metrics import crps_gaussian, scores
from spatialmeta.learn.model import GraphForecaster
from spatialmeta.learn.output import forecast_dataset, write_forecasts
from spatialmeta.learn.publish import Report, publish_report
from spatialmeta.learn.train import TrainResult, global_train, meta_train

__all__ = [
    "climatology",
    "persistence",
    "ridge_ar",
    "forecast_methods",
    "plot_shots",
    "shots_curve",
    "LearnConfig",
    "ForecastEvaluation",
    "evaluate",
    "GlobalLearner",
    "Forecast",
    "forecast_heldout",
    "RidgeMetaLearner",
    "crps_gaussian",
    "scores",
    "GraphForecaster",
    "forecast_dataset",
    "write_forecasts",
    "Report",
    "publish_report",
    "TrainResult",
    "global_train",
    "meta_train",
]

"""Learning over region tasks: backbone, meta-learners, training, forecasting, references, scores.

Layers, each importing only from those before it (``tests/learn/test_layers.py`` holds it):
windows (``config``, ``metrics``, ``predictions``, ``losses``, ``features``) → episodes
(``episode``) → model (``model``) → references (``baselines``, ``references``, the training
``loop``) → algorithms (``algorithms/``: the learner base, the registry, one module per
learner) → training and forecasting (``train``, ``forecast``) → evaluation (``evaluate``,
``compare``) → outputs (``output``, ``publish``, ``job``).
"""

from spatialmeta.learn.algorithms import REGISTRY, GlobalLearner, Learner, RidgeMetaLearner
from spatialmeta.learn.baselines import climatology, persistence, ridge_ar
from spatialmeta.learn.compare import forecast_methods, plot_shots, shots_curve
from spatialmeta.learn.config import LearnConfig
from spatialmeta.learn.evaluate import ForecastEvaluation, evaluate
from spatialmeta.learn.forecast import Forecast, forecast_heldout
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
    "Learner",
    "REGISTRY",
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

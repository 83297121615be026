"""The application layer: each command's work as stage functions, with its report writers.

The engines (``meta_analysis``, ``raster``, ``regions``, ``tasks``, ``learn``) compute; a
job reads the user's files, runs engine calls as a fixed sequence of stages, writes the
outputs and words the summary. The CLI calls jobs (it never imports ``flows``); the Prefect
flows in ``flows/`` run the same stage sequences with each stage wrapped in a task (the
``stage`` argument of :func:`~spatialmeta.jobs.demo.demo_job` and
:func:`~spatialmeta.jobs.forecast.forecast_job`). No engine imports a job
(``tests/test_layers.py``), and no job imports Prefect.

* :mod:`~spatialmeta.jobs.aggregate`: rasters → region series (``spatialmeta aggregate``)
* :mod:`~spatialmeta.jobs.stages`: the training and forecasting stages that the forecast
  job and the demo share (one training policy, one wording of it)
* :mod:`~spatialmeta.jobs.forecast`: series + polygons → forecasts and skill
  (``spatialmeta forecast``)
* :mod:`~spatialmeta.jobs.demo`: the main job on the embedded synthetic data
  (``spatialmeta demo``, ``flows/pipeline.py``)
* :mod:`~spatialmeta.jobs.pool`: a study table → a meta-analysis report (``spatialmeta pool``)

Modules load on first use, so importing the package is quick.
"""

from __future__ import annotations

import importlib

_SUBMODULES = ("aggregate", "demo", "forecast", "pool", "stages")

__all__ = list(_SUBMODULES)


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f"spatialmeta.jobs.{name}")
    raise AttributeError(f"module 'spatialmeta.jobs' has no attribute {name!r}")

"""The training and forecasting stages shared by the forecast job and the demo.

One training policy: the global graph network is trained first by supervised learning on
the training regions (``checkpoint_global``), then the meta-learner ``config.learner``
(``checkpoint``), from the global network where the learner uses a backbone and
``config.pretrain`` is set; each phase stops early on its validation regions within
``config.episodes`` steps. One wording of it for every summary (:func:`training_words`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from spatialmeta.learn.compare import forecast_methods
from spatialmeta.learn.config import LearnConfig
from spatialmeta.learn.train import global_train, meta_train

__all__ = [
    "LEARNER_WORDS", "Trained", "as_is", "forecast_all", "train_methods", "training_view",
    "training_words",
]  # fmt: skip

LEARNER_WORDS = {
    "hier": "hierarchical Bayes learner (prior from a graph network over the neighbours' "
    "records, conjugate update on each held-out region's known record)",
    "ridge": "Bayesian ridge head on the graph network, adapted per region",
    "anil": "graph network whose heads are adapted per region by gradient steps (ANIL)",
    "maml": "graph network adapted per region by second-order MAML",
    "fomaml": "graph network adapted per region by first-order MAML",
    "reptile": "graph network meta-trained by Reptile, heads adapted per region",
    "protonet": "prototype mixture over the support windows' outcome bins (ProtoNet)",
}


@dataclass(frozen=True)
class Trained:
    """The two trained models of a run (``TrainResult``\\ s of :mod:`spatialmeta.learn.train`)."""

    glob: object
    meta: object
    config: LearnConfig


def as_is(fn: Callable) -> Callable:
    """The ``stage`` wrapper of a plain run: the stage function itself."""
    return fn


def train_methods(tasks, split, config: LearnConfig, out, *, progress: bool = True, stage=None):
    """Train the global network, then the meta-learner from it (checkpoints under ``out``).

    ``stage`` wraps each training call (a Prefect flow passes a task decorator); None
    runs them as they are.
    """
    run = stage or as_is
    out = Path(out)
    glob = run(global_train)(
        tasks, split, config, checkpoint_dir=out / "checkpoint_global", progress=progress
    )
    meta = run(meta_train)(
        tasks,
        split,
        config,
        init=glob if config.pretrain else None,
        checkpoint_dir=out / "checkpoint",
        progress=progress,
    )
    return Trained(glob, meta, config)


def training_view(tasks, split) -> dict:
    """What training sees of ``tasks`` under ``split``: the values known before the test
    start (the rest masked), the time axis up to it, the regions, covariates, graph and the
    split. Its digest is the training stages' cache key (``flows``): steps appended after
    the test start, the forecasts' new origins, leave it unchanged, so they do not retrain.
    """
    import numpy as np

    t = int(split.test_start)
    known = split.known(tasks.n_time)[:, :t]
    return {
        "series": np.where(known, tasks.series[:, :t], np.nan),
        "time": tasks.time[:t].asi8,
        "region_ids": tasks.region_ids,
        "covariates": tasks.covariates,
        "covariate_names": tasks.covariate_names,
        "graph": tasks.graph,
        "variable": tasks.variable,
        "units": tasks.units,
        "split": (split.held_out, split.excluded, t, split.support),
    }


def forecast_all(trained: Trained, tasks, split) -> list:
    """Every method's forecasts of the held-out regions, the meta-learner's first."""
    return forecast_methods(tasks, split, trained.config, meta=trained.meta, global_=trained.glob)


def training_words(trained: Trained) -> str:
    """The summary's line on training: steps, best step, the learner in words, the model."""
    cfg, glob, meta = trained.config, trained.glob, trained.meta
    members = len(getattr(meta, "members", None) or ()) or 1
    ensemble = f", a seed ensemble of {members} (first member's steps)" if members > 1 else ""
    return (
        f"global network {len(glob.history)} steps (best at {glob.best_episode}); "
        f"meta-training {len(meta.history)} episodes (best at {meta.best_episode}): "
        f"{LEARNER_WORDS.get(cfg.learner, cfg.learner)}{ensemble}; {cfg.conv} graph layer, lags "
        f"{cfg.lags}, seed {cfg.seed}; early stopping on validation regions over the last "
        "steps before the test period"
    )

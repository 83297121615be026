"""Training over region tasks: meta-training, the supervised global network, checkpoints, metrics.

:func:`meta_train` and :func:`global_train` share one loop (:func:`~spatialmeta.learn.loop.fit`): seeded episodes,
validation on a seeded subset of the training regions over a held-out period just before
``test_start`` (unseen regions, a later period: as the test), early stopping on the
validation loss (the initial state included), atomic checkpoints (``model.pt``,
``history.json``, ``metrics.csv``, ``state.pt``) and resume. They differ only in the step:
a meta-update of the learner, or a supervised mini-batch of the global network. By default
meta-training starts from the global network (``LearnConfig.pretrain``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from spatialmeta.learn.algorithms import build_learner, learner_entry
from spatialmeta.learn.algorithms.global_net import GlobalLearner, select_finetune, supervised_loss
from spatialmeta.learn.config import LearnConfig, resolve_device
from spatialmeta.learn.episode import episode_inputs
from spatialmeta.learn.features import fit_season_shrink, standardized_covariates
from spatialmeta.learn.loop import TrainResult, fit
from spatialmeta.learn.model import BACKBONE_HIDDEN, GraphForecaster
from spatialmeta.tasks.region import RegionSplit, RegionTaskSet
from spatialmeta.tasks.sampling import Episode, EpisodeSampler

__all__ = ["TrainResult", "meta_train", "global_train", "make_learner"]


@dataclass(frozen=True)
class _Setup:
    """What both trainings derive from the tasks and the split, in the same seeded order."""

    known: np.ndarray
    device: torch.device
    covariates: torch.Tensor
    fit_idx: np.ndarray
    val_idx: np.ndarray
    s_range: tuple[int, int]
    val_s: list[int]
    support: int
    config: LearnConfig
    val_config: LearnConfig  # every origin of the validation period is a query origin
    shrink: float  # seasonal pseudo-count of the input normalization, fitted on fit_idx

    def episode(self, tasks: RegionTaskSet, task_idx, s: int, validation: bool = False):
        """The :class:`~spatialmeta.learn.episode.EpisodeInputs` of regions ``task_idx``
        with the support window ending at ``s`` (``validation``: every origin of the
        validation period a query origin)."""
        cfg = self.val_config if validation else self.config
        return episode_inputs(
            tasks, self.known, self.covariates, task_idx, s, self.support, cfg, shrink=self.shrink
        )


def _prepare(tasks: RegionTaskSet, split: RegionSplit, config: LearnConfig) -> _Setup:
    """Check the split against the configuration, seed, pick the validation regions and period.

    Resolves ``config.query_span`` (None: the test period's length, at most a third of
    the room before ``test_start``); the validation period is the last ``query_span``
    origins whose targets lie before ``test_start``, and fitting episodes end before it.
    """
    if tasks.graph is None:
        raise ValueError("the task set has no graph; build one with contiguity_graph() first.")
    L, H, Q, S = config.lags, config.horizon, config.query, split.support
    if S < L + H:
        raise ValueError(
            f"support window ({S} steps) must hold at least lags + horizon = {L + H} steps; "
            "lengthen `support` or shorten the lags."
        )
    t0 = split.test_start
    span = config.query_span
    if span is None:  # as far past the support window as the test period reaches
        span = min(tasks.n_time - t0 - H + 1, (t0 - S - 2 * (H - 1)) // 3)
    span = max(int(span), Q)
    config = replace(config, query_span=span)
    # validation mirrors the test: unseen regions, forecast over the last ``span`` origins
    # before test_start from the support window before them; fitting targets end before it
    t_val = t0 - span - H + 1
    s_lo, s_hi = S, t_val - span - H + 1
    if s_hi < s_lo:
        raise ValueError(
            f"the training period ({t0} steps) is too short for a support window of {S}, "
            f"a fitting and a validation period of {span} query origins each and horizon {H}; "
            "shorten the support or set a shorter query_span."
        )
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    known = split.known(tasks.n_time)
    known[:, t0:] = False  # nothing from the test period while training
    device = resolve_device(config.device)
    train_idx = np.flatnonzero(split.training)
    n_val = max(1, int(round(config.val_fraction * len(train_idx))))
    val_idx = np.sort(rng.choice(train_idx, size=n_val, replace=False))
    fit_idx = np.setdiff1d(train_idx, val_idx)
    # the input normalization's seasonal pseudo-count, fitted on the training regions by a
    # linear probe of the network's inputs: fitting regions with support windows ending
    # where fitting episodes do, scored on the validation regions and period
    ends = np.unique(np.round(np.linspace(s_lo, s_hi, 4)).astype(np.int64))
    shrink, _ = fit_season_shrink(
        tasks, known, fit_idx, ends, val_idx, t_val, support=S, span=span, lags=L, horizon=H
    )
    return _Setup(
        known=known,
        device=device,
        covariates=standardized_covariates(tasks).to(device),
        fit_idx=fit_idx,
        val_idx=val_idx,
        s_range=(s_lo, s_hi),
        val_s=[t_val],
        config=config,
        val_config=replace(config, query=span),
        support=S,
        shrink=shrink,
    )


def _backbone(tasks: RegionTaskSet, config: LearnConfig) -> GraphForecaster:
    return GraphForecaster(
        len(tasks.covariate_names),
        config.horizon,
        hidden=config.hidden or BACKBONE_HIDDEN,
        conv=config.conv,
    )


def meta_train(
    tasks: RegionTaskSet,
    split: RegionSplit,
    config: LearnConfig = LearnConfig(),
    *,
    init: TrainResult | nn.Module | None = None,
    checkpoint_dir: str | os.PathLike | None = None,
    resume: bool = False,
    progress: bool = True,
) -> TrainResult:
    """Meta-train a graph forecaster over the training regions' tasks.

    Episodes draw a support-window end ``s`` at random and a meta-batch of training
    regions; each region's support window is ``split.support`` steps long, as a held-out
    region's will be, and its ``config.query`` query origins spread over the
    ``config.query_span`` steps after it (by default as far as the test period reaches
    past ``test_start``). The learner is ``config.learner``, a name of
    :data:`spatialmeta.learn.algorithms.REGISTRY`, built by
    :func:`~spatialmeta.learn.algorithms.build_learner` and updated by its
    ``meta_step`` hook on the adapted query loss plus 0.3 times the unadapted one (the
    supervised loss of the global heads on the query). A learner that conditions on whole
    records (``needs_backbone = False``, the default ``hier``) trains by its own
    ``train_on`` through the same loop (:func:`~spatialmeta.learn.loop.fit`).

    With ``config.pretrain`` (the default) the backbone starts from the supervised global
    network — ``init``, or one trained here first (checkpointed under
    ``checkpoint_dir/pretrain``) — and moves at ``lr * pretrained_lr``, while the
    adaptation's own parameters (the ridge prior) move at ``lr * prior_lr``.

    Validation mirrors the test: the validation regions (never fitted) are adapted on
    the support window before the last ``query_span`` origins before ``test_start`` and
    scored (query NLL after adaptation) on every one of those origins; fitting episodes
    only reach targets before that period. The initial state is validated too (episode
    0), so training from a pretrained network cannot end worse than it on validation;
    the best state is kept (early stopping).

    Parameters
    ----------
    tasks : RegionTaskSet
    split : RegionSplit
    config : LearnConfig
    init : TrainResult, learner or GraphForecaster, optional
        Start from this network's backbone (e.g. :func:`global_train`'s result).
    checkpoint_dir : path-like, optional
        Where ``model.pt`` (best state), ``history.json`` and ``metrics.csv`` (one row per
        episode: episode, train_loss, val_loss, lr, elapsed_s) and ``state.pt``
        (everything needed to resume: model, optimizer, sampler, early-stopping counters)
        are written atomically at every validation.
    resume : bool
        Continue from ``checkpoint_dir/state.pt`` when it exists; the resumed run draws
        the same episodes and reaches the same parameters as an uninterrupted one.
    progress : bool
        Show a progress bar.

    Returns
    -------
    TrainResult
    """
    entry = learner_entry(config.learner)
    if not entry.cls.needs_backbone:  # conditions on whole records: its own episodes
        return entry.cls.train_on(
            tasks, split, config, checkpoint_dir=checkpoint_dir, resume=resume, progress=progress
        )
    if init is None and config.pretrain:
        init = global_train(
            tasks,
            split,
            config,
            checkpoint_dir=None if checkpoint_dir is None else Path(checkpoint_dir) / "pretrain",
            resume=resume,
            progress=progress,
        )
    setup = _prepare(tasks, split, config)
    config = setup.config
    sampler = EpisodeSampler(setup.fit_idx, setup.s_range, config.meta_batch, seed=config.seed + 1)
    backbone = _backbone(tasks, config)
    if init is not None:
        backbone.load_state_dict(_init_backbone(init).state_dict())
    backbone.season_shrink.fill_(setup.shrink)
    learner = build_learner(config.learner, backbone, config).to(setup.device)
    bb = config.pretrained_lr if init is not None else 1.0
    groups = [
        {"params": list(learner.backbone.parameters()), "lr": config.lr * bb},
        {
            "params": [p for n, p in learner.named_parameters() if not n.startswith("backbone.")],
            "lr": config.lr * config.prior_lr,
        },
    ]
    opt = torch.optim.Adam([g for g in groups if g["params"]], lr=config.lr)

    def step(draw: Episode) -> float:
        return learner.meta_step(setup.episode(tasks, draw.tasks, draw.s), opt, global_weight=0.3)

    def validate() -> float:
        eps = [setup.episode(tasks, setup.val_idx, v, validation=True) for v in setup.val_s]
        return float(np.mean([learner.loss(ep).item() for ep in eps]))

    return fit(
        learner, opt, sampler, step, validate, config, "meta", checkpoint_dir, resume, progress
    )


def _init_backbone(init) -> GraphForecaster:
    """The backbone to start meta-training from: a TrainResult's, a learner's, or itself."""
    obj = init.learner if isinstance(init, TrainResult) else init
    backbone = obj if isinstance(obj, GraphForecaster) else getattr(obj, "backbone", None)
    if not isinstance(backbone, GraphForecaster):
        raise TypeError(
            "`init` must be a TrainResult (e.g. from global_train), a learner with a "
            f"`backbone`, or a GraphForecaster; got {type(init).__name__}."
        )
    return backbone


def global_train(
    tasks: RegionTaskSet,
    split: RegionSplit,
    config: LearnConfig = LearnConfig(),
    *,
    init: TrainResult | nn.Module | None = None,
    checkpoint_dir: str | os.PathLike | None = None,
    resume: bool = False,
    progress: bool = True,
) -> TrainResult:
    """Train the global graph network by ordinary supervised learning (the baseline).

    The same backbone and Gaussian head as :func:`meta_train`, the same seeds, validation
    regions, early stopping, checkpoints (``model.pt``, ``history.json``, ``metrics.csv``,
    ``state.pt``) and resume; but each step is a supervised mini-batch — the Gaussian NLL
    of the network's own heads on every origin of a window of the training history
    (:func:`~spatialmeta.learn.algorithms.global_net.supervised_loss`), for all fitting regions at
    once (``config.meta_batch`` of them with ``subgraph_hops``) — with no support set and
    no adaptation. Validation scores the unadapted network on the validation regions and
    period (as :func:`meta_train`'s). ``init`` starts from another network's backbone at
    ``lr * pretrained_lr`` (continued training).

    The learner returned is a :class:`~spatialmeta.learn.algorithms.global_net.GlobalLearner`, which
    forecasts as the ``global`` baseline and, fine-tuned per held-out region on its
    support window (``config.finetune``, ``finetune_steps``, ``finetune_lr``), as
    ``global_finetuned``; with ``config.finetune_select`` those fine-tuning settings are
    chosen on validation (:func:`~spatialmeta.learn.algorithms.global_net.select_finetune`) and
    recorded in ``TrainResult.finetune``.
    """
    setup = _prepare(tasks, split, config)
    config = setup.config
    batch = len(setup.fit_idx) if config.subgraph_hops is None else config.meta_batch
    sampler = EpisodeSampler(setup.fit_idx, setup.s_range, batch, seed=config.seed + 1)
    backbone = _backbone(tasks, config)
    if init is not None:
        backbone.load_state_dict(_init_backbone(init).state_dict())
    backbone.season_shrink.fill_(setup.shrink)
    learner = GlobalLearner(
        backbone,
        finetune=config.finetune,
        steps=config.finetune_steps,
        lr=config.finetune_lr,
    ).to(setup.device)
    glr = config.pretrained_lr if init is not None else 1.0
    opt = torch.optim.Adam(learner.parameters(), lr=config.lr * glr)

    def step(draw: Episode) -> float:
        loss = supervised_loss(learner.backbone, setup.episode(tasks, draw.tasks, draw.s), "all")
        opt.zero_grad()
        if not torch.isfinite(loss):  # a diverged step updates nothing (validation decides)
            return float(loss.detach())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(learner.parameters(), 5.0)
        opt.step()
        return float(loss.detach())

    def validate() -> float:
        eps = [setup.episode(tasks, setup.val_idx, v, validation=True) for v in setup.val_s]
        return float(np.mean([supervised_loss(learner.backbone, ep, "query").item() for ep in eps]))

    result = fit(
        learner, opt, sampler, step, validate, config, "global", checkpoint_dir, resume, progress
    )
    if config.finetune_select and learner.steps > 0:
        eps = [setup.episode(tasks, setup.val_idx, v, validation=True) for v in setup.val_s]
        table = select_finetune(learner, eps, extra=[(config.finetune_steps, config.finetune_lr)])
        result.finetune = {"steps": learner.steps, "lr": learner.lr, "candidates": table}
    return result


def make_learner(name: str, backbone: GraphForecaster, config: LearnConfig | None = None, **kw):
    """The meta-learner ``name`` around ``backbone`` (settings from ``config``, then ``kw``):
    :func:`spatialmeta.learn.algorithms.build_learner`, for learners with a backbone."""
    entry = learner_entry(name)
    if not entry.cls.needs_backbone:
        raise ValueError(
            f"learner {name!r} conditions on whole records and has no backbone; "
            "train it with meta_train(tasks, split, LearnConfig(learner=...))."
        )
    return build_learner(name, backbone, config, **kw)

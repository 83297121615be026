"""Training over region tasks: meta-training, the supervised global network, checkpoints, metrics.

:func:`meta_train` and :func:`global_train` share one loop (:func:`_fit`): seeded episodes,
validation on a seeded subset of the training regions over a held-out period just before
``test_start`` (unseen regions, a later period: as the test), early stopping on the
validation loss (the initial state included), atomic checkpoints (``model.pt``,
``history.json``, ``metrics.csv``, ``state.pt``) and resume. They differ only in the step:
a meta-update of the learner, or a supervised mini-batch of the global network. By default
meta-training starts from the global network (``LearnConfig.pretrain``).
"""

from __future__ import annotations

import copy
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from spatialmeta._io import atomic_path, write_csv
from spatialmeta.learn.config import LEARNERS, LearnConfig
from spatialmeta.learn.learners import gaussian_nll, learner_episode_loss, meta_update
from spatialmeta.learn.meta import RidgeMetaLearner
from spatialmeta.learn.model import GraphForecaster
from spatialmeta.tasks.region import RegionSplit, RegionTaskSet
from spatialmeta.tasks.sampling import Episode, EpisodeSampler

__all__ = [
    "TrainResult",
    "meta_train",
    "global_train",
    "gaussian_nll",
    "standardized_covariates",
    "episode_loss",
    "make_learner",
    "METRIC_COLUMNS",
]

METRIC_COLUMNS = ("episode", "train_loss", "val_loss", "lr", "elapsed_s")


@dataclass
class TrainResult:
    """A trained learner and its history.

    ``history`` has one row per episode: ``episode``, ``train_loss``, ``lr``,
    ``elapsed_s`` (seconds since training began, across resumes) and, at validations,
    ``val_loss``. ``kind`` is ``"meta"`` or ``"global"``. ``initial_val_loss`` is the
    validation loss of the initial state (episode 0: a candidate for the best state, so a
    pretrained start is never left for a worse one); ``finetune`` (global training) the
    fine-tuning steps and step size chosen on validation, with every candidate's loss.
    """

    learner: nn.Module
    config: LearnConfig
    history: list[dict] = field(default_factory=list)
    best_episode: int = 0
    stopped_early: bool = False
    kind: str = "meta"
    initial_val_loss: float = float("nan")
    finetune: dict | None = None


def standardized_covariates(tasks: RegionTaskSet) -> torch.Tensor:
    """Static covariates scaled to zero mean and unit variance across regions."""
    c = tasks.covariates.astype(np.float64)
    sd = c.std(axis=0)
    z = (c - c.mean(axis=0)) / np.where(sd > 0, sd, 1.0)
    return torch.tensor(z, dtype=torch.float32)


def episode_loss(
    learner: RidgeMetaLearner,
    tasks: RegionTaskSet,
    known: np.ndarray,
    covariates: torch.Tensor,
    task_idx: np.ndarray,
    s: int,
    support: int,
    config: LearnConfig,
    global_weight: float = 0.0,
) -> torch.Tensor:
    """Loss of one meta-batch: tasks ``task_idx`` with support window ``[s - support, s)``.

    One graph forward covers every support and query origin — for all regions, or, with
    ``config.subgraph_hops``, for the task regions' neighbourhood only (identical task
    features when the hops cover the backbone's message passing); the learner then adapts
    all tasks of the batch at once (see :func:`spatialmeta.learn.learners.learner_episode_loss`,
    which accepts every learner).
    """
    return learner_episode_loss(
        learner, tasks, known, covariates, task_idx, s, support, config, global_weight
    )


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
            "lengthen --support or shorten the lags."
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
    return _Setup(
        known=known,
        device=device,
        covariates=standardized_covariates(tasks).to(device),
        fit_idx=np.setdiff1d(train_idx, val_idx),
        val_idx=val_idx,
        s_range=(s_lo, s_hi),
        val_s=[t_val],
        config=config,
        val_config=replace(config, query=span),
        support=S,
    )


def _backbone(tasks: RegionTaskSet, config: LearnConfig) -> GraphForecaster:
    return GraphForecaster(
        len(tasks.covariate_names), config.horizon, hidden=config.hidden, conv=config.conv
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
    past ``test_start``). The learner is ``config.learner`` (ridge, ANIL, MAML,
    first-order MAML or Reptile), updated by
    :func:`~spatialmeta.learn.learners.meta_update` on the adapted query loss plus 0.3
    times the unadapted one (the supervised loss of the global heads on the query).

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
    if config.learner == "hier":  # conditions on whole records: no backbone, its own episodes
        from spatialmeta.learn.algorithms.hier import HierarchicalLearner

        return HierarchicalLearner.train_on(
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
    learner = make_learner(
        config.learner,
        backbone,
        inner_steps=config.inner_steps,
        inner_lr=config.inner_lr,
    ).to(setup.device)
    bb = config.pretrained_lr if init is not None else 1.0
    groups = [
        {"params": list(learner.backbone.parameters()), "lr": config.lr * bb},
        {
            "params": [p for n, p in learner.named_parameters() if not n.startswith("backbone.")],
            "lr": config.lr * config.prior_lr,
        },
    ]
    opt = torch.optim.Adam([g for g in groups if g["params"]], lr=config.lr)
    args = (tasks, setup.known, setup.covariates)

    def step(ep: Episode) -> float:
        return meta_update(
            learner, opt, *args, ep.tasks, ep.s, setup.support, config, global_weight=0.3
        )

    def validate() -> float:
        return float(
            np.mean(
                [
                    learner_episode_loss(
                        learner, *args, setup.val_idx, v, setup.support, setup.val_config
                    ).item()
                    for v in setup.val_s
                ]
            )
        )

    return _fit(
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
    (:func:`~spatialmeta.learn.finetune.supervised_loss`), for all fitting regions at
    once (``config.meta_batch`` of them with ``subgraph_hops``) — with no support set and
    no adaptation. Validation scores the unadapted network on the validation regions and
    period (as :func:`meta_train`'s). ``init`` starts from another network's backbone at
    ``lr * pretrained_lr`` (continued training).

    The learner returned is a :class:`~spatialmeta.learn.finetune.GlobalLearner`, which
    forecasts as the ``global`` baseline and, fine-tuned per held-out region on its
    support window (``config.finetune``, ``finetune_steps``, ``finetune_lr``), as
    ``global_finetuned``; with ``config.finetune_select`` those fine-tuning settings are
    chosen on validation (:func:`~spatialmeta.learn.finetune.select_finetune`) and
    recorded in ``TrainResult.finetune``.
    """
    from spatialmeta.learn.finetune import GlobalLearner, supervised_loss

    setup = _prepare(tasks, split, config)
    config = setup.config
    batch = len(setup.fit_idx) if config.subgraph_hops is None else config.meta_batch
    sampler = EpisodeSampler(setup.fit_idx, setup.s_range, batch, seed=config.seed + 1)
    backbone = _backbone(tasks, config)
    if init is not None:
        backbone.load_state_dict(_init_backbone(init).state_dict())
    learner = GlobalLearner(
        backbone,
        finetune=config.finetune,
        steps=config.finetune_steps,
        lr=config.finetune_lr,
    ).to(setup.device)
    glr = config.pretrained_lr if init is not None else 1.0
    opt = torch.optim.Adam(learner.parameters(), lr=config.lr * glr)
    args = (learner.backbone, tasks, setup.known, setup.covariates)

    def step(ep: Episode) -> float:
        loss = supervised_loss(*args, ep.tasks, ep.s, setup.support, config, "all")
        opt.zero_grad()
        if not torch.isfinite(loss):  # a diverged step updates nothing (validation decides)
            return float(loss.detach())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(learner.parameters(), 5.0)
        opt.step()
        return float(loss.detach())

    def validate() -> float:
        return float(
            np.mean(
                [
                    supervised_loss(
                        *args, setup.val_idx, v, setup.support, setup.val_config, "query"
                    ).item()
                    for v in setup.val_s
                ]
            )
        )

    result = _fit(
        learner, opt, sampler, step, validate, config, "global", checkpoint_dir, resume, progress
    )
    if config.finetune_select and learner.steps > 0:
        from spatialmeta.learn.finetune import select_finetune
        from spatialmeta.learn.learners import episode_inputs

        eps = [
            episode_inputs(
                tasks, setup.known, setup.covariates, setup.val_idx, v, setup.support,
                setup.val_config,
            )
            for v in setup.val_s
        ]  # fmt: skip
        table = select_finetune(learner, eps, extra=[(config.finetune_steps, config.finetune_lr)])
        result.finetune = {"steps": learner.steps, "lr": learner.lr, "candidates": table}
    return result


def _fit(
    learner: nn.Module,
    opt: torch.optim.Optimizer,
    sampler: EpisodeSampler,
    step: Callable[[Episode], float],
    validate: Callable[[], float],
    config: LearnConfig,
    kind: str,
    checkpoint_dir,
    resume: bool,
    progress: bool,
) -> TrainResult:
    """The training loop shared by meta-training and the global network."""
    result = TrainResult(learner, config, kind=kind)
    best, best_state, bad = np.inf, copy.deepcopy(learner.state_dict()), 0
    start, elapsed0 = 1, 0.0
    state_path = Path(checkpoint_dir) / "state.pt" if checkpoint_dir is not None else None
    if resume and state_path is not None and state_path.exists():
        saved = torch.load(state_path, weights_only=False, map_location=_device_of(learner))
        _check_resumable(saved, config, kind, state_path)
        learner.load_state_dict(saved["learner"])
        opt.load_state_dict(saved["optimizer"])
        sampler.load_state_dict(saved["sampler"])
        best, best_state, bad = saved["best"], saved["best_state"], saved["bad"]
        result.initial_val_loss = saved.get("initial_val_loss", float("nan"))
        result.history, result.best_episode = saved["history"], saved["best_episode"]
        start, elapsed0 = saved["episode"] + 1, float(saved.get("elapsed", 0.0))

    clock = time.perf_counter()
    if start == 1:  # the initial state is a candidate: training cannot end worse on validation
        learner.eval()
        with torch.no_grad():
            best = validate()
        result.initial_val_loss = best
    bar = _progress(config.episodes, progress, "meta-training" if kind == "meta" else "global")
    bar.update(start - 1)
    for episode in range(start, config.episodes + 1):
        learner.train()
        row = {"episode": episode, "train_loss": step(sampler.next())}
        if episode % config.val_every == 0 or episode == config.episodes:
            learner.eval()
            with torch.no_grad():
                val = validate()
            row["val_loss"] = val
            if val < best - 1e-4:
                best, best_state, bad = val, copy.deepcopy(learner.state_dict()), 0
                result.best_episode = episode
            else:
                bad += 1
        row["lr"] = float(opt.param_groups[0]["lr"])
        row["elapsed_s"] = elapsed0 + time.perf_counter() - clock
        result.history.append(row)
        if "val_loss" in row and checkpoint_dir is not None:
            save_checkpoint(checkpoint_dir, best_state, config, result.history, kind=kind)
            with atomic_path(state_path) as tmp:
                torch.save(
                    {"learner": learner.state_dict(), "optimizer": opt.state_dict(),
                     "sampler": sampler.state_dict(), "best": best, "best_state": best_state,
                     "bad": bad, "best_episode": result.best_episode,
                     "history": result.history, "episode": episode, "elapsed": row["elapsed_s"],
                     "config": config.to_dict(), "kind": kind,
                     "initial_val_loss": result.initial_val_loss},
                    tmp,
                )  # fmt: skip
        bar.update(1, loss=row["train_loss"], val=row.get("val_loss"))
        if bad >= config.patience:
            result.stopped_early = True
            break
    bar.close()
    learner.load_state_dict(best_state)
    learner.eval()
    return result


def _device_of(module: nn.Module) -> torch.device:
    """The device of a module's parameters."""
    return next(module.parameters()).device


def make_learner(
    name: str,
    backbone: GraphForecaster,
    *,
    inner_steps: int | None = None,
    inner_lr: float | None = None,
) -> nn.Module:
    """The meta-learner named in the configuration, around ``backbone``.

    ``inner_steps`` and ``inner_lr`` (None: the learner's defaults) set the inner loop of
    ANIL, MAML and Reptile; the ridge head has none. ``"fomaml"`` is first-order MAML.
    """
    if name not in LEARNERS:
        raise ValueError(f"`learner` must be one of {list(LEARNERS)}; got {name!r}.")
    if name == "ridge":
        return RidgeMetaLearner(backbone)
    from spatialmeta.learn.learners import ANILLearner, MAMLLearner, ReptileLearner

    inner = {
        k: v for k, v in (("inner_steps", inner_steps), ("inner_lr", inner_lr)) if v is not None
    }
    if name == "anil":
        return ANILLearner(backbone, **inner)
    if name in ("maml", "fomaml"):
        return MAMLLearner(backbone, first_order=name == "fomaml", **inner)
    return ReptileLearner(backbone, **inner)


def resolve_device(name: str) -> torch.device:
    """``"auto"`` is CUDA when a GPU is present, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(
            f"device {name!r} requested but no CUDA GPU is available; use device='cpu'."
        )
    return torch.device(name)


# settings that do not change the training itself: these may differ when resuming
_RESUMABLE = ("episodes", "patience", "finetune", "finetune_steps", "finetune_lr")


def _check_resumable(saved: dict, config: LearnConfig, kind: str, path: Path) -> None:
    """Only the length of training (and forecasting settings) may change between runs."""
    if saved.get("kind", "meta") != kind:
        raise ValueError(
            f"cannot resume from '{path}': it checkpoints a {saved.get('kind', 'meta')} "
            f"training, not a {kind} one; use another checkpoint folder."
        )
    before = saved["config"]
    now = config.to_dict()
    diff = [k for k in now if k not in _RESUMABLE and before.get(k) != now[k]]
    if diff:
        raise ValueError(
            f"cannot resume from '{path}': settings {diff} differ from the checkpoint's "
            f"({[before.get(k) for k in diff]} there); use another checkpoint folder or resume=False."
        )


def save_checkpoint(
    directory, state: dict, config: LearnConfig, history: list[dict], *, kind: str = "meta"
) -> Path:
    """Write ``model.pt``, ``history.json`` and ``metrics.csv`` atomically into ``directory``.

    ``metrics.csv`` has the columns :data:`METRIC_COLUMNS` (``val_loss`` empty between
    validations); ``history.json`` holds the same rows as a JSON list.
    """
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    with atomic_path(d / "model.pt") as tmp:
        torch.save({"state_dict": state, "config": config.to_dict(), "kind": kind}, tmp)
    with atomic_path(d / "history.json") as tmp:
        tmp.write_text(json.dumps(history, indent=1))
    write_csv(pd.DataFrame(history, columns=list(METRIC_COLUMNS)), d / "metrics.csv")
    return d / "model.pt"


class _progress:
    """A tqdm bar, or nothing."""

    def __init__(self, total: int, enabled: bool, desc: str = "meta-training"):
        self._bar = None
        if enabled:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, desc=desc, unit="episode", leave=False)

    def update(self, n: int, **postfix) -> None:
        if self._bar is not None:
            self._bar.update(n)
            self._bar.set_postfix(
                {k: f"{v:.3f}" for k, v in postfix.items() if v is not None}, refresh=False
            )

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()

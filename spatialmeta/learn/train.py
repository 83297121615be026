"""Meta-training over region tasks: episodes, validation on held-out training regions, checkpoints."""

from __future__ import annotations

import copy
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from spatialmeta._io import atomic_path
from spatialmeta.learn.config import LearnConfig
from spatialmeta.learn.learners import gaussian_nll, learner_episode_loss
from spatialmeta.learn.meta import RidgeMetaLearner
from spatialmeta.learn.model import GraphForecaster
from spatialmeta.tasks.region import RegionSplit, RegionTaskSet
from spatialmeta.tasks.sampling import EpisodeSampler

__all__ = ["TrainResult", "meta_train", "gaussian_nll", "standardized_covariates", "episode_loss"]


@dataclass
class TrainResult:
    """A meta-trained learner and its history."""

    learner: RidgeMetaLearner
    config: LearnConfig
    history: list[dict] = field(default_factory=list)
    best_episode: int = 0
    stopped_early: bool = False


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


def meta_train(
    tasks: RegionTaskSet,
    split: RegionSplit,
    config: LearnConfig = LearnConfig(),
    *,
    checkpoint_dir: str | os.PathLike | None = None,
    resume: bool = False,
    progress: bool = True,
) -> TrainResult:
    """Meta-train a graph forecaster over the training regions' tasks.

    Episodes draw a support-window end ``s`` at random before ``test_start`` and a
    meta-batch of training regions; each region's support window is ``split.support``
    steps long, as a held-out region's will be. Validation uses fixed episodes on a
    seeded subset of training regions; the best state is kept (early stopping) and,
    when ``checkpoint_dir`` is given, written atomically with the history.

    Parameters
    ----------
    tasks : RegionTaskSet
    split : RegionSplit
    config : LearnConfig
    checkpoint_dir : path-like, optional
        Where ``model.pt`` (best state), ``history.json`` and ``state.pt`` (everything
        needed to resume: model, optimizer, sampler, early-stopping counters) are written
        atomically at every validation.
    resume : bool
        Continue from ``checkpoint_dir/state.pt`` when it exists; the resumed run draws
        the same episodes and reaches the same parameters as an uninterrupted one.
    progress : bool
        Show a progress bar.

    Returns
    -------
    TrainResult
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
    s_lo, s_hi = S, t0 - Q - H + 1
    if s_hi <= s_lo:
        raise ValueError(
            f"the training period ({t0} steps) is too short for support {S} + query {Q} + horizon {H}."
        )
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    known = split.known(tasks.n_time)
    known[:, t0:] = False  # nothing from the test period while training
    device = resolve_device(config.device)
    covariates = standardized_covariates(tasks).to(device)
    train_idx = np.flatnonzero(split.training)
    n_val = max(1, int(round(config.val_fraction * len(train_idx))))
    val_idx = np.sort(rng.choice(train_idx, size=n_val, replace=False))
    fit_idx = np.setdiff1d(train_idx, val_idx)
    sampler = EpisodeSampler(fit_idx, (s_lo, s_hi), config.meta_batch, seed=config.seed + 1)
    val_s = [s for s in (s_hi, s_hi - Q, s_hi - 2 * Q) if s >= s_lo] or [s_hi]

    backbone = GraphForecaster(
        len(tasks.covariate_names), H, hidden=config.hidden, conv=config.conv
    )
    learner = make_learner(config.learner, backbone).to(device)
    opt = torch.optim.Adam(learner.parameters(), lr=config.lr)
    result = TrainResult(learner, config)
    best, best_state, bad = np.inf, copy.deepcopy(learner.state_dict()), 0
    start = 1
    state_path = Path(checkpoint_dir) / "state.pt" if checkpoint_dir is not None else None
    if resume and state_path is not None and state_path.exists():
        saved = torch.load(state_path, weights_only=False, map_location=device)
        _check_resumable(saved["config"], config, state_path)
        learner.load_state_dict(saved["learner"])
        opt.load_state_dict(saved["optimizer"])
        sampler.load_state_dict(saved["sampler"])
        best, best_state, bad = saved["best"], saved["best_state"], saved["bad"]
        result.history, result.best_episode = saved["history"], saved["best_episode"]
        start = saved["episode"] + 1

    bar = _progress(config.episodes, progress)
    bar.update(start - 1)
    for episode in range(start, config.episodes + 1):
        learner.train()
        ep = sampler.next()
        loss = episode_loss(
            learner, tasks, known, covariates, ep.tasks, ep.s, S, config, global_weight=0.3
        )
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(learner.parameters(), 5.0)
        opt.step()
        row = {"episode": episode, "train_nll": loss.item()}
        if episode % config.val_every == 0 or episode == config.episodes:
            learner.eval()
            with torch.no_grad():
                val = float(
                    np.mean(
                        [
                            episode_loss(
                                learner, tasks, known, covariates, val_idx, v, S, config
                            ).item()
                            for v in val_s
                        ]
                    )
                )
            row["val_nll"] = val
            if val < best - 1e-4:
                best, best_state, bad, result.best_episode = (
                    val,
                    copy.deepcopy(learner.state_dict()),
                    0,
                    episode,
                )
            else:
                bad += 1
            if checkpoint_dir is not None:
                save_checkpoint(checkpoint_dir, best_state, config, result.history + [row])
                with atomic_path(state_path) as tmp:
                    torch.save(
                        {"learner": learner.state_dict(), "optimizer": opt.state_dict(),
                         "sampler": sampler.state_dict(), "best": best, "best_state": best_state,
                         "bad": bad, "best_episode": result.best_episode,
                         "history": result.history + [row], "episode": episode,
                         "config": config.to_dict()},
                        tmp,
                    )  # fmt: skip
        result.history.append(row)
        bar.update(1, loss=row["train_nll"], val=row.get("val_nll"))
        if bad >= config.patience:
            result.stopped_early = True
            break
    bar.close()
    learner.load_state_dict(best_state)
    learner.eval()
    return result


def make_learner(name: str, backbone: GraphForecaster):
    """The meta-learner named in the configuration, around ``backbone``."""
    if name == "ridge":
        return RidgeMetaLearner(backbone)
    if name == "anil":
        from spatialmeta.learn.learners import ANILLearner

        return ANILLearner(backbone)
    raise ValueError(f"`learner` must be 'ridge' or 'anil'; got {name!r}.")


def resolve_device(name: str) -> torch.device:
    """``"auto"`` is CUDA when a GPU is present, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(
            f"device {name!r} requested but no CUDA GPU is available; use device='cpu'."
        )
    return torch.device(name)


def _check_resumable(saved: dict, config: LearnConfig, path: Path) -> None:
    """Only the length of training (episodes, patience) may change between runs."""
    now = config.to_dict()
    diff = [k for k in now if k not in ("episodes", "patience") and saved.get(k) != now[k]]
    if diff:
        raise ValueError(
            f"cannot resume from '{path}': settings {diff} differ from the checkpoint's "
            f"({[saved.get(k) for k in diff]} there); use another checkpoint folder or resume=False."
        )


def save_checkpoint(directory, state: dict, config: LearnConfig, history: list[dict]) -> Path:
    """Write ``model.pt`` and ``history.json`` atomically into ``directory``."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    with atomic_path(d / "model.pt") as tmp:
        torch.save({"state_dict": state, "config": config.to_dict()}, tmp)
    with atomic_path(d / "history.json") as tmp:
        tmp.write_text(json.dumps(history, indent=1))
    return d / "model.pt"


class _progress:
    """A tqdm bar, or nothing."""

    def __init__(self, total: int, enabled: bool):
        self._bar = None
        if enabled:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, desc="meta-training", unit="episode", leave=False)

    def update(self, n: int, **postfix) -> None:
        if self._bar is not None:
            self._bar.update(n)
            self._bar.set_postfix(
                {k: f"{v:.3f}" for k, v in postfix.items() if v is not None}, refresh=False
            )

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()

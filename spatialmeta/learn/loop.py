"""The training loop every learner shares: validation, early stopping, checkpoints, resume.

:func:`fit` runs a learner's steps (one episode each) with validation every
``val_every`` steps, the initial state validated first (so training cannot end worse
than its start on validation), early stopping on the validation loss, atomic checkpoints
(``model.pt``, ``history.json``, ``metrics.csv``, ``state.pt``) and resume that
reproduces the uninterrupted run. The learners (``learn/algorithms``) bring the step and
the validation; :mod:`spatialmeta.learn.train` wires the backbone learners to it.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from spatialmeta._io import atomic_path, write_csv
from spatialmeta.learn.config import LearnConfig
from spatialmeta.tasks.sampling import Episode

__all__ = ["TrainResult", "fit", "save_checkpoint", "METRIC_COLUMNS"]

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
    members: list | None = None  # an ensemble's member results (hier with members > 1)


def fit(
    learner: nn.Module,
    opt: torch.optim.Optimizer,
    sampler,
    step: Callable[[Episode], float],
    validate: Callable[[], float],
    config: LearnConfig,
    kind: str,
    checkpoint_dir,
    resume: bool,
    progress: bool,
) -> TrainResult:
    """Train ``learner`` by ``step`` on the sampler's episodes, validating with ``validate``.

    ``sampler`` has ``next()`` (an :class:`~spatialmeta.tasks.sampling.Episode`) and
    ``state_dict``/``load_state_dict``; ``kind`` (``"meta"`` or ``"global"``) is recorded
    in the checkpoints, and a checkpoint of the other kind is refused on resume.
    """
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

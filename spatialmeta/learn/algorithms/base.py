"""The learner base: a few hooks every meta-learner fills in, and the registry of learners by name.

A learner is driven one episode (:class:`~spatialmeta.learn.episode.EpisodeInputs`, a
meta-batch of ``B`` task regions) at a time. Its hooks:

- ``adapt(support_feats, support_y, support_mask) -> state`` and
  ``predict(query_feats, state) -> (mean, var)`` on backbone features ``(B, N, d)`` and
  targets ``(B, N, H)``; ``state=None`` means "unadapted" (the global network). Learners
  that adapt every backbone parameter per task (MAML, full-network Reptile) instead fill
  ``adapt_episode(ep)`` and ``predict_episode(ep, params, which)`` and say so with
  :attr:`Learner.adapts_full_network`;
- ``loss(ep, global_weight=0.0)``: the pooled masked query NLL after adaptation (plus
  ``global_weight`` times the unadapted network's); the default is the feature path (one
  graph forward for every support and query origin, adaptation of all tasks at once);
- ``meta_step(ep, optimizer)``: one meta-training step (default: backward of ``loss``,
  gradient clipping, ``optimizer.step()``; Reptile interpolates parameters instead).

Learners that condition on the whole known record rather than on a backbone's lag
windows (the hierarchical Bayes learner) set ``needs_backbone = False`` and bring their
own ``train_on`` and ``forecast_split``.

:data:`REGISTRY` maps each name of ``LearnConfig.learner`` to its class and the settings
the name implies (``"fomaml"`` is MAML with ``first_order=True``); :func:`build_learner`
is the one constructor, so no caller dispatches on a learner's type.
"""

from __future__ import annotations

import math
from typing import ClassVar, NamedTuple

import numpy as np
import torch
from torch import nn

from spatialmeta.learn.episode import EpisodeInputs
from spatialmeta.learn.losses import gaussian_nll

__all__ = [
    "Learner",
    "REGISTRY",
    "register",
    "learner_entry",
    "build_learner",
    "task_features",
]


class _Entry(NamedTuple):
    cls: type
    defaults: dict


REGISTRY: dict[str, _Entry] = {}


def register(name: str, **defaults):
    """Class decorator: make a learner reachable as ``LearnConfig(learner=name)``.

    ``defaults`` are constructor settings the name implies; a class may be registered
    under several names.
    """

    def deco(cls):
        if name in REGISTRY:
            raise ValueError(f"a learner named {name!r} is already registered.")
        REGISTRY[name] = _Entry(cls, dict(defaults))
        names = getattr(cls, "names", ())
        cls.names = (*names, name) if "names" in cls.__dict__ else (name,)
        return cls

    return deco


def learner_entry(name: str) -> _Entry:
    """The registered class and implied settings of a learner name, or a clear error."""
    if name not in REGISTRY:
        raise ValueError(f"`learner` must be one of {sorted(REGISTRY)}; got {name!r}.")
    return REGISTRY[name]


def build_learner(name: str, backbone, config=None, **overrides) -> Learner:
    """The learner ``name`` around ``backbone``, with its settings from ``config``.

    ``config`` (a :class:`~spatialmeta.learn.config.LearnConfig`) supplies what the class's
    :meth:`Learner.config_kwargs` reads (e.g. ``inner_steps``, ``inner_lr``; None: the
    class defaults); ``overrides`` win over both.
    """
    entry = learner_entry(name)
    kwargs = dict(entry.defaults)
    if config is not None:
        kwargs.update(entry.cls.config_kwargs(config))
    kwargs.update(overrides)
    return entry.cls(backbone, **kwargs)


def task_features(learner, ep: EpisodeInputs) -> torch.Tensor:
    """One graph forward for the whole episode: the task regions' features ``(B, O, d)``."""
    feats = learner.features(*ep.inputs())
    return feats[:, ep.task_pos].transpose(0, 1)


class Learner(nn.Module):
    """Base of every meta-learner: a ``backbone`` and the hooks above.

    Subclasses set the hooks they need; what the base provides works for any learner
    whose ``adapt``/``predict`` act on backbone features.
    """

    #: names under which the class is registered (set by :func:`register`)
    names: ClassVar[tuple[str, ...]] = ()
    #: the forecast's method name when adapted (``"<name>_noadapt"``-style names derive from it)
    forecast_name: ClassVar[str] = "meta"
    #: False for learners that condition on whole records and bring ``train_on``
    needs_backbone: ClassVar[bool] = True

    #: ``LearnConfig`` fields passed to the constructor when set (None: its default)
    config_fields: ClassVar[tuple[str, ...]] = ()

    backbone: nn.Module

    @classmethod
    def config_kwargs(cls, config) -> dict:
        """Constructor settings taken from a ``LearnConfig``: its :attr:`config_fields`
        that are set."""
        return {
            k: getattr(config, k) for k in cls.config_fields if getattr(config, k, None) is not None
        }

    @property
    def adapts_full_network(self) -> bool:
        """Whether adaptation changes every backbone parameter per task (a graph forward per
        task region, at training and at forecast time)."""
        return False

    # -- hooks on features

    def features(self, *inputs) -> torch.Tensor:
        """What ``adapt`` and ``predict`` consume: the backbone's features ``(O, R, d)``."""
        return self.backbone.features(*inputs)

    def adapt(self, feats: torch.Tensor, target: torch.Tensor, mask: torch.Tensor):
        """Adapt every task of a meta-batch from its support set; returns the adapted state."""
        raise NotImplementedError(
            f"{type(self).__name__} adapts per task on whole episodes; use adapt_episode."
        )

    def predict(self, feats: torch.Tensor, state) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and variance ``(B, N, H)``; ``state=None`` is the unadapted network."""
        if state is not None:
            raise NotImplementedError(f"{type(self).__name__} does not define predict().")
        return self.backbone.mean_head(feats), self.backbone.variance(feats)

    # -- hooks on episodes

    def loss(self, ep: EpisodeInputs, global_weight: float = 0.0) -> torch.Tensor:
        """Pooled masked query NLL after adapting on the support (plus ``global_weight`` x
        the unadapted network's): one graph forward for all origins, all tasks at once."""
        f = task_features(self, ep)
        ns = ep.n_support
        (ys, ms), (yq, mq) = ep.targets("support"), ep.targets("query")
        mean, var = self.predict(f[:, ns:], self.adapt(f[:, :ns], ys, ms))
        out = gaussian_nll(yq, mean, var, mq)
        if global_weight > 0:
            g_mean, g_var = self.predict(f[:, ns:], None)
            out = out + global_weight * gaussian_nll(yq, g_mean, g_var, mq)
        return out

    def meta_step(
        self,
        ep: EpisodeInputs,
        optimizer: torch.optim.Optimizer | None,
        *,
        global_weight: float = 0.0,
        clip_norm: float | None = 5.0,
    ) -> float:
        """One meta-training step on ``ep``; returns the episode's loss.

        Backward of :meth:`loss`, gradient clipping, ``optimizer.step()``; a non-finite
        loss updates nothing (validation decides).
        """
        if optimizer is None:
            raise ValueError(f"`optimizer` is required to meta-train {type(self).__name__}.")
        out = self.loss(ep, global_weight)
        optimizer.zero_grad()
        if not torch.isfinite(out):
            return float(out.detach())
        out.backward()
        if clip_norm is not None:
            torch.nn.utils.clip_grad_norm_(self.parameters(), clip_norm)
        optimizer.step()
        return float(out.detach())


# --------------------------------------------------------------------------- checks


def check_steps(value, name: str = "inner_steps", minimum: int = 0) -> int:
    """An integer setting ``>= minimum``, or an error naming it."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"`{name}` must be an integer >= {minimum}; got {value!r}.")
    return int(value)


def check_rate(value, name: str) -> float:
    """A positive finite number, or an error naming it."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"`{name}` must be a positive finite number; got {value!r}.") from None
    if not math.isfinite(v) or v <= 0:
        raise ValueError(f"`{name}` must be a positive finite number; got {value!r}.")
    return v


def check_hops(value) -> int | None:
    """None or an integer >= 1."""
    if value is None:
        return None
    return check_steps(value, "hops", 1)

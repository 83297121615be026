"""The global graph network baseline: supervised training, and per-region fine-tuning.

The *global* network is the meta-learner's backbone and Gaussian head trained by ordinary
supervised learning — mini-batches of (region, origin) windows from every training
region's history, one Gaussian NLL, no episodes and no adaptation — with the same
validation, early stopping and checkpoints as meta-training
(:func:`spatialmeta.learn.train.global_train`). *Global fine-tuned* takes that network
and fits, on each held-out region's support window, a few SGD steps of the heads (Adam, or
the heads and the backbone's last layer): all held-out regions at once, from one
forward pass, with per-region parameters as batched tensors.

Inputs are normalized as a held-out region's are at forecast time (each region by the
mean and spread of the ``support`` steps before the window), so training and forecasting
see the same input distribution.
"""

from __future__ import annotations

import numpy as np
import torch

from spatialmeta.learn.algorithms._heads import head_forward
from spatialmeta.learn.algorithms.base import Learner, check_rate, check_steps
from spatialmeta.learn.config import FINETUNE
from spatialmeta.learn.episode import EpisodeInputs
from spatialmeta.learn.losses import gaussian_nll, task_nll
from spatialmeta.learn.model import GraphForecaster

__all__ = ["GlobalLearner", "supervised_loss", "select_finetune", "FINETUNE_GRID"]

# fine-tuning settings tried on validation (:func:`select_finetune`): Adam steps and step sizes
FINETUNE_GRID = {"steps": (5, 10, 20, 40), "lr": (1e-4, 3e-4, 1e-3, 3e-3, 1e-2)}


def supervised_loss(
    backbone: GraphForecaster, ep: EpisodeInputs, which: str = "all"
) -> torch.Tensor:
    """Gaussian NLL of the unadapted network on the ``which`` origins of an episode.

    ``which``: ``"all"`` for the support and query origins, ``"query"`` for the origins
    from the support end on; the network's own heads predict every one of them — no
    support set, no adaptation.
    """
    rows = ep.rows(which)
    f = backbone.features(*ep.inputs(rows))[:, ep.task_pos].transpose(0, 1)
    y, m = ep.targets(which)
    return gaussian_nll(y, backbone.mean_head(f), backbone.variance(f), m)


class GlobalLearner(Learner):
    """A supervised global network, fine-tuned per region on its support window.

    A :class:`~spatialmeta.learn.algorithms.base.Learner` with the feature hooks:
    ``features`` (what :meth:`adapt` and :meth:`predict` consume), ``adapt`` (the
    fine-tuning) and ``predict`` (``state=None``: the global network itself), so
    :func:`spatialmeta.learn.forecast.forecast_heldout` forecasts with it as with a
    meta-learner: ``adapt=False`` gives the ``global`` baseline, ``adapt=True``
    ``global_finetuned``.

    Parameters
    ----------
    backbone : GraphForecaster
    finetune : {"head", "head+last"}
        Fit the mean and variance heads, or those and the backbone's last layer.
    steps : int
        Gradient steps of the fine-tuning (0: none).
    lr : float
        Adam step size.

    Examples
    --------
    >>> _ = torch.manual_seed(0)
    >>> g = GlobalLearner(GraphForecaster(2, 3, hidden=8), finetune="head+last", steps=2)
    >>> z, y, m = torch.randn(4, 10, 8), torch.randn(4, 10, 3), torch.ones(4, 10, 3)
    >>> state = g.adapt(z, y, m)
    >>> [tuple(p.shape) for p in state][:2], tuple(g.predict(z, state)[0].shape)
    ([(4, 8, 8), (4, 8)], (4, 10, 3))
    """

    forecast_name = "global"

    def __init__(
        self, backbone: GraphForecaster, *, finetune: str = "head", steps: int = 10, lr=3e-4
    ):
        super().__init__()
        if finetune not in FINETUNE:
            raise ValueError(f"`finetune` must be one of {list(FINETUNE)}; got {finetune!r}.")
        self.backbone = backbone
        self.finetune = finetune
        self.steps = check_steps(steps, "finetune_steps")
        self.lr = check_rate(lr, "finetune_lr")

    @property
    def _last(self) -> bool:
        return self.finetune == "head+last"

    def features(self, *inputs) -> torch.Tensor:
        """Backbone features ``(O, R, d)`` (penultimate activations for ``"head+last"``)."""
        return self.backbone.features(*inputs, penultimate=self._last)

    def _initial(self, b: int) -> list[torch.Tensor]:
        mods = [self.backbone.mean_head, self.backbone.var_head]
        if self._last:
            mods = [self.backbone.last_layer, *mods]
        out = []
        for mod in mods:
            out += [mod.weight.expand(b, *mod.weight.shape), mod.bias.expand(b, *mod.bias.shape)]
        return out

    def _forward(self, feats: torch.Tensor, params) -> tuple[torch.Tensor, torch.Tensor]:
        if self._last:
            feats = torch.einsum("bnk,bjk->bnj", feats, params[0]) + params[1].unsqueeze(1)
            params = params[2:]
        return head_forward(self.backbone, feats, list(params))

    def adapt(self, feats: torch.Tensor, target: torch.Tensor, mask: torch.Tensor):
        """Per-region parameters after ``steps`` Adam steps on each region's support NLL.

        All regions at once: the parameters are ``(B, ...)`` tensors and one autograd
        call per step gives every region its own gradient (the summed loss separates over
        regions); Adam's moments are elementwise, so regions stay independent. Adam rather
        than plain SGD because the NLL's gradient scales with the inverse predicted
        variance: a fixed SGD step that suits one region diverges on another. A region
        with no known support target keeps the global parameters. No graph is kept (this
        is fine-tuning, not meta-learning).

        Parameters
        ----------
        feats : ``(B, N, d)`` support features (from :meth:`features`)
        target, mask : ``(B, N, H)`` normalized support targets and which are known
        """
        feats = feats.detach()
        params = [p.detach().clone() for p in self._initial(feats.shape[0])]
        m1 = [torch.zeros_like(p) for p in params]
        m2 = [torch.zeros_like(p) for p in params]
        b1, b2 = 0.9, 0.999
        with torch.enable_grad():
            for t in range(1, self.steps + 1):
                params = [p.requires_grad_() for p in params]
                mean, var = self._forward(feats, params)
                loss = task_nll(target, mean, var, mask).sum()
                grads = torch.autograd.grad(loss, params)
                new = []
                for i, (p, g) in enumerate(zip(params, grads, strict=True)):
                    # Adam, elementwise: each region's step depends on its own gradient only
                    m1[i] = b1 * m1[i] + (1 - b1) * g
                    m2[i] = b2 * m2[i] + (1 - b2) * g * g
                    step = (m1[i] / (1 - b1**t)) / ((m2[i] / (1 - b2**t)).sqrt() + 1e-8)
                    new.append((p - self.lr * step).detach())
                params = new
        return tuple(params)

    def predict(self, feats: torch.Tensor, state) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and variance ``(B, N, H)``; ``state=None`` is the global network."""
        if state is None:
            if self._last:
                feats = self.backbone.last_layer(feats)
            return self.backbone.mean_head(feats), self.backbone.variance(feats)
        return self._forward(feats, state)


def select_finetune(learner: GlobalLearner, episodes, extra=()) -> list[tuple[int, float, float]]:
    """Give ``learner`` the fine-tuning steps and step size that validate best.

    Every combination of :data:`FINETUNE_GRID` (and the pairs in ``extra``) fine-tunes the
    validation regions on their support windows and scores the query NLL, summed over
    ``episodes`` (:class:`~spatialmeta.learn.episode.EpisodeInputs`); the best pair is
    set on the learner, so the ``global_finetuned`` baseline is as good as validation
    can make it, as the meta-learner is.

    Returns
    -------
    list of (steps, lr, validation loss), in the order tried.
    """
    feats, data = [], []
    with torch.no_grad():
        for ep in episodes:
            f = learner.features(*ep.inputs())[:, ep.task_pos].transpose(0, 1)
            ns = ep.n_support
            feats.append((f[:, :ns], f[:, ns:]))
            data.append((ep.targets("support"), ep.targets("query")))
    pairs = [(n, lr) for n in FINETUNE_GRID["steps"] for lr in FINETUNE_GRID["lr"]]
    pairs += [p for p in extra if p not in pairs]
    table = []
    for n, lr in pairs:
        learner.steps, learner.lr = int(n), float(lr)
        loss = 0.0
        for (fs, fq), ((ys, ms), (yq, mq)) in zip(feats, data, strict=True):
            state = learner.adapt(fs, ys, ms)
            with torch.no_grad():
                mean, var = learner.predict(fq, state)
                loss += float(gaussian_nll(yq, mean, var, mq))
        table.append((int(n), float(lr), loss / max(len(feats), 1)))
    best = min(table, key=lambda r: r[2] if np.isfinite(r[2]) else np.inf)
    learner.steps, learner.lr = best[0], best[1]
    return table

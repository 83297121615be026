"""Prototypical networks over region tasks: exceedance classification, and forecasting by the
prototypes of the support window's target classes.

Snell, J., Swersky, K., & Zemel, R. (2017). Prototypical networks for few-shot learning.
NeurIPS. arXiv:1703.05175
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from spatialmeta.learn.algorithms.base import Learner, check_steps, register, task_features
from spatialmeta.learn.episode import EpisodeInputs
from spatialmeta.learn.model import GraphForecaster

__all__ = ["ProtoNetLearner", "Prototypes", "ProtoState", "Exceedance", "exceedance_labels"]


class Exceedance(NamedTuple):
    """Binary exceedance labels of an episode.

    ``support``/``query``: ``(B, N)`` int64 labels (1: exceeds the task's threshold);
    ``support_mask``/``query_mask``: ``(B, N)`` bool, which labels exist (target known and
    a threshold defined); ``threshold``: ``(B,)``, NaN for a task without support values.
    """

    support: torch.Tensor
    support_mask: torch.Tensor
    query: torch.Tensor
    query_mask: torch.Tensor
    threshold: torch.Tensor


def exceedance_labels(
    support_y: torch.Tensor,
    support_mask: torch.Tensor,
    query_y: torch.Tensor,
    query_mask: torch.Tensor,
    *,
    quantile: float = 0.9,
    step: int = 0,
) -> Exceedance:
    """Labels "the value ``step + 1`` steps ahead exceeds the task's ``quantile``".

    The threshold of each task is the ``quantile`` of its *known support* targets at
    horizon ``step`` — values inside the support window only, never the query's — and
    labels are ``y > threshold`` for support and query alike.

    Parameters
    ----------
    support_y, support_mask : ``(B, Ns, H)``
    query_y, query_mask : ``(B, Nq, H)``
    quantile : float
        In (0, 1), e.g. 0.9 for the 90th percentile.
    step : int
        Horizon index, ``0 <= step < H`` (0: the next step).

    Examples
    --------
    >>> y = torch.arange(10.0).reshape(1, 10, 1)
    >>> lab = exceedance_labels(y, torch.ones_like(y), y + 5, torch.ones_like(y), quantile=0.5)
    >>> float(lab.threshold[0]), lab.support[0].tolist(), lab.query[0, :3].tolist()
    (4.5, [0, 0, 0, 0, 0, 1, 1, 1, 1, 1], [1, 1, 1])
    """
    q = float(quantile)
    if not 0.0 < q < 1.0:
        raise ValueError(f"`quantile` must lie strictly between 0 and 1; got {quantile!r}.")
    h = support_y.shape[-1]
    if isinstance(step, bool) or not isinstance(step, int | np.integer) or not 0 <= step < h:
        raise ValueError(f"`step` must be an integer horizon index in [0, {h}); got {step!r}.")
    ys, ms = support_y[..., step], support_mask[..., step] > 0
    yq, mq = query_y[..., step], query_mask[..., step] > 0
    thr = torch.nanquantile(torch.where(ms, ys, torch.nan), q, dim=1)  # (B,)
    ok = torch.isfinite(thr).unsqueeze(1)
    return Exceedance(
        support=(ys > thr.unsqueeze(1)).long(),
        support_mask=ms & ok,
        query=(yq > thr.unsqueeze(1)).long(),
        query_mask=mq & ok,
        threshold=thr,
    )


class Prototypes(NamedTuple):
    """Prototypes ``centers`` ``(B, K, d)``; ``present`` ``(B, K)``: classes in the support."""

    centers: torch.Tensor
    present: torch.Tensor


class ProtoState(NamedTuple):
    """Per-task, per-horizon class prototypes of a support window (the forecast mode).

    ``centers`` ``(B, H, K, d)`` mean embedding of the support origins whose target at
    horizon ``h`` falls in class ``k``; ``value``/``spread`` ``(B, H, K)`` those targets'
    mean and variance; ``present`` ``(B, H, K)`` classes with at least one support target.
    """

    centers: torch.Tensor
    value: torch.Tensor
    spread: torch.Tensor
    present: torch.Tensor


@register("protonet")
class ProtoNetLearner(Learner):
    """Prototypical networks over region tasks.

    A class's prototype in a task is the mean backbone embedding of that task's support
    examples of the class; query logits are minus the squared Euclidean distances to the
    prototypes. All tasks of a meta-batch are computed together (no loop).

    Two uses:

    - *Forecasting* (``LearnConfig(learner="protonet")``, the :class:`Learner` hooks):
      each task's known support targets at each horizon are cut into ``bins`` classes
      at their own quantiles; :meth:`adapt` makes the prototypes of those classes,
      :meth:`predict` forecasts the mixture of the classes' target means with weights
      ``softmax(-temperature * distance²)`` (mean and variance of the mixture, plus the
      backbone's noise variance). A region whose support has no known target forecasts
      with the global heads. This is the prototype classifier turned into a predictive
      distribution; trained, like every learner, on the query NLL.
    - *Exceedance classification* (:meth:`exceedance_loss`): each origin labelled by
      whether the target ``step + 1`` steps ahead exceeds the region's ``quantile``
      threshold from its support window (:func:`exceedance_labels`); the query
      cross-entropy.

    A class absent from a task's support has no prototype: its logit is the lowest
    finite value, and query examples of that class are left out of the loss.

    Parameters
    ----------
    backbone : GraphForecaster
        Its features are the embedding.
    n_classes : int
        Number of classes of :meth:`prototypes` (2 for exceedance).
    quantile : float
        Exceedance quantile of the support window.
    step : int
        Horizon index of the exceedance target.
    bins : int
        Target classes per horizon in the forecast mode.

    References
    ----------
    Snell, J., Swersky, K., & Zemel, R. (2017). Prototypical networks for few-shot
    learning. NeurIPS. arXiv:1703.05175

    Examples
    --------
    >>> _ = torch.manual_seed(0)
    >>> proto = ProtoNetLearner(GraphForecaster(2, 3, hidden=8), bins=3)
    >>> f, y, m = torch.randn(4, 12, 8), torch.randn(4, 12, 3), torch.ones(4, 12, 3)
    >>> state = proto.adapt(f, y, m)
    >>> tuple(state.centers.shape), state.present.all().item()
    ((4, 3, 3, 8), True)
    >>> mean, var = proto.predict(f, state)
    >>> tuple(mean.shape), bool((var > 0).all())
    ((4, 12, 3), True)
    """

    def __init__(
        self,
        backbone: GraphForecaster,
        *,
        n_classes: int = 2,
        quantile: float = 0.9,
        step: int = 0,
        bins: int = 4,
    ):
        super().__init__()
        self.backbone = backbone
        self.bins = check_steps(bins, "bins", 2)
        self.log_temperature = nn.Parameter(torch.zeros(()))
        self.n_classes = check_steps(n_classes, "n_classes", 2)
        if not 0.0 < float(quantile) < 1.0:
            raise ValueError(f"`quantile` must lie strictly between 0 and 1; got {quantile!r}.")
        self.quantile = float(quantile)
        self.step = check_steps(step, "step", 0)

    def prototypes(
        self, feats: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor | None = None
    ) -> Prototypes:
        """Per-task, per-class mean support embedding.

        Parameters
        ----------
        feats : ``(B, N, d)`` support embeddings
        labels : ``(B, N)`` integer classes in ``[0, n_classes)``
        mask : ``(B, N)``, optional
            Which support examples count.
        """
        labels = labels.long()
        if labels.numel() and (labels.min() < 0 or labels.max() >= self.n_classes):
            raise ValueError(
                f"labels must lie in [0, {self.n_classes}); got values in "
                f"[{int(labels.min())}, {int(labels.max())}]."
            )
        onehot = nn.functional.one_hot(labels, self.n_classes).to(feats.dtype)  # (B, N, K)
        if mask is not None:
            onehot = onehot * mask.to(feats.dtype).unsqueeze(-1)
        count = onehot.sum(dim=1)  # (B, K)
        centers = torch.einsum("bnk,bnd->bkd", onehot, feats) / count.clamp_min(1.0).unsqueeze(-1)
        return Prototypes(centers, count > 0)

    def logits(self, feats: torch.Tensor, protos: Prototypes) -> torch.Tensor:
        """Query logits ``(B, N, K)``: minus squared distances to the prototypes."""
        d2 = (feats.unsqueeze(2) - protos.centers.unsqueeze(1)).pow(2).sum(dim=-1)
        low = torch.finfo(d2.dtype).min
        return torch.where(protos.present.unsqueeze(1), -d2, torch.full_like(d2, low))

    def classification_loss(self, logits, labels, mask, protos) -> torch.Tensor:
        """Mean query cross-entropy over labelled queries whose class has a prototype."""
        labels = labels.long()
        valid = mask.bool() & protos.present.gather(1, labels)
        ce = nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), reduction="none"
        ).reshape(labels.shape)
        ce = torch.where(valid, ce, torch.zeros_like(ce))
        return ce.sum() / valid.sum().clamp_min(1)

    def exceedance_loss(self, ep: EpisodeInputs) -> torch.Tensor:
        """Query cross-entropy of exceedance classification on one episode."""
        f = task_features(self, ep)
        ns = ep.n_support
        lab = exceedance_labels(
            *ep.targets("support"), *ep.targets("query"), quantile=self.quantile, step=self.step
        )
        protos = self.prototypes(f[:, :ns], lab.support, lab.support_mask)
        return self.classification_loss(
            self.logits(f[:, ns:], protos), lab.query, lab.query_mask, protos
        )

    # -- the forecast mode (Learner hooks)

    def adapt(self, feats: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> ProtoState:
        """Prototypes of each task's support target classes, per horizon (all tasks at once).

        Parameters
        ----------
        feats : ``(B, N, d)`` support embeddings
        target, mask : ``(B, N, H)`` normalized support targets and which are known
        """
        k = self.bins
        known = mask > 0
        y = torch.where(known, target, torch.full_like(target, torch.nan))
        qs = torch.linspace(0, 1, k + 1, dtype=target.dtype, device=target.device)[1:-1]
        edges = torch.nanquantile(y, qs, dim=1).permute(1, 2, 0)  # (B, H, K-1)
        label = (target.unsqueeze(-1) > edges.unsqueeze(1)).sum(-1)  # (B, N, H) in [0, K)
        onehot = nn.functional.one_hot(label, k).to(feats.dtype) * known.unsqueeze(-1)
        count = onehot.sum(dim=1)  # (B, H, K)
        denom = count.clamp_min(1.0)
        centers = torch.einsum("bnhk,bnd->bhkd", onehot, feats) / denom.unsqueeze(-1)
        y0 = torch.where(known, target, torch.zeros_like(target))
        value = torch.einsum("bnhk,bnh->bhk", onehot, y0) / denom
        # spread as the mean squared deviation from each class mean (two passes: no
        # cancellation of E[y^2] - E[y]^2 in float32)
        dev = y0 - torch.einsum("bnhk,bhk->bnh", onehot, value)
        spread = torch.einsum("bnhk,bnh->bhk", onehot, dev * dev) / denom
        return ProtoState(centers, value, spread, count > 0)

    def predict(self, feats: torch.Tensor, state: ProtoState | None):
        """Mixture mean and variance ``(B, N, H)`` over the prototypes (``state=None``: the
        global heads)."""
        g_mean, g_var = self.backbone.mean_head(feats), self.backbone.variance(feats)
        if state is None:
            return g_mean, g_var
        # squared distances (B, N, H, K) by expansion, without a (B, N, H, K, d) temporary
        d2 = (
            (feats * feats).sum(-1)[:, :, None, None]
            - 2 * torch.einsum("bnd,bhkd->bnhk", feats, state.centers)
            + (state.centers * state.centers).sum(-1)[:, None]
        ).clamp_min(0.0)
        present = state.present.unsqueeze(1)
        logits = torch.where(present, -torch.exp(self.log_temperature) * d2, -torch.inf)
        any_class = present.any(-1)
        w = torch.softmax(torch.where(any_class.unsqueeze(-1), logits, 0.0), dim=-1)
        value, spread = state.value.unsqueeze(1), state.spread.unsqueeze(1)
        mean = (w * value).sum(-1)
        var = (w * (spread + value**2)).sum(-1) - mean**2
        mean = torch.where(any_class, mean, g_mean)
        var = torch.where(any_class, var.clamp_min(0.0) + g_var, g_var)
        return mean, var

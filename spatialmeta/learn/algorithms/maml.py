"""MAML: every backbone parameter adapted per task by SGD on its support set.

Finn, C., Abbeel, P., & Levine, S. (2017). Model-agnostic meta-learning for fast adaptation
of deep networks. ICML. arXiv:1703.03400 (MAML; first-order MAML, Sec. 5.2)
"""

from __future__ import annotations

import torch

from spatialmeta.learn.algorithms._functional import FunctionalTasks
from spatialmeta.learn.algorithms.base import (
    Learner,
    check_hops,
    check_rate,
    check_steps,
    register,
)
from spatialmeta.learn.episode import EpisodeInputs
from spatialmeta.learn.model import GraphForecaster

__all__ = ["MAMLLearner"]


@register("maml")
@register("fomaml", first_order=True)
class MAMLLearner(FunctionalTasks, Learner):
    """MAML: every backbone parameter adapted per task by SGD on its support set.

    Interface. The backbone's features are themselves adapted per task, so MAML cannot
    work on features from one shared forward: it is driven by the raw episode.
    :meth:`loss` returns what every learner's does, the pooled masked query NLL after
    adaptation (plus ``global_weight`` times the unadapted network's), so the training
    loop drives it like any other learner. The pieces are public:
    :func:`~spatialmeta.learn.episode.episode_inputs` builds the raw meta-batch,
    :meth:`adapt_episode` returns every task's adapted parameters as a dict of ``(B, ...)``
    tensors named ``backbone.<param>``, and :meth:`predict_episode` evaluates them.

    Per-task graph forwards. The graph forward is shared by all tasks only while the
    parameters are; with per-task parameters each task needs its own forward through the
    GRU and the graph convolution. ``torch.func.vmap`` goes through the torch-geometric
    convolutions (SAGE, GCN, GAT) but not through ``nn.GRU`` (no batching rule for
    ``aten::gru.input``), so:

    - ``vectorize=False`` (default): a Python loop over the tasks of the meta-batch —
      MAML inherently needs one here — each task running on its own ``hops``-hop
      neighbourhood (exact for the backbone's single graph layer), with
      ``functional_call`` and ``torch.autograd.grad``.
    - ``vectorize=True``: ``torch.func.vmap`` over tasks of ``torch.func.grad`` of a
      ``functional_call``, with the GRU unrolled in elementary ops (same parameters, same
      equations). Every task then runs on the union neighbourhood of the whole
      meta-batch, so it pays off on small graphs only.

    Second-order by default (the query loss differentiates through the inner
    gradients); ``first_order=True`` is first-order MAML (inner gradients detached).

    Parameters
    ----------
    backbone : GraphForecaster
    inner_steps : int
        SGD steps per task (0: the unadapted network).
    inner_lr : float
        Inner-loop step size.
    first_order : bool
        First-order MAML.
    hops : int or None
        Neighbourhood each task's forward runs on; must cover the backbone's message
        passing (1 for :class:`GraphForecaster`). None: the whole episode graph.
    vectorize : bool
        vmap over tasks instead of a Python loop (see above).

    References
    ----------
    Finn, C., Abbeel, P., & Levine, S. (2017). Model-agnostic meta-learning for fast
    adaptation of deep networks. ICML. arXiv:1703.03400 (MAML; first-order MAML, Sec. 5.2)

    Examples
    --------
    >>> import numpy as np
    >>> from spatialmeta.data import synthetic_region_tasks
    >>> from spatialmeta.learn import LearnConfig
    >>> from spatialmeta.learn.episode import episode_inputs
    >>> from spatialmeta.learn.features import standardized_covariates
    >>> tasks = synthetic_region_tasks(9, 60, seed=0)
    >>> cfg = LearnConfig(lags=6, horizon=2, query=4, hidden=8)
    >>> ep = episode_inputs(tasks, np.ones((9, 60), bool), standardized_covariates(tasks),
    ...                     [0, 4], 40, 18, cfg)
    >>> _ = torch.manual_seed(0)
    >>> bb = GraphForecaster(len(tasks.covariate_names), 2, hidden=8)
    >>> maml = MAMLLearner(bb, inner_steps=1)
    >>> params = maml.adapt_episode(ep)  # every parameter, one copy per task
    >>> tuple(params["backbone.mean_head.weight"].shape), maml.loss(ep).ndim
    ((2, 2, 8), 0)
    """

    config_fields = ("inner_steps", "inner_lr")

    def __init__(
        self,
        backbone: GraphForecaster,
        *,
        inner_steps: int = 1,
        inner_lr: float = 0.05,
        first_order: bool = False,
        hops: int | None = 1,
        vectorize: bool = False,
    ):
        super().__init__()
        self.backbone = backbone
        self.inner_steps = check_steps(inner_steps)
        self.inner_lr = check_rate(inner_lr, "inner_lr")
        self.first_order = bool(first_order)
        self.hops = check_hops(hops)
        self.vectorize = bool(vectorize)

    @property
    def adapts_full_network(self) -> bool:
        return True

    def adapt_episode(self, ep: EpisodeInputs, *, graphs=None) -> dict[str, torch.Tensor]:
        """Each task's parameters ``(B, ...)`` after ``inner_steps`` SGD steps on its support.

        ``graphs``: the tasks' neighbourhoods when already found (internal; else found here).
        """
        create_graph = not self.first_order and torch.is_grad_enabled()
        return self._adapt_params(
            ep, "support", self.inner_steps, self.inner_lr, create_graph, graphs
        )

    def loss(self, ep: EpisodeInputs, global_weight: float = 0.0) -> torch.Tensor:
        """Query NLL after per-task adaptation (plus ``global_weight`` x the unadapted NLL)."""
        graphs = self._graphs(ep)  # each task's neighbourhood, found once
        return self._query_nll(ep, self.adapt_episode(ep, graphs=graphs), graphs, global_weight)

"""Meta-batch sampling: seeded episodes as arrays, and neighbourhood subgraphs of a batch.

An episode is a meta-batch of task regions plus the end ``s`` of their support window. The
sampler draws them from a numpy Generator with no per-step pandas or Python-object work,
and can be checkpointed (its state is the generator state and a step counter) so that a
resumed run draws the same episodes as an uninterrupted one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch_geometric.utils import k_hop_subgraph

__all__ = ["Episode", "EpisodeSampler", "batch_subgraph", "support_query_origins"]


def support_query_origins(s: int, support: int, lags: int, horizon: int, query: int):
    """Forecast origins of an episode's support and query sets.

    The support window is ``[s - support, s)``: support origins ``o`` have all their lags
    (``o - lags .. o - 1``) and targets (``o .. o + horizon - 1``) inside it. Query origins
    are ``s .. s + query - 1``: their targets lie at or after ``s``, so the two sets never
    share a target, and no origin's inputs reach its own targets.

    Examples
    --------
    >>> sup, qry = support_query_origins(36, 36, 12, 3, 4)
    >>> int(sup[0]), int(sup[-1]), qry.tolist()
    (12, 33, [36, 37, 38, 39])
    """
    if support < lags + horizon:
        raise ValueError(
            f"support window ({support} steps) must hold at least lags + horizon = {lags + horizon} steps."
        )
    return np.arange(s - support + lags, s - horizon + 1), np.arange(s, s + query)


@dataclass(frozen=True)
class Episode:
    """Task regions (indices into the task set) and the support-window end ``s``."""

    tasks: np.ndarray
    s: int


class EpisodeSampler:
    """Seeded meta-batches of task regions with a random support-window end.

    Parameters
    ----------
    candidates : array of int
        Regions that may be tasks (the training regions).
    s_range : (int, int)
        Inclusive range of support-window ends.
    meta_batch : int
        Tasks per episode (without replacement; capped at the number of candidates).
    seed : int

    Examples
    --------
    >>> a = EpisodeSampler(np.arange(10), (5, 20), 3, seed=1)
    >>> b = EpisodeSampler(np.arange(10), (5, 20), 3, seed=1)
    >>> [a.next().s for _ in range(3)] == [b.next().s for _ in range(3)]
    True
    """

    def __init__(
        self, candidates: np.ndarray, s_range: tuple[int, int], meta_batch: int, *, seed: int = 0
    ):
        candidates = np.asarray(candidates, dtype=np.int64)
        if candidates.size == 0:
            raise ValueError("no candidate task regions; check the hold-out and buffer.")
        lo, hi = int(s_range[0]), int(s_range[1])
        if hi < lo:
            raise ValueError(f"`s_range` {s_range} is empty; the training period is too short.")
        if meta_batch < 1:
            raise ValueError(f"`meta_batch` must be >= 1; got {meta_batch}.")
        self.candidates = candidates
        self.s_range = (lo, hi)
        self.meta_batch = min(int(meta_batch), candidates.size)
        self.rng = np.random.default_rng(seed)
        self.step = 0

    def next(self) -> Episode:
        """Draw the next episode."""
        s = int(self.rng.integers(self.s_range[0], self.s_range[1] + 1))
        tasks = self.rng.choice(self.candidates, size=self.meta_batch, replace=False)
        self.step += 1
        return Episode(tasks=tasks, s=s)

    def state_dict(self) -> dict:
        """Generator state and step, for checkpoints."""
        return {"rng": self.rng.bit_generator.state, "step": self.step}

    def load_state_dict(self, state: dict) -> None:
        """Restore a state from :meth:`state_dict`."""
        self.rng.bit_generator.state = state["rng"]
        self.step = int(state["step"])


def batch_subgraph(edge_index: torch.Tensor, tasks: np.ndarray, hops: int, num_nodes: int):
    """The ``hops``-hop neighbourhood of a batch of task nodes, relabelled.

    With as many hops as the backbone has message-passing layers, the task nodes' features
    on the subgraph equal those on the whole graph, at a fraction of the cost on large
    graphs.

    Returns
    -------
    subset : torch.Tensor
        Node indices kept (into the full graph), sorted.
    edge_index : torch.Tensor
        Edges among them, relabelled to ``0 .. len(subset) - 1``.
    task_pos : torch.Tensor
        Positions of ``tasks`` within ``subset``.
    """
    subset, sub_edges, mapping, _ = k_hop_subgraph(
        torch.as_tensor(tasks, dtype=torch.long),
        hops,
        edge_index,
        relabel_nodes=True,
        num_nodes=num_nodes,
    )
    return subset, sub_edges, mapping

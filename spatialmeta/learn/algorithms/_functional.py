"""Per-task adaptation of every backbone parameter (``torch.func.functional_call``): what MAML
and full-network Reptile share, a Python loop over tasks or ``vmap`` with the GRU unrolled."""

from __future__ import annotations

import copy
from typing import NamedTuple

import torch
from torch import nn
from torch.func import functional_call, grad, vmap
from torch_geometric.utils import k_hop_subgraph

from spatialmeta.learn.algorithms._heads import INNER_MAX_NORM
from spatialmeta.learn.episode import EpisodeInputs
from spatialmeta.learn.losses import gaussian_nll, task_nll
from spatialmeta.learn.model import GraphForecaster

__all__ = ["FunctionalTasks", "INNER_MAX_NORM"]


class _UnrolledGRU(nn.Module):
    """A single-layer, batch-first ``nn.GRU`` written out step by step, same parameter names.

    ``torch.func.vmap`` has no batching rule for the fused ``aten::gru.input`` kernel
    (torch 2.13), so batched per-task weights cannot pass through ``nn.GRU``; these are
    ``nn.GRU``'s documented equations in elementary ops, which vmap handles.
    """

    def __init__(self, gru: nn.GRU):
        super().__init__()
        if gru.num_layers != 1 or gru.bidirectional or not gru.batch_first or not gru.bias:
            raise ValueError(
                "vectorized adaptation supports a single-layer, unidirectional, batch-first GRU "
                "with biases; use vectorize=False."
            )
        for name in ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"):
            setattr(self, name, getattr(gru, name))

    def forward(self, seq: torch.Tensor):
        gi = seq @ self.weight_ih_l0.T + self.bias_ih_l0  # (N, L, 3h)
        h = seq.new_zeros(seq.shape[0], self.weight_hh_l0.shape[1])
        outs = []
        for t in range(seq.shape[1]):  # a recursion in time, each step over all sequences
            gh = h @ self.weight_hh_l0.T + self.bias_hh_l0
            i_r, i_z, i_n = gi[:, t].chunk(3, dim=-1)
            h_r, h_z, h_n = gh.chunk(3, dim=-1)
            r = torch.sigmoid(i_r + h_r)
            z = torch.sigmoid(i_z + h_z)
            n = torch.tanh(i_n + r * h_n)
            h = (1 - z) * n + z * h
            outs.append(h)
        return torch.stack(outs, dim=1), h.unsqueeze(0)


class _Net(nn.Module):
    """Backbone as a module whose ``forward`` gives mean and variance ``(O, R, H)``.

    ``functional_call`` needs a ``forward``; parameter names are ``backbone.<name>``.
    """

    def __init__(self, backbone: GraphForecaster):
        super().__init__()
        self.backbone = backbone

    def forward(self, lags, lag_mask, calendar, covariates, edge_index):
        feats = self.backbone.features(lags, lag_mask, calendar, covariates, edge_index)
        return self.backbone.mean_head(feats), self.backbone.variance(feats)


def _vmappable(backbone: GraphForecaster) -> GraphForecaster:
    """A shallow copy of the backbone whose GRU is :class:`_UnrolledGRU` (same parameters)."""
    proxy = copy.copy(backbone)
    proxy._modules = dict(backbone._modules)
    proxy._modules["gru"] = _UnrolledGRU(backbone.gru)
    return proxy


def _pick(x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """``x[:, pos]`` for a one-element index (vmap-friendly): ``(O, R, H)`` → ``(O, H)``."""
    return x.index_select(1, pos).squeeze(1)


class _TaskGraph(NamedTuple):
    nodes: torch.Tensor  # node indices into the episode's R' nodes
    edge_index: torch.Tensor  # relabelled
    pos: torch.Tensor  # (1,) or (B,) position(s) of the task node(s) among ``nodes``


# Largest norm of one inner-loop gradient (all backbone parameters of one task together).
def _clip_scale(grads: list[torch.Tensor]) -> torch.Tensor:
    """``min(1, max_norm / ||g||)`` over all of a task's gradients (differentiable)."""
    # floored before the root, whose derivative at 0 is infinite
    norm = torch.sqrt(torch.clamp_min(sum((g * g).sum() for g in grads), 1e-24))
    return torch.clamp(INNER_MAX_NORM / norm, max=1.0)


class FunctionalTasks:
    """Per-task adaptation of every backbone parameter with ``torch.func.functional_call``.

    Mixed into :class:`MAMLLearner` and :class:`ReptileLearner`; expects ``backbone``,
    ``hops`` and ``vectorize`` attributes.
    """

    backbone: GraphForecaster
    hops: int | None
    vectorize: bool

    def base_params(self) -> dict[str, torch.Tensor]:
        """The shared (meta-learned) parameters, named as ``functional_call`` needs them."""
        return {f"backbone.{k}": v for k, v in self.backbone.named_parameters()}

    def task_graphs(self, ep: EpisodeInputs) -> list:
        """The neighbourhood each task's forward runs on (pass as ``graphs=`` to reuse)."""
        return self._graphs(ep)

    def _graphs(self, ep: EpisodeInputs) -> list[_TaskGraph]:
        """Each task's own neighbourhood (loop) or the batch's (vectorized)."""
        n, dev = ep.n_nodes, ep.lags.device
        if self.vectorize:
            if self.hops is None:
                return [_TaskGraph(torch.arange(n, device=dev), ep.edge_index, ep.task_pos)]
            nodes, ei, pos, _ = k_hop_subgraph(
                ep.task_pos, self.hops, ep.edge_index, relabel_nodes=True, num_nodes=n
            )
            return [_TaskGraph(nodes, ei, pos)]
        out = []
        for b in range(ep.n_tasks):
            center = ep.task_pos[b : b + 1]
            if self.hops is None:
                out.append(_TaskGraph(torch.arange(n, device=dev), ep.edge_index, center))
            else:
                nodes, ei, pos, _ = k_hop_subgraph(
                    center, self.hops, ep.edge_index, relabel_nodes=True, num_nodes=n
                )
                out.append(_TaskGraph(nodes, ei, pos))
        return out

    @staticmethod
    def _node_inputs(ep: EpisodeInputs, rows: slice, g: _TaskGraph):
        lags, lag_mask, cal, cov, _ = ep.inputs(rows, g.nodes)
        return lags, lag_mask, cal, cov, g.edge_index

    def _adapt_params(
        self,
        ep: EpisodeInputs,
        which: str,
        steps: int,
        lr: float,
        create_graph: bool,
        graphs: list[_TaskGraph] | None = None,
    ) -> dict[str, torch.Tensor]:
        """Per-task parameters ``(B, *shape)`` after ``steps`` SGD steps on the ``which`` rows."""
        base = self.base_params()
        b = ep.n_tasks
        if steps == 0:
            return {k: v.expand(b, *v.shape) for k, v in base.items()}
        y, m = ep.targets(which)
        rows = ep.rows(which)
        graphs = self._graphs(ep) if graphs is None else graphs
        if self.vectorize:
            return self._adapt_vmap(ep, rows, graphs[0], y, m, base, steps, lr, create_graph)
        net = _Net(self.backbone)
        names = list(base)
        adapted = []
        with torch.enable_grad():
            start = {
                k: v if v.requires_grad else v.detach().requires_grad_() for k, v in base.items()
            }
            for t, g in enumerate(graphs):  # MAML needs a graph forward per task: see the class
                x = self._node_inputs(ep, rows, g)
                p = dict(start)
                for _ in range(steps):
                    mean, var = functional_call(net, p, x)
                    loss = task_nll(y[t], _pick(mean, g.pos), _pick(var, g.pos), m[t])
                    grads = torch.autograd.grad(
                        loss, [p[k] for k in names], create_graph=create_graph, allow_unused=True
                    )
                    step = lr * _clip_scale([gr for gr in grads if gr is not None])
                    p = {
                        k: p[k] if gr is None else p[k] - step * gr
                        for k, gr in zip(names, grads, strict=True)
                    }
                adapted.append(p)
        return {k: torch.stack([a[k] for a in adapted]) for k in names}

    def _adapt_vmap(self, ep, rows, g, y, m, base, steps, lr, create_graph):
        net = _Net(_vmappable(self.backbone))
        x = self._node_inputs(ep, rows, g)

        def loss_fn(p, pos, yt, mt):
            mean, var = functional_call(net, p, x)
            return task_nll(yt, _pick(mean, pos), _pick(var, pos), mt)

        def inner(pos, yt, mt):
            p = base
            for _ in range(steps):
                gr = grad(loss_fn)(p, pos, yt, mt)
                if not create_graph:
                    gr = {k: v.detach() for k, v in gr.items()}
                step = lr * _clip_scale(list(gr.values()))
                p = {k: p[k] - step * gr[k] for k in p}
            return p

        with torch.enable_grad():
            return vmap(inner)(g.pos.unsqueeze(1), y, m)

    def _predict_params(
        self,
        ep: EpisodeInputs,
        params: dict[str, torch.Tensor],
        which: str,
        graphs: list[_TaskGraph] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and variance ``(B, O_which, H)`` of each task with its own parameters."""
        rows = ep.rows(which)
        graphs = self._graphs(ep) if graphs is None else graphs
        if self.vectorize:
            g = graphs[0]
            net = _Net(_vmappable(self.backbone))
            x = self._node_inputs(ep, rows, g)

            def one(p, pos):
                mean, var = functional_call(net, p, x)
                return _pick(mean, pos), _pick(var, pos)

            return vmap(one)(params, g.pos.unsqueeze(1))
        net = _Net(self.backbone)
        means, vars_ = [], []
        for t, g in enumerate(graphs):
            p = {k: v[t] for k, v in params.items()}
            mean, var = functional_call(net, p, self._node_inputs(ep, rows, g))
            means.append(_pick(mean, g.pos))
            vars_.append(_pick(var, g.pos))
        return torch.stack(means), torch.stack(vars_)

    def predict_episode(
        self,
        ep: EpisodeInputs,
        params: dict[str, torch.Tensor] | None,
        which: str = "query",
        *,
        graphs=None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and variance ``(B, O, H)`` on the ``which`` origins (``params=None``: unadapted)."""
        if params is None:
            return self._global_predict(ep, which)
        return self._predict_params(ep, params, which, graphs)

    def _query_nll(self, ep: EpisodeInputs, params, graphs, global_weight: float) -> torch.Tensor:
        """Query NLL with the adapted ``params`` (plus ``global_weight`` x the unadapted NLL)."""
        yq, mq = ep.targets("query")
        mean, var = self._predict_params(ep, params, "query", graphs)
        loss = gaussian_nll(yq, mean, var, mq)
        if global_weight > 0:
            g_mean, g_var = self._global_predict(ep, "query")
            loss = loss + global_weight * gaussian_nll(yq, g_mean, g_var, mq)
        return loss

    def _global_predict(self, ep: EpisodeInputs, which: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Unadapted mean and variance ``(B, O_which, H)``: one forward for the meta-batch."""
        rows = ep.rows(which)
        feats = self.backbone.features(*ep.inputs(rows))[:, ep.task_pos].transpose(0, 1)
        return self.backbone.mean_head(feats), self.backbone.variance(feats)

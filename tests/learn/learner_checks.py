"""The contract every registered learner passes (as PyG's ``assert_module`` is for layers).

:func:`assert_learner` trains a learner by name through :func:`meta_train` on a small
synthetic task set and checks four properties of the whole path (training, adaptation,
forecast), each by an independent computation rather than a stored number:

- **node-permutation invariance**: relabelling the regions (series, covariates, graph)
  permutes the forecasts and changes nothing else;
- **batched equals looped**: forecasting several held-out regions together gives each the
  forecast it gets held out alone (the others then excluded, so the training regions are
  the same); the held-out regions are chosen far enough apart on the graph that none sees
  another;
- **resume equals uninterrupted**: a run stopped at a checkpoint and resumed ends in the
  same parameters and history as the run that was not stopped;
- **a longer support moves the forecast toward the region's own record**: a held-out
  region whose seasonal cycle is unlike its neighbours' is forecast closer to its own
  calendar climatology from a long support than from a short one.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from spatialmeta.data import synthetic_region_tasks
from spatialmeta.learn import LearnConfig, forecast_heldout, global_train, meta_train
from spatialmeta.learn.algorithms import learner_entry
from spatialmeta.learn.compare import with_support
from spatialmeta.regions.graph import RegionGraph
from spatialmeta.tasks import RegionTaskSet
from spatialmeta.tasks.region import RegionSplit, neighbourhood

__all__ = [
    "assert_learner",
    "contract_tasks",
    "far_apart",
    "permuted",
    "check_permutation_invariance",
    "check_batched_equals_looped",
    "check_resume",
    "check_longer_support",
]

# small enough for a CI run of every learner; the numbers of the contract do not depend on
# how well the learner has trained, only on its being the same learner throughout
N_REGIONS, N_TIME, TEST_START, SUPPORT = 36, 132, 108, 24
EPISODES, PRETRAIN = 60, True


def contract_tasks(seed: int = 0) -> tuple[RegionTaskSet, int]:
    """Synthetic monthly regions, one of which (returned) has a cycle unlike its neighbours'.

    The odd region's cycle is shifted by a quarter year and doubled, plus a level offset: a
    forecaster that reads the region's own record moves away from the neighbours' cycle.
    """
    tasks = synthetic_region_tasks(
        N_REGIONS, N_TIME, bbox=(0.0, 40.0, 18.0, 58.0), noise=0.3, seed=seed
    )
    deg = tasks.graph.degree()
    odd = int(np.argmax(deg))  # an interior region: its neighbours all look alike
    t = np.arange(tasks.n_time)
    series = tasks.series.copy()
    series[odd] = series[odd] + 3.0 + 6.0 * np.sin(2 * np.pi * t / 12 + np.pi / 2)
    return dataclasses.replace(tasks, series=series.astype(np.float32)), odd


def far_apart(graph: RegionGraph, n: int, hops: int, first: int | None = None) -> np.ndarray:
    """Up to ``n`` regions pairwise more than ``hops`` graph hops apart (greedy)."""
    chosen: list[int] = []
    blocked = np.zeros(graph.num_nodes, dtype=bool)
    order = np.argsort(-graph.degree(), kind="stable")
    if first is not None:
        order = np.concatenate([[first], order[order != first]])
    for r in order:
        if blocked[r]:
            continue
        chosen.append(int(r))
        seed = np.zeros(graph.num_nodes, dtype=bool)
        seed[r] = True
        blocked |= neighbourhood(graph, seed, hops)
        if len(chosen) == n:
            break
    return np.array(sorted(chosen))


def permuted(tasks: RegionTaskSet, perm: np.ndarray) -> RegionTaskSet:
    """The task set with its regions in the order ``perm`` (new region i is old ``perm[i]``)."""
    from torch_geometric.data import Data

    inv = np.empty_like(perm)
    inv[perm] = np.arange(perm.size)
    d = tasks.graph.data
    ei = torch.as_tensor(inv)[d.edge_index]
    nodes = {k: d[k][torch.as_tensor(perm)] for k in ("x", "pos", "island") if k in d}
    data = Data(edge_index=ei, edge_attr=d.edge_attr, num_nodes=d.num_nodes, **nodes)
    g = tasks.graph
    graph = RegionGraph(data, g.region_ids[perm], g.node_features, g.edge_features, g.directed)
    area = None if tasks.area_km2 is None else tasks.area_km2[perm]
    return dataclasses.replace(
        tasks,
        series=tasks.series[perm],
        region_ids=tasks.region_ids[perm],
        covariates=tasks.covariates[perm],
        graph=graph,
        area_km2=area,
    )


def _permuted_split(split: RegionSplit, perm: np.ndarray) -> RegionSplit:
    exc = None if split.excluded is None else split.excluded[perm]
    return dataclasses.replace(split, held_out=split.held_out[perm], excluded=exc)


def _by_region(fc, tasks):
    """Forecast arrays keyed by region id."""
    ids = tasks.region_ids[fc.regions]
    return {rid: (fc.mean[i], None if fc.std is None else fc.std[i]) for i, rid in enumerate(ids)}


def _assert_same(a, b, what, rtol=1e-4, atol=1e-4):
    assert a.keys() == b.keys(), f"{what}: forecast regions differ"
    for rid in a:
        for x, y, part in zip(a[rid], b[rid], ("mean", "std"), strict=True):
            if x is None:
                assert y is None
                continue
            np.testing.assert_allclose(
                x, y, rtol=rtol, atol=atol, err_msg=f"{what}: {part} of region {rid}"
            )


def check_permutation_invariance(learner, tasks, split, config, seed: int = 0) -> None:
    perm = np.random.default_rng(seed).permutation(tasks.n_regions)
    ref = _by_region(forecast_heldout(learner, tasks, split, config), tasks)
    pt = permuted(tasks, perm)
    got = _by_region(forecast_heldout(learner, pt, _permuted_split(split, perm), config), pt)
    _assert_same(ref, got, "permuted regions")


def check_batched_equals_looped(learner, tasks, split, config) -> None:
    held = np.flatnonzero(split.held_out)
    assert held.size >= 2, "the contract needs at least two held-out regions"
    together = _by_region(forecast_heldout(learner, tasks, split, config), tasks)
    alone = {}
    for r in held:
        only = np.zeros_like(split.held_out)
        only[r] = True
        others = split.held_out & ~only
        exc = others if split.excluded is None else (split.excluded | others)
        one = dataclasses.replace(split, held_out=only, excluded=exc)
        alone.update(_by_region(forecast_heldout(learner, tasks, one, config), tasks))
    _assert_same(together, alone, "held out together vs alone")


def check_resume(name: str, tasks, split, config, tmp_path, init=None) -> None:
    """Stopped after half the episodes and resumed, against the run that was not stopped
    (from the same pretrained network ``init``, when the learner pretrains)."""
    full = meta_train(tasks, split, config, init=init, progress=False)
    first = LearnConfig(**{**config.to_dict(), "episodes": config.episodes // 2})
    meta_train(tasks, split, first, init=init, checkpoint_dir=tmp_path, progress=False)
    resumed = meta_train(
        tasks, split, config, init=init, checkpoint_dir=tmp_path, resume=True, progress=False
    )
    assert [r.get("train_loss") for r in resumed.history] == [
        r.get("train_loss") for r in full.history
    ], f"{name}: resumed history differs"
    a, b = full.learner.state_dict(), resumed.learner.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{name}: parameter {k} differs after resume"


def _own_climatology(tasks, region, origins, horizon):
    """The region's calendar-month means over its whole record, at each target month."""
    months = tasks.time.month.to_numpy() - 1
    clim = np.array([np.nanmean(tasks.series[region, months == m]) for m in range(12)])
    targets = origins[:, None] + np.arange(horizon)[None, :]
    return clim[months[np.minimum(targets, tasks.n_time - 1)]]


def check_longer_support(learner, tasks, split, config, region, short=6, long=96) -> tuple:
    """RMSE of the forecast mean to the region's own climatology, short vs long support."""
    out = []
    for support in (short, long):
        sp = with_support(tasks, split, support)
        fc = forecast_heldout(learner, tasks, sp, config)
        i = int(np.flatnonzero(fc.regions == region)[0])
        own = _own_climatology(tasks, region, fc.origins, fc.mean.shape[-1])
        out.append(float(np.sqrt(np.mean((fc.mean[i] - own) ** 2))))
    assert out[1] < out[0], (
        f"support {long} forecasts region {region} further from its own climatology "
        f"(RMSE {out[1]:.3f}) than support {short} does ({out[0]:.3f})"
    )
    return tuple(out)


def assert_learner(name: str, tmp_path, **config) -> dict:
    """Train learner ``name`` on the contract tasks and run every check; returns the figures."""
    tasks, odd = contract_tasks()
    held = far_apart(tasks.graph, 3, hops=2, first=odd)
    split = tasks.split(held_out=np.isin(np.arange(tasks.n_regions), held),
                        test_start=tasks.time[TEST_START], support=SUPPORT)  # fmt: skip
    defaults = dict(episodes=EPISODES, val_every=EPISODES // 2, patience=100, hidden=8,
                    meta_batch=4, seed=0, device="cpu", pretrain=PRETRAIN, learner=name)  # fmt: skip
    cfg = LearnConfig(**{**defaults, **config})
    needs = learner_entry(name).cls.needs_backbone
    init = global_train(tasks, split, cfg, progress=False) if cfg.pretrain and needs else None
    result = meta_train(tasks, split, cfg, init=init, progress=False)
    learner = result.learner
    check_permutation_invariance(learner, tasks, split, cfg)
    check_batched_equals_looped(learner, tasks, split, cfg)
    rmse = check_longer_support(learner, tasks, split, cfg, odd)
    check_resume(name, tasks, split, cfg, tmp_path, init)
    return {"support_rmse": rmse}

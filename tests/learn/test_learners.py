import dataclasses
import math

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from spatialmeta.data import synthetic_region_tasks
from spatialmeta.learn import LearnConfig
from spatialmeta.learn.algorithms import (
    REGISTRY,
    ANILLearner,
    Learner,
    MAMLLearner,
    ProtoNetLearner,
    ReptileLearner,
    RidgeMetaLearner,
    build_learner,
)
from spatialmeta.learn.algorithms._functional import INNER_MAX_NORM
from spatialmeta.learn.algorithms.protonet import exceedance_labels
from spatialmeta.learn.config import LEARNERS as CONFIG_LEARNERS
from spatialmeta.learn.episode import episode_inputs
from spatialmeta.learn.features import standardized_covariates
from spatialmeta.learn.losses import gaussian_nll, task_nll
from spatialmeta.learn.model import GraphForecaster
from spatialmeta.tasks.sampling import EpisodeSampler

CFG = LearnConfig(lags=6, horizon=2, query=4, hidden=8, meta_batch=4)
SUPPORT = 18


def _tasks(n_time=72, seed=0):
    return synthetic_region_tasks(16, n_time, seed=seed)


@pytest.fixture(scope="module")
def setup():
    tasks = _tasks()
    known = np.ones((tasks.n_regions, tasks.n_time), dtype=bool)
    known[3, ::5] = False  # scattered missing values: partly masked support and query windows
    return tasks, known, standardized_covariates(tasks)


def _backbone(tasks, seed=0, conv="sage"):
    torch.manual_seed(seed)
    return GraphForecaster(len(tasks.covariate_names), CFG.horizon, hidden=CFG.hidden, conv=conv)


TASK_IDX = np.array([3, 0, 7, 11])
S = 40


def _head_reference(backbone, feats, y, m, steps, lr, first_order, adapt_var):
    """Per-task Python loop with nn.functional.linear on 2-D tensors: the independent reference."""
    out = []
    for b in range(feats.shape[0]):
        f = feats[b]
        p = [backbone.mean_head.weight, backbone.mean_head.bias]
        if adapt_var:
            p += [backbone.var_head.weight, backbone.var_head.bias]
        for _ in range(steps):
            mean = F.linear(f, p[0], p[1])
            var = F.softplus(F.linear(f, p[2], p[3])) + 1e-3 if adapt_var else backbone.variance(f)
            nll = 0.5 * (torch.log(var) + (y[b] - mean) ** 2 / var)
            loss = (nll * m[b]).sum() / m[b].sum().clamp_min(1.0)
            g = torch.autograd.grad(loss, p, create_graph=not first_order)
            norm = torch.sqrt(sum((gi * gi).sum() for gi in g))  # the task's step clip
            scale = torch.clamp(INNER_MAX_NORM / norm, max=1.0)
            p = [pi - lr * scale * gi for pi, gi in zip(p, g, strict=True)]
        out.append(p)
    return [torch.stack(x) for x in zip(*out, strict=True)]


# ----------------------------------------------------------------------------- protocol


def test_registry_names_every_configurable_learner_and_builds_each(setup):
    tasks = setup[0]
    assert set(REGISTRY) == set(CONFIG_LEARNERS)  # LearnConfig's names and the registry agree
    assert REGISTRY["fomaml"].cls is MAMLLearner and REGISTRY["fomaml"].defaults == {
        "first_order": True
    }
    cfg = dataclasses.replace(CFG, inner_steps=3, inner_lr=0.2)
    for name, entry in REGISTRY.items():
        assert issubclass(entry.cls, Learner) and name in entry.cls.names
        if not entry.cls.needs_backbone:
            continue
        learner = build_learner(name, _backbone(tasks), cfg)
        assert type(learner) is entry.cls
        if hasattr(learner, "inner_steps"):
            assert (learner.inner_steps, learner.inner_lr) == (3, 0.2)
    assert build_learner("fomaml", _backbone(tasks)).first_order
    assert not build_learner("maml", _backbone(tasks)).first_order
    with pytest.raises(ValueError, match=r"`learner` must be one of .*'ridge'.*; got 'ridg'"):
        build_learner("ridg", _backbone(tasks))


def test_ridge_loss_is_the_feature_path_by_hand(setup):
    tasks, known, cov = setup
    bb = _backbone(tasks)
    ridge = RidgeMetaLearner(bb)
    ep = episode_inputs(tasks, known, cov, TASK_IDX, S, SUPPORT, CFG)
    f = bb.features(*ep.inputs())[:, ep.task_pos].transpose(0, 1)
    ns = ep.n_support
    (ys, ms), (yq, mq) = ep.targets("support"), ep.targets("query")
    mean, var = ridge.predict(f[:, ns:], ridge.adapt(f[:, :ns], ys, ms))
    g_mean, g_var = bb.mean_head(f[:, ns:]), bb.variance(f[:, ns:])
    ref = gaussian_nll(yq, mean, var, mq) + 0.3 * gaussian_nll(yq, g_mean, g_var, mq)
    torch.testing.assert_close(ridge.loss(ep, global_weight=0.3), ref, rtol=1e-6, atol=1e-6)
    assert ridge.adapts_full_network is False
    assert MAMLLearner(bb).adapts_full_network
    assert ReptileLearner(bb).adapts_full_network
    assert not ReptileLearner(bb, head_only=True).adapts_full_network
    with pytest.raises(NotImplementedError, match="MAMLLearner adapts per task"):
        MAMLLearner(bb).adapt(f, ys, ms)


def test_anil_drives_the_feature_based_forecast_path(setup):
    from spatialmeta.learn.forecast import forecast_heldout
    from spatialmeta.tasks import spatial_holdout

    tasks = setup[0]
    split = tasks.split(
        held_out=spatial_holdout(tasks.n_regions, 0.25, seed=0),
        test_start=tasks.time[60],
        support=SUPPORT,
    )
    cfg = LearnConfig(lags=6, horizon=2, hidden=8, device="cpu")
    bb = _backbone(tasks)
    glob = forecast_heldout(RidgeMetaLearner(bb), tasks, split, cfg, adapt=False)
    still = forecast_heldout(ANILLearner(bb, inner_steps=0), tasks, split, cfg)
    moved = forecast_heldout(ANILLearner(bb, inner_steps=3), tasks, split, cfg)
    np.testing.assert_allclose(still.mean, glob.mean, rtol=1e-6)
    np.testing.assert_allclose(still.std, glob.std, rtol=1e-6)
    assert np.isfinite(moved.mean).all() and not np.allclose(moved.mean, glob.mean)
    np.testing.assert_allclose(moved.std, glob.std, rtol=1e-6)  # mean head only


@pytest.mark.parametrize(
    "make, match",
    [
        (
            lambda b: ANILLearner(b, inner_steps=-1),
            r"`inner_steps` must be an integer >= 0; got -1",
        ),
        (lambda b: ANILLearner(b, inner_steps=2.5), r"`inner_steps` .* got 2\.5"),
        (lambda b: ANILLearner(b, inner_steps=True), r"`inner_steps` .* got True"),
        (
            lambda b: ANILLearner(b, inner_lr=0),
            r"`inner_lr` must be a positive finite number; got 0",
        ),
        (lambda b: MAMLLearner(b, inner_lr=float("nan")), r"`inner_lr` .* got nan"),
        (lambda b: MAMLLearner(b, inner_lr="fast"), r"`inner_lr` .* got 'fast'"),
        (lambda b: MAMLLearner(b, hops=0), r"`hops` must be an integer >= 1; got 0"),
        (
            lambda b: ReptileLearner(b, inner_steps=0),
            r"`inner_steps` must be an integer >= 1; got 0",
        ),
        (lambda b: ReptileLearner(b, meta_lr=-0.5), r"`meta_lr` .* got -0\.5"),
        (lambda b: ProtoNetLearner(b, quantile=1.0), r"`quantile` .* got 1\.0"),
    ],
)
def test_bad_arguments_name_the_argument_and_value(make, match):
    with pytest.raises(ValueError, match=match):
        make(GraphForecaster(2, 2, hidden=4))


# ----------------------------------------------------------------------------- ANIL


@pytest.mark.parametrize("first_order", [False, True])
@pytest.mark.parametrize("adapt_var", [False, True])
def test_anil_batched_inner_loop_equals_per_task_loop(first_order, adapt_var):
    torch.manual_seed(1)
    bb = GraphForecaster(2, 3, hidden=8)
    learner = ANILLearner(
        bb, inner_steps=3, inner_lr=0.2, first_order=first_order, adapt_var=adapt_var
    )
    b, n = 5, 12
    feats = torch.randn(b, n, 8, requires_grad=True)
    y, m = torch.randn(b, n, 3), (torch.rand(b, n, 3) > 0.2).float()
    m[2] = 0  # a task with no known support value is left at the global head
    qf = torch.randn(b, 7, 8)
    batched = learner.adapt(feats, y, m)
    looped = learner.adapt_loop(feats, y, m)
    ref = _head_reference(bb, feats, y, m, 3, 0.2, first_order, adapt_var)
    got = [p for p in batched if p is not None]
    assert len(got) == len(ref) == (4 if adapt_var else 2)
    assert got[0].shape == (b, 3, 8)
    for x, lp, r in zip(got, [p for p in looped if p is not None], ref, strict=True):
        torch.testing.assert_close(x, r, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(lp, r, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got[0][2], bb.mean_head.weight)  # nothing to adapt on
    assert not torch.allclose(got[0][0], bb.mean_head.weight)
    mean, var = learner.predict(qf, batched)
    for t in range(b):
        ref_mean = F.linear(qf[t], ref[0][t], ref[1][t])
        ref_var = (
            F.softplus(F.linear(qf[t], ref[2][t], ref[3][t])) + 1e-3
            if adapt_var
            else bb.variance(qf[t])
        )
        torch.testing.assert_close(mean[t], ref_mean, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(var[t], ref_var, rtol=1e-5, atol=1e-5)
    # meta-gradients w.r.t. the support features agree too (first order: there are none)
    out_l = learner.predict(qf, looped)[0].square().sum()
    g_b = torch.autograd.grad(mean.square().sum(), feats, retain_graph=True, allow_unused=True)[0]
    g_l = torch.autograd.grad(out_l, feats, allow_unused=True)[0]
    if first_order:
        assert g_b is None and g_l is None
    else:
        assert g_b.abs().sum() > 0
        torch.testing.assert_close(g_b, g_l, rtol=1e-4, atol=1e-5)


def test_anil_zero_steps_is_the_global_head():
    torch.manual_seed(0)
    bb = GraphForecaster(2, 3, hidden=8)
    learner = ANILLearner(bb, inner_steps=0)
    f = torch.randn(2, 5, 8)
    mean, var = learner.predict(f, learner.adapt(f, torch.randn(2, 5, 3), torch.ones(2, 5, 3)))
    torch.testing.assert_close(mean, bb.mean_head(f))
    torch.testing.assert_close(var, bb.variance(f))


def _anil_grads(setup, first_order):
    tasks, known, cov = setup
    bb = _backbone(tasks)
    learner = ANILLearner(bb, inner_steps=2, inner_lr=0.3, first_order=first_order)
    ep = episode_inputs(tasks, known, cov, TASK_IDX, S, SUPPORT, CFG)
    f = bb.features(*ep.inputs())[:, ep.task_pos].transpose(0, 1)
    ns = ep.n_support
    state = learner.adapt(f[:, :ns], *ep.targets("support"))
    mean, var = learner.predict(f[:, ns:], state)
    yq, mq = ep.targets("query")
    loss = (task_nll(yq, mean, var, mq)).sum()
    d_adapted = torch.autograd.grad(loss, state.weight, retain_graph=True)[0]
    loss.backward()
    return bb, {k: p.grad.clone() for k, p in bb.named_parameters()}, d_adapted


def test_anil_meta_gradients_second_and_first_order(setup):
    bb2, g2, d2 = _anil_grads(setup, first_order=False)
    bb1, g1, d1 = _anil_grads(setup, first_order=True)
    for g in (g1, g2):  # the backbone below the head learns in both
        for name in ("gru.weight_ih_l0", "conv.lin_l.weight", "mix.0.weight", "context.0.weight"):
            assert g[name].abs().sum() > 0, name
    # first order: the adapted head is theta - lr * const, so d loss / d theta is the sum
    # over tasks of d loss / d phi_b exactly; second order adds the inner-gradient terms
    torch.testing.assert_close(g1["mean_head.weight"], d1.sum(0), rtol=1e-5, atol=1e-6)
    assert not torch.allclose(g2["mean_head.weight"], d2.sum(0), rtol=1e-3, atol=1e-5)
    for name in ("mean_head.weight", "gru.weight_hh_l0", "conv.lin_r.weight"):
        assert not torch.allclose(g1[name], g2[name], rtol=1e-3, atol=1e-6), name


# ----------------------------------------------------------------------------- MAML


@pytest.mark.parametrize("vectorize", [False, True])
def test_maml_zero_steps_is_the_unadapted_model(setup, vectorize):
    tasks, known, cov = setup
    bb = _backbone(tasks)
    learner = MAMLLearner(bb, inner_steps=0, vectorize=vectorize)
    ep = episode_inputs(tasks, known, cov, TASK_IDX, S, SUPPORT, CFG)
    mean, var = learner.predict_episode(ep, learner.adapt_episode(ep))
    with torch.no_grad():
        f = bb.features(*ep.inputs(ep.rows("query")))[:, ep.task_pos].transpose(0, 1)
    torch.testing.assert_close(mean, bb.mean_head(f), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(var, bb.variance(f), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(learner.loss(ep), ANILLearner(bb, inner_steps=0).loss(ep))


@pytest.mark.parametrize("vectorize", [False, True])
@pytest.mark.parametrize("conv", ["sage", "gat"])
def test_maml_one_step_is_a_hand_computed_sgd_step(setup, vectorize, conv):
    tasks, known, cov = setup
    bb = _backbone(tasks, conv=conv)
    lr = 0.07
    learner = MAMLLearner(bb, inner_steps=1, inner_lr=lr, vectorize=vectorize)
    ep = episode_inputs(tasks, known, cov, TASK_IDX, S, SUPPORT, CFG)
    adapted = learner.adapt_episode(ep)
    names = [k for k, _ in bb.named_parameters()]
    assert sorted(adapted) == sorted(f"backbone.{k}" for k in names)
    ys, ms = ep.targets("support")
    for b in range(len(TASK_IDX)):  # whole graph, plain modules: no subgraph, no functional_call
        f = bb.features(*ep.inputs(ep.rows("support")))[:, ep.task_pos[b]]
        loss = task_nll(ys[b : b + 1], bb.mean_head(f)[None], bb.variance(f)[None], ms[b : b + 1])
        grads = torch.autograd.grad(loss.sum(), list(bb.parameters()))
        norm = torch.sqrt(sum((g * g).sum() for g in grads))
        scale = min(1.0, INNER_MAX_NORM / float(norm))  # the inner step's norm clip
        for name, p, g in zip(names, bb.parameters(), grads, strict=True):
            torch.testing.assert_close(
                adapted[f"backbone.{name}"][b], p - lr * scale * g, rtol=1e-5, atol=1e-6
            )
        assert not torch.allclose(adapted["backbone.gru.weight_hh_l0"][b], bb.gru.weight_hh_l0)


@pytest.mark.parametrize("vectorize", [False, True])
def test_maml_inner_step_is_clipped_on_a_surprising_support_window(setup, vectorize):
    """Targets 50 standard deviations off: the NLL gradient is huge, and an unclipped step
    would throw the network far away; the step's norm is at most lr x the clip."""
    tasks, known, cov = setup
    bb = _backbone(tasks)
    lr = 0.05
    learner = MAMLLearner(bb, inner_steps=1, inner_lr=lr, vectorize=vectorize)
    ep = episode_inputs(tasks, known, cov, TASK_IDX, S, SUPPORT, CFG)
    ep = dataclasses.replace(ep, target=ep.target + 50.0)
    adapted = learner.adapt_episode(ep)
    base = dict(bb.named_parameters())
    for b in range(len(TASK_IDX)):
        moved = torch.sqrt(
            sum(((adapted[f"backbone.{k}"][b] - v) ** 2).sum() for k, v in base.items())
        )
        moved = float(moved.detach())
        assert 0.5 * lr * INNER_MAX_NORM < moved <= lr * INNER_MAX_NORM * (1 + 1e-5)


def _maml_grads(setup, first_order, vectorize):
    tasks, known, cov = setup
    bb = _backbone(tasks, seed=2)
    learner = MAMLLearner(
        bb, inner_steps=2, inner_lr=0.1, first_order=first_order, vectorize=vectorize
    )
    learner.loss(episode_inputs(tasks, known, cov, TASK_IDX, S, SUPPORT, CFG)).backward()
    return {k: p.grad.clone() for k, p in bb.named_parameters()}


def test_maml_meta_gradients_vmap_equals_loop_and_orders_differ(setup):
    g = {(fo, v): _maml_grads(setup, fo, v) for fo in (False, True) for v in (False, True)}
    for name in g[False, False]:
        for fo in (False, True):
            torch.testing.assert_close(g[fo, True][name], g[fo, False][name], rtol=1e-4, atol=1e-6)
        assert g[True, False][name].abs().sum() > 0, name
        assert g[False, False][name].abs().sum() > 0, name
    differ = [
        n for n in g[False, False] if not torch.allclose(g[False, False][n], g[True, False][n])
    ]
    assert "gru.weight_hh_l0" in differ and "mean_head.weight" in differ


# ----------------------------------------------------------------------------- Reptile


def _flat(params):
    return torch.cat([p.detach().reshape(-1) for p in params])


@pytest.mark.parametrize("head_only", [True, False])
def test_reptile_moves_parameters_towards_the_adapted_ones(setup, head_only):
    tasks, known, cov = setup
    bb = _backbone(tasks)
    learner = ReptileLearner(bb, inner_steps=3, inner_lr=0.1, meta_lr=0.4, head_only=head_only)
    before = {k: p.detach().clone() for k, p in learner.named_parameters()}
    step = learner.reptile_step(episode_inputs(tasks, known, cov, TASK_IDX, S, SUPPORT, CFG))
    after = dict(learner.named_parameters())
    moved = set(step.adapted_mean)
    expected = {"backbone.mean_head.weight", "backbone.mean_head.bias"}
    expected |= {"backbone.var_head.weight", "backbone.var_head.bias"}
    assert moved == (expected if head_only else set(before))
    for k in before:
        if k not in moved:
            torch.testing.assert_close(after[k], before[k], rtol=0, atol=0)
    delta = _flat(after[k] - before[k] for k in moved)
    toward = _flat(step.adapted_mean[k] - before[k] for k in moved)
    assert float(F.cosine_similarity(delta, toward, dim=0)) > 0.999
    torch.testing.assert_close(delta, 0.4 * toward, rtol=1e-5, atol=1e-7)
    assert toward.norm() > 0
    assert step.loss_after < step.loss_before  # the inner SGD fitted support + query

    if head_only:  # the adapted heads are per-task SGD on support + query (independent loop)
        ep = episode_inputs(tasks, known, cov, TASK_IDX, S, SUPPORT, CFG)
        bb_before = _backbone(tasks)
        with torch.no_grad():
            f = bb_before.features(*ep.inputs())[:, ep.task_pos].transpose(0, 1)
        ref = _head_reference(bb_before, f, *ep.targets("all"), 3, 0.1, True, True)
        torch.testing.assert_close(
            step.adapted_mean["backbone.mean_head.weight"], ref[0].mean(0), rtol=1e-5, atol=1e-6
        )
        torch.testing.assert_close(
            step.adapted_mean["backbone.var_head.bias"], ref[3].mean(0), rtol=1e-5, atol=1e-6
        )


def test_reptile_with_sgd_optimizer_is_the_plain_update(setup):
    tasks, known, cov = setup
    a = ReptileLearner(_backbone(tasks), inner_steps=2, meta_lr=0.3)
    b = ReptileLearner(_backbone(tasks), inner_steps=2, meta_lr=0.3)
    ep = episode_inputs(tasks, known, cov, TASK_IDX, S, SUPPORT, CFG)
    a.meta_step(ep, None)
    opt = torch.optim.SGD(b.parameters(), lr=0.3)
    b.meta_step(ep, opt)
    torch.testing.assert_close(_flat(a.parameters()), _flat(b.parameters()), rtol=1e-6, atol=1e-7)


# ----------------------------------------------------------------------------- ProtoNets


def test_protonet_well_separated_embeddings_are_classified_perfectly():
    g = torch.Generator().manual_seed(0)
    learner = ProtoNetLearner(GraphForecaster(2, 2, hidden=8), n_classes=3)
    b, n_s, n_q, d = 4, 15, 20, 8
    centers = torch.randn(b, 3, d, generator=g) * 10  # a different embedding per task
    ls = torch.randint(0, 3, (b, n_s), generator=g)
    lq = torch.randint(0, 3, (b, n_q), generator=g)
    ls[:, :3] = torch.arange(3)  # every class in every support set
    fs = centers.gather(1, ls[..., None].expand(-1, -1, d)) + 0.1 * torch.randn(b, n_s, d)
    fq = centers.gather(1, lq[..., None].expand(-1, -1, d)) + 0.1 * torch.randn(b, n_q, d)
    protos = learner.prototypes(fs, ls)
    logits = learner.logits(fq, protos)
    assert logits.shape == (b, n_q, 3)
    assert float((logits.argmax(-1) == lq).float().mean()) == 1.0
    assert learner.classification_loss(logits, lq, torch.ones(b, n_q), protos) < 1e-3


def test_prototypes_are_per_class_means_batched_as_in_a_loop():
    torch.manual_seed(0)
    learner = ProtoNetLearner(GraphForecaster(2, 2, hidden=8), n_classes=2)
    f, lab = torch.randn(3, 10, 8), torch.randint(0, 2, (3, 10))
    mask = torch.rand(3, 10) > 0.3
    lab[2] = 0  # class 1 absent from task 2
    protos = learner.prototypes(f, lab, mask)
    for b in range(3):
        for k in range(2):
            keep = (lab[b] == k) & mask[b]
            assert bool(protos.present[b, k]) == bool(keep.any())
            if keep.any():
                torch.testing.assert_close(protos.centers[b, k], f[b][keep].mean(0))
    q = torch.randn(3, 4, 8)
    logits = learner.logits(q, protos)
    torch.testing.assert_close(
        logits[0, 1, 1], -((q[0, 1] - protos.centers[0, 1]) ** 2).sum(), rtol=1e-5, atol=1e-5
    )
    assert (logits[2, :, 1] < -1e30).all()  # no prototype: never predicted
    ql = torch.ones(3, 4, dtype=torch.long)
    loss = learner.classification_loss(logits, ql, torch.ones(3, 4), protos)
    assert math.isfinite(float(loss))


def test_exceedance_thresholds_use_only_the_support_window():
    g = torch.Generator().manual_seed(0)
    ys, yq = torch.randn(3, 30, 2, generator=g), torch.randn(3, 8, 2, generator=g)
    ms, mq = torch.ones_like(ys), torch.ones_like(yq)
    ms[1, :10] = 0
    lab = exceedance_labels(ys, ms, yq, mq, quantile=0.9, step=1)
    for b in range(3):
        known = ys[b, ms[b, :, 1] > 0, 1].numpy()
        assert float(lab.threshold[b]) == pytest.approx(np.quantile(known, 0.9), rel=1e-5)
    np.testing.assert_array_equal(lab.query.numpy(), (yq[..., 1] > lab.threshold[:, None]).numpy())
    above = (lab.support.bool() & lab.support_mask).sum(dim=1)
    assert above.tolist() == [3, 2, 3]  # of 30, 20 and 30 known values (linear interpolation)
    # changing the query's values changes neither the thresholds nor the support labels
    lab2 = exceedance_labels(ys, ms, yq * 50 + 7, mq, quantile=0.9, step=1)
    torch.testing.assert_close(lab2.threshold, lab.threshold)
    torch.testing.assert_close(lab2.support, lab.support)
    # a task without known support values has no threshold and no labels
    ms[2] = 0
    lab3 = exceedance_labels(ys, ms, yq, mq, quantile=0.9, step=1)
    assert math.isnan(float(lab3.threshold[2])) and not lab3.query_mask[2].any()
    with pytest.raises(
        ValueError, match=r"`step` must be an integer horizon index in \[0, 2\); got 2"
    ):
        exceedance_labels(ys, ms, yq, mq, step=2)


# ----------------------------------------------------------------------------- meta-training


LEARNERS = {
    "anil": lambda bb: ANILLearner(bb, inner_steps=2, inner_lr=0.1),
    "anil-fo": lambda bb: ANILLearner(bb, inner_steps=2, inner_lr=0.1, first_order=True),
    "maml": lambda bb: MAMLLearner(bb, inner_steps=1, inner_lr=0.05),
    "maml-fo": lambda bb: MAMLLearner(bb, inner_steps=1, inner_lr=0.05, first_order=True),
    "reptile-head": lambda bb: ReptileLearner(bb, inner_steps=3, inner_lr=0.1, head_only=True),
    "reptile": lambda bb: ReptileLearner(bb, inner_steps=2, inner_lr=0.05, meta_lr=0.5),
    "protonet": lambda bb: ProtoNetLearner(bb, bins=3),
    "ridge": lambda bb: RidgeMetaLearner(bb),
}


def _meta_train(setup, name, steps=12):
    tasks, known, cov = setup
    learner = LEARNERS[name](_backbone(tasks, seed=4))
    train = EpisodeSampler(np.arange(12), (SUPPORT, 52), 4, seed=5)
    evals = [(np.array([12, 13, 14, 2]), s) for s in (30, 46)]

    def query_loss():
        with torch.no_grad():
            return float(
                np.mean(
                    [
                        learner.loss(episode_inputs(tasks, known, cov, ti, s, SUPPORT, CFG)).item()
                        for ti, s in evals
                    ]
                )
            )

    first = query_loss()
    opt = torch.optim.Adam(learner.parameters(), 1e-2)
    if isinstance(learner, ReptileLearner):
        opt = None  # its own interpolation step (meta_lr)
    history = []
    for _ in range(steps):
        draw = train.next()
        ep = episode_inputs(tasks, known, cov, draw.tasks, draw.s, SUPPORT, CFG)
        history.append(learner.meta_step(ep, opt))
    return first, query_loss(), history


@pytest.mark.parametrize("name", sorted(LEARNERS))
def test_a_few_meta_training_steps_reduce_the_query_loss(setup, name):
    first, last, history = _meta_train(setup, name)
    assert all(math.isfinite(h) for h in history)
    assert last < first, (name, first, last)


def test_meta_training_is_seeded(setup):
    assert _meta_train(setup, "anil", steps=3) == _meta_train(setup, "anil", steps=3)


def test_protonet_exceedance_training_reduces_the_query_cross_entropy(setup):
    tasks, known, cov = setup
    learner = ProtoNetLearner(_backbone(tasks, seed=4), quantile=0.8)
    train = EpisodeSampler(np.arange(12), (SUPPORT, 52), 4, seed=5)
    evals = [episode_inputs(tasks, known, cov, np.array([12, 13, 14, 2]), s, SUPPORT, CFG)
             for s in (30, 46)]  # fmt: skip

    def held():
        with torch.no_grad():
            return float(np.mean([learner.exceedance_loss(ep).item() for ep in evals]))

    first = held()
    opt = torch.optim.Adam(learner.parameters(), 1e-2)
    for _ in range(12):
        draw = train.next()
        loss = learner.exceedance_loss(
            episode_inputs(tasks, known, cov, draw.tasks, draw.s, SUPPORT, CFG)
        )
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert held() < first


def test_protonet_forecast_is_the_mixture_of_its_class_means():
    torch.manual_seed(0)
    bb = GraphForecaster(2, 1, hidden=4)
    learner = ProtoNetLearner(bb, bins=2)
    # two well separated clusters of support embeddings, low and high targets
    f = torch.cat([torch.full((1, 5, 4), -3.0), torch.full((1, 5, 4), 3.0)], dim=1)
    f = f + 0.01 * torch.randn_like(f)
    y = torch.cat([torch.full((1, 5, 1), -1.0), torch.full((1, 5, 1), 2.0)], dim=1)
    y = y + 0.1 * torch.randn_like(y)
    state = learner.adapt(f, y, torch.ones_like(y))
    k_hi = int(state.value[0, 0].argmax())
    lo, hi = sorted(state.value[0, 0].tolist())
    assert lo == pytest.approx(float(y[0, :5].mean()), abs=1e-5)
    assert hi == pytest.approx(float(y[0, 5:].mean()), abs=1e-5)
    with torch.no_grad():
        mean, var = learner.predict(torch.full((1, 2, 4), 3.0), state)
    assert float(mean[0, 0, 0]) == pytest.approx(hi, abs=1e-4)  # next to the high prototype
    noise = float(bb.variance(torch.full((1, 2, 4), 3.0))[0, 0, 0])
    spread_hi = float(state.spread[0, 0, k_hi])
    assert spread_hi == pytest.approx(float(y[0, 5:].var(unbiased=False)), rel=1e-4)
    assert float(var[0, 0, 0]) == pytest.approx(spread_hi + noise, abs=1e-4)
    # a task with no known support target forecasts with the global heads
    empty = learner.adapt(f, y, torch.zeros_like(y))
    m2, v2 = learner.predict(f, empty)
    torch.testing.assert_close(m2, bb.mean_head(f))
    torch.testing.assert_close(v2, bb.variance(f))

"""The meta-learning method: Bayesian ridge head, pretraining from the global network,
validation on a held-out period, query spans, the fine-tuned baseline's selection, and
calendar climatology."""

import numpy as np
import pandas as pd
import pytest
import torch

from spatialmeta.data import synthetic_region_tasks
from spatialmeta.learn import LearnConfig, climatology, global_train, meta_train
from spatialmeta.learn.algorithms.global_net import FINETUNE_GRID, GlobalLearner, select_finetune
from spatialmeta.learn.algorithms.ridge import RidgeMetaLearner
from spatialmeta.learn.baselines import climatology_period
from spatialmeta.learn.episode import episode_inputs, query_origins
from spatialmeta.learn.losses import gaussian_nll
from spatialmeta.learn.model import GraphForecaster
from spatialmeta.learn.train import _prepare
from spatialmeta.tasks import RegionTaskSet, spatial_holdout


@pytest.fixture(scope="module")
def small():
    tasks = synthetic_region_tasks(16, 144, seed=0)
    held = spatial_holdout(tasks.n_regions, 0.25, seed=0)
    return tasks, tasks.split(held_out=held, test_start=tasks.time[120], support=24)


CFG = LearnConfig(
    episodes=8, val_every=4, patience=100, hidden=8, meta_batch=4, seed=1, device="cpu",
    learner="ridge",
)  # fmt: skip


def test_bayesian_ridge_head_is_the_gaussian_posterior():
    torch.manual_seed(0)
    model = GraphForecaster(2, 2, hidden=6)
    learner = RidgeMetaLearner(model, log_lambda=1.0, log_lambda_bias=-0.5)
    f, y = torch.randn(3, 9, 6), torch.randn(3, 9, 2)
    m = torch.ones(3, 9, 2)
    m[2, :5, 0] = 0
    state = learner.adapt(f, y, m)
    fq = torch.randn(3, 4, 6)
    mean, var = learner.predict(fq, state)
    prec = np.diag(np.exp([1.0] * 6 + [-0.5]))
    with torch.no_grad():
        v, r = model.variance(f).numpy(), (y - model.mean_head(f)).numpy()
        vq, mq = model.variance(fq).numpy(), model.mean_head(fq).numpy()
    for b in range(3):  # Bayesian linear regression per task and horizon, noise var known
        x = np.column_stack([f[b].numpy(), np.ones(9)])
        xq = np.column_stack([fq[b].numpy(), np.ones(4)])
        for h in range(2):
            w = m[b, :, h].numpy() / v[b, :, h]  # masked rows carry zero weight
            a = (x * w[:, None]).T @ x + prec
            coef = np.linalg.solve(a, x.T @ (w * r[b, :, h]))
            np.testing.assert_allclose(state.coef[b, h].detach(), coef, rtol=1e-3, atol=1e-5)
            cov = np.linalg.inv(a)
            ref_mean = mq[b, :, h] + xq @ coef
            ref_var = vq[b, :, h] + np.einsum("ni,ij,nj->n", xq, cov, xq)
            np.testing.assert_allclose(mean[b, :, h].detach(), ref_mean, rtol=1e-3, atol=1e-5)
            np.testing.assert_allclose(var[b, :, h].detach(), ref_var, rtol=1e-3, atol=1e-6)
    # unadapted: the backbone's own heads; a huge prior precision: (almost) no correction
    g_mean, g_var = learner.predict(fq, None)
    torch.testing.assert_close(g_mean, model.mean_head(fq))
    learner.set_prior(30.0, 30.0)
    still_mean, still_var = learner.predict(fq, learner.adapt(f, y, m))
    torch.testing.assert_close(still_mean, g_mean, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(still_var, g_var, rtol=1e-5, atol=1e-6)


def test_query_origins_spread_over_the_span():
    np.testing.assert_array_equal(query_origins(50, 5), np.arange(50, 55))
    np.testing.assert_array_equal(query_origins(50, 5, 3), np.arange(50, 55))
    q = query_origins(50, 5, 41)
    assert q[0] == 50 and q[-1] == 90 and len(q) == 5 and (np.diff(q) > 0).all()


def test_validation_period_follows_every_fitting_target(small):
    tasks, split = small
    setup = _prepare(tasks, split, CFG)
    span, h, t0 = setup.config.query_span, CFG.horizon, split.test_start
    # the span is as long as the test period (origins 120..141), within a third of the room
    assert span == min(tasks.n_time - t0 - h + 1, (t0 - split.support - 2 * (h - 1)) // 3) == 22
    (t_val,) = setup.val_s
    assert t_val + span + h - 1 == t0  # validation targets end just before test_start
    lo, hi = setup.s_range
    assert lo == split.support and hi + span - 1 + h - 1 == t_val - 1  # fitting targets before
    assert setup.val_config.query == span  # every validation origin is scored
    assert not set(setup.val_idx) & set(setup.fit_idx)
    with pytest.raises(ValueError, match=r"too short for a support window of 24, a fitting and"):
        _prepare(tasks, split, LearnConfig(query_span=60))


def test_meta_training_starts_from_the_global_network_and_never_ends_worse(small, tmp_path):
    tasks, split = small
    glob = global_train(tasks, split, CFG, progress=False)
    # a step size that wrecks the network: validation keeps the initial (pretrained) state
    wild = LearnConfig(**{**CFG.to_dict(), "lr": 1.0, "pretrained_lr": 1.0})
    meta = meta_train(tasks, split, wild, init=glob, checkpoint_dir=tmp_path, progress=False)
    vals = [r["val_loss"] for r in meta.history if "val_loss" in r]
    assert np.isfinite(meta.initial_val_loss) and meta.initial_val_loss <= min(vals)
    assert meta.best_episode == 0
    for k, v in glob.learner.backbone.state_dict().items():
        torch.testing.assert_close(meta.learner.backbone.state_dict()[k], v, msg=k)
    # the backbone moves at lr * pretrained_lr, the ridge prior at lr * prior_lr
    gentle = meta_train(tasks, split, CFG, init=glob, checkpoint_dir=tmp_path / "b", progress=False)
    assert (pd.read_csv(tmp_path / "b" / "metrics.csv").lr == CFG.lr * CFG.pretrained_lr).all()
    prior = RidgeMetaLearner(GraphForecaster(1, 1, hidden=CFG.hidden)).log_lambda
    assert not torch.equal(gentle.learner.log_lambda, prior)
    # pretrain without init: the global network is trained first, checkpointed under pretrain/
    auto = meta_train(tasks, split, CFG, checkpoint_dir=tmp_path / "c", progress=False)
    assert torch.load(tmp_path / "c" / "pretrain" / "model.pt")["kind"] == "global"
    assert auto.initial_val_loss == pytest.approx(gentle.initial_val_loss, rel=1e-6)
    with pytest.raises(TypeError, match="`init` must be a TrainResult"):
        meta_train(tasks, split, CFG, init="global", progress=False)


def test_finetuning_is_chosen_on_validation(small):
    tasks, split = small
    cfg = LearnConfig(**{**CFG.to_dict(), "finetune_select": False})
    glob = global_train(tasks, split, cfg, progress=False)
    assert glob.finetune is None and glob.learner.steps == cfg.finetune_steps
    setup = _prepare(tasks, split, cfg)
    ep = episode_inputs(tasks, setup.known, setup.covariates, setup.val_idx, setup.val_s[0],
                        split.support, setup.val_config)  # fmt: skip
    table = select_finetune(glob.learner, [ep], extra=[(7, 2e-4)])
    assert len(table) == len(FINETUNE_GRID["steps"]) * len(FINETUNE_GRID["lr"]) + 1
    best = min(table, key=lambda r: r[2])
    assert (glob.learner.steps, glob.learner.lr) == best[:2]
    # one entry recomputed by hand
    g = GlobalLearner(glob.learner.backbone, steps=7, lr=2e-4)
    f = g.features(*ep.inputs())[:, ep.task_pos].transpose(0, 1)
    ns = ep.n_support
    mean, var = g.predict(f[:, ns:], g.adapt(f[:, :ns], *ep.targets("support")))
    yq, mq = ep.targets("query")
    assert table[-1][2] == pytest.approx(float(gaussian_nll(yq, mean, var, mq).detach()), rel=1e-5)
    chosen = global_train(tasks, split, CFG, progress=False)  # finetune_select=True by default
    assert chosen.finetune["steps"] == chosen.learner.steps
    assert min(r[2] for r in chosen.finetune["candidates"]) == pytest.approx(
        [r[2] for r in chosen.finetune["candidates"]
         if r[:2] == (chosen.learner.steps, chosen.learner.lr)][0]
    )  # fmt: skip


def test_climatology_follows_the_calendar_cycle_of_the_record():
    hourly = pd.date_range("2019-03-01", periods=24 * 10, freq="h")
    assert climatology_period(hourly) == 24
    assert climatology_period(pd.date_range("1890-07-01", periods=5, freq="YS-JUL")) == 1
    assert climatology_period(pd.date_range("2000-01-01", periods=5, freq="MS")) == 12
    base = synthetic_region_tasks(8, 240, seed=1)
    rng = np.random.default_rng(0)
    series = 10 + 5 * np.sin(2 * np.pi * np.arange(240) / 24)[None] + rng.normal(size=(8, 240))
    tasks = RegionTaskSet(series.astype(np.float32), hourly, base.region_ids, base.covariates,
                          base.covariate_names, base.graph)  # fmt: skip
    held = spatial_holdout(8, 0.25, seed=0)
    split = tasks.split(held_out=held, test_start=hourly[192], support=72)
    clim = climatology(tasks, split, 6)
    hi = np.flatnonzero(held)
    window = tasks.series[hi, 120:192].astype(float)  # hours 0..23 three times
    by_hour = window.reshape(len(hi), 3, 24).mean(axis=1)
    # origin 192 is hour 0: horizons 1..6 are hours 0..5 of the day
    np.testing.assert_allclose(clim.mean[:, 0, :], by_hour[:, :6], rtol=1e-6)
    annual = climatology(tasks, split, 6, period=1)  # the support mean
    np.testing.assert_allclose(annual.mean[:, 3, 2], window.mean(axis=1), rtol=1e-6)

"""The global network baseline (supervised, fine-tuned), MAML/Reptile through meta_train,
training metrics, and the shots curve."""

import copy
import json

import numpy as np
import pandas as pd
import pytest
import torch
from torch.nn import functional as F

from spatialmeta.data import synthetic_region_tasks
from spatialmeta.learn import (
    GlobalLearner,
    LearnConfig,
    forecast_heldout,
    forecast_methods,
    global_train,
    meta_train,
    shots_curve,
)
from spatialmeta.learn.algorithms import ANILLearner, MAMLLearner, ReptileLearner
from spatialmeta.learn.algorithms.global_net import supervised_loss
from spatialmeta.learn.compare import with_support
from spatialmeta.learn.episode import episode_inputs
from spatialmeta.learn.features import (
    origin_batch,
    standardized_covariates,
    support_origins,
    window_stats,
)
from spatialmeta.learn.model import GraphForecaster
from spatialmeta.learn.train import make_learner
from spatialmeta.tasks import RegionTaskSet, spatial_holdout


def _split(tasks, t0, support, seed=0):
    held = spatial_holdout(tasks.n_regions, 0.25, seed=seed)
    return tasks.split(held_out=held, test_start=tasks.time[t0], support=support)


@pytest.fixture(scope="module")
def small():
    tasks = synthetic_region_tasks(16, 144, seed=0)
    return tasks, _split(tasks, 120, 24)


@pytest.fixture(scope="module")
def trained(small):
    tasks, split = small
    cfg = LearnConfig(episodes=6, val_every=3, hidden=8, meta_batch=4, seed=0, device="cpu")
    return (
        cfg,
        meta_train(tasks, split, cfg, progress=False),
        global_train(tasks, split, cfg, progress=False),
    )


# ----------------------------------------------------------------------------- global network


@pytest.mark.parametrize("finetune", ["head", "head+last"])
def test_finetuning_is_per_region_adam_batched(finetune):
    torch.manual_seed(0)
    bb = GraphForecaster(2, 3, hidden=8)
    g = GlobalLearner(bb, finetune=finetune, steps=4, lr=0.02)
    z, y = torch.randn(5, 12, 8), torch.randn(5, 12, 3)
    m = (torch.rand(5, 12, 3) > 0.2).float()
    m[3] = 0  # no known support target: the region keeps the global network
    state = g.adapt(z, y, m)
    mean, var = g.predict(z, state)
    g_mean, g_var = g.predict(z, None)
    for b in range(5):  # reference: one region at a time, nn.Linear copies and torch.optim.Adam
        last, mh, vh = (copy.deepcopy(x) for x in (bb.last_layer, bb.mean_head, bb.var_head))
        mods = ([last] if finetune == "head+last" else []) + [mh, vh]
        opt = torch.optim.Adam([p for mod in mods for p in mod.parameters()], lr=0.02)
        for _ in range(4):
            f = last(z[b]) if finetune == "head+last" else z[b]
            mu, v = mh(f), F.softplus(vh(f)) + 1e-3
            nll = 0.5 * (torch.log(v) + (y[b] - mu) ** 2 / v) * m[b]
            opt.zero_grad()
            (nll.sum() / m[b].sum().clamp_min(1.0)).backward()
            opt.step()
        with torch.no_grad():
            f = last(z[b]) if finetune == "head+last" else z[b]
            torch.testing.assert_close(mean[b], mh(f), rtol=1e-4, atol=1e-5)
            torch.testing.assert_close(var[b], F.softplus(vh(f)) + 1e-3, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(mean[3], g_mean[3])
    assert not torch.allclose(mean[0], g_mean[0])
    # the unadapted prediction is the backbone's own heads
    f = bb.last_layer(z) if finetune == "head+last" else z
    torch.testing.assert_close(g_mean, bb.mean_head(f))
    torch.testing.assert_close(g_var, bb.variance(f))
    with pytest.raises(ValueError, match=r"`finetune` must be one of \['head', 'head\+last'\]"):
        GlobalLearner(bb, finetune="all")


def test_supervised_loss_is_the_unadapted_query_nll(small):
    tasks, split = small
    cfg = LearnConfig(lags=6, horizon=2, query=5, hidden=8)
    torch.manual_seed(0)
    bb = GraphForecaster(len(tasks.covariate_names), 2, hidden=8)
    known = split.known(tasks.n_time)
    cov = standardized_covariates(tasks)
    ti = np.array([1, 4, 6])
    ep = episode_inputs(tasks, known, cov, ti, 60, 18, cfg)
    ours = supervised_loss(bb, ep, "query")
    ref = ANILLearner(bb, inner_steps=0).loss(ep)
    torch.testing.assert_close(ours, ref)
    # "all": every origin of the window, support and query, predicted by the network itself
    f = bb.features(*ep.inputs())[:, ep.task_pos].transpose(0, 1)
    y, m = ep.targets("all")
    nll = 0.5 * (torch.log(bb.variance(f)) + (y - bb.mean_head(f)) ** 2 / bb.variance(f))
    torch.testing.assert_close(supervised_loss(bb, ep), (nll * m).sum() / m.sum())


def test_global_network_trains_resumes_and_forecasts(small, tmp_path):
    tasks, split = small
    cfg = LearnConfig(episodes=12, val_every=4, patience=100, hidden=8, seed=1, device="cpu")
    full = global_train(tasks, split, cfg, progress=False)
    assert full.kind == "global" and isinstance(full.learner, GlobalLearner)
    vals = [r["val_loss"] for r in full.history if "val_loss" in r]
    assert len(vals) == 3 and vals[-1] < vals[0]
    first = LearnConfig(**{**cfg.to_dict(), "episodes": 8})
    global_train(tasks, split, first, checkpoint_dir=tmp_path, progress=False)
    resumed = global_train(tasks, split, cfg, checkpoint_dir=tmp_path, resume=True, progress=False)
    assert [r["train_loss"] for r in resumed.history] == [r["train_loss"] for r in full.history]
    for (k, a), (_, b) in zip(
        full.learner.state_dict().items(), resumed.learner.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), k
    with pytest.raises(ValueError, match="it checkpoints a global training, not a meta one"):
        meta_train(tasks, split, cfg, checkpoint_dir=tmp_path, resume=True, progress=False)
    glob = forecast_heldout(full.learner, tasks, split, cfg, adapt=False)
    tuned = forecast_heldout(full.learner, tasks, split, cfg)
    assert (glob.method, tuned.method) == ("global", "global_finetuned")
    assert np.isfinite(tuned.mean).all() and (tuned.std > 0).all()
    assert not np.allclose(tuned.mean, glob.mean)
    still = GlobalLearner(full.learner.backbone, steps=0)
    np.testing.assert_allclose(forecast_heldout(still, tasks, split, cfg).mean, glob.mean)


# ----------------------------------------------------------------------------- metrics


def test_training_metrics_are_logged_to_csv_and_json(small, tmp_path):
    tasks, split = small
    cfg = LearnConfig(
        episodes=10, val_every=4, patience=100, hidden=8, meta_batch=4, lr=2e-3, pretrain=False,
        learner="ridge",
    )  # fmt: skip
    res = meta_train(tasks, split, cfg, checkpoint_dir=tmp_path, progress=False)
    csv = pd.read_csv(tmp_path / "metrics.csv")
    assert list(csv.columns) == ["episode", "train_loss", "val_loss", "lr", "elapsed_s"]
    assert csv.episode.tolist() == list(range(1, 11))
    assert csv.episode[csv.val_loss.notna()].tolist() == [4, 8, 10]
    assert (csv.lr == 2e-3).all()
    assert (csv.elapsed_s > 0).all() and csv.elapsed_s.is_monotonic_increasing
    np.testing.assert_allclose(csv.train_loss, [r["train_loss"] for r in res.history], rtol=1e-12)
    history = json.loads((tmp_path / "history.json").read_text())
    assert history == res.history
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "history.json",
        "metrics.csv",
        "model.pt",
        "state.pt",
    ]  # fmt: skip  (atomic writes leave no temporary behind)
    # resuming carries the clock on
    more = LearnConfig(**{**cfg.to_dict(), "episodes": 12})
    meta_train(tasks, split, more, checkpoint_dir=tmp_path, resume=True, progress=False)
    csv2 = pd.read_csv(tmp_path / "metrics.csv")
    assert csv2.episode.tolist() == list(range(1, 13))
    assert csv2.elapsed_s.is_monotonic_increasing and csv2.elapsed_s[10] > csv.elapsed_s.iloc[-1]


# ----------------------------------------------------------------------------- MAML and Reptile


@pytest.mark.parametrize("name", ["maml", "fomaml", "reptile"])
def test_maml_and_reptile_train_resume_and_forecast(name, tmp_path):
    tasks = synthetic_region_tasks(16, 72, seed=0)
    split = _split(tasks, 60, 18)
    cfg = LearnConfig(lags=6, horizon=2, query=4, hidden=8, meta_batch=3, episodes=4, val_every=2,
                      patience=100, seed=1, learner=name, inner_steps=1, inner_lr=0.05,
                      device="cpu", pretrain=False)  # fmt: skip
    full = meta_train(tasks, split, cfg, progress=False)
    kind = ReptileLearner if name == "reptile" else MAMLLearner
    assert type(full.learner) is kind and not getattr(full.learner, "head_only", False)
    assert getattr(full.learner, "first_order", True) == (name != "maml")
    assert all(np.isfinite(r["train_loss"]) for r in full.history)
    first = LearnConfig(**{**cfg.to_dict(), "episodes": 2})
    meta_train(tasks, split, first, checkpoint_dir=tmp_path, progress=False)
    resumed = meta_train(tasks, split, cfg, checkpoint_dir=tmp_path, resume=True, progress=False)
    assert [r["train_loss"] for r in resumed.history] == [r["train_loss"] for r in full.history]
    for (k, a), (_, b) in zip(
        full.learner.state_dict().items(), resumed.learner.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), k
    f = forecast_heldout(full.learner, tasks, split, cfg)
    assert f.method == "meta" and np.isfinite(f.mean).all() and (f.std > 0).all()
    assert f.mean.shape == (split.held_out.sum(), tasks.n_time - 60 - 1, 2)
    # per-region full-network adaptation, in blocks of one region or all at once: the same
    one = forecast_heldout(full.learner, tasks, split, cfg, chunk=1)
    np.testing.assert_allclose(one.mean, f.mean, rtol=1e-5, atol=1e-5)
    unadapted = forecast_heldout(full.learner, tasks, split, cfg, adapt=False)
    assert unadapted.method == "meta_noadapt" and not np.allclose(f.mean, unadapted.mean)
    if name == "maml":  # zero inner steps through the per-region path is the unadapted network
        zero = make_learner("maml", full.learner.backbone, inner_steps=0)
        np.testing.assert_allclose(
            forecast_heldout(zero, tasks, split, cfg).mean, unadapted.mean, rtol=1e-5, atol=1e-5
        )


# ----------------------------------------------------------------------------- shots


def test_short_support_origins_mask_lags_before_the_record(small):
    tasks, split = small
    np.testing.assert_array_equal(support_origins(120, 6, 12, 3), np.arange(115, 120))
    np.testing.assert_array_equal(support_origins(120, 24, 12, 3), np.arange(108, 118))
    known = np.ones((tasks.n_regions, tasks.n_time), bool)
    norm = window_stats(tasks.series, known, 0, 24)
    b = origin_batch(tasks, known, np.array([3, 143]), norm, lags=12, horizon=3)
    np.testing.assert_array_equal(b.lag_mask[0, 0].numpy(), [0] * 9 + [1] * 3)
    assert (b.lags[0, :, :9] == 0).all()
    np.testing.assert_array_equal(b.target_mask[1, 0].numpy(), [True, False, False])
    with pytest.raises(ValueError, match=r"origins must lie in \[0, 144\]"):
        origin_batch(tasks, known, np.array([-1]), norm, lags=12, horizon=3)


def test_few_shot_forecasts_use_only_the_short_support(small, trained):
    tasks, split = small
    cfg, meta, glob = trained
    sp = with_support(tasks, split, 6)
    fc = forecast_methods(tasks, sp, cfg, meta=meta, global_=glob)
    assert [f.method for f in fc] == ["meta", "meta_noadapt", "global", "global_finetuned",
                                      "climatology", "persistence", "ridge_ar",
                                      "expanding_climatology", "neighbour_climatology",
                                      "eb_climatology", "anomaly_persistence"]  # fmt: skip
    for f in fc:
        assert np.isfinite(f.mean).all(), f.method
        assert f.std is None or (np.isfinite(f.std).all() and (f.std > 0).all()), f.method
    # values of held-out regions before their 6-step support window change no forecast
    series = tasks.series.copy()
    held = np.flatnonzero(split.held_out)
    series[held, : split.test_start - 6] += 50.0
    series[held[0], 10:20] = np.nan
    moved = RegionTaskSet(series, tasks.time, tasks.region_ids, tasks.covariates,
                          tasks.covariate_names, tasks.graph, "tas", "K", tasks.area_km2)  # fmt: skip
    for a, b in zip(fc, forecast_methods(moved, sp, cfg, meta=meta, global_=glob), strict=True):
        np.testing.assert_allclose(b.mean, a.mean, rtol=1e-6, err_msg=a.method)


def test_shots_curve_rows_and_bad_lengths(small, trained):
    tasks, split = small
    cfg, meta, glob = trained
    curve = shots_curve(tasks, split, cfg, (6, 12, 48), meta=meta, global_=glob)
    assert list(curve.columns[:4]) == ["support", "method", "rmse", "crps"]
    assert len(curve) == 3 * 10 and np.isfinite(curve[["rmse", "crps"]].to_numpy()).all()
    # persistence uses the last value only: the same at every support length
    pers = curve[curve.method == "persistence"]
    np.testing.assert_allclose(pers.rmse, pers.rmse.iloc[0], rtol=1e-12)
    with pytest.raises(ValueError, match=r"support of 121 steps does not fit .* shots <= 120"):
        shots_curve(tasks, split, cfg, (6, 121), meta=meta)
    with pytest.raises(ValueError, match="must be a positive integer; got 0"):
        with_support(tasks, split, 0)
    series = tasks.series.copy()
    held = np.flatnonzero(split.held_out)
    series[held[1], 114:120] = np.nan
    gap = RegionTaskSet(series, tasks.time, tasks.region_ids, tasks.covariates,
                        tasks.covariate_names, tasks.graph)  # fmt: skip
    with pytest.raises(
        ValueError, match=rf"no value in a 6-step support window: \['{tasks.region_ids[held[1]]}'\]"
    ):
        with_support(gap, split, 6)

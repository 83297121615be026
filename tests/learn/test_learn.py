import numpy as np
import pytest
import torch
from scipy import integrate, stats

from spatialmeta.data import synthetic_region_tasks
from spatialmeta.learn import LearnConfig, climatology, crps_gaussian, meta_train, persistence
from spatialmeta.learn.algorithms.ridge import RidgeMetaLearner
from spatialmeta.learn.evaluate import hac_mean_cov
from spatialmeta.learn.features import origin_batch, window_stats
from spatialmeta.learn.model import GraphForecaster
from spatialmeta.tasks import RegionTaskSet, spatial_holdout


def _tasks(n_time=120, seed=0):
    return synthetic_region_tasks(16, n_time, seed=seed)


def test_lags_never_reach_the_origin():
    tasks = _tasks()
    values = np.broadcast_to(np.arange(tasks.n_time, dtype=np.float32), tasks.series.shape).copy()
    tasks = RegionTaskSet(
        values, tasks.time, tasks.region_ids, tasks.covariates, tasks.covariate_names, tasks.graph
    )
    known = np.ones_like(values, dtype=bool)
    norm = window_stats(values, known, 0, 1)  # mean 0... std 1 for a single value
    b = origin_batch(tasks, known, np.array([12, 50]), norm, lags=12, horizon=3)
    np.testing.assert_array_equal(b.lags[0, 0].numpy(), np.arange(0, 12))
    np.testing.assert_array_equal(b.lags[1, 3].numpy(), np.arange(38, 50))
    np.testing.assert_array_equal(b.target[1, 0].numpy(), [50, 51, 52])


def test_unknown_values_are_masked():
    tasks = _tasks()
    held = np.zeros(tasks.n_regions, bool)
    held[0] = True
    split = tasks.split(held_out=held, test_start=tasks.time[100], support=24)
    known = split.known(tasks.n_time)
    norm = window_stats(tasks.series, known, 76, 100)
    b = origin_batch(tasks, known, np.array([80, 100]), norm, lags=12, horizon=2)
    assert b.lag_mask[0, 0].sum() == 4  # region 0 known from step 76: of lags 68..79, 76..79
    assert (b.lags[0, 0, :8] == 0).all()
    assert b.lag_mask[1, 0].all()


def test_window_stats_match_numpy():
    x = np.random.default_rng(1).normal(size=(3, 40)).astype(np.float32)
    known = np.ones_like(x, dtype=bool)
    known[1, :10] = False
    w = window_stats(x, known, 5, 30)
    np.testing.assert_allclose(w.mean[0], x[0, 5:30].mean(), rtol=1e-5)
    np.testing.assert_allclose(w.std[1], x[1, 10:30].std(ddof=1), rtol=1e-5)


def test_backbone_equivariant_to_node_permutation():
    torch.manual_seed(0)
    tasks = _tasks()
    model = GraphForecaster(len(tasks.covariate_names), 3, hidden=16).eval()
    ei = tasks.graph.data.edge_index
    r = tasks.n_regions
    lags = torch.randn(4, r, 12)
    mask = torch.ones(4, r, 12)
    cal = torch.randn(4, 4 * 3)
    cov = torch.randn(r, len(tasks.covariate_names))
    perm = torch.randperm(r)
    inv = torch.argsort(perm)
    out = model.features(lags, mask, cal, cov, ei)
    ei_p = inv[ei]  # node i becomes inv[i]
    ei_p = ei_p[:, torch.randperm(ei_p.shape[1])]  # and edge order does not matter
    out_p = model.features(lags[:, perm], mask[:, perm], cal, cov[perm], ei_p)
    torch.testing.assert_close(out_p, out[:, perm], rtol=1e-5, atol=1e-5)


def test_ridge_adaptation_is_closed_form_ridge_and_batched():
    torch.manual_seed(0)
    model = GraphForecaster(2, 2, hidden=8)
    learner = RidgeMetaLearner(model, log_lambda=0.5, log_lambda_bias=None, bayes=False)
    feats = torch.randn(3, 10, 8, dtype=torch.float32)
    y = torch.randn(3, 10, 2)
    m = torch.ones(3, 10, 2)
    m[1, :4, 1] = 0
    state = learner.adapt(feats, y, m)
    assert state.cov is None  # plain ridge: no posterior covariance
    coef = state.coef.detach().numpy()
    lam = float(np.exp(0.5))
    for b in range(3):  # per-task, per-horizon numpy reference
        x = np.column_stack([feats[b].numpy(), np.ones(10)])
        resid = (y[b] - model.mean_head(feats[b])).detach().numpy()
        for h in range(2):
            keep = m[b, :, h].numpy() > 0
            xa, ra = x[keep], resid[keep, h]
            ref = np.linalg.solve(xa.T @ xa + lam * np.eye(9), xa.T @ ra)
            np.testing.assert_allclose(coef[b, h], ref, rtol=1e-3, atol=1e-4)


def test_crps_gaussian_matches_numerical_integral():
    y, mu, sd = 0.7, 0.2, 1.3
    ref, _ = integrate.quad(
        lambda x: (stats.norm.cdf(x, mu, sd) - (x >= y)) ** 2, -30, 30, points=[y]
    )
    assert float(crps_gaussian(np.array(y), np.array(mu), np.array(sd))) == pytest.approx(
        ref, rel=1e-7
    )


def test_hac_covariance_lag_zero_is_sample_covariance():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(2, 200)), rng.normal(size=(2, 200))
    cov = hac_mean_cov(a, b, lags=0)
    ref = np.cov(np.stack([a[0], b[0]]), bias=True) / 200
    np.testing.assert_allclose(cov[0], ref, rtol=1e-12)


def test_baselines_use_only_support_and_past():
    tasks = _tasks()
    held = spatial_holdout(tasks.n_regions, 0.25, seed=0)
    split = tasks.split(held_out=held, test_start=tasks.time[96], support=24)
    clim = climatology(tasks, split, 3)
    hi = np.flatnonzero(held)
    window = tasks.series[hi, 72:96]
    # month of origin 96 is January (index 0): mean of steps 72 and 84
    np.testing.assert_allclose(clim.mean[:, 0, 0], (window[:, 0] + window[:, 12]) / 2, rtol=1e-6)
    pers = persistence(tasks, split, 3)
    np.testing.assert_array_equal(pers.mean[:, 5, 2], tasks.series[hi, 96 + 5 - 1])


def test_meta_training_is_seeded_and_learns(tmp_path):
    tasks = _tasks(n_time=144)
    split = tasks.split(
        held_out=spatial_holdout(tasks.n_regions, 0.25, seed=0),
        test_start=tasks.time[120],
        support=24,
    )
    cfg = LearnConfig(
        episodes=40, val_every=10, patience=100, hidden=16, meta_batch=6, seed=3, pretrain=False,
        learner="ridge",
    )  # fmt: skip
    a = meta_train(tasks, split, cfg, progress=False, checkpoint_dir=tmp_path)
    b = meta_train(tasks, split, cfg, progress=False)
    assert [r["train_loss"] for r in a.history] == [r["train_loss"] for r in b.history]
    vals = [r["val_loss"] for r in a.history if "val_loss" in r]
    assert vals[-1] < vals[0]
    assert (tmp_path / "model.pt").exists() and (tmp_path / "history.json").exists()
    state = torch.load(tmp_path / "model.pt")
    assert state["config"]["episodes"] == 40


def test_support_must_hold_lags_and_horizon():
    tasks = _tasks()
    split = tasks.split(
        held_out=spatial_holdout(tasks.n_regions, 0.25), test_start=tasks.time[96], support=10
    )
    with pytest.raises(ValueError, match="must hold at least lags \\+ horizon = 15"):
        meta_train(tasks, split, LearnConfig(learner="ridge"), progress=False)


def test_per_task_normalization_is_undone_on_output():
    from spatialmeta.learn import forecast_heldout

    tasks = _tasks(n_time=144)
    held = spatial_holdout(tasks.n_regions, 0.25, seed=0)
    split = tasks.split(held_out=held, test_start=tasks.time[120], support=24)
    cfg = LearnConfig(
        episodes=5, val_every=5, hidden=8, meta_batch=4, seed=0, pretrain=False, learner="ridge"
    )
    result = meta_train(tasks, split, cfg, progress=False)
    base = forecast_heldout(result.learner, tasks, split, cfg)
    # rescale and shift every region's series (°C → °F, say): normalized inputs are unchanged,
    # so the forecasts must be the same affine map of the original forecasts
    scaled = RegionTaskSet(
        tasks.series * 1.8 + 32.0, tasks.time, tasks.region_ids, tasks.covariates,
        tasks.covariate_names, tasks.graph,
    )  # fmt: skip
    moved = forecast_heldout(result.learner, scaled, split, cfg)
    np.testing.assert_allclose(moved.mean, base.mean * 1.8 + 32.0, rtol=1e-5)
    np.testing.assert_allclose(moved.std, base.std * 1.8, rtol=1e-4)


@pytest.mark.parametrize("learner", ["ridge", "hier"])
def test_resume_reproduces_the_uninterrupted_run(tmp_path, learner):
    tasks = _tasks(n_time=144)
    split = tasks.split(
        held_out=spatial_holdout(tasks.n_regions, 0.25, seed=0),
        test_start=tasks.time[120],
        support=24,
    )
    full_cfg = LearnConfig(
        episodes=30, val_every=10, patience=100, hidden=8, meta_batch=4, seed=2, pretrain=False,
        learner=learner,
    )  # fmt: skip
    full = meta_train(tasks, split, full_cfg, progress=False)
    # "interrupted" after 20 episodes (the last checkpoint), then resumed to 30
    first = LearnConfig(**{**full_cfg.to_dict(), "episodes": 20})
    meta_train(tasks, split, first, checkpoint_dir=tmp_path, progress=False)
    resumed = meta_train(
        tasks, split, full_cfg, checkpoint_dir=tmp_path, resume=True, progress=False
    )
    assert [r["train_loss"] for r in resumed.history] == [r["train_loss"] for r in full.history]
    for (k, a), (_, b) in zip(
        full.learner.state_dict().items(), resumed.learner.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), k
    other = LearnConfig(**{**full_cfg.to_dict(), "hidden": 16})
    with pytest.raises(ValueError, match=r"settings \['hidden'\] differ"):
        meta_train(tasks, split, other, checkpoint_dir=tmp_path, resume=True, progress=False)


def test_ridge_ar_recovers_an_ar1_and_uses_only_support():
    from spatialmeta.learn import ridge_ar

    tasks = _tasks(n_time=200)
    rng = np.random.default_rng(4)
    x = np.zeros((tasks.n_regions, tasks.n_time))
    for t in range(1, tasks.n_time):  # a pure AR(1) per region (test data, small)
        x[:, t] = 0.8 * x[:, t - 1] + rng.normal(size=tasks.n_regions)
    ar = RegionTaskSet((10 + x).astype(np.float32), tasks.time, tasks.region_ids, tasks.covariates,
                       tasks.covariate_names, tasks.graph)  # fmt: skip
    held = spatial_holdout(ar.n_regions, 0.25, seed=0)
    split = ar.split(held_out=held, test_start=ar.time[120], support=72)
    f = ridge_ar(ar, split, 2, lags=3, alpha=1e-6)
    # one-step forecast ≈ 10 + 0.8 (y[o-1] - 10): compare with the oracle AR(1) forecast
    y_prev = ar.series[np.flatnonzero(held)][:, f.origins - 1].astype(float)
    oracle = 10 + 0.8 * (y_prev - 10)
    assert np.mean(np.abs(f.mean[:, :, 0] - oracle)) < 0.25
    # values after test_start never enter the fit: changing the future changes no coefficient
    future = ar.series.copy()
    future[:, 150:] += 100.0
    moved = ridge_ar(RegionTaskSet(future, ar.time, ar.region_ids, ar.covariates, ar.covariate_names, ar.graph),
                     split, 2, lags=3, alpha=1e-6)  # fmt: skip
    early = f.origins < 150 - 3
    np.testing.assert_allclose(moved.mean[:, early], f.mean[:, early], rtol=1e-10)


def test_anil_learner_trains_and_forecasts_through_the_same_path():
    from spatialmeta.learn import forecast_heldout

    tasks = _tasks(n_time=144)
    split = tasks.split(
        held_out=spatial_holdout(tasks.n_regions, 0.25, seed=0),
        test_start=tasks.time[120],
        support=24,
    )
    cfg = LearnConfig(episodes=20, val_every=10, patience=100, hidden=8, meta_batch=4, seed=1,
                      learner="anil", pretrain=False)  # fmt: skip
    res = meta_train(tasks, split, cfg, progress=False)
    assert type(res.learner).__name__ == "ANILLearner"
    vals = [r["val_loss"] for r in res.history if "val_loss" in r]
    assert vals[-1] < vals[0]
    f = forecast_heldout(res.learner, tasks, split, cfg)
    assert np.isfinite(f.mean).all() and (f.std > 0).all()
    with pytest.raises(
        ValueError,
        match=r"`learner` must be one of \['anil', 'fomaml', 'hier', 'maml', 'protonet', 'reptile', "
        r"'ridge'\]; got 'bogus'",
    ):
        meta_train(tasks, split, LearnConfig(learner="bogus"), progress=False)

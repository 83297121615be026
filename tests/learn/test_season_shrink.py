"""The input normalization's seasonal pseudo-count, fitted on training regions (issue 12)."""

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch

from spatialmeta.data import synthetic_region_tasks
from spatialmeta.learn import LearnConfig
from spatialmeta.learn.features import (
    SEASON_SHRINK,
    SHRINK_GRID,
    fit_season_shrink,
    window_stats,
)
from spatialmeta.learn.forecast import forecast_heldout
from spatialmeta.learn.train import _prepare, global_train
from spatialmeta.tasks import spatial_holdout

T = 144


def _with_series(series, time=None):
    base = synthetic_region_tasks(16, series.shape[1], seed=0)
    assert base.n_regions == series.shape[0]
    return dataclasses.replace(
        base, series=series.astype(np.float32), time=base.time if time is None else time
    )


def _probe(tasks, known=None):
    known = np.ones(tasks.series.shape, bool) if known is None else known
    return fit_season_shrink(
        tasks, known, np.arange(10), np.array([36, 60, 84]), np.arange(10, 15), 108,
        support=24, span=24, lags=12, horizon=3,
    )  # fmt: skip


def _cycles(sign, noise, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(T)
    cyc = 6 * np.sin(2 * np.pi * t / 12)
    return 10 + sign[:, None] * cyc[None] + noise * rng.normal(size=(len(sign), T))


def test_region_specific_cycles_remove_the_support_cycle_whole():
    """Each region its own cycle shape (as SST tiles across latitudes and hemispheres): no
    shared linear map of lags and calendar gives it, the support's own calendar means
    (pseudo-count near 0) fit best; the plain mean leaves it to one lag a cycle back."""
    rng = np.random.default_rng(0)
    shape = 4 * rng.normal(size=(15, 12))
    x = 10 + shape[:, np.arange(T) % 12] + rng.normal(size=(15, T))
    shrink, rmse = _probe(_with_series(x))
    assert shrink <= 0.5
    assert rmse[0] < 0.97 * rmse[-1]


def test_no_cycle_keeps_the_plain_mean():
    """White noise around a level: calendar means of two values per slot only add noise."""
    shrink, rmse = _probe(_with_series(_cycles(np.zeros(15), 1.0)))
    assert shrink >= 8.0
    assert rmse[0] > rmse[list(SHRINK_GRID).index(shrink)] * 1.05


def test_annual_data_has_no_cycle_to_shrink():
    time = pd.date_range("1900", periods=T, freq="YS")
    shrink, rmse = _probe(_with_series(_cycles(np.ones(15), 0.3), time=time))
    assert shrink == SEASON_SHRINK and np.isnan(rmse).all()


def test_values_after_the_known_cut_are_not_read():
    series = _cycles(np.where(np.arange(15) < 8, 1.0, -1.0), 0.5)
    known = np.ones(series.shape, bool)
    known[:, 134:] = False
    a = _probe(_with_series(series), known)
    series[:, 134:] = 1e6
    b = _probe(_with_series(series), known)
    assert a[0] == b[0]
    np.testing.assert_array_equal(a[1], b[1])


def test_window_stats_shrink_limits():
    """Pseudo-count 0 is the window's calendar means; inf the plain mean."""
    x = _cycles(np.ones(15), 0.5)[:2]
    known = np.ones(x.shape, bool)
    zero = window_stats(x, known, 0, 36, 12, shrink=0.0)
    slots = x[:, :36].reshape(2, 3, 12).mean(1)
    np.testing.assert_allclose(zero.level(np.arange(12)), slots, rtol=1e-5)
    flat = window_stats(x, known, 0, 36, 12, shrink=np.inf)
    np.testing.assert_allclose(flat.level(np.arange(12)), x[:, :36].mean(1, keepdims=True).repeat(12, 1), rtol=1e-5)  # fmt: skip


def _own_cycles(seed=0):
    rng = np.random.default_rng(seed)
    shape = 4 * rng.normal(size=(15, 12))
    return 10 + shape[:, np.arange(T) % 12] + rng.normal(size=(15, T))


def test_training_fits_it_and_the_forecast_uses_it():
    tasks = _with_series(_own_cycles())
    split = tasks.split(
        held_out=spatial_holdout(tasks.n_regions, 0.25, seed=0),
        test_start=tasks.time[120],
        support=24,
    )
    cfg = LearnConfig(episodes=20, val_every=10, hidden=8, seed=0, device="cpu", horizon=2)
    setup = _prepare(tasks, split, cfg)
    assert setup.shrink <= 0.5  # the data's choice, not the default
    res = global_train(tasks, split, cfg, progress=False)
    assert float(res.learner.backbone.season_shrink) == setup.shrink
    before = forecast_heldout(res.learner, tasks, split, cfg, adapt=False)
    res.learner.backbone.season_shrink.fill_(np.inf)
    after = forecast_heldout(res.learner, tasks, split, cfg, adapt=False)
    assert not np.allclose(before.mean, after.mean)


def test_training_state_round_trips_the_shrink(tmp_path):
    tasks = synthetic_region_tasks(16, 120, seed=0)
    split = tasks.split(
        held_out=spatial_holdout(tasks.n_regions, 0.25, seed=0),
        test_start=tasks.time[96],
        support=24,
    )
    cfg = LearnConfig(episodes=10, val_every=5, hidden=8, seed=0, device="cpu")
    res = global_train(tasks, split, cfg, checkpoint_dir=tmp_path, progress=False)

    state = torch.load(tmp_path / "model.pt", weights_only=True)["state_dict"]
    key = next(k for k in state if k.endswith("season_shrink"))
    assert float(state[key]) == pytest.approx(float(res.learner.backbone.season_shrink))

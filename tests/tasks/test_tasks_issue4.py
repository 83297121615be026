"""Task abstraction: windows, spatial hold-out with buffer, persistence, sampling, estimates."""

import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr
from scipy import stats

from spatialmeta.data import synthetic_regions
from spatialmeta.learn import LearnConfig
from spatialmeta.learn.algorithms.ridge import RidgeMetaLearner
from spatialmeta.learn.episode import episode_inputs
from spatialmeta.learn.features import standardized_covariates
from spatialmeta.learn.model import GraphForecaster
from spatialmeta.meta_analysis import pool
from spatialmeta.regions import contiguity_graph
from spatialmeta.tasks import (
    EpisodeSampler,
    RegionTaskSet,
    StudyTaskSet,
    load_region_tasks,
    load_study_tasks,
    spatial_holdout,
    support_query_origins,
)


@pytest.fixture(scope="module")
def tasks():
    graph = contiguity_graph(synthetic_regions((0, 40, 30, 60), 40, seed=1))
    rng = np.random.default_rng(0)
    n_time = 240
    t = np.arange(n_time)
    trend = rng.uniform(0.0, 0.05, graph.num_nodes)  # per month
    series = (
        280
        + 5 * np.cos(2 * np.pi * t / 12)[None]
        + trend[:, None] * t[None]
        + rng.normal(size=(graph.num_nodes, n_time))
    )
    da = xr.DataArray(series.T, dims=("time", "region"), name="tas", attrs={"units": "K"},
                      coords={"time": pd.date_range("2000-01", periods=n_time, freq="MS"), "region": graph.region_ids})  # fmt: skip
    ts = RegionTaskSet.from_dataarray(da, graph)
    return ts, trend


def test_support_and_query_never_overlap_nor_look_ahead():
    for s, support, lags, horizon, query in [
        (36, 36, 12, 3, 12),
        (100, 24, 6, 1, 5),
        (50, 15, 12, 3, 1),
    ]:
        sup, qry = support_query_origins(s, support, lags, horizon, query)
        sup_targets = sup[:, None] + np.arange(horizon)
        assert sup_targets.max() < s <= qry.min()  # support targets end before the query starts
        assert (sup - lags).min() >= s - support  # support inputs stay in the support window
        assert not set(sup_targets.ravel()) & set((qry[:, None] + np.arange(horizon)).ravel())
    with pytest.raises(ValueError, match="lags \\+ horizon = 15"):
        support_query_origins(40, 10, 12, 3, 4)


def test_buffered_holdout_has_no_training_neighbour(tasks):
    ts, _ = tasks
    held = spatial_holdout(ts.n_regions, 0.15, seed=3)
    split = ts.split(held_out=held, test_start="2015-01", support=24, buffer=1)
    src, dst = ts.graph.data.edge_index.numpy()
    touching = split.held_out[src] & split.training[dst]
    assert not touching.any()
    assert split.excluded.any() and not (split.excluded & split.held_out).any()
    assert not split.known(ts.n_time)[split.excluded].any()
    # without a buffer, held-out regions do touch training regions
    plain = ts.split(held_out=held, test_start="2015-01", support=24)
    assert (plain.held_out[src] & plain.training[dst]).any()


def test_region_tasks_round_trip_zarr(tasks, tmp_path):
    ts, _ = tasks
    ts.to_zarr(tmp_path / "tasks.zarr")
    back = load_region_tasks(tmp_path / "tasks.zarr")
    np.testing.assert_array_equal(back.series, ts.series)
    np.testing.assert_array_equal(back.covariates, ts.covariates)
    assert (
        back.covariate_names == ts.covariate_names
        and back.variable == ts.variable
        and back.units == "K"
    )
    assert (back.time == ts.time).all() and list(back.region_ids) == list(ts.region_ids)
    for key in ("x", "edge_index", "edge_attr", "pos", "island"):
        assert torch.equal(back.graph.data[key], ts.graph.data[key]), key
    assert back.graph.node_features == ts.graph.node_features


def test_study_tasks_round_trip_parquet(tmp_path):
    df = pd.DataFrame(
        {
            "study": ["a", "b", "c"],
            "yi": [0.1, -0.2, 0.35],
            "vi": [0.01, 0.02, 0.05],
            "year": [1990, 2001, 2012],
        }
    )
    st = StudyTaskSet.from_frame(df, label="study", mods=["year"], measure="SMD")
    st.to_parquet(tmp_path / "studies.parquet")
    back = load_study_tasks(tmp_path / "studies.parquet")
    np.testing.assert_array_equal(back.yi, st.yi)
    np.testing.assert_array_equal(back.vi, st.vi)
    assert list(back.labels) == ["a", "b", "c"] and back.measure == "SMD"
    pd.testing.assert_frame_equal(back.mods, st.mods)


def test_invalid_regions_raise_or_drop_with_names(tasks):
    ts, _ = tasks
    values = ts.series.copy()
    values[3] = np.nan
    values[5, :-10] = np.nan  # only 10 values
    da = xr.DataArray(
        values.T, dims=("time", "region"), coords={"time": ts.time, "region": ts.region_ids}
    )
    with pytest.raises(ValueError, match=f"{ts.region_ids[3]} \\(0 values\\)"):
        RegionTaskSet.from_dataarray(da, ts.graph)
    with pytest.warns(UserWarning, match=f"dropped 2 region.*{ts.region_ids[5]} \\(10 values\\)"):
        kept = RegionTaskSet.from_dataarray(da, ts.graph, min_length=36, on_invalid="drop")
    assert kept.n_regions == ts.n_regions - 2
    assert kept.graph.num_nodes == kept.n_regions
    assert int(kept.graph.data.edge_index.max()) < kept.n_regions
    assert ts.region_ids[3] not in kept.region_ids


def test_sampler_is_seeded_and_resumes_exactly():
    a = EpisodeSampler(np.arange(30), (40, 200), 8, seed=5)
    first = [a.next() for _ in range(5)]
    state = a.state_dict()
    rest = [a.next() for _ in range(5)]
    b = EpisodeSampler(np.arange(30), (40, 200), 8, seed=5)
    b.load_state_dict(state)
    again = [b.next() for _ in range(5)]
    assert [e.s for e in rest] == [e.s for e in again]
    assert all(np.array_equal(x.tasks, y.tasks) for x, y in zip(rest, again, strict=True))
    assert all(len(set(e.tasks)) == 8 for e in first)


def test_subgraph_episode_equals_full_graph(tasks):
    ts, _ = tasks
    split = ts.split(
        held_out=spatial_holdout(ts.n_regions, 0.2, seed=0), test_start="2015-01", support=36
    )
    known = split.known(ts.n_time)
    known[:, split.test_start :] = False
    torch.manual_seed(0)
    learner = RidgeMetaLearner(GraphForecaster(len(ts.covariate_names), 3, hidden=16)).eval()
    cov = standardized_covariates(ts)
    batch = np.flatnonzero(split.training)[:6]
    full = learner.loss(episode_inputs(ts, known, cov, batch, 100, 36, LearnConfig(hidden=16)))
    sub = learner.loss(
        episode_inputs(ts, known, cov, batch, 100, 36, LearnConfig(hidden=16, subgraph_hops=1))
    )
    torch.testing.assert_close(sub, full, rtol=1e-5, atol=1e-6)


def test_region_trend_estimates_and_pooling(tasks):
    ts, trend = tasks
    est = ts.estimates(per_years=10)
    t_years = (ts.time - ts.time[0]).days.to_numpy() / 365.25 / 10
    for r in (0, 7, 19):
        ref = stats.linregress(t_years, ts.series[r].astype(float))
        assert est.yi[r] == pytest.approx(ref.slope, rel=1e-6)
    # with no HAC lags the variance is the heteroskedasticity-robust (HC0) one
    hc0 = ts.estimates(per_years=10, hac_lags=0).vi[0]
    dt = t_years - t_years.mean()
    y = ts.series[0].astype(float)
    e = y - y.mean() - est.yi[0] * dt
    assert hc0 == pytest.approx((dt**2 * e**2).sum() / (dt**2).sum() ** 2, rel=1e-9)
    np.testing.assert_allclose(est.yi, trend * 120, atol=0.35)  # true trend per decade
    pooled = pool(ts, method="REML")
    assert pooled.k == ts.n_regions
    assert pooled.ci_lb < float(np.mean(trend * 120)) < pooled.ci_ub
    assert pooled.tau2 > 0  # trends truly differ between regions
    assert list(est.mods.columns) == list(ts.covariate_names)


def test_directed_knn_graph_survives_subsetting_and_zarr(tasks, tmp_path):
    from spatialmeta.data import synthetic_regions
    from spatialmeta.regions import knn_graph
    from spatialmeta.tasks import subgraph

    regions = synthetic_regions((0, 40, 30, 60), 40, seed=1)
    g = knn_graph(regions, 3, symmetric=False)
    assert g.directed
    keep = np.ones(g.num_nodes, bool)
    keep[:5] = False
    assert subgraph(g, keep).directed
    ts, _ = tasks
    directed_ts = RegionTaskSet(
        ts.series, ts.time, ts.region_ids, ts.covariates, ts.covariate_names, g
    )
    directed_ts.to_zarr(tmp_path / "d.zarr")
    assert load_region_tasks(tmp_path / "d.zarr").graph.directed

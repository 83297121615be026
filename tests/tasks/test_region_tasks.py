import numpy as np
import pandas as pd
import pytest
import xarray as xr

from spatialmeta.data import synthetic_regions
from spatialmeta.regions import contiguity_graph
from spatialmeta.tasks import Estimates, RegionTaskSet, StudyTaskSet, spatial_holdout


@pytest.fixture(scope="module")
def taskset():
    regions = synthetic_regions((0, 40, 12, 52), 12, seed=0)
    graph = contiguity_graph(regions)
    time = pd.date_range("2000-01", periods=60, freq="MS")
    values = np.arange(60.0)[None, :] + 100.0 * np.arange(graph.num_nodes)[:, None]
    # store regions in reverse order: from_dataarray must reorder them like the graph
    da = xr.DataArray(
        values[::-1].T,
        dims=("time", "region"),
        coords={"time": time, "region": graph.region_ids[::-1]},
        name="tas",
    )
    return RegionTaskSet.from_dataarray(da, graph)


def test_from_dataarray_orders_like_graph(taskset):
    np.testing.assert_array_equal(taskset.series[:, 0], 100.0 * np.arange(taskset.n_regions))
    assert taskset.covariate_names[:3] == ("lon", "lat", "area_km2")
    assert taskset.area_km2 is not None and (taskset.area_km2 > 0).all()


def test_split_known_windows(taskset):
    held = spatial_holdout(taskset.n_regions, 0.25, seed=2)
    split = taskset.split(held_out=held, test_start="2003-01", support=12)
    assert split.test_start == 36
    known = split.known(taskset.n_time)
    assert known[~held].all()
    # held-out regions are known exactly from test_start - support
    assert not known[held, :24].any() and known[held, 24:].all()


def test_spatial_holdout_seeded():
    a, b = spatial_holdout(50, 0.2, seed=1), spatial_holdout(50, 0.2, seed=1)
    np.testing.assert_array_equal(a, b)
    assert a.sum() == 10 and not np.array_equal(a, spatial_holdout(50, 0.2, seed=2))
    with pytest.raises(ValueError, match=r"`fraction` must be in \(0, 1\)"):
        spatial_holdout(10, 1.5)


def test_split_errors(taskset):
    held = np.zeros(taskset.n_regions, bool)
    with pytest.raises(ValueError, match="outside the series"):
        taskset.split(held_out=held, test_start="1990-01", support=6)
    with pytest.raises(ValueError, match="does not fit before test_start"):
        taskset.split(held_out=held, test_start="2001-01", support=24)
    with pytest.raises(ValueError, match="`held_out` has shape"):
        taskset.split(held_out=held[:3], test_start="2003-01", support=6)


def test_all_nan_region_is_named(taskset):
    series = taskset.series.copy()
    series[2] = np.nan
    with pytest.raises(ValueError, match=f"no finite value: \\['{taskset.region_ids[2]}'\\]"):
        RegionTaskSet(
            series, taskset.time, taskset.region_ids, taskset.covariates, taskset.covariate_names
        )


def test_study_taskset_estimates_and_errors():
    df = pd.DataFrame(
        {
            "study": ["a", "b", "c"],
            "yi": [0.1, 0.2, 0.3],
            "vi": [0.01, 0.02, 0.03],
            "year": [1, 2, 3],
        }
    )
    est = StudyTaskSet.from_frame(df, label="study", mods=["year"]).estimates()
    assert isinstance(est, Estimates) and est.k == 3
    np.testing.assert_array_equal(est.labels, ["a", "b", "c"])
    assert list(est.mods.columns) == ["year"]
    bad = df.assign(vi=[0.01, -0.02, 0.03])
    with pytest.raises(ValueError, match="study 'b' has -0.02"):
        StudyTaskSet.from_frame(bad, label="study")
    text = df.assign(yi=["0.1", "x", "0.3"])
    with pytest.raises(ValueError, match="column 'yi' is not numeric for study 'b'"):
        StudyTaskSet.from_frame(text, label="study")
    with pytest.raises(KeyError, match="no column 'effect'"):
        StudyTaskSet.from_frame(df, yi="effect")


def test_estimates_shape_checks():
    with pytest.raises(ValueError, match="one sampling variance per effect"):
        Estimates(np.zeros(3), np.ones(2))

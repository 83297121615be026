"""log_mse_ratio and compare_methods against plain-loop references and the pooling engine."""

import numpy as np
import pytest
from scipy import stats

from spatialmeta.data import synthetic_region_tasks
from spatialmeta.learn import climatology, persistence, ridge_ar
from spatialmeta.learn.evaluate import compare_methods, log_mse_ratio, observed
from spatialmeta.meta_analysis import pool
from spatialmeta.tasks import spatial_holdout


def _reference(y, a, b, lags):
    """One region at a time, one lag at a time: delta method on a Bartlett-kernel HAC."""
    est, var = [], []
    for r in range(y.shape[0]):
        la = ((a[r] - y[r]) ** 2).mean(axis=1)
        lb = ((b[r] - y[r]) ** 2).mean(axis=1)
        n = len(la)
        x = np.stack([la - la.mean(), lb - lb.mean()])
        s = x @ x.T / n
        for j in range(1, lags + 1):
            g = x[:, j:] @ x[:, :-j].T / n
            s += (1 - j / (lags + 1)) * (g + g.T)
        grad = np.array([1 / la.mean(), -1 / lb.mean()])
        est.append(np.log(la.mean() / lb.mean()))
        var.append(grad @ (s / n) @ grad)
    return np.array(est), np.array(var)


@pytest.fixture(scope="module")
def fc():
    tasks = synthetic_region_tasks(16, 120, seed=2)
    held = spatial_holdout(tasks.n_regions, 0.4, seed=1)
    split = tasks.split(held_out=held, test_start=tasks.time[84], support=24)
    forecasts = [f(tasks, split, 3) for f in (ridge_ar, climatology, persistence)]
    return tasks, forecasts


def test_log_mse_ratio_matches_a_plain_loop(fc):
    tasks, (a, b, _) = fc
    y = observed(tasks, a)
    est, var = log_mse_ratio(y, a.mean, b.mean)
    ref_est, ref_var = _reference(y, a.mean, b.mean, lags=3)
    np.testing.assert_allclose(est, ref_est, rtol=1e-12)
    np.testing.assert_allclose(var, ref_var, rtol=1e-10)


@pytest.mark.filterwarnings("ignore:Mean of empty slice")
def test_log_mse_ratio_skips_unscored_origins_and_regions(fc):
    tasks, (a, b, _) = fc
    y = observed(tasks, a).copy()
    y[0, 4, :] = np.nan  # one origin without any target
    y[1, 6, 1] = np.nan  # one target of an origin
    y[2] = np.nan  # a region never scored
    est, var = log_mse_ratio(y, a.mean, b.mean)
    la = np.nanmean((a.mean[0] - y[0]) ** 2, axis=1)
    lb = np.nanmean((b.mean[0] - y[0]) ** 2, axis=1)
    assert est[0] == pytest.approx(np.log(np.nanmean(la) / np.nanmean(lb)), rel=1e-12)
    la1 = np.nanmean((a.mean[1] - y[1]) ** 2, axis=1)
    lb1 = np.nanmean((b.mean[1] - y[1]) ** 2, axis=1)
    assert est[1] == pytest.approx(np.log(la1.mean() / lb1.mean()), rel=1e-12)
    assert np.isnan(est[2]) and np.isnan(var[2])
    assert np.isfinite(est[[0, 1, 3]]).all() and (var[[0, 1, 3]] > 0).all()


def test_compare_methods_pools_with_the_engine_and_runs_diebold_mariano(fc):
    tasks, forecasts = fc
    frame = compare_methods(tasks, forecasts, method="ridge_ar").set_index("method")
    assert list(frame.index) == ["climatology", "persistence"]
    y = observed(tasks, forecasts[0])
    for f in forecasts[1:]:
        yi, vi = log_mse_ratio(y, forecasts[0].mean, f.mean)
        res = pool(yi, vi, method="REML")
        row = frame.loc[f.method]
        assert row.k == len(yi)
        assert row.mse_ratio == pytest.approx(np.exp(res.estimate), rel=1e-12)
        assert row.ci_lb == pytest.approx(np.exp(res.ci_lb), rel=1e-12)
        assert row.regions_better == pytest.approx((yi < 0).mean())
        # Diebold-Mariano on the area-weighted mean loss of each origin, by hand
        w = tasks.area_km2[f.regions]
        d = (((forecasts[0].mean - y) ** 2).mean(2) - ((f.mean - y) ** 2).mean(2)).T @ w / w.sum()
        n, h = len(d), 3
        x = d - d.mean()
        s = x @ x / n + sum(2 * (1 - j / h) * (x[j:] @ x[:-j]) / n for j in range(1, h))
        dm = d.mean() / np.sqrt(s / n) * np.sqrt((n + 1 - 2 * h + h * (h - 1) / n) / n)
        assert row.dm_stat == pytest.approx(dm, rel=1e-10)
        assert row.dm_pval == pytest.approx(2 * stats.t.sf(abs(dm), n - 1), rel=1e-10)
    # persistence is far worse than ridge AR on this seasonal set: both tests say so
    assert frame.loc["persistence", "ci_ub"] < 1 and frame.loc["persistence", "dm_pval"] < 0.01


def test_compare_methods_names_a_missing_method(fc):
    tasks, forecasts = fc
    with pytest.raises(ValueError, match="no forecast named 'meta'"):
        compare_methods(tasks, forecasts)

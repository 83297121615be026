"""publish_report: every output of a scored run, in task order, with the summary's claims."""

import json

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import xarray as xr

from spatialmeta.data import synthetic_regions
from spatialmeta.learn import climatology, evaluate, persistence, publish_report, ridge_ar
from spatialmeta.learn.evaluate import log_mse_ratio, observed
from spatialmeta.learn.publish import missing_note, region_values
from spatialmeta.regions.graph import contiguity_graph
from spatialmeta.report import _METHOD_NAMES
from spatialmeta.tasks import RegionTaskSet


@pytest.fixture(scope="module")
def run():
    """Regions in reverse id order (task order is the polygons'), a gap, three baselines."""
    regions = synthetic_regions((0, 40, 16, 52), 16, seed=0).iloc[::-1].reset_index(drop=True)
    rng = np.random.default_rng(1)
    t = np.arange(96)
    y = 280 + 6 * np.cos(2 * np.pi * t / 12)[:, None] + rng.normal(size=(96, len(regions)))
    y[40:45, 3] = np.nan
    da = xr.DataArray(y, dims=("time", "region"), attrs={"units": "K"},
                      coords={"time": pd.date_range("2000-01", periods=96, freq="MS"),
                              "region": regions.region_id.to_numpy()})  # fmt: skip
    tasks = RegionTaskSet.from_dataarray(da, contiguity_graph(regions))
    held = np.zeros(tasks.n_regions, bool)
    held[[0, 3, 7, 11]] = True
    split = tasks.split(held_out=held, test_start="2006-01", support=24)
    forecasts = [f(tasks, split, 2) for f in (ridge_ar, climatology, persistence)]
    return tasks, regions, forecasts, evaluate(tasks, forecasts, method="ridge_ar")


def test_report_writes_every_output_in_task_order(run, tmp_path):
    tasks, regions, forecasts, ev = run
    assert list(tasks.region_ids) != sorted(tasks.region_ids)  # the case searchsorted got wrong
    rep = publish_report(tasks, forecasts, ev, regions, tmp_path, title="t", setup={"a": 1})
    for name in ("summary.md", "skill.csv", "skill_by_region.csv", "forecasts.parquet",
                 "skill_map.png", "forest_skill.png", "pooled_skill.json"):  # fmt: skip
        assert (tmp_path / name).exists(), name
    assert not list(tmp_path.glob(".tmp-*"))
    assert (tmp_path / "summary.md").read_text() == rep.summary
    # every forecast row carries its own region's polygon
    frame = gpd.read_parquet(tmp_path / "forecasts.parquet")
    own = regions.set_index("region_id").geometry.loc[frame.region]
    assert all(a.equals(b) for a, b in zip(frame.geometry, own, strict=True))
    # the summary's numbers are the tables'
    table = pd.read_csv(tmp_path / "skill.csv").set_index("method")
    for m in ("ridge_ar", "climatology", "persistence"):
        assert f"| {table.loc[m, 'rmse']:.3f} |" in rep.summary
    assert "Missing values: 5 of 1440 (region, time) values (0.3%), in 1 region" in rep.summary
    pooled = json.loads((tmp_path / "pooled_skill.json").read_text())
    assert pooled["k"] == 4
    np.testing.assert_allclose(pooled["estimate"], rep.pooled.estimate)
    assert "k = 4 regions" in rep.summary and "Shots curve" not in rep.summary


def test_region_values_follow_task_order(run):
    tasks, _, _, ev = run
    rows = ev.by_region[ev.by_region.method == "ridge_ar"]
    v = region_values(tasks.region_ids, rows, "skill_vs_climatology")
    held = np.flatnonzero(np.isfinite(v))
    np.testing.assert_array_equal(held, [0, 3, 7, 11])
    for i in held:
        assert v[i] == rows.set_index("region_id").loc[tasks.region_ids[i], "skill_vs_climatology"]
    with pytest.raises(ValueError, match="not in the task set: \\['nowhere'\\]"):
        region_values(tasks.region_ids, rows.assign(region_id="nowhere"), "rmse")


def test_one_held_out_region_is_reported_without_pooling(run, tmp_path):
    tasks, regions, _, _ = run
    held = np.zeros(tasks.n_regions, bool)
    held[5] = True
    split = tasks.split(held_out=held, test_start="2006-01", support=24)
    forecasts = [climatology(tasks, split, 2), persistence(tasks, split, 2)]
    ev = evaluate(tasks, forecasts, method="persistence")
    rep = publish_report(tasks, forecasts, ev, regions, tmp_path, title="t", setup={})
    assert rep.pooled is None and "Pooled skill" not in rep.summary
    assert not (tmp_path / "pooled_skill.json").exists()
    assert (tmp_path / "skill_map.png").exists()


def test_polygons_missing_a_series_region_are_named(run, tmp_path):
    tasks, regions, forecasts, ev = run
    lost = regions.region_id.iloc[2]
    with pytest.raises(ValueError, match=f"no polygon for 1 series region.*{lost}"):
        publish_report(tasks, forecasts, ev, regions.drop(index=2), tmp_path, title="t", setup={})
    assert not (tmp_path / "summary.md").exists()


def test_shots_curve_appears_in_the_summary(run, tmp_path):
    tasks, regions, forecasts, ev = run
    shots = pd.DataFrame({"support": [6, 6, 12, 12], "method": ["ridge_ar", "climatology"] * 2,
                          "rmse": [1.5, 1.25, 1.125, 1.0625], "crps": [0.5, 0.75, 0.25, 0.375]})  # fmt: skip
    rep = publish_report(tasks, forecasts, ev, regions, tmp_path, title="t", setup={}, shots=shots)
    assert "| ridge autoregression (support window) | 1.500 | 1.125 |" in rep.summary
    assert "| climatology (support window) | 0.750 | 0.375 |" in rep.summary
    assert pd.read_csv(tmp_path / "shots.csv").equals(shots)


def test_missing_note():
    y = np.ones((3, 4))
    assert missing_note(y) == "Missing values: none of the 12 (region, time) values."
    y[[0, 2], 1] = np.nan
    assert missing_note(y).startswith(
        "Missing values: 2 of 12 (region, time) values (16.7%), in 2 regions;"
    )


def test_many_regions_skip_the_forest_plot_and_say_so(run, tmp_path, monkeypatch):
    import spatialmeta.learn.publish as publish

    tasks, regions, forecasts, ev = run
    monkeypatch.setattr(publish, "FOREST_MAX_REGIONS", 3)
    rep = publish_report(tasks, forecasts, ev, regions, tmp_path, title="t", setup={})
    assert not (tmp_path / "forest_skill.png").exists() and "forest plot" not in rep.outputs
    assert "No forest plot: 4 held-out regions" in rep.summary
    assert rep.pooled.k == 4 and (tmp_path / "pooled_skill.json").exists()


def test_pooled_skill_with_spatially_correlated_regions(run, tmp_path):
    """With 5 or more held-out regions the pooled skill is also fitted with an exponential
    spatial correlation of the centroids' great-circle distance (issue 15, item 5): the
    JSON's ``spatial`` block is pool_mv's fit on the same ratios and centroids (the batched
    fit reaches the same maximum: estimates to 1e-6), and the summary quotes it beside the
    independent one; skill_comparison.csv pools every comparison the same way, in one
    batch; with 4 regions both are left out."""
    from spatialmeta.meta_analysis import pool
    from spatialmeta.meta_analysis.multilevel import Spatial, pool_mv

    tasks, regions, forecasts, ev = run
    publish_report(tasks, forecasts, ev, regions, tmp_path / "a", title="t", setup={})
    four = json.loads((tmp_path / "a" / "pooled_skill.json").read_text())
    assert four["k"] == 4 and "spatial" not in four  # 4 held-out regions: too few
    assert pd.read_csv(tmp_path / "a" / "skill_comparison.csv")["spatial_mse_ratio"].isna().all()
    held = np.zeros(tasks.n_regions, bool)
    held[::2] = True  # 8 regions
    split = tasks.split(held_out=held, test_start="2006-01", support=24)
    fc = [f(tasks, split, 2) for f in (ridge_ar, climatology, persistence)]
    ev8 = evaluate(tasks, fc, method="ridge_ar")
    rep = publish_report(tasks, fc, ev8, regions, tmp_path / "b", title="t", setup={})
    sp = json.loads((tmp_path / "b" / "pooled_skill.json").read_text())["spatial"]
    pooled = pool(ev8, method="REML")
    idx = [list(tasks.region_ids).index(r) for r in ev8.region_ids]
    ref = pool_mv(np.asarray(pooled.yi), np.asarray(pooled.vi), random=[np.arange(8)],
                  spatial=Spatial(tasks.graph.data.pos.numpy()[idx], "SPEXP", "gcd"))  # fmt: skip
    assert sp["k"] == 8 and sp["estimate"] == pytest.approx(float(ref.beta[0]), rel=1e-6)
    assert sp["logLik"] == pytest.approx(ref.logLik, rel=1e-9) and sp["logLik"] >= ref.logLik - 1e-9
    assert sp["se"] == pytest.approx(float(ref.se[0]), rel=1e-5) and sp["range_km"] > 0
    comp = pd.read_csv(tmp_path / "b" / "skill_comparison.csv").set_index("method")
    y = observed(tasks, fc[0])
    for f in fc[1:]:  # each comparison as its own pool_mv fit
        yi, vi = log_mse_ratio(y, fc[0].mean, f.mean)
        pos = tasks.graph.data.pos.numpy()[fc[0].regions]
        one = pool_mv(yi, vi, random=[np.arange(8)], spatial=Spatial(pos, "SPEXP", "gcd"))
        row = comp.loc[f.method]
        assert row.spatial_k == 8
        assert row.spatial_mse_ratio == pytest.approx(np.exp(one.beta[0]), rel=1e-6)
        assert row.spatial_ci_ub == pytest.approx(np.exp(one.ci_ub[0]), rel=1e-5)
        label = _METHOD_NAMES.get(f.method, f.method)
        line = next(ln for ln in rep.summary.splitlines() if ln.startswith(f"| {label} | 8 |"))
        star = "*" if row.range_at_bound else ""
        flat = float(np.ravel(one.tau2)[0]) <= 1e-6 * np.median(vi)  # range not identified
        assert np.isnan(row.range_km) == flat and not (flat and row.range_at_bound)
        cell = "–" if flat else f"{row.range_km:,.0f}"
        assert line.endswith(f"{row.spatial_ci_ub:.3f} | {cell}{star} |")
    assert "with neighbouring regions' errors correlated" in rep.summary
    assert f"fitted range {sp['range_km']:.0f} km" in rep.summary

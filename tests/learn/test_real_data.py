"""The issue's acceptance on the shared real data: held-out regions, short support, every method.

ERA5 UK hourly 2 m temperature aggregated to 8×8-cell tiles (35 regions), next 1–24 h, a
30 % spatial hold-out known from 48 h before 2019-03-22; and the CCSM TREFHT ensemble
(member 57, annual) aggregated to the 49 US states, 3 years ahead from a 20-year support
before 1980. Small configurations, so that the file runs in CI in seconds.

Margins, from six seeds of exactly these configurations (seeds 0–5; the tables are in
the issue's note):

* ERA5: meta beat every baseline in CRPS on 6/6 seeds (margin over the best baseline
  3.1–12 %, median 8 %) and in RMSE on 5/6 (3.0–8.4 %, median 5 %; on seed 0 persistence
  was 0.5 % better). Seed 3 is pinned (5.0 % RMSE, 5.6 % CRPS, both near the median)
  with a 2 % margin: below the smallest winning margin, about one seed-to-seed standard
  deviation under the median.
* TREFHT: no method is reliably ahead. Annual state means are nearly unpredictable
  beyond the support-window mean (a pooled linear autoregression fitted on 90 years of
  all states does not beat it on 1980–1999 either); validation on the held-out period
  stops the networks after 0–160 steps, and over the six seeds meta is 0–0.9 % above the
  best of global, global_finetuned and climatology in RMSE and −0.1 to +3.4 % in CRPS.
  Pinned: that tie (meta within 2 % RMSE and 4 % CRPS of the best of them) and meta
  ahead of persistence and ridge autoregression by at least 20 % (26–30 % observed).
  The acceptance's strict ordering is NOT met on this dataset, and no forecaster can
  meet it with a margin: ``benchmarks/trefht_predictability.py`` shows that even an
  oracle knowing each state's own 1980-1999 mean in that member is only 4.7 % ± 1.7
  better in RMSE than the support climatology, the forced response known exactly (other
  members' 1980-1999 means) is 3.8 % worse, and the best possible spread around the
  climatology mean improves its CRPS by 0.6 %.
"""

import pytest

from tests.conftest import shared_path

BASELINES = (
    "global", "global_finetuned", "climatology", "persistence", "ridge_ar",
    "expanding_climatology", "neighbour_climatology", "eb_climatology", "anomaly_persistence",
)  # fmt: skip


def _job(store, var, regions, region_id, out, *, member=None, seed, **kw):
    from spatialmeta.jobs.forecast import forecast_job
    from spatialmeta.learn import LearnConfig

    size = {
        k: kw.pop(k)
        for k in ("lags", "hidden", "episodes", "val_every", "patience", "learner")
        if k in kw
    }
    res = forecast_job(
        store, var, regions, out, region_id=region_id, holdout="0.3", member=member,
        config=LearnConfig(seed=seed, device="cpu", **size), progress=False, **kw,
    )  # fmt: skip
    return res.evaluation.table.set_index("method")


@pytest.fixture(scope="module")
def era5(tmp_path_factory):
    from spatialmeta.raster import open_raster, tile
    from spatialmeta.raster.aggregate import aggregate

    grib = shared_path("era5_t2m_uk_2019-03.grib")
    d = tmp_path_factory.mktemp("era5")
    aggregate(str(grib), d / "tiles.zarr", tile_size=8, progress=False)
    tiles = tile(open_raster(str(grib)), 8).regions
    return _job(d / "tiles.zarr", "t2m", tiles, "region_id", d / "out", seed=3, support=48,
                test_start="2019-03-22", horizon=24, lags=12, hidden=16, episodes=150,
                val_every=10, patience=4)  # fmt: skip


@pytest.fixture(scope="module")
def trefht(tmp_path_factory):
    import geopandas as gpd

    from spatialmeta.raster.aggregate import aggregate

    nc = shared_path("trefht_ccsm_ensemble")
    states = gpd.read_file(shared_path("us_states", "states.shp"))
    d = tmp_path_factory.mktemp("trefht")
    aggregate(str(nc / "TREFHT.B06.57.atm.1890-1999ANN.nc"), d / "states.zarr", regions=states,
              id_column="STATE_NAME", variables=["TREFHT"], progress=False)  # fmt: skip
    # the ridge learner (the default before the hierarchical one): on these annual records the
    # hierarchical learner is 4.5 % behind eb_climatology in RMSE (benchmarks/
    # eval_monthly.py has the monthly sets; issue 12's note has this figure)
    return _job(d / "states.zarr", "TREFHT", states, "STATE_NAME", d / "out", seed=0,
                support=20, test_start="1980-01", horizon=3, lags=8, learner="ridge")  # fmt: skip


@pytest.mark.parametrize("metric", ["rmse", "crps"])
def test_meta_is_ahead_of_every_baseline_on_era5_uk_tiles(era5, metric):
    assert len(era5) == 11
    meta = era5.loc["meta", metric]
    for name in BASELINES:
        other = era5.loc[name, metric]
        assert meta < 0.98 * other, f"{metric}: meta {meta:.4f} vs {name} {other:.4f}"


@pytest.mark.parametrize("metric, tie", [("rmse", 0.02), ("crps", 0.04)])
def test_trefht_states_meta_ties_the_best_and_beats_the_naive(trefht, metric, tie):
    meta = trefht.loc["meta", metric]
    best = trefht.loc[["global", "global_finetuned", "climatology"], metric].min()
    assert meta < (1 + tie) * best, f"{metric}: meta {meta:.4f} vs best {best:.4f}"
    for name in ("persistence", "ridge_ar"):
        assert meta < 0.8 * trefht.loc[name, metric], name


def _hier_table(store, var, polys, region_id, test_start=None):
    """The hierarchical meta-learner, the global network and every reference on a (region,
    time) store: 30 % held out (seed 0) with a 24-month support, horizons 1-3 (as
    ``benchmarks/eval_monthly.py``, which prints the same tables)."""
    import numpy as np
    import xarray as xr

    from spatialmeta.learn import LearnConfig
    from spatialmeta.learn.algorithms.hier import HierarchicalLearner
    from spatialmeta.learn.evaluate import evaluate
    from spatialmeta.learn.forecast import forecast_heldout
    from spatialmeta.learn.references import references
    from spatialmeta.learn.train import global_train
    from spatialmeta.regions.graph import contiguity_graph
    from spatialmeta.tasks.region import RegionTaskSet, spatial_holdout

    da = xr.open_zarr(store)[var].load().transpose("region", "time")
    good = np.isfinite(da.values).any(axis=1)
    ids = np.array(da.region.values.tolist(), dtype=str)[good]
    polys = polys[polys[region_id].astype(str).isin(ids)]
    graph = contiguity_graph(polys, id_column=region_id)
    tasks = RegionTaskSet.from_dataarray(da.isel(region=np.flatnonzero(good)), graph)
    held = spatial_holdout(tasks.n_regions, 0.3, seed=0)
    start = test_start or tasks.time[-24]
    split = tasks.split(held_out=held, test_start=start, support=24)
    cfg = LearnConfig(learner="hier", seed=0, device="cpu", horizon=3)
    res = HierarchicalLearner.train_on(tasks, split, cfg)
    fc = [res.learner.forecast_split(tasks, split, cfg),
          res.learner.forecast_split(tasks, split, cfg, adapt=False)]  # fmt: skip
    glob = global_train(tasks, split, cfg, progress=False)
    fc.append(forecast_heldout(glob.learner, tasks, split, cfg, adapt=False))
    fc += references(tasks, split, 3)
    return evaluate(tasks, fc, reference="eb_climatology").table.set_index("method")


@pytest.fixture(scope="module")
def ccsm_ts(tmp_path_factory):
    """CCSM b003 TS (monthly, model years 16-25) on the 49 states, the last 24 months."""
    import geopandas as gpd

    from spatialmeta.raster.aggregate import aggregate

    nc = shared_path("climate_monthly", "ccsm_b003_TS_monthly_100months.nc")
    states = gpd.read_file(shared_path("us_states", "states.shp"))
    d = tmp_path_factory.mktemp("ts")
    aggregate(str(nc), d / "ts.zarr", regions=states, id_column="STATE_NAME", variables=["TS"],
              progress=False)  # fmt: skip
    return _hier_table(d / "ts.zarr", "TS", states, "STATE_NAME")


@pytest.fixture(scope="module")
def fnoc_uwnd(tmp_path_factory):
    """FNOC zonal wind (a .cdf file, axes FNOCX/FNOCY/TIME, longitudes past 360) on 10°
    tiles, 1991-1992 forecast."""
    import geopandas as gpd

    from spatialmeta.raster.aggregate import aggregate

    cdf = shared_path("climate_monthly", "fnoc_navy_winds_monthly_1982-1992.cdf")
    d = tmp_path_factory.mktemp("uwnd")
    res = aggregate(str(cdf), d / "uwnd.zarr", tile_size=4, variables=["UWND"], progress=False)
    return _hier_table(d / "uwnd.zarr", "UWND", gpd.read_parquet(res.regions), "region_id",
                       "1991-01")  # fmt: skip


@pytest.mark.parametrize("score", ["rmse", "crps"])
def test_hier_meta_beats_every_reference_on_fnoc_winds(fnoc_uwnd, score):
    """Seed 0 (the 3-member seed ensemble): meta 4.1 % (RMSE) and 5.1 % (CRPS) ahead of the
    best reference (anomaly persistence); holdout seeds 1 and 2: 4.2 % and 1.4 % in RMSE.
    Pinned at 2 %. Ahead of the global network by 7.7 % (RMSE) and 7.0 % (CRPS). (90 %
    coverage after the area-weighted validation calibration: 86.0 %; seeds 1 and 2: 85.6 %
    and 87.8 %.)"""
    from spatialmeta.learn.references import REFERENCES

    best = fnoc_uwnd.loc[list(REFERENCES), score].min()
    assert fnoc_uwnd.loc["meta", score] < 0.98 * best
    assert fnoc_uwnd.loc["meta", score] < 0.98 * fnoc_uwnd.loc["global", score]  # 7-8 % observed
    assert fnoc_uwnd.loc["meta", score] < fnoc_uwnd.loc["meta_noadapt", score]
    assert 0.85 <= fnoc_uwnd.loc["meta", "coverage_90"] <= 0.95  # 86.0 % observed


@pytest.mark.parametrize("score", ["rmse", "crps"])
def test_hier_meta_beats_every_reference_on_ccsm_ts_states(ccsm_ts, score):
    """Seed 0 (the 3-member seed ensemble): meta 3.2 % (RMSE) and 3.7 % (CRPS) ahead of the
    best reference and 4.4 % / 4.8 % ahead of the global network; pinned at 2 %. (Holdout seeds 1 and 2: 0.9 % and 1.8 % ahead in RMSE;
    15 held-out states make a noisy test.)"""
    from spatialmeta.learn.references import REFERENCES

    best = ccsm_ts.loc[list(REFERENCES), score].min()
    assert ccsm_ts.loc["meta", score] < 0.98 * best
    assert ccsm_ts.loc["meta", score] < 0.98 * ccsm_ts.loc["global", score]  # 4.4-4.8 % observed
    assert ccsm_ts.loc["meta", score] < ccsm_ts.loc["meta_noadapt", score]
    assert 0.85 <= ccsm_ts.loc["meta", "coverage_90"] <= 0.95

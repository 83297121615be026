"""Issue 12's acceptance data: the hierarchical meta-learner against the statistician's references.

Aggregates the three monthly sets of ``../shared/data/climate_monthly`` (ERSSTv5 SST on 6°
tiles, land-only tiles dropped; FNOC zonal wind on 10° tiles; CCSM b003 TS on the US
states), holds out 30 % of the regions (seed 0), gives them a 24-month support (or
``--support``), trains ``LearnConfig(learner="hier")`` on the training regions and scores
it with every reference of :mod:`spatialmeta.learn.references` over the test period (the
last 24 months; 1991-1992 for the winds), horizons 1-3, beside the global graph network
(supervised on the same training regions, as the forecast job trains it; ``--no-global``
leaves it out). Prints one table per data set and the meta-learner's margin over the best
reference and over the global network (negative: meta ahead).

    .venv/bin/python benchmarks/eval_monthly.py            # all three, about 4 minutes
    .venv/bin/python benchmarks/eval_monthly.py ts --support 6 --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path

import geopandas as gpd
import numpy as np
import xarray as xr

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SETS = {
    "sst": ("climate_monthly/ersst_v5_sst_monthly_2010-2020.nc", "sst", 3, None),
    "uwnd": ("climate_monthly/fnoc_navy_winds_monthly_1982-1992.cdf", "UWND", 4, "1991-01"),
    "ts": ("climate_monthly/ccsm_b003_TS_monthly_100months.nc", "TS", None, None),
}


def load(name: str, work: Path, *, support: int, seed: int):
    from spatialmeta.raster.aggregate import aggregate
    from spatialmeta.regions.graph import contiguity_graph
    from spatialmeta.tasks.region import RegionTaskSet, spatial_holdout

    path, var, tiles, test_start = SETS[name]
    store = work / f"{name}.zarr"
    if tiles is None:
        polys, rid = gpd.read_file(SHARED / "us_states" / "states.shp"), "STATE_NAME"
        if not store.exists():
            aggregate(str(SHARED / path), store, regions=polys, id_column=rid, variables=[var],
                      progress=False)  # fmt: skip
    else:
        rid = "region_id"
        if not store.exists():
            aggregate(str(SHARED / path), store, tile_size=tiles, variables=[var], progress=False)
        polys = gpd.read_parquet(work / f"{name}_tiles.parquet")
    da = xr.open_zarr(store)[var].load().transpose("region", "time")
    good = np.isfinite(da.values).any(axis=1)  # land-only tiles have no value at all
    ids = np.array(da.region.values.tolist(), dtype=str)[good]
    polys = polys[polys[rid].astype(str).isin(ids)]
    tasks = RegionTaskSet.from_dataarray(da.isel(region=np.flatnonzero(good)),
                                         contiguity_graph(polys, id_column=rid))  # fmt: skip
    held = spatial_holdout(tasks.n_regions, 0.3, seed=seed)
    start = test_start or tasks.time[-24]
    return tasks, tasks.split(held_out=held, test_start=start, support=support)


def run(name: str, work: Path, *, support: int, seed: int, episodes: int, glob: bool = False):
    from spatialmeta.learn.algorithms.hier import HierarchicalLearner
    from spatialmeta.learn.baselines import climatology, persistence
    from spatialmeta.learn.config import LearnConfig
    from spatialmeta.learn.evaluate import evaluate
    from spatialmeta.learn.forecast import forecast_heldout
    from spatialmeta.learn.references import REFERENCES, references
    from spatialmeta.learn.train import global_train

    tasks, split = load(name, work, support=support, seed=seed)
    cfg = LearnConfig(learner="hier", seed=seed, device="cpu", episodes=episodes, horizon=3)
    t = time.perf_counter()
    res = HierarchicalLearner.train_on(tasks, split, cfg)
    took = time.perf_counter() - t
    fc = [res.learner.forecast_split(tasks, split, cfg),
          res.learner.forecast_split(tasks, split, cfg, adapt=False)]  # fmt: skip
    if glob:
        g = global_train(tasks, split, cfg, progress=False)
        fc.append(forecast_heldout(g.learner, tasks, split, cfg, adapt=False))
    fc += references(tasks, split, 3) + [climatology(tasks, split, 3), persistence(tasks, split, 3)]
    table = evaluate(tasks, fc).table.set_index("method")
    refs = table.loc[list(REFERENCES)]
    margin = {c: 100 * (table.loc["meta", c] / refs[c].min() - 1) for c in ("rmse", "crps")}
    if glob:
        margin.update({f"{c}_global": 100 * (table.loc["meta", c] / table.loc["global", c] - 1)
                       for c in ("rmse", "crps")})  # fmt: skip
    return tasks, split, table, margin, took, len(res.history), fc


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("sets", nargs="*", default=list(SETS), help=f"any of {list(SETS)}")
    ap.add_argument("--support", type=int, default=24)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--episodes", type=int, default=400)
    ap.add_argument("--no-global", action="store_true", help="leave the global network out")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.sets:
            for seed in args.seeds:
                tasks, split, table, margin, took, steps, _ = run(
                    name,
                    Path(tmp),
                    support=args.support,
                    seed=seed,
                    episodes=args.episodes,
                    glob=not args.no_global,
                )
                cols = ["rmse", "crps", "coverage_50", "coverage_90", "interval_score_90"]
                print(f"\n## {name}: {tasks.n_regions} regions, {int(split.held_out.sum())} held "
                      f"out, support {split.support}, seed {seed}; trained {steps} steps in "
                      f"{took:.1f} s")  # fmt: skip
                print(table[cols].round(4).to_string())
                print(f"meta vs the best reference: RMSE {margin['rmse']:+.2f} %, "
                      f"CRPS {margin['crps']:+.2f} %")  # fmt: skip
                if "rmse_global" in margin:
                    print(f"meta vs the global network: RMSE {margin['rmse_global']:+.2f} %, "
                          f"CRPS {margin['crps_global']:+.2f} %")  # fmt: skip


if __name__ == "__main__":
    main()

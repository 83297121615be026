"""Issue 5's TREFHT acceptance over all 8 ensemble members and several seeds.

One member gives one realization of the internal variability shared by all states (their
annual anomalies move together), so a single run cannot tell methods apart that differ by
a percent. Each member is an independent realization under the same forcing: this script
runs the acceptance configuration of ``tests/learn/test_real_data.py`` (49 US states,
annual, 30 % spatial hold-out, 20-year support before 1980, 3 years ahead) on every member
and seed, prints each skill table, and the mean relative difference of ``meta`` to each
baseline over all runs with a 95 % interval (t over members x seeds), and in how many runs
meta is significantly ahead of each baseline by the run's own tests (Diebold-Mariano on the
area-mean loss; the pooled interval over regions, from ``skill_comparison.csv``).

Example:
    .venv/bin/python benchmarks/eval_trefht_members.py --seeds 0 1 --members 57 59
    .venv/bin/python benchmarks/eval_trefht_members.py            # all 8 members, 2 seeds
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _trefht import state_stores  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
METHODS = ("global", "global_finetuned", "climatology", "persistence", "ridge_ar")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--members", nargs="+", default=None, help="member numbers (default: all)")
    p.add_argument("--learner", default="ridge", help="LearnConfig.learner")
    args = p.parse_args(argv)

    import geopandas as gpd
    import pandas as pd
    from scipy import stats

    from spatialmeta.jobs.forecast import forecast_job
    from spatialmeta.learn import LearnConfig

    files = sorted((SHARED / "trefht_ccsm_ensemble").glob("TREFHT.B06.*.nc"))
    if args.members:
        files = [f for f in files if f.name.split(".")[2] in args.members]
    states = gpd.read_file(SHARED / "us_states" / "states.shp")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for member, store in state_stores(files, states, tmp):
            for seed in args.seeds:
                t = time.perf_counter()
                res = forecast_job(
                    store, "TREFHT", states, Path(tmp) / f"out_{member}_{seed}",
                    region_id="STATE_NAME", holdout="0.3", support=20, test_start="1980-01",
                    horizon=3, config=LearnConfig(seed=seed, device="cpu", lags=8,
                                                  learner=args.learner),
                    progress=False, threads=1,
                )  # fmt: skip
                table = res.evaluation.table.set_index("method")
                print(f"\nmember {member}, seed {seed} ({time.perf_counter() - t:.0f} s)")
                print(table[["rmse", "crps", "bias"]].round(4).to_string())
                dm = pd.read_csv(res.out / "skill_comparison.csv").set_index("method")
                for m in METHODS:
                    rows.append(dict(member=member, seed=seed, method=m,
                                     rmse=table.loc["meta", "rmse"] / table.loc[m, "rmse"] - 1,
                                     crps=table.loc["meta", "crps"] / table.loc[m, "crps"] - 1,
                                     dm_win=dm.loc[m, "dm_stat"] < 0 and dm.loc[m, "dm_pval"] < 0.05,
                                     pooled_win=dm.loc[m, "ci_ub"] < 1))  # fmt: skip
    df = pd.DataFrame(rows)
    print("\nmeta relative to each baseline (negative: meta better), mean over "
          f"{df.groupby(['member', 'seed']).ngroups} runs, 95 % interval:")  # fmt: skip
    for m in METHODS:
        sub = df[df.method == m]
        line = f"  {m:18s}"
        for metric in ("rmse", "crps"):
            x = sub[metric].to_numpy()
            half = (
                stats.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x))
                if len(x) > 1
                else np.nan
            )
            wins = int((x < 0).sum())
            line += f"  {metric} {100 * x.mean():+6.2f} % ± {100 * half:4.2f} (meta ahead {wins}/{len(x)})"
        print(line)
    print("\nruns where meta is significantly ahead (5 %): Diebold-Mariano on the area-mean loss "
          "| pooled interval over regions (takes regions as independent)")  # fmt: skip
    for m in METHODS:
        sub = df[df.method == m]
        print(
            f"  {m:18s} DM {int(sub.dm_win.sum())}/{len(sub)} | pooled {int(sub.pooled_win.sum())}/{len(sub)}"
        )


if __name__ == "__main__":
    main()

"""Issue 14, item 6: region results pooled with a learned prior. The TREFHT states' trends
as a corpus of meta-analyses, one per (ensemble member, census sub-region).

Each of the 8 CCSM members is aggregated to the 49 states (area-weighted means); each
state's 1890-1999 warming trend (K per decade, OLS) with its Newey-West sampling variance
is a study, and the states of one SUB_REGION (3 to 9 of them) in one member are one
meta-analysis: 72 meta-analyses, whose tau is the spread of the states' trends inside a
sub-region beyond their sampling noise.

Leave one member out: the prior for tau (log-normal on tau^2) is learned from the other 7
members' 63 analyses and used on the held-out member's 9; the reference for each
sub-region's mean trend mu is the mean of the other 7 members' REML estimates (the forced
response, up to 1/sqrt(7) of one member's internal variability). Printed: coverage of
that reference by 95 % intervals for mu (REML + z, REML + Knapp-Hartung, Bayes with the
learned prior, Bayes with a flat prior U(0, U), U = 2 x the largest training REML tau or
the largest study SE if more), median
widths, and the held-out analyses' mean log predictive density under the learned prior
minus the flat prior's.

    .venv/bin/python benchmarks/eval_region_priors.py            # about a minute
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _trefht import state_stores  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def state_trends(files, states):
    """(members, states) trends per decade and their variances, and the member names."""
    import xarray as xr

    from spatialmeta.tasks.trend import ols_trend

    ys, vs, names = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for member, store in state_stores(files, states, tmp):
            ds = xr.open_zarr(store)
            da = ds.TREFHT.transpose("region", "time").load()
            order = [list(da.region.values).index(s) for s in states.STATE_NAME]
            years = np.asarray(da.time.dt.year, dtype=float) / 10.0  # per decade
            slope, var, _ = ols_trend(da.values[order], years)
            ys.append(slope)
            vs.append(var)
            names.append(member)
    return np.array(ys), np.array(vs), names


def main(argv=None) -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--data", default=str(SHARED), help="the shared data folder")
    args = p.parse_args(argv)
    import geopandas as gpd

    from spatialmeta.meta_analysis import bayes_pool, learn_tau_prior, pool
    from spatialmeta.meta_analysis.priors import TauPrior

    warnings.filterwarnings("ignore")
    t0 = time.perf_counter()
    data = Path(args.data)
    files = sorted((data / "trefht_ccsm_ensemble").glob("TREFHT.B06.*.nc"))
    states = gpd.read_file(data / "us_states" / "states.shp")
    yi, vi, members = state_trends(files, states)  # (M, S)
    groups = sorted(states.SUB_REGION.unique())
    g = states.SUB_REGION.to_numpy()
    kmax = max(int((g == x).sum()) for x in groups)
    # (M, G, kmax) meta-analyses, NaN-padded
    Y = np.full((len(members), len(groups), kmax), np.nan)
    V = np.full_like(Y, np.nan)
    for j, x in enumerate(groups):
        idx = np.flatnonzero(g == x)
        Y[:, j, : len(idx)] = yi[:, idx]
        V[:, j, : len(idx)] = vi[:, idx]
    print(f"{len(members)} members x {len(groups)} sub-regions = {Y.shape[0] * Y.shape[1]} "
          f"meta-analyses (k = 3 to {kmax}); aggregated in {time.perf_counter() - t0:.0f} s")  # fmt: skip
    reml = pool(Y.reshape(-1, kmax), V.reshape(-1, kmax), method="REML")
    mu_reml = np.asarray(reml.beta).reshape(Y.shape[:2])
    tau_reml = np.sqrt(np.asarray(reml.tau2)).reshape(Y.shape[:2])
    print(f"mean trend {np.nanmean(yi):.3f} K/decade; REML tau per analysis: median "
          f"{np.median(tau_reml):.4f}, {np.mean(tau_reml == 0):.0%} at zero")  # fmt: skip
    results = {n: [] for n in ("REML + z", "REML + Knapp-Hartung", "Bayes, learned prior",
                               "Bayes, flat prior")}  # fmt: skip
    lpd = []
    for m in range(len(members)):
        rest = np.arange(len(members)) != m
        ty, tv = Y[rest].reshape(-1, kmax), V[rest].reshape(-1, kmax)
        learned = learn_tau_prior(ty, tv)
        upper = max(2 * float(tau_reml[rest].max()), float(np.sqrt(np.nanmax(tv))))
        flat = TauPrior("uniform_tau", {"upper": upper})
        truth = mu_reml[rest].mean(0)  # (G,)
        y, v = Y[m], V[m]
        for name, kw in (("REML + z", {}), ("REML + Knapp-Hartung", {"test": "knha"})):
            r = pool(y, v, method="REML", **kw)
            results[name].append((np.asarray(r.ci_lb), np.asarray(r.ci_ub), truth))
        bl = bayes_pool(y, v, tau_prior=learned.prior)
        bf = bayes_pool(y, v, tau_prior=flat)
        results["Bayes, learned prior"].append((bl.mu_lb, bl.mu_ub, truth))
        results["Bayes, flat prior"].append((bf.mu_lb, bf.mu_ub, truth))
        lpd.append(bl.log_evidence - bf.log_evidence)
        if m == 0:
            print(f"prior learned without member {members[m]}: {learned.summary()}")
    print(f"\n{'95 % interval for mu':28s}{'coverage':>10s}{'median width':>14s}")
    for name, rows in results.items():
        lo = np.concatenate([r[0] for r in rows])
        hi = np.concatenate([r[1] for r in rows])
        truth = np.concatenate([r[2] for r in rows])
        cover = np.mean((lo <= truth) & (hi >= truth))
        print(f"{name:28s}{100 * cover:9.1f}%{np.median(hi - lo):14.4f}")
    d = np.concatenate(lpd)
    print(f"\nheld-out log predictive density, learned minus flat: {d.mean():+.3f} per analysis "
          f"(better in {int((d > 0).sum())} of {d.size})")  # fmt: skip
    print(f"({time.perf_counter() - t0:.0f} s in all)")


if __name__ == "__main__":
    main()

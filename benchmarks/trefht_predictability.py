"""How much of issue 5's TREFHT target can any forecaster predict? Ceilings, with oracles.

The acceptance asks the meta-learner to beat every baseline, climatology included, on the
CCSM TREFHT ensemble aggregated to the 49 US states (annual, 20-year support before 1980,
3 years ahead). This script measures, on all 8 members at once, what simple predictors and
two oracles that no forecaster can have would score on exactly those targets (every state,
every origin 1980..1997, horizons 1..3), relative to the support-window climatology:

* ``climatology``: the mean of the 20 support years (the product's baseline);
* ``expanding``: the mean of the state's record from the support start up to the origin;
* ``last k``: the mean of the k years before the origin (persistence of a recent mean);
* ``neighbour offset``: the state's support-mean offset from its k nearest states, added
  to their mean over all years before the origin (what "learning elsewhere" can bring:
  the neighbours' long records de-noise a short one);
* ``oracle: forced``: the same state's 1980-1999 mean in the other 7 members, i.e. the
  forced response of the test period, known exactly;
* ``oracle: own test mean``: the state's own 1980-1999 mean in this member, i.e. the
  targets' decadal level, known exactly.

It also prints the best CRPS a Gaussian around the climatology mean can reach (spread
set to the realized error, an oracle) and the lag-1 autocorrelation of the annual
anomalies. The +/- is a 95 % t-interval over the 8 members (each member is one
independent realization of the internal variability that all states share).

Example:
    .venv/bin/python benchmarks/trefht_predictability.py
    .venv/bin/python benchmarks/trefht_predictability.py --support 5 --neighbours 6
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def load(tmp: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(member, state, year) annual state means from ``spatialmeta aggregate``, and centroids."""
    import geopandas as gpd
    import xarray as xr

    from spatialmeta.raster.aggregate import aggregate

    states = gpd.read_file(SHARED / "us_states" / "states.shp")
    files = sorted((SHARED / "trefht_ccsm_ensemble").glob("TREFHT.B06.*.nc"))
    ys, years = [], None
    for f in files:
        store = tmp / f"{f.name}.zarr"
        aggregate(str(f), store, regions=states, id_column="STATE_NAME",
                  variables=["TREFHT"], progress=False)  # fmt: skip
        with xr.open_zarr(store) as ds:
            da = ds["TREFHT"].transpose("region", "time")
            ys.append(da.to_numpy())
            years = da["time"].dt.year.to_numpy()
            order = da["region"].to_numpy()
    xy = states.set_index("STATE_NAME").loc[order].geometry.to_crs(5070).centroid
    return np.stack(ys), years, np.c_[xy.x.to_numpy(), xy.y.to_numpy()] / 1e3


def main(argv=None) -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--support", type=int, default=20, help="support years before 1980")
    p.add_argument("--horizon", type=int, default=3)
    p.add_argument("--neighbours", type=int, default=4, help="k of the neighbour offset")
    args = p.parse_args(argv)

    from scipy import stats

    from spatialmeta.learn.metrics import crps_gaussian

    with tempfile.TemporaryDirectory() as tmp:
        y, years, xy = load(Path(tmp))
    m, r, _ = y.shape
    t0, s, h = int(np.searchsorted(years, 1980)), args.support, args.horizon
    origins = np.arange(t0, len(years) - h + 1)
    tgt = y[:, :, origins[:, None] + np.arange(h)]  # (M, R, O, H)
    # cumulative sums give every "mean of [a, o)" for all origins at once
    c = np.concatenate([np.zeros((m, r, 1)), np.cumsum(y, axis=-1)], axis=-1)

    def mean_between(a, b):  # mean of years [a, b) per origin; a, b: (O,) index arrays
        return (c[..., b] - c[..., a]) / (b - a)  # (M, R, O)

    # k nearest other states (leave-one-out: each state in turn is the held-out one)
    d = np.linalg.norm(xy[:, None] - xy[None], axis=-1)
    np.fill_diagonal(d, np.inf)
    nn = np.argsort(d, axis=1)[:, : args.neighbours]  # (R, k)
    sup = y[..., t0 - s : t0].mean(-1)  # (M, R)
    before = mean_between(np.zeros_like(origins), origins)  # all years before each origin
    others = (y[..., t0:].mean(-1).sum(0, keepdims=True) - y[..., t0:].mean(-1)) / (m - 1)
    level = {
        "climatology": np.broadcast_to(sup[..., None], sup.shape + origins.shape),
        "expanding": mean_between(np.full_like(origins, t0 - s), origins),
        **{f"last {k}": mean_between(origins - k, origins) for k in (3, 5, 10)},
        "neighbour offset": (sup - sup[:, nn].mean(-1))[..., None] + before[:, nn].mean(2),
        "oracle: forced": np.broadcast_to(others[..., None], sup.shape + origins.shape),
        "oracle: own test mean": np.broadcast_to(
            y[..., t0:].mean(-1)[..., None], sup.shape + origins.shape
        ),
    }
    mse = {k: ((v[..., None] - tgt) ** 2).mean(axis=(1, 2, 3)) for k, v in level.items()}
    rmse = {k: np.sqrt(v) for k, v in mse.items()}
    tcrit = stats.t.ppf(0.975, m - 1)

    def band(x):
        return f"{x.mean():+7.2%} ± {tcrit * x.std(ddof=1) / np.sqrt(m):.2%}"

    print(f"{m} members x {r} states, support {s} years before {years[t0]}, horizons 1..{h}, "
          f"{len(origins)} origins ({years[origins[0]]}..{years[origins[-1]]})")  # fmt: skip
    print(f"\n{'predictor':24s} {'RMSE (K)':>9s}   RMSE vs climatology (95 % over members)")
    for k, v in rmse.items():
        print(f"{k:24s} {v.mean():9.4f}   {band(v / rmse['climatology'] - 1)}")
    # CRPS: the climatology baseline's own spread (support std, as in baselines.climatology)
    # against the best spread a Gaussian around that mean could have (the realized RMSE)
    spread = y[..., t0 - s : t0].std(-1, ddof=1)[..., None, None]
    mean = level["climatology"][..., None]
    own = crps_gaussian(tgt, mean, np.broadcast_to(spread, tgt.shape)).mean(axis=(1, 2, 3))
    best = crps_gaussian(
        tgt, mean, np.broadcast_to(rmse["climatology"][:, None, None, None], tgt.shape)
    ).mean(axis=(1, 2, 3))
    print(f"\nclimatology CRPS {own.mean():.4f}; with the oracle spread {best.mean():.4f} "
          f"({band(best / own - 1)})")  # fmt: skip
    anom = y - y[..., :t0].mean(-1, keepdims=True)
    a, b = anom[..., :-1].ravel(), anom[..., 1:].ravel()
    print(f"lag-1 autocorrelation of the annual state anomalies: {np.corrcoef(a, b)[0, 1]:.3f}")


if __name__ == "__main__":
    main()

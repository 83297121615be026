"""Multilevel fits against metafor, in the same run on the same data.

1. A three-level model on the largest multilevel dataset of metadat (dat.mccurdy2020:
   1,653 effects in experiments within articles), ``pool_mv`` against ``rma.mv(random = ~
   1 | article/experiment)`` run by Rscript (R reads the dataset from its metadat package
   and writes it for us, so both fit the same rows).
2. Batched spatial fits (issue 15, item 6): ``--fields`` simulated variables of a field over
   the 49 US states' centroids (``../shared/data/us_states``; exponential correlation of the
   great-circle distance, range 800 km, with a nugget), each pooled with a spatial effect and
   an independent one: ``pool_mv_batch`` (all at once) against ``pool_mv`` one variable at
   a time and against metafor's ``rma.mv(random = list(~ lon + lat | const, ~ 1 | id),
   struct = "SPEXP")`` in an R loop. Times are medians of ``--repeat`` runs (metafor's:
   one). The log-likelihoods are compared analysis by analysis: the range's likelihood can
   have two modes, and a fit that stops at the lower one is counted. Ours keep the range
   below ten times the regions' extent; where the likelihood climbs past that (a linear
   variogram: metafor reports ranges of 1e9 km there) metafor's maximum is higher.
3. Batched three-level fits: 200 analyses of dat.konstantopoulos2011's shape (the effects
   perturbed), ``pool_mv_batch`` against ``pool_mv`` one at a time.

    .venv/bin/python benchmarks/bench_multilevel.py                 # needs R for metafor
    .venv/bin/python benchmarks/bench_multilevel.py --fields 200 --no-three-level
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

R_FIT = """
suppressPackageStartupMessages(library(metafor))
d <- dat.mccurdy2020
d <- d[!is.na(d$yi) & !is.na(d$vi), ]
write.csv(d[, c("article", "experiment", "yi", "vi")], commandArgs(TRUE)[1], row.names = FALSE)
t <- system.time(res <- rma.mv(yi, vi, random = ~ 1 | article/experiment, data = d))
cat(jsonlite::toJSON(list(sigma2 = as.numeric(res$sigma2), beta = as.numeric(res$beta),
                          se = as.numeric(res$se), seconds = t[["elapsed"]]), digits = NA, auto_unbox = TRUE))
"""


R_SPATIAL = """
suppressPackageStartupMessages(library(metafor))
args <- commandArgs(TRUE)
xy <- read.csv(args[1]); Y <- as.matrix(read.csv(args[2])); V <- as.matrix(read.csv(args[3]))
ll <- numeric(nrow(Y)); b <- numeric(nrow(Y)); rho <- numeric(nrow(Y))
t <- system.time(for (i in seq_len(nrow(Y))) {
  d <- data.frame(yi = Y[i, ], vi = V[i, ], lon = xy$lon, lat = xy$lat, id = seq_len(ncol(Y)),
                  const = 1)
  res <- tryCatch(rma.mv(yi, vi, random = list(~ lon + lat | const, ~ 1 | id),
                         struct = "SPEXP", dist = "gcd", data = d), error = function(e) NULL)
  if (is.null(res)) { ll[i] <- NA; b[i] <- NA; rho[i] <- NA } else {
    ll[i] <- as.numeric(logLik(res)); b[i] <- res$beta[1]; rho[i] <- res$rho }
})
cat(jsonlite::toJSON(list(logLik = ll, beta = b, rho = rho, seconds = t[["elapsed"]]),
                     digits = NA, auto_unbox = TRUE))
"""


def _us_fields(n_fields: int, seed: int = 0):
    """``n_fields`` simulated variables over the US states' centroids (lon, lat)."""
    import geopandas as gpd

    states = gpd.read_file(Path(__file__).resolve().parents[2] / "shared/data/us_states/states.shp")
    c = states.to_crs(5070).geometry.centroid.to_crs(4326)
    lonlat = np.column_stack([c.x, c.y])
    from spatialmeta.meta_analysis.multilevel import Spatial

    d = Spatial(lonlat, "SPEXP", "gcd").distances(len(lonlat))
    k = len(lonlat)
    rng = np.random.default_rng(seed)
    C = 0.3 * np.exp(-d / 800.0) + 0.1 * np.eye(k)
    v = rng.uniform(0.05, 0.2, (n_fields, k))
    L = np.linalg.cholesky(C[None] + np.eye(k) * v[:, None, :])
    return lonlat, 0.2 + np.einsum("bij,bj->bi", L, rng.normal(size=(n_fields, k))), v


def batched(n_fields: int, repeat: int) -> None:
    from _timing import best_of

    from spatialmeta.meta_analysis.multilevel import Spatial, pool_mv
    from spatialmeta.meta_analysis.multilevel_batch import pool_mv_batch

    lonlat, Y, v = _us_fields(n_fields)
    B, k = Y.shape
    ids = np.arange(k)
    sp = Spatial(lonlat, "SPEXP", "gcd")
    t_batch, res = best_of(lambda: pool_mv_batch(Y, v, random=[ids], spatial=sp), repeat)
    t_loop, fits = best_of(
        lambda: [pool_mv(Y[b], v[b], random=[ids], spatial=sp) for b in range(B)], repeat
    )
    ll_loop = np.array([f.logLik for f in fits])
    print(
        f"\n{B} fields over the {k} US states' centroids, SPEXP (great-circle) + independent, REML"
    )
    print(f"{'':26}{'seconds':>9}{'ratio':>8}  maximum (vs the best of the three)")
    rows = [("pool_mv_batch", t_batch, res.logLik), ("pool_mv, one at a time", t_loop, ll_loop)]
    ref = None
    if shutil.which("Rscript"):
        with tempfile.TemporaryDirectory() as tmp:
            files = [Path(tmp) / n for n in ("fit.R", "xy.csv", "Y.csv", "V.csv")]
            files[0].write_text(R_SPATIAL)
            pd.DataFrame(lonlat, columns=["lon", "lat"]).to_csv(files[1], index=False)
            pd.DataFrame(Y).to_csv(files[2], index=False)
            pd.DataFrame(v).to_csv(files[3], index=False)
            out = subprocess.run(["Rscript", *map(str, files)], capture_output=True, text=True)
        if out.returncode == 0:
            ref = json.loads(out.stdout.strip().splitlines()[-1])
            ll_r = np.array(
                [np.nan if x in (None, "NA") else x for x in ref["logLik"]], dtype=float
            )
            rows.append(("metafor rma.mv, R loop", ref["seconds"], ll_r))
        else:
            print(f"metafor failed: {out.stderr.strip()[-300:]}")
    best = np.nanmax([r[2] for r in rows], axis=0)
    for name, sec, ll in rows:
        failed = int(np.isnan(ll).sum())
        low = int((ll < best - 1e-4).sum())
        gap = float(np.nanmax(best - ll))
        print(f"{name:26}{sec:9.2f}{sec / t_batch:8.1f}x  {B - low - failed} of {B} at it"
              + (f"; {low} lower (by up to {gap:.3g})" if low else "")
              + (f"; {failed} stopped with an error (no convergence)" if failed else ""))  # fmt: skip


def batched_three_level(n: int, repeat: int) -> None:
    """``n`` three-level analyses of one shape: dat.konstantopoulos2011's schools within
    districts (56 effects), the effects perturbed (normal, SD 0.1) in each copy."""
    from _timing import best_of

    from spatialmeta.meta_analysis.multilevel import pool_mv
    from spatialmeta.meta_analysis.multilevel_batch import pool_mv_batch

    ref = Path(__file__).resolve().parents[1] / "tests/reference/multilevel_reference.json"
    c = next(
        x for x in json.loads(ref.read_text())["cases"] if x["name"] == "konstantopoulos2011_REML"
    )
    o, i, y, v = (np.array(c[f]) for f in ("outer", "inner", "yi", "vi"))
    Y = y + np.random.default_rng(0).normal(0, 0.1, (n, y.size))
    rand = [o, (o, i)]
    t_b, res = best_of(lambda: pool_mv_batch(Y, v, random=rand), repeat)
    t_l, fits = best_of(lambda: [pool_mv(Y[b], v, random=rand) for b in range(n)], repeat)
    gap = float(np.abs(res.logLik - np.array([f.logLik for f in fits])).max())
    print(f"\n{n} three-level analyses (dat.konstantopoulos2011's shape, k = {y.size}), REML")
    print(f"pool_mv_batch {t_b:.2f} s; pool_mv one at a time {t_l:.2f} s: {t_l / t_b:.1f}x; "
          f"largest logLik difference {gap:.1e}")  # fmt: skip


def main(argv=None) -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--fields", type=int, default=50, help="variables of the batched fit (50)")
    p.add_argument("--repeat", type=int, default=3, help="timing repeats of ours (3)")
    p.add_argument("--no-three-level", action="store_true", help="skip the mccurdy2020 fit")
    a = p.parse_args(argv)
    if not a.no_three_level:
        three_level()
    batched_three_level(200, a.repeat)
    batched(a.fields, a.repeat)


def three_level() -> None:
    from spatialmeta.meta_analysis.multilevel import pool_mv

    if not shutil.which("Rscript"):
        print("Rscript not available: this benchmark needs R (metafor, metadat) for the data")
        return
    with tempfile.TemporaryDirectory() as tmp:
        script, data = Path(tmp) / "fit.R", Path(tmp) / "d.csv"
        script.write_text(R_FIT)
        out = subprocess.run(["Rscript", str(script), str(data)], capture_output=True, text=True)
        if out.returncode != 0:
            print(f"metafor failed: {out.stderr.strip()[-300:]}")
            return
        ref = json.loads(out.stdout.strip().splitlines()[-1])
        d = pd.read_csv(data)
    t = time.perf_counter()
    res = pool_mv(d.yi, d.vi, random=[d.article, (d.article, d.experiment)])
    ours = time.perf_counter() - t
    print(
        f"dat.mccurdy2020: k = {len(d)}, {res.n_levels[0]} articles, {res.n_levels[1]} experiments"
    )
    print(f"{'':22}{'sigma2.1':>12}{'sigma2.2':>12}{'beta':>12}{'se':>12}{'seconds':>10}")
    print(
        f"{'spatialmeta pool_mv':22}"
        + "".join(f"{x:12.7f}" for x in (*res.sigma2, res.beta[0], res.se[0]))
        + f"{ours:10.1f}"
    )
    print(
        f"{'metafor rma.mv':22}"
        + "".join(f"{x:12.7f}" for x in (*ref["sigma2"], ref["beta"], ref["se"]))
        + f"{ref['seconds']:10.1f}"
    )
    rel = np.max(
        np.abs(
            np.r_[res.sigma2, res.beta, res.se] / np.r_[ref["sigma2"], ref["beta"], ref["se"]] - 1
        )
    )
    print(
        f"ratio (metafor / ours): {ref['seconds'] / ours:.1f}x; largest relative difference {rel:.1e}"
    )


if __name__ == "__main__":
    main()

"""REML random-effects pooling of many meta-analyses (k = 20): batched vs one at a time vs metafor.

Example:
    .venv/bin/python benchmarks/bench_pool.py --n 100000 --r-n 200
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import best_of  # noqa: E402

from spatialmeta.meta_analysis import pool  # noqa: E402

R_LOOP = """
suppressMessages(library(metafor))
d <- read.csv(commandArgs(TRUE)[1])
n <- max(d$row)
est <- numeric(n); tau2 <- numeric(n)
t0 <- proc.time()[["elapsed"]]
for (i in seq_len(n)) {
  s <- d[d$row == i, ]
  f <- tryCatch(rma(s$yi, s$vi, method = "REML"), error = function(e) NULL)
  if (is.null(f)) { est[i] <- NA; tau2[i] <- NA } else { est[i] <- f$b[1]; tau2[i] <- f$tau2 }
}
el <- proc.time()[["elapsed"]] - t0
cat(sprintf('{"seconds": %.6f, "estimate": [%s], "tau2": [%s]}', el,
    paste(ifelse(is.na(est), "NaN", sprintf("%.17g", est)), collapse = ","),
    paste(ifelse(is.na(tau2), "NaN", sprintf("%.17g", tau2)), collapse = ",")))
"""


def simulate(n: int, k: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    vi = rng.uniform(0.01, 0.2, size=(n, k))
    tau2 = rng.choice([0.0, 0.02, 0.1], size=(n, 1))
    yi = 0.3 + rng.normal(size=(n, 1)) * 0.1 + rng.normal(size=(n, k)) * np.sqrt(vi + tau2)
    return yi, vi


def main(argv=None) -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--n", type=int, default=100_000, help="meta-analyses pooled at once")
    p.add_argument("--k", type=int, default=20, help="studies per meta-analysis")
    p.add_argument(
        "--loop-n", type=int, default=300, help="meta-analyses for the one-at-a-time loop"
    )
    p.add_argument("--r-n", type=int, default=200, help="meta-analyses for metafor (0 to skip)")
    args = p.parse_args(argv)
    yi, vi = simulate(args.n, args.k)

    t_batch, res = best_of(lambda: pool(yi, vi, method="REML"), 3)
    rate_batch = args.n / t_batch
    m = args.loop_n
    t_loop, _ = best_of(lambda: [pool(yi[i], vi[i], method="REML") for i in range(m)], 1)
    rate_loop = m / t_loop
    rows = [
        ("spatialmeta pool, batched", rate_batch),
        ("spatialmeta pool, one at a time", rate_loop),
    ]
    print(f"REML, k = {args.k}; converged: {np.mean(res.converged):.4%} of {args.n}")
    if args.r_n and shutil.which("Rscript"):
        n_r = args.r_n
        work = Path(tempfile.mkdtemp())
        rows_csv = ["row,yi,vi"] + [
            f"{i + 1},{float(yi[i, j])!r},{float(vi[i, j])!r}"
            for i in range(n_r)
            for j in range(args.k)
        ]
        (work / "d.csv").write_text("\n".join(rows_csv))
        (work / "loop.R").write_text(R_LOOP)
        t = time.perf_counter()
        out = subprocess.run(
            ["Rscript", str(work / "loop.R"), str(work / "d.csv")], capture_output=True, text=True
        )
        if out.returncode == 0:
            r = json.loads(out.stdout)  # NaN (not strict JSON) marks metafor's failures
            rows.append(("metafor rma() in an R loop", n_r / r["seconds"]))
            est, tau2 = np.asarray(r["estimate"]), np.asarray(r["tau2"])
            ok = np.isfinite(est) & res.converged[:n_r]
            diff = np.max(np.abs(est[ok] - res.estimate[:n_r][ok]) / np.abs(res.estimate[:n_r][ok]))
            dt = np.max(np.abs(tau2[ok] - res.tau2[:n_r][ok]))
            print(
                f"agreement with metafor on {ok.sum()} of {n_r} (metafor failed on "
                f"{(~np.isfinite(est)).sum()}, we flag {(~res.converged[:n_r]).sum()} unconverged): "
                f"estimate rel {diff:.1e}, tau2 abs {dt:.1e}"
            )
        else:
            print("metafor run failed:", out.stderr[-500:])
        del t
    else:
        print("Rscript/metafor not available: peer skipped")
    print(f"\n{'method':36s} {'analyses/s':>12s} {'vs batched':>11s}")
    for name, rate in rows:
        print(f"{name:36s} {rate:12.0f} {rate_batch / rate:10.1f}x")


if __name__ == "__main__":
    main()

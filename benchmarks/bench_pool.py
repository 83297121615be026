"""REML random-effects pooling of many meta-analyses (k = 20), against metafor, PyMARE and statsmodels.

Runs every peer in the same process run and prints meta-analyses per second and ratios:

  spatialmeta pool, batched      all rows at once (``pool(yi, vi)`` on an (n, k) array)
  spatialmeta pool, one at a time  a Python loop of single pool() calls
  metafor rma() in an R loop     Rscript, REML (the reference; its results are compared
                                 with ours on the first --r-n meta-analyses)
  PyMARE, vectorized             VarianceBasedLikelihoodEstimator(method="REML") fitted to
                                 --pymare-n datasets at once (its parallel-dataset mode)
  statsmodels combine_effects    a loop; statsmodels has no REML, so its iterated
                                 (Paule-Mandel) estimator, next to our PM on the same rows

PyMARE and statsmodels come with the ``bench`` extra (pip install -e ".[bench]").

Example:
    .venv/bin/python benchmarks/bench_pool.py                   # 1,000,000 meta-analyses
    .venv/bin/python benchmarks/bench_pool.py --n 100000 --r-n 200
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import best_of  # noqa: E402

from spatialmeta.meta_analysis import pool  # noqa: E402
from spatialmeta.meta_analysis.estimators import MAXITER  # noqa: E402

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


def run_metafor(yi: np.ndarray, vi: np.ndarray) -> dict | None:
    """metafor's rma(method = "REML") in an R loop over the rows; None without Rscript."""
    if not shutil.which("Rscript"):
        return None
    n, k = yi.shape
    work = Path(tempfile.mkdtemp())
    rows_csv = ["row,yi,vi"] + [
        f"{i + 1},{float(yi[i, j])!r},{float(vi[i, j])!r}" for i in range(n) for j in range(k)
    ]
    (work / "d.csv").write_text("\n".join(rows_csv))
    (work / "loop.R").write_text(R_LOOP)
    out = subprocess.run(
        ["Rscript", str(work / "loop.R"), str(work / "d.csv")], capture_output=True, text=True
    )
    if out.returncode != 0:
        print("metafor run failed:", out.stderr[-500:])
        return None
    r = json.loads(out.stdout)  # NaN (not strict JSON) marks metafor's failures
    return {"seconds": r["seconds"], "estimate": np.asarray(r["estimate"]),
            "tau2": np.asarray(r["tau2"])}  # fmt: skip


def run_pymare(yi: np.ndarray, vi: np.ndarray, repeat: int = 1):
    try:
        from pymare.estimators import VarianceBasedLikelihoodEstimator
    except ImportError:
        return None
    est = VarianceBasedLikelihoodEstimator(method="REML")
    x = np.ones((yi.shape[1], 1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t, _ = best_of(lambda: est.fit(yi.T, vi.T, x), repeat)
    return t, est.params_["fe_params"][0], est.params_["tau2"][0]


def run_statsmodels(yi: np.ndarray, vi: np.ndarray):
    try:
        from statsmodels.stats.meta_analysis import combine_effects
    except ImportError:
        return None

    def loop():
        return np.array([combine_effects(yi[i], vi[i], method_re="iterated").tau2
                         for i in range(len(yi))])  # fmt: skip

    return best_of(loop, 1)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--n", type=int, default=1_000_000, help="meta-analyses pooled at once")
    p.add_argument("--k", type=int, default=20, help="studies per meta-analysis")
    p.add_argument("--repeat", type=int, default=3, help="timed runs of the batched pool")
    p.add_argument(
        "--loop-n", type=int, default=300, help="meta-analyses for the one-at-a-time loop (0: skip)"
    )
    p.add_argument(
        "--r-n", type=int, default=1000, help="meta-analyses for metafor, compared (0: skip)"
    )
    p.add_argument("--pymare-n", type=int, default=20_000, help="datasets for PyMARE (0: skip)")
    p.add_argument(
        "--pymare-repeat", type=int, default=3, help="timed PyMARE fits (median is reported)"
    )
    p.add_argument("--sm-n", type=int, default=2000, help="meta-analyses for statsmodels (0: skip)")
    args = p.parse_args(argv)
    yi, vi = simulate(args.n, args.k)

    # the first batched call of a process imports numba and loads the compiled kernels
    # (compiles them if no cache): a one-time cost, reported apart from the throughput
    t_first, _ = best_of(lambda: pool(yi[:2], vi[:2], method="REML"), 1)
    print(f"first batched call (numba import, kernel load): {t_first:.2f} s")
    t_batch, res = best_of(lambda: pool(yi, vi, method="REML"), args.repeat)
    rate_batch = args.n / t_batch
    print(
        f"REML, k = {args.k}: {args.n:,} meta-analyses in {t_batch:.2f} s (median of "
        f"{args.repeat}); converged: {np.mean(res.converged):.4%}"
    )
    rescued = int((np.asarray(res.iterations) > MAXITER).sum())
    print(
        f"Fisher scoring did not converge on {rescued:,} ({rescued / args.n:.3%}); the "
        "bracketed solve of the same likelihood found their optimum"
    )
    rows = [("spatialmeta pool, batched (REML)", rate_batch)]
    m = args.loop_n
    if m:
        t_loop, _ = best_of(lambda: [pool(yi[i], vi[i], method="REML") for i in range(m)], 1)
        rows.append(("spatialmeta pool, one at a time (REML)", m / t_loop))
    ratios = {}
    if args.r_n:
        r = run_metafor(yi[: args.r_n], vi[: args.r_n])
        if r is None:
            print("Rscript/metafor not available: peer skipped")
        else:
            rows.append(("metafor rma() in an R loop (REML)", args.r_n / r["seconds"]))
            ratios["metafor"] = rate_batch / rows[-1][1]
            n_r = args.r_n
            est, tau2 = r["estimate"], r["tau2"]
            ok = np.isfinite(est) & res.converged[:n_r]
            rel = np.abs(est[ok] - res.estimate[:n_r][ok]) / np.abs(res.estimate[:n_r][ok])
            dt = np.abs(tau2[ok] - res.tau2[:n_r][ok])
            rel_t = dt / np.maximum(np.abs(tau2[ok]), 1e-300)
            agree = np.mean((rel <= 1e-8) & ((rel_t <= 1e-8) | (dt <= 1e-10)))
            print(
                f"agreement with metafor on the first {n_r:,}: {ok.sum()} compared (metafor "
                f"failed on {(~np.isfinite(est)).sum()}, we flag "
                f"{(~res.converged[:n_r]).sum()} unconverged); estimate max rel "
                f"{rel.max():.1e}, tau2 max abs {dt.max():.1e}; within 1e-8: {agree:.2%}"
            )
    if args.pymare_n:
        out = run_pymare(yi[: args.pymare_n], vi[: args.pymare_n], args.pymare_repeat)
        if out is None:
            print("PyMARE not installed (pip install -e '.[bench]'): peer skipped")
        else:
            t, est, tau2 = out
            rows.append(("PyMARE vectorized (REML)", args.pymare_n / t))
            ratios["PyMARE"] = rate_batch / rows[-1][1]
            n_p = args.pymare_n
            d = np.abs(est - res.estimate[:n_p]) / np.abs(res.estimate[:n_p])
            print(f"PyMARE vs ours on {n_p:,}: estimate median rel diff {np.median(d):.1e}")
    if args.sm_n:
        out = run_statsmodels(yi[: args.sm_n], vi[: args.sm_n])
        if out is None:
            print("statsmodels not installed (pip install -e '.[bench]'): peer skipped")
        else:
            t, tau2 = out
            t_pm, pm = best_of(lambda: pool(yi, vi, method="PM"), 1)
            rows.append(("spatialmeta pool, batched (PM)", args.n / t_pm))
            rows.append(("statsmodels combine_effects loop (PM)", args.sm_n / t))
            ratios["statsmodels (PM vs PM)"] = rows[-2][1] / rows[-1][1]
            d = np.abs(tau2 - pm.tau2[: args.sm_n])
            print(f"statsmodels PM vs ours on {args.sm_n:,}: tau2 max abs diff {d.max():.1e}")
    print(f"\n{'method':42s} {'analyses/s':>12s} {'batched REML is':>16s}")
    for name, rate in rows:
        print(f"{name:42s} {rate:12,.0f} {rate_batch / rate:14.1f}x")
    if ratios:
        print(
            "\nspeed-up of the batched pool: "
            + ", ".join(f"{k_} {v:,.0f}x" for k_, v in ratios.items())
        )


if __name__ == "__main__":
    main()

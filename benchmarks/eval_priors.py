"""Issue 14's simulation: intervals for mu with two or three studies, by method.

Simulates meta-analyses with k = 2, 3, 5, 10 studies: log(tau^2) ~ N(-2.5, 1.2^2) per
meta-analysis (a Turner-like heterogeneity distribution), sampling variances uniform on
[0.01, 0.2], true mu = 0. Compares the 95 % intervals for mu of

  DL + z, REML + z, REML + Knapp-Hartung       (pool, batched)
  Bayes, published prior                       (bayes_pool with Turner et al. 2015's
                                                marginal log-OR prior, flat mu)
  Bayes, learned prior                         (bayes_pool with the prior that
                                                learn_tau_prior learns from a separate
                                                simulated corpus of 500 meta-analyses)

and prints coverage, median width and the median absolute error of tau (REML/DL: sqrt of
the estimate; Bayes: the posterior median).

    .venv/bin/python benchmarks/eval_priors.py            # 2,000 meta-analyses per k
    .venv/bin/python benchmarks/eval_priors.py --reps 500 --seed 1
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np


def simulate(rng, n: int, k: int):
    tau = np.exp(rng.normal(-2.5, 1.2, n) / 2)
    vi = rng.uniform(0.01, 0.2, (n, k))
    yi = rng.normal(0.0, np.sqrt(vi + tau[:, None] ** 2))
    return yi, vi, tau


def corpus(rng, n: int = 500):
    """A separate corpus: k from 2 to 10, NaN-padded."""
    k = rng.integers(2, 11, n)
    yi, vi, _ = simulate(rng, n, 10)
    cut = np.arange(10)[None, :] >= k[:, None]
    yi[cut] = vi[cut] = np.nan
    return yi, vi


def main(argv=None) -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--reps", type=int, default=2000, help="meta-analyses per k")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    from spatialmeta.meta_analysis import bayes_pool, learn_tau_prior, pool, published_prior

    warnings.filterwarnings("ignore")
    rng = np.random.default_rng(args.seed)
    t = time.perf_counter()
    learned = learn_tau_prior(*corpus(rng), family="lognormal_tau2")
    print(f"learned prior (500-analysis corpus, {time.perf_counter() - t:.1f} s): "
          f"log tau^2 ~ N({learned.params['mu']:.2f}, {learned.params['sigma']:.2f}^2) "
          f"(SE {learned.se['mu']:.2f}, {learned.se['sigma']:.2f}); generating N(-2.50, 1.20^2)")  # fmt: skip
    turner = published_prior("turner2015")
    turner = type(turner)(turner.family, turner.params)  # used on this synthetic scale
    print(f"\n{'k':>3} {'method':28s} {'coverage':>9} {'median width':>13} {'tau MAE':>9}")
    for k in (2, 3, 5, 10):
        yi, vi, tau = simulate(rng, args.reps, k)
        rows = []
        for name, kw in (("DL + z", dict(method="DL")), ("REML + z", dict(method="REML")),
                         ("REML + Knapp-Hartung", dict(method="REML", test="knha"))):  # fmt: skip
            r = pool(yi, vi, **kw)
            lo, hi = np.asarray(r.ci_lb), np.asarray(r.ci_ub)
            rows.append((name, lo, hi, np.sqrt(np.asarray(r.tau2))))
        for name, prior in (
            ("Bayes, published prior", turner),
            ("Bayes, learned prior", learned.prior),
        ):
            r = bayes_pool(yi, vi, tau_prior=prior)
            rows.append((name, r.mu_lb, r.mu_ub, r.tau_median))
        for name, lo, hi, tau_hat in rows:
            cover = np.mean((lo <= 0) & (hi >= 0))
            width = np.median(hi - lo)
            mae = np.median(np.abs(tau_hat - tau))
            print(f"{k:>3} {name:28s} {100 * cover:8.1f}% {width:13.3f} {mae:9.3f}")


if __name__ == "__main__":
    main()

"""Bayesian random effects batched: 10,000 meta-analyses (k = 5) by ``bayes_pool`` in one
call, against the same function called once per meta-analysis (the loop bayesmeta's users
write in R; bayesmeta itself is not on this machine's registries), for a flat, a normal and
Bartoš et al.'s t prior on mu, with Bartoš's SMD tau prior.

    .venv/bin/python benchmarks/bench_bayes.py
    .venv/bin/python benchmarks/bench_bayes.py --n 2000 --loop 100
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def main(argv=None) -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--n", type=int, default=10_000, help="meta-analyses in the batch")
    p.add_argument("--k", type=int, default=5, help="studies per meta-analysis")
    p.add_argument("--loop", type=int, default=200, help="meta-analyses timed one at a time")
    args = p.parse_args(argv)
    from spatialmeta.meta_analysis import bayes_pool, published_prior
    from spatialmeta.meta_analysis.priors import MuPrior

    rng = np.random.default_rng(0)
    vi = rng.uniform(0.01, 0.2, (args.n, args.k))
    yi = rng.normal(0.2, np.sqrt(vi + 0.05))
    tau, t_mu = published_prior("bartos2021", scale="smd")
    priors = {"flat": MuPrior("flat"), "normal": MuPrior("normal", {"mean": 0.0, "sd": 1.0}),
              "t (Bartos)": t_mu}  # fmt: skip
    print(f"{'mu prior':12s}{'batch of ' + str(args.n):>16s}{'per analysis':>16s}"
          f"{'one at a time':>16s}{'ratio':>8s}")  # fmt: skip
    for name, mu in priors.items():
        t = time.perf_counter()
        batch = bayes_pool(yi, vi, tau_prior=tau, mu_prior=mu)
        tb = time.perf_counter() - t
        t = time.perf_counter()
        for i in range(args.loop):  # the peer: one call per meta-analysis
            one = bayes_pool(yi[i], vi[i], tau_prior=tau, mu_prior=mu)
        tl = (time.perf_counter() - t) / args.loop
        assert abs(one.mu_lb - batch.mu_lb[args.loop - 1]) < 1e-9  # the same numbers
        per = tb / args.n
        print(f"{name:12s}{tb:14.2f} s{1e3 * per:13.2f} ms{1e3 * tl:13.2f} ms{tl / per:7.1f}x")


if __name__ == "__main__":
    main()

"""Issue 14, item 6: forecast skill ratios pooled with a learned prior. The per-region skill
of the meta-learner against each other method is a corpus of meta-analyses too.

For each monthly data set of issue 12 (``eval_monthly``: SST on 6° tiles, zonal wind on
10° tiles, TS on the US states) and seed, the held-out regions' log MSE ratios of ``meta``
against every other method (delta-method HAC variances, :func:`log_mse_ratio`) form one
meta-analysis per comparison (k = the held-out regions: 374, 205 or 15). Leave one data
set out: a prior for tau (log-normal on tau^2) is learned from the other two sets'
comparisons and each comparison of the held-out set is pooled by REML and by Bayes with
that prior. Printed per comparison: the pooled ratio and its 95 % interval both ways, and
the held-out log predictive density under the learned prior minus a flat prior's
(U(0, 2 x the largest training REML tau)).

    .venv/bin/python benchmarks/eval_skill_priors.py              # seed 0, about 3 minutes
    .venv/bin/python benchmarks/eval_skill_priors.py --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--episodes", type=int, default=400)
    args = p.parse_args(argv)
    from eval_monthly import SETS, run

    from spatialmeta.learn.evaluate import log_mse_ratio, observed
    from spatialmeta.meta_analysis import bayes_pool, learn_tau_prior, pool
    from spatialmeta.meta_analysis.priors import TauPrior

    warnings.filterwarnings("ignore")
    rows = []  # one meta-analysis per (set, seed, comparison)
    with tempfile.TemporaryDirectory() as tmp:
        for name in SETS:
            for seed in args.seeds:
                tasks, split, *_, fc = run(name, Path(tmp), support=24, seed=seed,
                                           episodes=args.episodes)  # fmt: skip
                by = {f.method: f for f in fc}
                y = observed(tasks, by["meta"])
                for f in fc:
                    if f.method == "meta":
                        continue
                    yi, vi = log_mse_ratio(y, by["meta"].mean, f.mean, lags=3)
                    ok = np.isfinite(yi)
                    rows.append({"set": name, "seed": seed, "versus": f.method,
                                 "yi": yi[ok], "vi": vi[ok]})  # fmt: skip
    kmax = max(len(r["yi"]) for r in rows)
    Y = np.full((len(rows), kmax), np.nan)
    V = np.full_like(Y, np.nan)
    for i, r in enumerate(rows):
        Y[i, : len(r["yi"])], V[i, : len(r["vi"])] = r["yi"], r["vi"]
    meta = pd.DataFrame([{k: r[k] for k in ("set", "seed", "versus")} for r in rows])
    reml = pool(Y, V, method="REML")
    tau = np.sqrt(np.asarray(reml.tau2))
    out = []
    for name in SETS:
        held = (meta.set == name).to_numpy()
        learned = learn_tau_prior(Y[~held], V[~held])
        flat = TauPrior("uniform_tau", {"upper": 2 * float(tau[~held].max())})
        print(f"\n{name}: prior learned from {int((~held).sum())} comparisons on the other sets: "
              f"log tau^2 ~ N({learned.params['mu']:.2f}, {learned.params['sigma']:.2f}^2)")  # fmt: skip
        bl = bayes_pool(Y[held], V[held], tau_prior=learned.prior)
        bf = bayes_pool(Y[held], V[held], tau_prior=flat)
        for j, i in enumerate(np.flatnonzero(held)):
            out.append({
                "set": name, "seed": meta.seed[i], "versus": meta.versus[i], "k": int(reml.k[i]),
                "REML ratio": np.exp(reml.estimate[i]), "REML lb": np.exp(reml.ci_lb[i]),
                "REML ub": np.exp(reml.ci_ub[i]), "Bayes ratio": np.exp(bl.mu_median[j]),
                "Bayes lb": np.exp(bl.mu_lb[j]), "Bayes ub": np.exp(bl.mu_ub[j]),
                "LPD learned - flat": bl.log_evidence[j] - bf.log_evidence[j],
            })  # fmt: skip
    table = pd.DataFrame(out)
    pd.set_option("display.width", 160)
    print("\nMSE ratio of meta to each method (below 1: meta better), pooled over the held-out "
          "regions, 95 % intervals\n")  # fmt: skip
    print(table.round(3).to_string(index=False))
    d = table["LPD learned - flat"]
    print(f"\nheld-out log predictive density, learned minus flat: {d.mean():+.3f} per comparison "
          f"(better in {int((d > 0).sum())} of {len(d)})")  # fmt: skip


if __name__ == "__main__":
    main()

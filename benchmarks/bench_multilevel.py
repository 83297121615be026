"""A three-level model on the largest multilevel dataset of metadat (dat.mccurdy2020: 1,653
effects in experiments within articles), ``pool_mv`` against metafor's ``rma.mv(random = ~
1 | article/experiment)`` run by Rscript on the same data in the same run (R reads the
dataset from its metadat package and writes it for us, so both fit the same rows).

    .venv/bin/python benchmarks/bench_multilevel.py          # needs R with metafor/metadat
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


def main(argv=None) -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.parse_args(argv)
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

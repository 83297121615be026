"""Write tests/reference/rescue_inputs.json: analyses on which Fisher scoring fails.

The first 25 rows per method (ML, REML, EB) of ``benchmarks/bench_pool.py``'s simulated
k = 20 analyses (seed 0, 200,000 rows) on which metafor's Fisher scoring (threshold 1e-5,
100 iterations), as ``spatialmeta`` iterates it, does not converge; plus the
``nonconverge`` set of ``metafor_reference.json``. Then ``make_rescue_reference.R`` fits
them with metafor (default control: it stops; and ``stepadj = 0.5, maxiter = 10000,
threshold = 1e-12``: it converges) into ``rescue_reference.json``.

    .venv/bin/python tests/reference/make_rescue_inputs.py
    Rscript tests/reference/make_rescue_reference.R
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1] / "benchmarks"))
from bench_pool import simulate  # noqa: E402

from spatialmeta.meta_analysis import estimators  # noqa: E402


def main() -> None:
    yi, vi = simulate(200_000, 20)
    m = np.ones(yi.shape, dtype=bool)
    k = np.full(yi.shape[0], 20)
    out = {"source": "benchmarks/bench_pool.py simulate(200000, 20), seed 0", "sets": []}
    yc = yi - yi.mean(1, keepdims=True)
    he = np.maximum(0.0, estimators._he(yc, vi, m, k.astype(float))[0])
    for method in ("ML", "REML", "EB"):
        _, conv, _ = estimators._fisher_scoring(yc, vi, m, k.astype(float), method, he)
        rows = np.flatnonzero(~conv)[:25]
        for r in rows:
            out["sets"].append({"name": f"sim{r}", "method": method,
                                "yi": [float(f"{x:.15g}") for x in yi[r]],
                                "vi": [float(f"{x:.15g}") for x in vi[r]]})  # fmt: skip
    ref = json.loads((HERE / "metafor_reference.json").read_text())["datasets"]["nonconverge"]
    out["sets"].append({"name": "nonconverge", "method": "REML", "yi": ref["yi"], "vi": ref["vi"]})
    (HERE / "rescue_inputs.json").write_text(json.dumps(out))
    print(f"{len(out['sets'])} analyses")


if __name__ == "__main__":
    main()

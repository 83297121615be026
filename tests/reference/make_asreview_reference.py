"""Reference screening orders from ASReview (issue 16): its simulation of two of the shared
reviews with its default model (ELAS u4: TF-IDF 1-2 grams + linear SVM, balanced) and its
naive Bayes model (ELAS u3), from a seeded prior draw of one included and one excluded
record, every record screened. tests/screening/test_screeners.py holds our replicas of the
two models to these orders.

ASReview is not a dependency of spatialmeta; run this in its own environment:

    python3.11 -m venv /tmp/asr && /tmp/asr/bin/pip install asreview==3.0.8
    /tmp/asr/bin/python tests/reference/make_asreview_reference.py

(run from the repository root, with ../shared beside it; about 20 s; nothing is
downloaded: the data is a local CSV).
"""

import json
import os
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[2]
REVIEWS = ("Cohen_2006_Antihistamines", "SYNERGY_Sep_2021")
MODELS = {"default": "elas_u4", "nb": "elas_u3"}


def main():
    os.chdir(tempfile.mkdtemp())  # asreview's import writes a request cache into the cwd
    import asreview
    from asreview import ActiveLearningCycle, Simulate, load_dataset
    from asreview.models import get_ai_config

    data = pd.read_csv(
        ROOT.parent / "shared/data/screening/reviews.csv.gz", dtype=str, keep_default_na=False
    )
    cases = []
    for review in REVIEWS:
        d = data[data.review_id == review].reset_index(drop=True)
        csv = Path.cwd() / f"{review}.csv"
        d[["title", "abstract", "label_included"]].to_csv(csv, index=False)
        y = d.label_included.astype(int).to_numpy()
        rng = np.random.default_rng(0)
        prior = [int(rng.choice(np.flatnonzero(y == 1))), int(rng.choice(np.flatnonzero(y == 0)))]
        for name, config in MODELS.items():
            np.random.seed(0)  # noqa: NPY002 - asreview simulate --seed seeds the global RNG
            db = load_dataset(csv, dataset_id=review)
            sim = Simulate(
                db.input.get_df(),
                db.input["included"],
                [ActiveLearningCycle.from_meta(get_ai_config(config)["value"])],
                stopper=-1,
            )
            sim.label(prior)
            sim.review()
            order = [int(i) for i in sim._results["record_id"]]
            cases.append(
                {
                    "review": review,
                    "model": name,
                    "config": config,
                    "prior": prior,
                    "record_ids": d.record_id.tolist(),
                    "order": order,
                }
            )
    out = ROOT / "tests/reference/asreview_reference.json"
    out.write_text(json.dumps({"asreview": asreview.__version__, "cases": cases}))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

"""The per-review screeners against ASReview 3.0.8's own simulations
(tests/reference/asreview_reference.json, from make_asreview_reference.py), and the
active loop's contract."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import sparse

from spatialmeta.screening import screening_metrics
from spatialmeta.screening.screeners import (
    LogisticScreener,
    NaiveBayesScreener,
    SVMScreener,
    balanced_weights,
)
from spatialmeta.screening.simulate import simulate
from spatialmeta.tasks.reviews import read_reviews
from tests.conftest import shared_path

REF = json.loads((Path(__file__).resolve().parents[1] / "reference" /
                  "asreview_reference.json").read_text())  # fmt: skip
SCREENERS = {"default": SVMScreener, "nb": NaiveBayesScreener}


@pytest.fixture(scope="module")
def reviews():
    return read_reviews(shared_path("screening", "reviews.csv.gz"))


@pytest.mark.parametrize("case", REF["cases"], ids=lambda c: f"{c['review']}-{c['model']}")
def test_the_asreview_models_screen_in_asreviews_order(reviews, case):
    """ASReview's default (SVM) and naive Bayes models, refitted after every label from the
    same prior knowledge: the whole screening order equals ASReview's, record for record
    (the SVM with ASReview's weights normalized to the number of labels: without that
    normalization its C acts differently and the orders part after 7 records)."""
    rows = reviews.rows(case["review"])
    assert reviews.record_id[rows].tolist() == case["record_ids"]
    y = reviews.label[rows].astype(int)
    scr = SCREENERS[case["model"]]()
    X = scr.features.fit_transform(reviews.text()[rows])
    order = simulate(scr, X, y, case["prior"], batch=1)
    mismatch = np.flatnonzero(order != np.array(case["order"]))
    assert mismatch.size == 0, f"first difference at position {mismatch[0]}"


def test_balanced_weights_and_the_loop_contract():
    y = np.array([1, 0, 0, 0, 1, 0])
    w = balanced_weights(y, 9.8)
    assert w.sum() == pytest.approx(6) and w[1] / w[0] == pytest.approx(2 / (9.8 * 4))
    with pytest.raises(ValueError, match="at least one included and one excluded"):
        balanced_weights(np.array([1, 1]), 1.0)
    rng = np.random.default_rng(0)
    X = sparse.random(200, 50, density=0.1, random_state=1, format="csr")
    labels = (rng.random(200) < 0.1).astype(int)
    labels[:2] = [1, 0]
    order = simulate(LogisticScreener(), X, labels, [0, 1], batch="auto")
    assert order[:2].tolist() == [0, 1] and np.array_equal(np.sort(order), np.arange(200))
    again = simulate(LogisticScreener(), X, labels, [0, 1], batch="auto")
    np.testing.assert_array_equal(order, again)
    m = screening_metrics(order, labels, n_prior=2)
    assert -0.2 < m.wss[0] < 0.5  # random features: no better than chance, give or take
    with pytest.raises(ValueError, match="`prior` must be distinct rows"):
        simulate(LogisticScreener(), X, labels, [0, 0])


def test_mixed_queries_take_the_uncertain_share_by_hand():
    """With ``mix``, after q queries floor(mix q) were uncertainty picks (the unlabelled
    record whose score is nearest 0), the rest certainty picks: the loop by hand, one
    record at a time, gives the same order."""
    rng = np.random.default_rng(4)
    X = sparse.random(60, 30, density=0.2, random_state=2, format="csr")
    labels = (rng.random(60) < 0.2).astype(int)
    labels[:2] = [1, 0]
    order = simulate(LogisticScreener(), X, labels, [0, 1], batch=1, mix=0.25)
    lab, want = [0, 1], [0, 1]
    for q in range(58):
        scr = LogisticScreener().fit(X[lab], labels[lab])
        pool = [i for i in range(60) if i not in lab]
        s = scr.scores(X[pool])
        unc = math.floor(0.25 * (q + 1)) > math.floor(0.25 * q)
        pick = pool[int(np.argmin(np.abs(s)))] if unc else pool[int(np.argmax(s))]
        lab.append(pick)
        want.append(pick)
    np.testing.assert_array_equal(order, want)
    assert not np.array_equal(order, simulate(LogisticScreener(), X, labels, [0, 1], batch=1))
    with pytest.raises(ValueError, match="`mix`"):
        simulate(LogisticScreener(), X, labels, [0, 1], mix=1.5)

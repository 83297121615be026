"""The meta-learned screening policy: its schedule, the simulations it learns from, and a
choice made from the training reviews alone."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import sparse
from sklearn.svm import LinearSVC

from spatialmeta.screening import SVMScreener, screening_metrics, simulate
from spatialmeta.screening import policy as pol
from spatialmeta.screening.features import TextFeatures
from spatialmeta.screening.harness import run_simulations
from spatialmeta.screening.policy import Policy, PolicyScreener, policy_table
from spatialmeta.tasks.reviews import ReviewTaskSet, read_reviews
from tests.conftest import shared_path

SCHEDULE = Policy((0.05, 20.0), (0.3, 5.0), 0.1)


def _reviews(n_reviews=4, n=90, seed=0) -> ReviewTaskSet:
    """Small reviews whose included records share a few words with some noise."""
    rng = np.random.default_rng(seed)
    rows = []
    for r in range(n_reviews):
        key = [f"key{r}w{j}" for j in range(5)]
        noise = [f"noise{j}" for j in range(60)]
        for i in range(n):
            inc = int(i % 9 == 0)
            words = list(rng.choice(noise, 10))
            if rng.random() < (0.8 if inc else 0.05):
                words += list(rng.choice(key, 2))
            rows.append({"review": f"r{r}", "record_id": f"{r}-{i}", "title": "",
                         "abstract": " ".join(words), "label": inc})  # fmt: skip
    return ReviewTaskSet.from_frame(pd.DataFrame(rows))


def test_a_policy_switches_its_setting_at_the_share_of_records_labelled():
    assert SCHEDULE.setting(9, 100) == (0.05, 20.0)
    assert SCHEDULE.setting(10, 100) == (0.3, 5.0)
    assert SCHEDULE.label == "0.05/20 -> 0.3/5 @ 0.1"
    assert Policy().label == "0.11/9.8" and Policy(chars=True).label == "0.11/9.8 +chars"
    labels = [p.label for p in pol.DEFAULT_POLICIES]
    assert len(set(labels)) == len(labels) == 5  # the table's keys are unique
    with pytest.raises(ValueError, match="`late` must be \\(C, ratio\\), both > 0"):
        Policy(late=(0.0, 5.0))
    with pytest.raises(ValueError, match="`switch` must be a share in \\[0, 1\\]"):
        Policy(switch=1.5)
    with pytest.raises(ValueError, match="at least one candidate"):
        PolicyScreener(())
    with pytest.raises(ValueError, match="call `features.fit_transform` on all the review"):
        PolicyScreener(policy=SCHEDULE).fit(np.eye(2), np.array([0, 1]))


def test_the_default_policy_screens_as_asreviews_default_and_a_schedule_refits_by_phase():
    tasks = read_reviews(shared_path("screening", "reviews.csv.gz"), review="SYNERGY_Sep_2021")
    rows = tasks.rows("SYNERGY_Sep_2021")
    y = tasks.label[rows].astype(int)
    prior = np.searchsorted(rows, tasks.support("SYNERGY_Sep_2021", seed=1))
    scr = PolicyScreener(policy=Policy())
    X = scr.features.fit_transform(tasks.text()[rows])
    ref = simulate(SVMScreener(), TextFeatures().fit_transform(tasks.text()[rows]), y, prior)
    np.testing.assert_array_equal(simulate(scr, X, y, prior), ref)
    # the schedule: C and ratio of the refit follow the share of the 271 records labelled
    sched = PolicyScreener(policy=SCHEDULE)
    X = sched.features.fit_transform(tasks.text()[rows])
    for n_lab, want in ((27, (0.05, 20.0)), (28, (0.3, 5.0))):
        lab = np.r_[prior, np.setdiff1d(np.arange(rows.size), prior)[: n_lab - 2]]
        sched.fit(X[lab], y[lab])
        assert (sched.model_.C, sched.model_.ratio) == want
        ref = SVMScreener(*want).fit(X[lab], y[lab]).scores(X)
        np.testing.assert_allclose(sched.scores(X), ref)


def test_unlabelled_records_join_the_late_fit_as_weighted_presumed_exclusions():
    pu = Policy((0.05, 20.0), (0.3, 5.0), 0.1, unlabelled=0.1)
    assert pu.label == "0.05/20 -> 0.3/5 @ 0.1 +unlabelled 0.1"
    assert pu.unlabelled_weight(9, 100) == 0.0 and pu.unlabelled_weight(10, 100) == 0.1
    assert SCHEDULE.unlabelled_weight(50, 100) == 0.0
    with pytest.raises(ValueError, match="`unlabelled` .* must be >= 0; got -0.1"):
        Policy(unlabelled=-0.1)
    tasks = _reviews(n_reviews=1)
    rows = tasks.rows("r0")
    y = tasks.label[rows].astype(int)
    plain, scr = PolicyScreener(policy=SCHEDULE), PolicyScreener(policy=pu)
    X = scr.features.fit_transform(tasks.text()[rows])
    plain.features.fit_transform(tasks.text()[rows])
    rng = np.random.default_rng(3)
    for n_lab in (8, 40):  # 90 records: early phase below 9 labelled, late from then on
        lab = np.r_[0, 1, rng.choice(np.arange(2, rows.size), n_lab - 2, replace=False)]
        rest = np.setdiff1d(np.arange(rows.size), lab)
        got = scr.fit_scores(X[lab], y[lab], X[rest])
        if n_lab == 8:  # early: the unlabelled records are not used
            np.testing.assert_array_equal(got, plain.fit_scores(X[lab], y[lab], X[rest]))
            continue
        # late: a linear SVM on the labelled records (ASReview's balanced weights) and the
        # unlabelled ones as exclusions, each 0.1 of a labelled exclusion's weight
        n1, n0 = int(y[lab].sum()), int((y[lab] == 0).sum())
        w = np.where(y[lab] == 1, 1.0, n1 / (5.0 * n0))
        w *= lab.size / w.sum()
        weights = np.r_[w, np.full(rest.size, 0.1 * w[y[lab] == 0][0])]
        stacked = sparse.vstack([X[lab], X[rest]], format="csr")
        ref = LinearSVC(C=0.3, random_state=0).fit(stacked, np.r_[y[lab], np.zeros(rest.size)],
                                                   sample_weight=weights)  # fmt: skip
        np.testing.assert_allclose(got, ref.decision_function(X[rest]))
        assert not np.allclose(got, plain.fit_scores(X[lab], y[lab], X[rest]))


def test_the_policy_is_chosen_on_the_training_reviews_alone(monkeypatch):
    tasks = _reviews()
    cands = (Policy(), SCHEDULE, Policy((0.3, 5.0), (0.3, 5.0)))
    table = policy_table(tasks, ["r0", "r1", "r2", "r3"], cands, seeds=(0, 1), n_jobs=1)
    assert len(table) == 4 * 3 * 2 and set(table.policy) == {p.label for p in cands}
    # one row against its own simulation
    rows = tasks.rows("r2")
    y = tasks.label[rows].astype(int)
    prior = np.searchsorted(rows, tasks.support("r2", seed=1))
    X = TextFeatures().fit_transform(tasks.text()[rows])
    scr = PolicyScreener(policy=SCHEDULE)
    scr.n_records_ = rows.size
    m = screening_metrics(simulate(scr, X, y, prior), y, n_prior=2)
    row = table[(table.review == "r2") & (table.policy == SCHEDULE.label) & (table.seed == 1)]
    assert row.wss.item() == pytest.approx(m.wss[0]) and row.rrf.item() == pytest.approx(m.rrf[0])

    # a known table is read, not simulated again
    def refuse(*a, **k):
        raise AssertionError("simulated again")

    monkeypatch.setattr(pol, "simulate", refuse)
    train = ["r0", "r1", "r2"]
    fixed = table.copy()
    fixed["wss"], fixed["rrf"] = 0.0, 0.0
    fixed.loc[fixed.policy == cands[2].label, "wss"] = 0.2  # best on the training reviews
    fixed.loc[(fixed.review == "r3") & (fixed.policy == cands[1].label), "wss"] = 9.0
    s = PolicyScreener(cands, table=fixed, seeds=(0, 1), n_jobs=1)
    s.meta_fit(tasks, train)
    assert s.policy_ == cands[2]  # r3's rows (which would pick cands[1]) are not read
    np.testing.assert_allclose(s.scores_.to_numpy(), [0.0, 0.0, 0.2])
    s.meta_fit(tasks, ["r3"])
    assert s.policy_ == cands[1]
    # the score is each review's mean over seeds, then the mean over reviews
    s = PolicyScreener(cands, table=table, seeds=(0, 1), n_jobs=1)
    s.meta_fit(tasks, train)
    t = table[table.review.isin(train)]
    want = (t.wss + t.rrf / 100).groupby([t.policy, t.review]).mean().groupby(level=0).mean()
    np.testing.assert_allclose(s.scores_.to_numpy(), want.reindex(s.scores_.index).to_numpy())
    assert s.policy_.label == want.idxmax()


def test_a_kept_table_is_reused_until_a_review_changes(monkeypatch):
    tasks = _reviews(n_reviews=2)
    cands = (Policy(), SCHEDULE)
    table = policy_table(tasks, ["r0", "r1"], cands, n_jobs=1)
    assert list(table.columns) == pol.COLUMNS and set(table.batch) == {"auto"}
    # r1 changes (one label flipped): its rows are simulated again, r0's are read
    lab = tasks.label.copy()
    lab[tasks.rows("r1")[1]] = 1 - lab[tasks.rows("r1")[1]]
    changed = ReviewTaskSet(**{**tasks.__dict__, "label": lab})
    calls = []
    real = pol.simulate
    monkeypatch.setattr(pol, "simulate", lambda *a, **k: calls.append(1) or real(*a, **k))
    again = policy_table(changed, ["r0", "r1"], cands, n_jobs=1, known=table)
    assert len(calls) == 2 and len(again) == 4  # r1 under both policies; r1's old rows dropped
    r0 = again[again.review == "r0"].reset_index(drop=True)
    pd.testing.assert_frame_equal(r0, table[table.review == "r0"].reset_index(drop=True))
    assert not set(again[again.review == "r1"].digest) & set(table[table.review == "r1"].digest)
    # meta_fit reads only the rows of the reviews as they are now
    s = PolicyScreener(cands, table=again.assign(wss=0.0, rrf=0.0), n_jobs=1)
    s.meta_fit(changed, ["r0", "r1"])
    assert len(calls) == 2 and (s.scores_ == 0).all() and len(s.table_) == 4
    with pytest.raises(ValueError, match="lacks column\\(s\\) batch, digest; .* Delete it"):
        policy_table(tasks, ["r0"], cands, n_jobs=1, known=table.drop(columns=["digest", "batch"]))


def test_the_harness_meta_fits_the_policy_without_the_screened_review():
    tasks = _reviews(n_reviews=3)
    cands = (Policy(), SCHEDULE)
    table = policy_table(tasks, ["r0", "r1", "r2"], cands, n_jobs=1)
    # r0 favours the first by 20, r1 and r2 the second by 5 each
    table.loc[table.review == "r0", "wss"] += 20 * (table.policy == cands[0].label)
    table.loc[table.review != "r0", "wss"] += 5 * (table.policy == cands[1].label)
    made = []

    def make():
        made.append(PolicyScreener(cands, table=table, n_jobs=1))
        return made[-1]

    runs = run_simulations(tasks, {"policy": make}, reviews=["r0", "r1"], seeds=(0,))
    assert made[0].policy_ == cands[1]  # r0 screened: chosen on r1 and r2 (r0 would win)
    assert made[1].policy_ == cands[0]  # r1 screened: r0 and r2
    assert len(runs.table) == 2


def test_meta_learning_without_fully_labelled_reviews_is_refused():
    tasks = _reviews(n_reviews=2)
    lab = tasks.label.copy()
    lab[tasks.rows("r1")[:5]] = -1
    partial = ReviewTaskSet(**{**tasks.__dict__, "label": lab})
    with pytest.raises(ValueError, match="all labelled 0/1, with both labels; none was given"):
        PolicyScreener(n_jobs=1).meta_fit(partial, ["r1"])

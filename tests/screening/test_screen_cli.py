"""spatialmeta screen simulate / rank from the command line: outputs against the library,
and bad input named before any work."""

from __future__ import annotations

import numpy as np
import pandas as pd
from typer.testing import CliRunner

from spatialmeta.cli import app
from spatialmeta.screening import SVMScreener
from spatialmeta.tasks.reviews import read_reviews
from tests.conftest import shared_path

DATA = str(shared_path("screening", "reviews.csv.gz"))


def test_simulate_writes_runs_plot_and_summary(tmp_path):
    res = CliRunner().invoke(app, ["screen", "simulate", DATA, "--review", "SYNERGY_Sep_2021",
                                   "--seeds", "0,1", "--method", "asreview_nb", "--method",
                                   "asreview_default", "--out", str(tmp_path / "s"),
                                   "--no-progress"])  # fmt: skip
    assert res.exit_code == 0, res.output
    runs = pd.read_csv(tmp_path / "s" / "runs.csv")
    nb, svm = runs[runs.method == "asreview_nb"], runs[runs.method == "asreview_default"]
    assert list(nb.seed) == [0, 1] and list(svm.seed) == [0, 1]
    assert (tmp_path / "s" / "recall.png").stat().st_size > 1000
    summary = (tmp_path / "s" / "summary.md").read_text()
    assert f"| asreview_nb | {nb.wss.mean():.3f} | {nb.rrf.mean():.1f} |" in summary
    # the paired difference against ASReview's default and its standard error over 2 seeds
    d = nb.wss.to_numpy() - svm.wss.to_numpy()
    assert (f"- asreview_nb: WSS@95 {d.mean():+.3f} (± {abs(d[0] - d[1]) / 2:.3f})"
            in summary)  # fmt: skip
    assert "271 records, 40 included" in summary and summary.strip() == res.output.strip()


def test_rank_orders_the_unlabelled_records_as_the_screener(tmp_path):
    tasks = read_reviews(DATA, review="SYNERGY_Sep_2021")
    rows = tasks.rows("SYNERGY_Sep_2021")
    inc = tasks.record_id[rows][tasks.label[rows] == 1][:3]
    exc = tasks.record_id[rows][tasks.label[rows] == 0][:5]
    lab = pd.DataFrame({"record_id": np.r_[inc, exc], "label": [1] * 3 + [0] * 5})
    lab.to_csv(tmp_path / "l.csv", index=False)
    res = CliRunner().invoke(app, ["screen", "rank", DATA, "--review", "SYNERGY_Sep_2021",
                                   "--labels", str(tmp_path / "l.csv"), "--out", str(tmp_path / "r")])  # fmt: skip
    assert res.exit_code == 0, res.output
    ranked = pd.read_csv(tmp_path / "r" / "ranked.csv", dtype={"record_id": str})
    assert len(ranked) == rows.size - 8 and ranked["rank"].tolist() == list(
        range(1, len(ranked) + 1)
    )
    # by hand: the same screener on the same labels
    X = SVMScreener.features.fit_transform(tasks.text()[rows])
    pos = pd.Index(tasks.record_id[rows]).get_indexer(lab.record_id.astype(str))
    s = SVMScreener().fit(X[pos], lab.label.to_numpy()).scores(X)
    pool = np.setdiff1d(np.arange(rows.size), pos)
    want = tasks.record_id[rows][pool[np.argsort(-s[pool], kind="stable")]]
    assert ranked.record_id.tolist() == want.tolist()
    assert (np.diff(ranked.score) <= 0).all()


def test_rank_flags_records_without_title_or_abstract(tmp_path):
    """A record with neither title nor abstract has no features: it gets the fitted SVM's
    intercept as its score, and the ranking says so instead of ranking it silently."""
    review = "Cohen_2006_Antihistamines"
    tasks = read_reviews(DATA, review=review)
    rows = tasks.rows(review)
    inc = tasks.record_id[rows][tasks.label[rows] == 1][:2]
    exc = tasks.record_id[rows][tasks.label[rows] == 0][:10]
    lab = pd.DataFrame({"record_id": np.r_[inc, exc], "label": [1] * 2 + [0] * 10})
    lab.to_csv(tmp_path / "l.csv", index=False)
    res = CliRunner().invoke(app, ["screen", "rank", DATA, "--review", review, "--labels",
                                   str(tmp_path / "l.csv"), "--out", str(tmp_path / "r")])  # fmt: skip
    assert res.exit_code == 0, res.output
    ranked = pd.read_csv(tmp_path / "r" / "ranked.csv", dtype={"record_id": str})
    empty = {r for r, t, a in zip(tasks.record_id[rows], tasks.title[rows], tasks.abstract[rows], strict=True)
             if not str(t).strip() and not str(a).strip()}  # fmt: skip
    assert len(empty) == 10 and set(ranked.record_id[ranked.no_text]) == empty
    X = SVMScreener.features.fit_transform(tasks.text()[rows])
    pos = pd.Index(tasks.record_id[rows]).get_indexer(lab.record_id.astype(str))
    model = SVMScreener().fit(X[pos], lab.label.to_numpy()).model_
    np.testing.assert_allclose(ranked.score[ranked.no_text], model.intercept_[0], rtol=1e-9)
    at = ranked["rank"][ranked.no_text]
    said = " ".join(res.output.split())
    assert (
        f"10 of the ranked records have neither title nor abstract (between ranks {at.min()} and {at.max()}"
        in said
    )


def test_bad_input_is_named_before_work(tmp_path):
    r = CliRunner()
    out = str(tmp_path / "o")
    bad = r.invoke(app, ["screen", "simulate", DATA, "--out", out, "--no-progress"])
    assert bad.exit_code == 2 and "the file holds 22 reviews; pick one with --review" in bad.output
    bad = r.invoke(app, ["screen", "simulate", DATA, "--review", "Nope", "--out", out])
    assert bad.exit_code == 2 and "no review 'Nope'" in bad.output
    bad = r.invoke(app, ["screen", "simulate", DATA, "--review", "SYNERGY_Sep_2021", "--method",
                         "bert", "--out", out])  # fmt: skip
    assert bad.exit_code == 2 and "--method 'bert' is not one of asreview_default" in bad.output
    pd.DataFrame({"record_id": ["1", "2"], "label": ["1", "maybe"]}).to_csv(
        tmp_path / "l.csv", index=False
    )
    bad = r.invoke(app, ["screen", "rank", DATA, "--review", "SYNERGY_Sep_2021", "--labels",
                         str(tmp_path / "l.csv"), "--out", out])  # fmt: skip
    assert bad.exit_code == 2 and "labels must be 1 or 0; row 3 ('maybe')" in bad.output
    tasks = read_reviews(DATA, review="SYNERGY_Sep_2021")
    one_excluded = tasks.record_id[tasks.label == 0][0]
    pd.DataFrame({"record_id": [one_excluded], "label": ["0"]}).to_csv(
        tmp_path / "l.csv", index=False
    )
    bad = r.invoke(app, ["screen", "rank", DATA, "--review", "SYNERGY_Sep_2021", "--labels",
                         str(tmp_path / "l.csv"), "--out", out])  # fmt: skip
    assert bad.exit_code == 2 and "needs at least one included and one excluded" in bad.output
    pd.DataFrame({"name": ["x"]}).to_csv(tmp_path / "d.csv", index=False)
    bad = r.invoke(app, ["screen", "rank", str(tmp_path / "d.csv"), "--out", out])
    assert (
        bad.exit_code == 2
        and "neither a title nor an abstract column; columns found: name" in bad.output
    )
    assert not (tmp_path / "o" / "ranked.csv").exists()


THREE = ["SYNERGY_Sep_2021", "SYNERGY_Donners_2021", "Cohen_2006_Antihistamines"]


def _three_reviews(tmp_path, labelled):
    """A file of three shared reviews and labels for the first records of the first;
    returns (frame of the three, tasks, the first review's rows and record ids)."""
    frame = pd.read_csv(DATA, dtype=str)
    small = frame[frame.review_id.isin(THREE)]
    small.to_csv(tmp_path / "three.csv", index=False)
    tasks = read_reviews(tmp_path / "three.csv")
    rows = tasks.rows(THREE[0])
    ids = tasks.record_id[rows]
    lab = pd.DataFrame({"record_id": ids[labelled], "label": tasks.label[rows][labelled]})
    assert set(lab.label) == {0, 1}
    lab.to_csv(tmp_path / "l.csv", index=False)
    return small, tasks, rows, ids


def test_meta_learned_rank_learns_from_the_files_other_reviews(tmp_path, monkeypatch):
    """--method protonet on a file of three reviews: meta-trained on the two others, the
    ranking equals the library's (the same encoder, the same head, by hand); a file of
    one review is refused, naming the review, and so is a --mix outside [0, 1]. The
    encoder trains 40 steps here (300 by default) to keep the suite quick."""
    from spatialmeta.jobs import screen as screen_job
    from spatialmeta.screening.meta import EncoderConfig, ProtoNetScreener

    quick = EncoderConfig(steps=40)

    class QuickProtoNet(ProtoNetScreener):
        def __init__(self):
            super().__init__(quick)

    monkeypatch.setitem(screen_job.METHODS, "protonet", QuickProtoNet)

    small, tasks, rows, ids = _three_reviews(tmp_path, [0, 1, 2])
    res = CliRunner().invoke(app, ["screen", "rank", str(tmp_path / "three.csv"), "--review",
                                   "SYNERGY_Sep_2021", "--labels", str(tmp_path / "l.csv"),
                                   "--method", "protonet", "--out", str(tmp_path / "r")])  # fmt: skip
    assert res.exit_code == 0, res.output
    ranked = pd.read_csv(tmp_path / "r" / "ranked.csv", dtype={"record_id": str})
    scr = ProtoNetScreener(quick)
    scr.meta_fit(tasks, THREE[1:])
    X = scr.features.fit_transform(tasks.text()[rows])
    s = scr.fit(X[[0, 1, 2]], tasks.label[rows][[0, 1, 2]]).scores(X[3:])
    assert ranked.record_id.tolist() == ids[3:][np.argsort(-s, kind="stable")].tolist()
    small[small.review_id == "SYNERGY_Sep_2021"].to_csv(tmp_path / "one.csv", index=False)
    bad = CliRunner().invoke(app, ["screen", "rank", str(tmp_path / "one.csv"), "--labels",
                                   str(tmp_path / "l.csv"), "--method", "protonet", "--out",
                                   str(tmp_path / "r2")])  # fmt: skip
    assert bad.exit_code == 2 and "--method 'protonet' is meta-learned" in bad.output
    assert "beside review 'SYNERGY_Sep_2021'" in bad.output
    bad = CliRunner().invoke(app, ["screen", "simulate", str(tmp_path / "one.csv"), "--mix", "2",
                                   "--out", str(tmp_path / "s")])  # fmt: skip
    assert (
        bad.exit_code == 2 and "--mix (the share of uncertainty queries) must lie in" in bad.output
    )


def test_policy_svm_rank_chooses_its_policy_on_the_files_other_reviews(tmp_path, monkeypatch):
    """--method policy_svm on a file of three reviews: the policy is chosen by simulating
    the candidates on the two others (two candidates here, to keep the suite quick), the
    summary names it, and the ranking equals the library's."""
    from spatialmeta.jobs import screen as screen_job
    from spatialmeta.screening.policy import Policy, PolicyScreener

    two = (Policy(), Policy((0.05, 20.0), (0.3, 5.0), 0.1))

    class QuickPolicy(PolicyScreener):
        def __init__(self):
            super().__init__(two, n_jobs=1, progress=False)

    monkeypatch.setitem(screen_job.METHODS, "policy_svm", QuickPolicy)
    pick = [0, 1, 2, 3]
    _, tasks, rows, ids = _three_reviews(tmp_path, pick)
    res = CliRunner().invoke(app, ["screen", "rank", str(tmp_path / "three.csv"), "--review",
                                   "SYNERGY_Sep_2021", "--labels", str(tmp_path / "l.csv"),
                                   "--method", "policy_svm", "--out", str(tmp_path / "r")])  # fmt: skip
    assert res.exit_code == 0, res.output
    scr = PolicyScreener(two, n_jobs=1, progress=False)
    scr.meta_fit(tasks, THREE[1:])
    assert f"policy {scr.policy_.label}" in res.output
    X = scr.features.fit_transform(tasks.text()[rows])
    s = scr.fit(X[pick], tasks.label[rows][pick]).scores(X[4:])
    ranked = pd.read_csv(tmp_path / "r" / "ranked.csv", dtype={"record_id": str})
    assert ranked.record_id.tolist() == ids[4:][np.argsort(-s, kind="stable")].tolist()

    # the simulations are kept in the output folder: ranking there again reads them
    kept = pd.read_csv(tmp_path / "r" / "policy_simulations.csv")
    assert sorted(set(kept.review)) == sorted(THREE[1:]) and len(kept) == 2 * 2
    assert "kept in" in res.output
    from spatialmeta.screening import policy as pol

    calls = []
    real = pol.simulate
    monkeypatch.setattr(pol, "_SIMULATED", {})  # not the memory of this process
    monkeypatch.setattr(pol, "simulate", lambda *a, **k: calls.append(a[2].size) or real(*a, **k))
    again = ["screen", "rank", str(tmp_path / "three.csv"), "--review", "SYNERGY_Sep_2021",
             "--labels", str(tmp_path / "l.csv"), "--method", "policy_svm", "--out",
             str(tmp_path / "r")]  # fmt: skip
    res2 = CliRunner().invoke(app, again)
    assert res2.exit_code == 0, res2.output
    assert calls == [] and f"policy {scr.policy_.label}" in res2.output
    assert pd.read_csv(tmp_path / "r" / "ranked.csv", dtype={"record_id": str}).equals(ranked)
    # one review of the file changed: that one is simulated again, under both policies
    frame = pd.read_csv(tmp_path / "three.csv", dtype=str)
    frame.loc[frame.review_id == THREE[1], "abstract"] += " revised"
    frame.to_csv(tmp_path / "three.csv", index=False)
    res3 = CliRunner().invoke(app, again)
    assert res3.exit_code == 0, res3.output
    n_changed = int((frame.review_id == THREE[1]).sum())
    assert calls == [n_changed, n_changed]
    assert len(pd.read_csv(tmp_path / "r" / "policy_simulations.csv")) == 2 * 2
    # a kept table that is not one is refused by name, before any simulation
    (tmp_path / "r" / "policy_simulations.csv").write_text("review,score\nx,1\n")
    res4 = CliRunner().invoke(app, again)
    assert res4.exit_code == 2, res4.output
    assert "policy_simulations.csv (columns found: review, score)" in res4.output
    assert "Delete the file to simulate again" in res4.output and "Traceback" not in res4.output

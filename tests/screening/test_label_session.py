"""spatialmeta screen label: the terminal session as a person uses it (tmux send-keys,
capture-pane), its saved project, resume, and a data file that changed."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from spatialmeta.jobs.screen import LabelSession
from spatialmeta.screening import stopping_pvalues
from spatialmeta.screening.stopping import remaining_relevant
from tests.conftest import shared_path

CLI = Path(sys.executable).parent / "spatialmeta"


def _small(tmp_path) -> Path:
    d = pd.read_csv(shared_path("screening", "reviews.csv.gz"), dtype=str)
    p = tmp_path / "small.csv"
    d[d.review_id == "SYNERGY_Sep_2021"].head(30).to_csv(p, index=False)
    return p


def test_session_decides_saves_resumes_and_ranks(tmp_path):
    data = _small(tmp_path)
    s = LabelSession(data, tmp_path / "p")
    first = s.next_record()
    assert first == 0  # file order until both kinds are known
    s.decide(first, 0)
    s.decide(s.next_record(), None)  # skip record 1 for this session
    assert s.next_record() == 2
    s.decide(2, 1)
    saved = json.loads((tmp_path / "p" / "project.json").read_text())
    assert [d["label"] for d in saved["decisions"]] == [0, 1]
    again = LabelSession(data, tmp_path / "p")  # resumes: same decisions, skip forgotten
    assert again.status() == "2 of 30 labelled, 1 included"
    nxt = again.next_record()
    known = [0, 2]
    scr = again.screener.fit(again.X[known], again.y[known])
    pool = [i for i in range(30) if i not in known]
    scores = scr.scores(again.X[pool])
    assert nxt == pool[int(scores.argmax())]
    assert again.stopping() is None  # no decision yet in ranked order
    for label in (0, 0, 1, 0):
        again.decide(again.next_record(), label)
    p = stopping_pvalues(np.array([0, 0, 1, 0]), 28)[-1]  # after the file-order pair
    assert again.stopping() == pytest.approx(p)
    m = remaining_relevant(np.array([0, 0, 1, 0]), 28)
    assert m == 19  # 24 unscreened: 5 of them ruled out after four screened
    assert again.remaining() == m
    assert again.status().endswith(f"p = {p:.2g}: 95 % recall not yet shown; at most {m} "
                                   "relevant left (95 %)")  # fmt: skip
    inc = pd.read_csv(tmp_path / "p" / "included.csv")
    assert inc.record_id.tolist()[0] == again.ids[2] and {"study", "yi", "vi"} <= set(inc.columns)
    assert len(inc) == 2


def test_a_skipped_record_is_not_shown_but_still_learned_from(tmp_path):
    """Skipping hides a record for the session; it stays unlabelled, so a screener that
    learns from the unlabelled records (the policy's presumed exclusions) still sees it."""
    s = LabelSession(_small(tmp_path), tmp_path / "p")
    s.decide(0, 0)
    s.decide(2, 1)
    seen = []
    fit_scores = s.screener.fit_scores

    def spy(X, y, X_unlabelled):
        seen.append(X_unlabelled.shape[0])
        return fit_scores(X, y, X_unlabelled)

    s.screener.fit_scores = spy
    top = s.next_record()
    s.decide(top, None)
    nxt = s.next_record()
    assert seen == [28, 28]  # the skipped record is still among the unlabelled ones
    pool = [i for i in range(30) if i not in (0, 2)]
    scores = s.screener.fit(s.X[[0, 2]], s.y[[0, 2]]).scores(s.X[pool])
    ranked = [pool[j] for j in np.argsort(-scores, kind="stable")]
    assert top == ranked[0] and nxt == ranked[1]
    s.decide(nxt, None)
    for i in ranked[2:]:
        s.decide(i, None)
    assert s.next_record() is None  # every unlabelled record skipped: nothing left to show


class _Tmux:
    """One tmux server of its own per session (its own socket, -L): a new session on the
    default socket can race the previous server's exit ("server exited unexpectedly")."""

    def __init__(self, name: str, cmd: str, width: int = 100):
        self.sock = name
        self.run("new-session", "-d", "-s", "s", "-x", str(width), "-y", "50", cmd)

    def run(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["tmux", "-L", self.sock, *args], check=True,
                              capture_output=True, text=True)  # fmt: skip

    def keys(self, *keys: str) -> None:
        self.run("send-keys", "-t", "s", *keys)

    def wait(self, text: str, count: int = 1, timeout: float = 90.0) -> str:
        end = time.time() + timeout
        while time.time() < end:
            screen = self.run("capture-pane", "-p", "-S", "-200", "-t", "s").stdout
            if screen.count(text) >= count:
                return screen
            time.sleep(0.3)
        raise AssertionError(f"{text!r} did not appear {count} time(s):\n{screen}")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        subprocess.run(["tmux", "-L", self.sock, "kill-server"], capture_output=True)


@pytest.mark.skipif(shutil.which("tmux") is None or not CLI.exists(), reason="needs tmux")
def test_the_terminal_session_as_a_person_uses_it(tmp_path):
    data, proj = _small(tmp_path), tmp_path / "proj"
    name = f"label{os.getpid()}_{int(time.time() * 1000) % 10**8}"
    cmd = f"{CLI} screen label {data} --out {proj}; echo EXIT=$?; sleep 60"
    prompt = "include (i), exclude (e), skip (s), quit (q)?"
    with _Tmux(name + "a", cmd) as t:
        t.wait(prompt)
        for n, key in enumerate(["e", "i", "x"], start=2):  # exclude, include, a typo
            t.keys(key, "Enter")
            t.wait(prompt, count=n)
        t.wait("please answer i, e, s or q")
        t.keys("q", "Enter")
        screen = t.wait("EXIT=0")
        assert "saved: 2 of 30 labelled, 1 included" in screen
    saved = json.loads((proj / "project.json").read_text())
    assert [d["label"] for d in saved["decisions"]] == [0, 1]
    # resume: the counts carry over
    with _Tmux(name + "b", cmd) as t:
        screen = t.wait(prompt)
        assert "2 of 30 labelled, 1 included" in screen
        t.keys("q", "Enter")
        t.wait("EXIT=0")
    # the data file changed: refused, naming it
    with open(data, "a") as f:
        f.write("x,SYNERGY_Sep_2021,new,A new record title,,0,\n")
    with _Tmux(name + "c", cmd, width=200) as t:
        screen = t.wait("EXIT=2")
        assert "changed since project" in screen.replace("\n", "") and "small.csv" in screen


def test_a_meta_learned_policy_is_chosen_once_and_kept_on_resuming(tmp_path, monkeypatch):
    """policy_svm: the first session chooses the policy on the file's other reviews and
    saves it; the resumed session uses it without simulating again."""
    from spatialmeta.jobs import screen as screen_job
    from spatialmeta.screening import policy as pol

    two = (pol.Policy(), pol.Policy((0.05, 20.0), (0.3, 5.0), 0.1))

    class QuickPolicy(pol.PolicyScreener):
        def __init__(self):
            super().__init__(two, n_jobs=1, progress=False)

    monkeypatch.setitem(screen_job.METHODS, "policy_svm", QuickPolicy)
    d = pd.read_csv(shared_path("screening", "reviews.csv.gz"), dtype=str)
    data = tmp_path / "two.csv"
    d[d.review_id.isin(["SYNERGY_Sep_2021", "SYNERGY_Donners_2021"])].to_csv(data, index=False)
    s = LabelSession(data, tmp_path / "p", review="SYNERGY_Sep_2021", method="policy_svm")
    chosen = s.screener.policy_.label
    assert json.loads((tmp_path / "p" / "project.json").read_text())["policy"] == chosen

    def refuse(*a, **k):
        raise AssertionError("simulated again on resuming")

    monkeypatch.setattr(pol, "simulate", refuse)
    pol._SIMULATED.clear()
    again = LabelSession(data, tmp_path / "p")
    assert again.screener.policy_.label == chosen and again.screener.fixed
    with pytest.raises(ValueError, match="no candidate policy 'nope'; the candidates are"):
        QuickPolicy().use("nope")

"""The work of ``spatialmeta screen simulate`` and ``spatialmeta screen rank`` (issue 16).

``simulate``: the screening harness on one review of a labelled file (every record
screened by each method from seeded prior draws), writing the per-run table, recall
curves and a Markdown summary. ``rank``: the labelled records of a review fit the screener
and its unlabelled records are written ranked, most likely relevant first, with the
stopping test's verdict on the labels so far.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from spatialmeta._io import atomic_path, ensure_writable_dir
from spatialmeta.screening import NaiveBayesScreener, SVMScreener
from spatialmeta.screening.harness import plot_recall, run_simulations
from spatialmeta.screening.meta import (
    ANILScreener,
    MatchingScreener,
    ProtoNetScreener,
    WeightedSVMScreener,
)
from spatialmeta.screening.policy import PolicyScreener, read_policy_table
from spatialmeta.tasks.reviews import read_reviews

__all__ = ["METHODS", "LabelSession", "ScreenResult", "screen_simulate_job", "screen_rank_job"]

METHODS = {"asreview_default": SVMScreener, "asreview_nb": NaiveBayesScreener,
           "weighted_svm": WeightedSVMScreener, "protonet": ProtoNetScreener,
           "anil": ANILScreener, "matching": MatchingScreener, "policy_svm": PolicyScreener}  # fmt: skip
POLICY_SIMULATIONS = "policy_simulations.csv"  # a meta-learned policy's simulations, kept


@dataclass(frozen=True)
class ScreenResult:
    summary: str
    outputs: dict


def _methods(methods) -> dict:
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"`method` {unknown[0]!r} is not one of {', '.join(METHODS)}.")
    return {m: METHODS[m] for m in methods}


def _meta_sources(tasks, review, name) -> list:
    """The file's other reviews with included and excluded labels: what a meta-learned
    screener learns from before it screens ``review``."""
    others = [r for r in tasks.review_ids if str(r) != str(review)
              and {0, 1} <= set(tasks.label[tasks.rows(r)].tolist())]  # fmt: skip
    if not others:
        raise ValueError(f"`method` {name!r} is meta-learned: it needs earlier "
                         f"reviews with included and excluded labels in the same file beside "
                         f"review {review!r}; the file has none. Add them, or use "
                         "asreview_default.")  # fmt: skip
    return others


def _meta_fit(screener, tasks, review, keep: Path | None = None) -> Path | None:
    """A meta-learned screener learns from the file's other labelled reviews first. A
    screener that simulates them (``table``/``table_``: the policy) reads the simulations
    kept in ``keep`` (a CSV) and writes them back there, so a later call on the same
    reviews does not simulate again (rows of a review whose content changed are redone).
    Returns ``keep`` when it was written."""
    if not screener.meta_learned:
        return None
    cached = keep is not None and hasattr(screener, "table")
    if cached and keep.exists():
        screener.table = read_policy_table(keep)
    screener.meta_fit(tasks, _meta_sources(tasks, review, screener.name))
    if not cached or screener.fixed:  # nothing simulated to keep
        return None
    with atomic_path(keep) as tmp:
        screener.table_.to_csv(tmp, index=False)
    return keep


def _chosen(screener) -> str:
    """What a meta-learned policy chose, for the summary ("" for other screeners)."""
    policy = getattr(screener, "policy_", None)
    if policy is None or screener.fixed:
        return ""
    return f" (policy {policy.label}, chosen on the file's other reviews)"


def _review(tasks, review):
    if review is None:
        if tasks.n_reviews > 1:
            raise ValueError(f"the file holds {tasks.n_reviews} reviews; pick one with "
                             f"`review` (e.g. {tasks.review_ids[0]!r}).")  # fmt: skip
        return str(tasks.review_ids[0])
    tasks.rows(review)  # names the review if it is not there
    return str(review)


def _write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text)


def screen_simulate_job(data, *, out, review=None, seeds=(0, 1, 2, 3, 4),
                        methods=("asreview_default", "asreview_nb"), batch="auto", mix=0.0,
                        columns=None, progress=False) -> ScreenResult:  # fmt: skip
    """Simulate screening one review of ``data`` (labelled) and write ``runs.csv``,
    ``recall.png`` and ``summary.md`` into ``out``."""
    out = Path(out)
    ensure_writable_dir(out)
    screeners = _methods(methods)
    if not 0 <= mix <= 1:
        raise ValueError(f"`mix` (the share of uncertainty queries) must lie in [0, 1]; got {mix}.")
    tasks = read_reviews(data, columns=columns)
    review = _review(tasks, review)
    rows = tasks.rows(review)
    if (tasks.label[rows] < 0).any():
        n = int((tasks.label[rows] < 0).sum())
        raise ValueError(f"review {review!r} has {n} unlabelled record(s); a simulation needs "
                         "every record labelled (use `screen rank` to rank unlabelled ones).")  # fmt: skip
    for name, cls in screeners.items():
        if cls.meta_learned:
            _meta_sources(tasks, review, name)  # refused before any work if there are none
    runs = run_simulations(tasks, screeners, reviews=[review], seeds=tuple(seeds), batch=batch,
                           mix=mix, progress=progress)  # fmt: skip
    table = runs.table
    with atomic_path(out / "runs.csv") as tmp:
        table.to_csv(tmp, index=False)
    plot_recall(runs, review, out / "recall.png")
    s = runs.summary()
    lines = [f"# Screening simulation: {review}", "",
             f"- {len(rows)} records, {int(tasks.label[rows].sum())} included; prior knowledge: "
             f"one included and one excluded record per seed ({', '.join(map(str, seeds))})",
             f"- every record screened; the model refitted after {'each label' if batch == 1 else 'each of the first 100 labels, then every 1 % of the records'}",
             "", "| method | WSS@95 | RRF@10 | ATD | stopped | reached 95 % when stopped | records saved at stop |",
             "|---|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for m, r in s.iterrows():
        reached = "–" if pd.isna(r.stop_reached_target) else f"{r.stop_reached_target:.0%}"
        saved = "–" if pd.isna(r.saved_at_stop) else f"{r.saved_at_stop:.1%}"
        lines.append(f"| {m} | {r.wss:.3f} | {r.rrf:.1f} | {r.atd:.3f} | {int(r.stopped)} of "
                     f"{int(r.runs)} | {reached} | {saved} |")  # fmt: skip
    if "asreview_default" in screeners and len(screeners) > 1:
        lines += ["", "Against ASReview's default, paired by prior draw (difference of the means, "
                  "its standard error over the seeds):", ""]  # fmt: skip
        for m in [m for m in screeners if m != "asreview_default"]:
            w, r = (runs.versus(m, "asreview_default", k).table.iloc[0] for k in ("wss", "rrf"))
            lines.append(f"- {m}: WSS@95 {w['diff']:+.3f} (± {w.se:.3f}), RRF@10 "
                         f"{r['diff']:+.1f} (± {r.se:.1f})")  # fmt: skip
    lines += ["", "WSS@95: work saved over sampling at 95 % recall; RRF@10: % of relevant records "
              "found after screening 10 %; ATD: mean share screened before each relevant record "
              "(all counted after the prior knowledge). Stopping: Callaghan & Müller-Hansen's "
              "test at 95 % recall, 95 % confidence.", "",
              "Outputs: `runs.csv` (one row per run), `recall.png` (recall curves)."]  # fmt: skip
    text = "\n".join(lines) + "\n"
    _write_text(out / "summary.md", text)
    return ScreenResult(text, {"runs": str(out / "runs.csv"), "recall": str(out / "recall.png"),
                               "summary": str(out / "summary.md")})  # fmt: skip


def screen_rank_job(data, *, out, labels=None, review=None, method="asreview_default",
                    columns=None) -> ScreenResult:  # fmt: skip
    """Rank the unlabelled records of one review of ``data`` from its labelled ones (the
    file's own labels, or ``labels``: a CSV of ``record_id`` and ``label`` that takes
    precedence), writing ``ranked.csv`` into ``out``."""
    out = Path(out)
    ensure_writable_dir(out)
    scr_cls = _methods([method])[method]
    tasks = read_reviews(data, columns=columns)
    review = _review(tasks, review)
    rows = tasks.rows(review)
    y = tasks.label[rows].astype(int)
    if labels is not None:
        lab = pd.read_csv(labels, dtype=str)
        missing = {"record_id", "label"} - set(lab.columns)
        if missing:
            raise ValueError(f"`labels` {labels} needs columns record_id and label; columns "
                             f"found: {', '.join(lab.columns)}.")  # fmt: skip
        val = pd.to_numeric(lab["label"], errors="coerce")
        bad = ~val.isin([0, 1])
        if bad.any():
            shown = ", ".join(f"row {i + 2} ({lab['label'].iloc[i]!r})"
                              for i in np.flatnonzero(bad)[:5])  # fmt: skip
            raise ValueError(f"`labels` {labels}: labels must be 1 or 0; {shown}.")
        pos = pd.Index(tasks.record_id[rows]).get_indexer(lab["record_id"])
        if (pos < 0).any():
            raise ValueError(f"`labels` {labels}: record_id {lab['record_id'].iloc[int(np.flatnonzero(pos < 0)[0])]!r} "
                             f"is not in review {review!r}.")  # fmt: skip
        y = np.full(rows.size, -1)
        y[pos] = val.to_numpy(int)
    known = np.flatnonzero(y >= 0)
    if not ((y[known] == 1).any() and (y[known] == 0).any()):
        raise ValueError(f"review {review!r}: ranking needs at least one included and one "
                         f"excluded labelled record; got {int((y == 1).sum())} included and "
                         f"{int((y == 0).sum())} excluded.")  # fmt: skip
    pool = np.flatnonzero(y < 0)
    if pool.size == 0:
        raise ValueError(f"review {review!r}: every record is labelled; nothing to rank.")
    scr = scr_cls()
    kept = _meta_fit(scr, tasks, review, keep=out / POLICY_SIMULATIONS)
    X = scr.features.fit_transform(tasks.text()[rows])
    scores = scr.fit_scores(X[known], y[known], X[pool])
    by_score = np.argsort(-scores, kind="stable")
    order = pool[by_score]
    # a record with neither title nor abstract has no features: every screener gives it
    # the score of an empty record, so its rank says nothing of its content (the reader
    # keeps a missing title or abstract as "", stripped)
    no_text = (tasks.title[rows][order] == "") & (tasks.abstract[rows][order] == "")
    ranked = pd.DataFrame({"rank": np.arange(1, order.size + 1),
                           "record_id": tasks.record_id[rows][order],
                           "title": tasks.title[rows][order],
                           "score": scores[by_score], "duplicate_group": tasks.group[rows][order],
                           "no_text": no_text})  # fmt: skip
    with atomic_path(out / "ranked.csv") as tmp:
        ranked.to_csv(tmp, index=False)
    text = (f"{review}: {known.size} labelled ({int((y == 1).sum())} included), {pool.size} "
            f"ranked by {method}{_chosen(scr)}; the first: {ranked.title.iloc[0][:80]!r}. Written to "
            f"{out / 'ranked.csv'}.")  # fmt: skip
    if no_text.any():
        at = np.flatnonzero(no_text) + 1
        text += (f" {at.size} of the ranked records have neither title nor abstract (between "
                 f"ranks {at[0]} and {at[-1]}; column no_text): the model "
                 "cannot rank them by content, so screen them by full text or fill in their "
                 "metadata.")  # fmt: skip
    outputs = {"ranked": str(out / "ranked.csv")}
    if kept is not None:
        text += (f" The policy's simulations of the other reviews are kept in {kept}; ranking "
                 f"into {out} again reuses them.")  # fmt: skip
        outputs["policy_simulations"] = str(kept)
    return ScreenResult(text, outputs)


class LabelSession:
    """A screening project: one review of a data file, the decisions so far, and the next
    record to show (the screener's top-ranked unlabelled record, or file order until one
    included and one excluded record are known). ``project/project.json`` holds the data
    file's path and SHA-256, the review, the method and every decision in order; it and
    ``project/included.csv`` (the included records as a study table with empty ``yi`` and
    ``vi`` columns for the effect sizes, the columns ``spatialmeta pool`` reads) are
    rewritten atomically after every decision, so a session resumes where it stopped."""

    def __init__(self, data, project, *, review=None, method="asreview_default", columns=None):
        import hashlib
        import json

        self.project = Path(project)
        ensure_writable_dir(self.project)
        self.data = Path(data).resolve()
        if not self.data.is_file():
            raise FileNotFoundError(f"no file {data}.")
        self.sha = hashlib.sha256(self.data.read_bytes()).hexdigest()
        state = self.project / "project.json"
        decisions: list = []
        policy = None
        if state.exists():
            saved = json.loads(state.read_text())
            if saved["sha256"] != self.sha:
                raise ValueError(f"the data file {self.data} changed since project "
                                 f"{self.project} was made (SHA-256 {saved['sha256'][:12]}... "
                                 f"now {self.sha[:12]}...); label it in a new project or restore "
                                 "the file.")  # fmt: skip
            review, method = saved["review"], saved["method"]
            columns = saved.get("columns") or columns
            decisions = saved["decisions"]
            policy = saved.get("policy")
        self.method, self.columns = method, columns
        scr_cls = _methods([method])[method]
        self.tasks = read_reviews(self.data, columns=columns)
        self.review = _review(self.tasks, review)
        self.rows = self.tasks.rows(self.review)
        self.screener = scr_cls()
        if policy is not None:  # a meta-learned policy is chosen once, kept on resuming
            self.screener.use(policy)
        _meta_fit(self.screener, self.tasks, self.review, keep=self.project / POLICY_SIMULATIONS)
        self.X = self.screener.features.fit_transform(self.tasks.text()[self.rows])
        self.ids = self.tasks.record_id[self.rows]
        self.pos = {r: i for i, r in enumerate(self.ids)}
        self.y = np.full(self.rows.size, -1)
        self.decisions = []
        self.skipped = np.zeros(self.rows.size, bool)  # skipped this session (not saved)
        for d in decisions:
            self._apply(d["record_id"], d["label"])
        self.save()

    def _apply(self, record_id, label):
        self.y[self.pos[str(record_id)]] = int(label)
        self.decisions.append({"record_id": str(record_id), "label": int(label)})

    def next_record(self) -> int | None:
        """Position (in the review) of the record to show next; None when none is left."""
        unlabelled = np.flatnonzero(self.y < 0)
        shown = ~self.skipped[unlabelled]
        if not shown.any():
            return None
        known = np.flatnonzero(self.y >= 0)
        if not ((self.y[known] == 1).any() and (self.y[known] == 0).any()):
            return int(unlabelled[shown][0])  # file order until both kinds are known
        # a skipped record is still unlabelled: it stays in what the screener learns from
        # (the policy's presumed exclusions), as in the simulations; it is only not shown
        s = self.screener.fit_scores(self.X[known], self.y[known], self.X[unlabelled])
        by_score = np.argsort(-s, kind="stable")
        return int(unlabelled[by_score[shown[by_score]][0]])

    def decide(self, i: int, label: int | None) -> None:
        """Record the decision on record ``i`` (1, 0, or None: skip for this session)."""
        if label is None:
            self.skipped[i] = True
            return
        self._apply(self.ids[i], label)
        self.save()

    def _ranked_decisions(self):
        """The decisions made in ranked order (after the first included and excluded
        record, which were shown in file order) and the records left to screen at their
        start; None before any such decision."""
        labels = np.array([d["label"] for d in self.decisions], dtype=int)
        if not ((labels == 1).any() and (labels == 0).any()):
            return None
        start = max(int(np.argmax(labels == 1)), int(np.argmax(labels == 0))) + 1
        if start >= labels.size:
            return None
        return labels[start:], self.rows.size - start

    def stopping(self) -> float | None:
        """The stopping test's p-value for "recall < 95 %" on the decisions made in ranked
        order; None before any such decision."""
        from spatialmeta.screening.stopping import stopping_pvalues

        ranked = self._ranked_decisions()
        return None if ranked is None else float(stopping_pvalues(*ranked)[-1])

    def remaining(self) -> int | None:
        """At most how many relevant records remain unscreened (95 % confidence), by the
        same test; None before any decision in ranked order."""
        from spatialmeta.screening.stopping import remaining_relevant

        ranked = self._ranked_decisions()
        return None if ranked is None else remaining_relevant(*ranked)

    def status(self) -> str:
        n_inc, n_lab = int((self.y == 1).sum()), int((self.y >= 0).sum())
        text = f"{n_lab} of {self.rows.size} labelled, {n_inc} included"
        p = self.stopping()
        if p is not None:
            verdict = ("95 % recall reached, 95 % confidence" if p < 0.05
                       else "95 % recall not yet shown")  # fmt: skip
            text += (f"; stopping test p = {p:.2g}: {verdict}; at most {self.remaining()} "
                     "relevant left (95 %)")  # fmt: skip
        return text

    def save(self) -> None:
        import json

        state = {"data": str(self.data), "sha256": self.sha, "review": self.review,
                 "method": self.method, "columns": self.columns, "decisions": self.decisions}  # fmt: skip
        if getattr(self.screener, "policy_", None) is not None:
            state["policy"] = self.screener.policy_.label
        _write_text(self.project / "project.json", json.dumps(state, indent=1))
        inc = np.flatnonzero(self.y == 1)
        table = pd.DataFrame({
            "study": [f"{t[:60]}" for t in self.tasks.title[self.rows][inc]],
            "record_id": self.ids[inc], "doi": self.tasks.doi[self.rows][inc],
            "yi": np.nan, "vi": np.nan})  # fmt: skip
        with atomic_path(self.project / "included.csv") as tmp:
            table.to_csv(tmp, index=False)

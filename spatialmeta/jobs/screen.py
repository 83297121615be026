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
from spatialmeta.tasks.reviews import read_reviews

__all__ = ["METHODS", "ScreenResult", "screen_simulate_job", "screen_rank_job"]

METHODS = {"asreview_default": SVMScreener, "asreview_nb": NaiveBayesScreener}


@dataclass(frozen=True)
class ScreenResult:
    summary: str
    outputs: dict


def _methods(methods) -> dict:
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"`method` {unknown[0]!r} is not one of {', '.join(METHODS)}.")
    return {m: METHODS[m] for m in methods}


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
                        methods=("asreview_default", "asreview_nb"), batch="auto",
                        columns=None, progress=False) -> ScreenResult:  # fmt: skip
    """Simulate screening one review of ``data`` (labelled) and write ``runs.csv``,
    ``recall.png`` and ``summary.md`` into ``out``."""
    out = Path(out)
    ensure_writable_dir(out)
    screeners = _methods(methods)
    tasks = read_reviews(data, columns=columns)
    review = _review(tasks, review)
    rows = tasks.rows(review)
    if (tasks.label[rows] < 0).any():
        n = int((tasks.label[rows] < 0).sum())
        raise ValueError(f"review {review!r} has {n} unlabelled record(s); a simulation needs "
                         "every record labelled (use `screen rank` to rank unlabelled ones).")  # fmt: skip
    runs = run_simulations(tasks, screeners, reviews=[review], seeds=tuple(seeds), batch=batch,
                           progress=progress)  # fmt: skip
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
    X = scr.features.fit_transform(tasks.text()[rows])
    scores = scr.fit(X[known], y[known]).scores(X[pool])
    order = pool[np.argsort(-scores, kind="stable")]
    ranked = pd.DataFrame({"rank": np.arange(1, order.size + 1),
                           "record_id": tasks.record_id[rows][order],
                           "title": tasks.title[rows][order],
                           "score": np.sort(scores)[::-1], "duplicate_group": tasks.group[rows][order]})  # fmt: skip
    with atomic_path(out / "ranked.csv") as tmp:
        ranked.to_csv(tmp, index=False)
    text = (f"{review}: {known.size} labelled ({int((y == 1).sum())} included), {pool.size} "
            f"ranked by {method}; the first: {ranked.title.iloc[0][:80]!r}. Written to "
            f"{out / 'ranked.csv'}.")  # fmt: skip
    return ScreenResult(text, {"ranked": str(out / "ranked.csv")})

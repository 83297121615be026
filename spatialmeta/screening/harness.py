"""The simulation harness: screeners run on labelled reviews, leave one review out, with
the field's metrics and the stopping test on every run.

For each review, each seed (a prior-knowledge draw: one included and one excluded record,
:meth:`~spatialmeta.tasks.reviews.ReviewTaskSet.support`) and each screener: a meta-learned
screener is first fitted on the *other* reviews (its ``meta_fit`` hook; the per-review
baselines have none), the active loop screens the whole review
(:func:`~spatialmeta.screening.simulate.simulate`), and the order is scored
(:func:`~spatialmeta.screening.metrics.screening_metrics`). The stopping test
(:func:`~spatialmeta.screening.stopping.stop_point`) is run on the same order: where it
would have stopped, the recall there and the share of records it saves.

Each run is a sequential active loop, so runs are a loop over (review, seed, screener);
each run's steps are whole-array.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats

from spatialmeta.screening.metrics import screening_metrics
from spatialmeta.screening.simulate import simulate
from spatialmeta.screening.stopping import stop_point
from spatialmeta.tasks.reviews import ReviewTaskSet

__all__ = ["Comparison", "SimulationRuns", "run_simulations", "plot_recall"]


@dataclass(frozen=True)
class Comparison:
    """One method against a reference, review by review (:meth:`SimulationRuns.versus`).

    ``table``: per review, the two methods' means over seeds, ``diff`` (method minus
    reference, paired by seed), ``se`` (the standard error of ``diff`` over the seeds,
    NaN with one seed) and ``ahead`` / ``behind`` (``diff`` above / below zero; exactly
    equal means are a tie). ``sign_p``: the two-sided sign test of ahead against behind
    (ties dropped); ``wilcoxon_p``: the two-sided Wilcoxon signed-rank test of the
    per-review differences (NaN when every review ties)."""

    method: str
    reference: str
    metric: str
    table: pd.DataFrame
    ahead: int
    behind: int
    tied: int
    sign_p: float
    wilcoxon_p: float

    def text(self) -> str:
        """The table and the counts, as printed by ``benchmarks/eval_screening.py``."""
        t = self.table.copy()
        t["ahead"] = np.where(t["ahead"], "yes", np.where(t["behind"], "no", "tie"))
        body = t.drop(columns="behind").to_string(float_format=lambda v: f"{v:.3f}")
        return (f"{self.method} against {self.reference}, {self.metric} (mean over seeds):\n"
                f"{body}\nahead on {self.ahead} of {len(t)} reviews, behind on {self.behind}, "
                f"tied on {self.tied}; mean difference {t['diff'].mean():+.4f}; sign test "
                f"p = {self.sign_p:.3f}, Wilcoxon signed-rank p = {self.wilcoxon_p:.3f}")  # fmt: skip


@dataclass
class SimulationRuns:
    """Results of :func:`run_simulations`: ``table`` (one row per run: review, method,
    seed, records ``n`` and ``relevant`` after the prior knowledge, ``wss``, ``rrf``,
    ``atd``, ``last``; ``stop_at`` (records screened when the stopping test says the
    target recall is reached, NaN if never), ``recall_at_stop`` and ``saved_at_stop``
    (share of records left unscreened)) and ``curves`` (run key -> recall curve)."""

    table: pd.DataFrame
    curves: dict = field(default_factory=dict)

    def summary(self) -> pd.DataFrame:
        """Per method: mean WSS@95, RRF@10 and ATD over runs, reviews won on WSS against
        every other method (by the review's mean over seeds), and the stopping test's
        record: runs where it stopped, share of those reaching the target recall, mean
        records saved."""
        t = self.table
        by_review = t.groupby(["method", "review"])["wss"].mean().unstack("method")
        out = t.groupby("method").agg(wss=("wss", "mean"), rrf=("rrf", "mean"),
                                      atd=("atd", "mean"), runs=("wss", "size"))  # fmt: skip
        for m in out.index:
            others = by_review.drop(columns=m)
            best = by_review[m] >= others.max(axis=1) if others.shape[1] else by_review[m].notna()
            out.loc[m, "reviews_best_wss"] = int(best.sum())
        stopped = t[t["stop_at"].notna()]
        g = stopped.groupby("method")
        out["stopped"] = g.size().reindex(out.index).fillna(0).astype(int)
        out["stop_reached_target"] = g["reached"].mean().reindex(out.index)
        out["saved_at_stop"] = g["saved_at_stop"].mean().reindex(out.index)
        return out

    def versus(self, method: str, reference: str, metric: str = "wss") -> Comparison:
        """``method`` against ``reference`` on ``metric`` (a column of :attr:`table`),
        review by review, paired by prior draw: both must have run the same seeds of the
        same reviews. With few seeds and small reviews the count of reviews ahead moves
        with single records, so the table carries each difference's standard error over
        seeds and the tests over reviews."""
        t = self.table
        known = sorted(t["method"].unique())
        for m in (method, reference):
            if m not in known:
                raise ValueError(
                    f"versus: no runs of method {m!r}; methods run: {', '.join(known)}."
                )
        if metric not in t.columns or not pd.api.types.is_numeric_dtype(t[metric]):
            raise ValueError(f"versus: `metric` {metric!r} is not a numeric column of the runs.")
        wide = t[t["method"].isin([method, reference])].pivot_table(
            index=["review", "seed"], columns="method", values=metric, aggfunc="first"
        )
        unpaired = wide[wide.isna().any(axis=1)]
        if method == reference or len(unpaired):
            where = (f"{method!r} is its own reference" if method == reference else
                     f"review {unpaired.index[0][0]!r}, seed {unpaired.index[0][1]} was run by only "
                     f"one of {method!r} and {reference!r}")  # fmt: skip
            raise ValueError(f"versus: the comparison is paired by review and seed; {where}. "
                             "Run both methods on the same reviews and seeds.")  # fmt: skip
        table = wide[[method, reference]].groupby(level="review", sort=False).mean()
        d = (wide[method] - wide[reference]).groupby(level="review", sort=False)
        table["diff"], table["se"] = d.mean(), d.std(ddof=1) / np.sqrt(d.size())
        table.columns.name = None
        table["ahead"], table["behind"] = table["diff"] > 0, table["diff"] < 0
        ahead, behind = int(table["ahead"].sum()), int(table["behind"].sum())
        sign_p = stats.binomtest(ahead, ahead + behind, 0.5).pvalue if ahead + behind else 1.0
        nonzero = table["diff"][table["diff"] != 0]
        wil_p = stats.wilcoxon(nonzero).pvalue if len(nonzero) else np.nan
        return Comparison(method, reference, metric, table, ahead, behind,
                          len(table) - ahead - behind, float(sign_p), float(wil_p))  # fmt: skip


def run_simulations(tasks: ReviewTaskSet, screeners: dict, *, reviews=None, seeds=(0,),
                    batch="auto", mix: float = 0.0, target: float = 0.95, alpha: float = 0.05,
                    progress: bool = False) -> SimulationRuns:  # fmt: skip
    """Simulate every screener on every review (leave one review out for meta-learned
    ones) from the prior draws ``seeds``. ``screeners``: name -> a function returning a
    fresh :class:`~spatialmeta.screening.screeners.Screener`; ``batch`` and ``mix`` (the
    share of uncertainty queries) as :func:`~spatialmeta.screening.simulate.simulate`'s."""
    names = list(tasks.review_ids if reviews is None else reviews)
    text = tasks.text()
    rows_out, curves = [], {}
    jobs = [(r, name) for r in names for name in screeners]
    it = jobs
    if progress:
        from tqdm import tqdm

        it = tqdm(jobs, desc="screening simulations", unit="review x method")
    for review, name in it:
        rows = tasks.rows(review)
        y = tasks.label[rows].astype(int)
        scr = screeners[name]()
        scr.meta_fit(tasks, [r for r in tasks.review_ids if str(r) != str(review)])
        X = scr.features.fit_transform(text[rows])
        for seed in seeds:
            prior = np.searchsorted(rows, tasks.support(review, seed=seed))
            order = simulate(scr, X, y, prior, batch=batch, mix=mix)
            m = screening_metrics(order, y, n_prior=prior.size, recall=target)
            seq = y[order[prior.size :]]
            stop = stop_point(seq, seq.size, target=target, alpha=alpha)
            found = seq[:stop].sum() if stop is not None else np.nan
            rows_out.append({
                "review": str(review), "method": name, "seed": seed, "n": m.n,
                "relevant": m.relevant, "wss": float(m.wss[0]), "rrf": float(m.rrf[0]),
                "atd": float(m.atd[0]), "last": int(m.last[0]),
                "stop_at": np.nan if stop is None else stop,
                "recall_at_stop": found / m.relevant if stop is not None else np.nan,
                "reached": bool(stop is not None and found >= np.ceil(target * m.relevant - 1e-9)),
                "saved_at_stop": 1 - stop / m.n if stop is not None else np.nan,
            })  # fmt: skip
            curves[(str(review), name, seed)] = m.recall_curve[0]
    return SimulationRuns(pd.DataFrame(rows_out), curves)


def plot_recall(runs: SimulationRuns, review: str, path) -> None:
    """Recall curves of one review (one line per method, the mean over seeds), with the
    random-screening diagonal; PNG or SVG by the file's suffix, written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from spatialmeta._io import atomic_path

    fig, ax = plt.subplots(figsize=(6, 4.5), dpi=120)
    methods = dict.fromkeys(k[1] for k in runs.curves if k[0] == review)
    if not methods:
        raise ValueError(f"plot_recall: no runs of review {review!r}.")
    for m in methods:
        curves = np.stack([c for k, c in runs.curves.items() if k[0] == review and k[1] == m])
        x = np.arange(1, curves.shape[1] + 1) / curves.shape[1]
        ax.plot(x, curves.mean(0), label=m)
    ax.plot([0, 1], [0, 1], "k--", linewidth=1, label="random")
    ax.axhline(0.95, color="grey", linewidth=0.8)
    ax.set_xlabel("share of records screened")
    ax.set_ylabel("recall")
    ax.set_title(f"{review}: recall curves (mean over prior draws)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    suffix = str(path).rsplit(".", 1)[-1].lower()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="svg" if suffix == "svg" else "png")
    plt.close(fig)

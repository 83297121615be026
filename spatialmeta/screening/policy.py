"""A screening policy meta-learned across reviews: how ASReview's SVM should be set at each
phase of screening, chosen from simulations of earlier reviews.

ASReview's default model (a linear SVM on TF-IDF, ``C = 0.11``, balance ratio 9.8) keeps
one setting from the first label to the last. Simulations of the shared reviews showed a
trade-off across phases: strong regularization and a high balance ratio find the first
relevant records sooner (RRF@10), weak regularization and a low ratio find the last ones
sooner (WSS@95). A :class:`Policy` is a setting for the early phase (until ``switch`` of
the review's records are labelled) and one for the rest, optionally with character
n-grams. What is learned across reviews is which policy to use: :class:`PolicyScreener`'s
``meta_fit`` simulates every candidate on the training reviews (their own prior draws,
the active loop to the end) and keeps the one with the best mean WSS@95 + RRF@10 / 100
(both on a 0-1 scale). This is meta-learning as algorithm configuration (learning how to
learn a new review from many earlier ones); the per-review model stays ASReview's, so a
new review is adapted by the same cheap refit.

The simulations are the expensive part (minutes over 21 reviews); :func:`policy_table`
computes them once (by review, policy and prior draw, cached in memory by the review's
content) and a screener can be given that table, so a leave-one-review-out evaluation
simulates every review once, not once per fold. ``meta_fit`` reads only the rows of the
reviews it is given, and only those whose ``digest`` (of the review's labels and text) is
the review's now: a table kept on disk (``screen rank`` keeps one in its output folder)
is reused while the reviews are unchanged and simulated again for a review that changed.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import pandas as pd

from spatialmeta.screening.features import TextFeatures
from spatialmeta.screening.metrics import screening_metrics
from spatialmeta.screening.screeners import Screener, SVMScreener
from spatialmeta.screening.simulate import simulate

__all__ = ["Policy", "DEFAULT_POLICIES", "PolicyScreener", "policy_table", "read_policy_table"]

ASREVIEW = (0.11, 9.8)  # ASReview's default SVM: C, balance ratio


@dataclass(frozen=True)
class Policy:
    """A schedule of the SVM's ``(C, ratio)``: ``early`` while fewer than ``switch`` (a
    share) of the review's records are labelled, ``late`` from then on; ``chars`` adds
    character 3-5-grams to the word 1-2-grams; ``unlabelled`` > 0: in the late phase the
    records not yet screened join the fit as presumed exclusions, each weighing that share
    of a labelled exclusion (as the "presumed non-relevant" documents of Cormack and
    Grossman's continuous active learning, here every unscreened record at a small
    weight: most of them are irrelevant, and the fit learns what sets the relevant records
    apart from the bulk still unscreened, not only from the exclusions screened so far)."""

    early: tuple = ASREVIEW
    late: tuple = ASREVIEW
    switch: float = 0.1
    chars: bool = False
    unlabelled: float = 0.0

    def __post_init__(self):
        for name in ("early", "late"):
            C, ratio = getattr(self, name)
            if not (C > 0 and ratio > 0):
                raise ValueError(f"Policy: `{name}` must be (C, ratio), both > 0; got "
                                 f"{getattr(self, name)!r}.")  # fmt: skip
        if not 0 <= self.switch <= 1:
            raise ValueError(f"Policy: `switch` must be a share in [0, 1]; got {self.switch!r}.")
        if not self.unlabelled >= 0:
            raise ValueError("Policy: `unlabelled` (the weight of an unlabelled record in the "
                             f"late phase) must be >= 0; got {self.unlabelled!r}.")  # fmt: skip

    def is_late(self, n_labelled: int, n_records: int) -> bool:
        """Whether ``n_labelled`` of ``n_records`` labelled is the late phase."""
        return n_labelled >= self.switch * n_records

    def setting(self, n_labelled: int, n_records: int) -> tuple:
        """``(C, ratio)`` once ``n_labelled`` of ``n_records`` are labelled."""
        return self.late if self.is_late(n_labelled, n_records) else self.early

    def unlabelled_weight(self, n_labelled: int, n_records: int) -> float:
        """The weight of each unlabelled record in the fit (0 in the early phase)."""
        return self.unlabelled if self.is_late(n_labelled, n_records) else 0.0

    @property
    def label(self) -> str:
        """A short name: ``C/ratio -> C/ratio @ switch`` (plus ``+unlabelled w``, ``+chars``)."""
        e, lt = (f"{c:g}/{r:g}" for c, r in (self.early, self.late))
        text = e if self.early == self.late else f"{e} -> {lt} @ {self.switch:g}"
        text += f" +unlabelled {self.unlabelled:g}" if self.unlabelled else ""
        return text + (" +chars" if self.chars else "")


# The candidates: ASReview's default; a schedule from strong to weak regularization (and
# high to low balance ratio) switching at 5 or 10 % of the review; the 5 % schedule with
# the unlabelled records as presumed exclusions in its late phase (weight 0.1); ASReview's
# setting on word and character n-grams. The grid's values (C 0.05 / 0.3, ratio 5 / 20,
# weight 0.1) are ones that grids over the shared reviews showed pulling WSS and RRF apart
# (weights 0.02-0.5 were tried: 0.05-0.1 did best); which policy is used is chosen for
# each new review by meta_fit, on the training reviews only. (Four more candidates were
# simulated on the shared reviews and never chosen in any fold; they were dropped to keep
# meta-learning over 21 reviews under 10 minutes on 2 cores.)
DEFAULT_POLICIES = (
    Policy(),
    Policy((0.05, 20.0), (0.3, 5.0), 0.1),
    Policy((0.05, 20.0), (0.3, 5.0), 0.05),
    Policy((0.05, 20.0), (0.3, 5.0), 0.05, unlabelled=0.1),
    Policy(chars=True),
)


class _PolicyFeatures:
    """The policy's TF-IDF (word, or word + character n-grams); notes the review's size,
    which sets the phase."""

    def __init__(self, screener):
        self.screener = screener

    def fit_transform(self, texts):
        X = TextFeatures(chars=self.screener.policy_.chars).fit_transform(texts)
        self.screener.n_records_ = X.shape[0]
        return X


class PolicyScreener(Screener):
    """ASReview's SVM on a phase schedule (:class:`Policy`) meta-learned across reviews.

    ``policies``: the candidates; ``policy``: use this one and learn nothing; ``table``: a
    :func:`policy_table` already simulated (``meta_fit`` reads its rows of the training
    reviews, and simulates what is missing); ``seeds``, ``batch``: the prior draws and
    refit schedule of those simulations; ``n_jobs``: reviews simulated at once (-1: one
    per core). After ``meta_fit``, ``table_`` is ``table`` with the new simulations added
    (what to keep for the next time) and ``scores_`` each candidate's score.
    """

    name = "policy svm (meta-learned)"
    meta_learned = True

    def __init__(self, policies=DEFAULT_POLICIES, *, policy: Policy | None = None,
                 table: pd.DataFrame | None = None, seeds=(0,), batch="auto", n_jobs: int = -1,
                 progress: bool = True):  # fmt: skip
        if not policies and policy is None:
            raise ValueError("PolicyScreener: give at least one candidate in `policies`.")
        self.policies, self.table, self.seeds = tuple(policies), table, tuple(seeds)
        self.batch, self.n_jobs, self.progress = batch, n_jobs, progress
        self.policy_ = policy if policy is not None else self.policies[0]
        self.fixed = policy is not None
        self.n_records_ = None
        self.features = _PolicyFeatures(self)

    def use(self, label: str) -> PolicyScreener:
        """Use the candidate whose :attr:`Policy.label` is ``label`` and learn nothing (a
        choice made before, kept)."""
        known = {p.label: p for p in self.policies}
        if label not in known:
            raise ValueError(f"PolicyScreener: no candidate policy {label!r}; the candidates "
                             f"are {', '.join(map(repr, known))}.")  # fmt: skip
        self.policy_, self.fixed = known[label], True
        return self

    def meta_fit(self, tasks, reviews) -> None:
        """Choose the policy with the best mean WSS@95 + RRF@10 / 100 over ``reviews``
        (each review's mean over the prior draws first, so every review counts alike)."""
        if self.fixed:
            return
        # a simulation needs every record of a review labelled, and both labels present
        reviews = [str(r) for r in reviews
                   if set(tasks.label[tasks.rows(r)].tolist()) == {0, 1}]  # fmt: skip
        if not reviews:
            raise ValueError("PolicyScreener: meta-learning the policy needs earlier reviews "
                             "whose records are all labelled 0/1, with both labels; none was "
                             "given.")  # fmt: skip
        self.table_ = policy_table(tasks, reviews, self.policies, seeds=self.seeds,
                                   batch=self.batch, n_jobs=self.n_jobs, progress=self.progress,
                                   known=self.table)  # fmt: skip
        labels = [p.label for p in self.policies]
        t = self.table_  # its rows of these reviews are of their content now
        t = t[t["review"].isin(reviews) & t["batch"].eq(str(self.batch))
              & t["policy"].isin(labels) & t["seed"].isin(self.seeds)]  # fmt: skip
        per = t.assign(score=t["wss"] + t["rrf"] / 100).groupby(["policy", "review"])["score"]
        self.scores_ = per.mean().groupby(level="policy").mean().reindex(labels)
        self.policy_ = self.policies[int(np.nanargmax(self.scores_.to_numpy()))]

    def fit(self, X, y, X_unlabelled=None):
        """Fit on the labelled records (and, in a late phase that uses them, on the
        unlabelled ones ``X_unlabelled``)."""
        if self.n_records_ is None:
            raise ValueError("PolicyScreener: the phase is the share of the review labelled; "
                             "call `features.fit_transform` on all the review's records "
                             "first.")  # fmt: skip
        n = np.asarray(y).size
        C, ratio = self.policy_.setting(n, self.n_records_)
        w = self.policy_.unlabelled_weight(n, self.n_records_)
        self.model_ = SVMScreener(C=C, ratio=ratio).fit(X, y, X_unlabelled, w)
        return self

    def fit_scores(self, X, y, X_unlabelled):
        return self.fit(X, y, X_unlabelled).scores(X_unlabelled)

    def scores(self, X):
        return self.model_.scores(X)


def _digest(tasks, rows) -> str:
    h = hashlib.sha1(np.ascontiguousarray(tasks.label[rows]).tobytes())
    for part in (tasks.title[rows], tasks.abstract[rows]):
        h.update("\x1f".join(map(str, part)).encode() + b"\x1e")
    return h.hexdigest()


_SIMULATED: dict = {}  # (review content, policy, seed, batch) -> (wss, rrf)


def _simulate_review(tasks, review, digest, policies, seeds, batch) -> list[dict]:
    rows = tasks.rows(review)
    y = tasks.label[rows].astype(int)
    out, feats = [], {}
    for p in policies:
        for seed in seeds:
            key = (digest, p.label, seed, batch)
            if key not in _SIMULATED:
                scr = PolicyScreener(policy=p)
                if p.chars not in feats:
                    feats[p.chars] = scr.features.fit_transform(tasks.text()[rows])
                scr.n_records_ = rows.size
                prior = np.searchsorted(rows, tasks.support(review, seed=seed))
                order = simulate(scr, feats[p.chars], y, prior, batch=batch)
                m = screening_metrics(order, y, n_prior=prior.size)
                _SIMULATED[key] = (float(m.wss[0]), float(m.rrf[0]))
            wss, rrf = _SIMULATED[key]
            out.append({"review": str(review), "digest": digest, "batch": str(batch),
                        "policy": p.label, "seed": seed, "wss": wss, "rrf": rrf})  # fmt: skip
    return out


COLUMNS = ["review", "digest", "batch", "policy", "seed", "wss", "rrf"]


def _checked(table: pd.DataFrame, where: str, delete: str = "it") -> pd.DataFrame:
    """``table`` with :data:`COLUMNS` typed as :func:`policy_table` writes them, or an
    error naming ``where`` the table came from."""
    missing = set(COLUMNS) - set(table.columns)
    if missing:
        raise ValueError(f"{where} (columns found: {', '.join(map(str, table.columns))}) lacks "
                         f"column(s) {', '.join(sorted(missing))}; a table of policy simulations "
                         f"has {', '.join(COLUMNS)}, as policy_table writes them. Delete {delete} "
                         "to simulate again.")  # fmt: skip
    return table.astype({"review": str, "digest": str, "batch": str, "policy": str})


def read_policy_table(path) -> pd.DataFrame:
    """A :func:`policy_table` kept as CSV, checked; an unreadable file is refused by name."""
    try:
        table = pd.read_csv(path, dtype={"review": str, "batch": str})
    except (OSError, ValueError) as err:
        raise ValueError(f"cannot read the kept policy simulations {path}: {err}. Delete the "
                         "file to simulate again.") from None  # fmt: skip
    return _checked(table, f"the kept policy simulations {path}", delete="the file")


def policy_table(tasks, reviews, policies=DEFAULT_POLICIES, *, seeds=(0,), batch="auto",
                 n_jobs: int = 1, progress: bool = False,
                 known: pd.DataFrame | None = None) -> pd.DataFrame:  # fmt: skip
    """WSS@95 and RRF@10 of every policy on every review of ``reviews`` from each prior
    draw ``seeds`` (the active loop simulated to the end, refitting at ``batch``): a table
    with columns review, digest (of the review's labels and text), batch, policy (its
    :attr:`Policy.label`), seed, wss, rrf. Rows of ``known`` for these reviews as they are
    now are not simulated again; its rows for other reviews are kept, and those for an
    earlier content of these reviews are dropped."""
    policies, seeds = tuple(policies), tuple(seeds)
    digests = {str(r): _digest(tasks, tasks.rows(r)) for r in reviews}
    parts = []
    have = set()
    if known is not None and len(known):
        known = _checked(known, "policy_table: the known table")
        now = known["review"].map(digests)  # NaN for the other reviews
        known = known[now.isna() | now.eq(known["digest"])]  # a changed review's rows go
        parts.append(known)
        cur = known[known["batch"].eq(str(batch))]
        have = set(zip(cur["review"], cur["policy"], cur["seed"], strict=True))
    todo = [r for r in digests if any((r, p.label, s) not in have for p in policies for s in seeds)]
    if todo:
        if n_jobs == 1:
            done = (_simulate_review(tasks, r, digests[r], policies, seeds, batch) for r in todo)
        else:
            from joblib import Parallel, delayed

            # biggest reviews first, so that no worker is left with one at the end
            todo.sort(key=lambda r: -tasks.rows(r).size)
            done = Parallel(n_jobs=n_jobs, return_as="generator_unordered")(
                delayed(_simulate_review)(tasks, r, digests[r], policies, seeds, batch)
                for r in todo
            )
        if progress:
            from tqdm import tqdm

            done = tqdm(done, total=len(todo), desc="simulating policies", unit="review")
        parts.append(pd.DataFrame([row for part in done for row in part], columns=COLUMNS))
    if not parts:
        return pd.DataFrame(columns=COLUMNS)
    t = pd.concat(parts, ignore_index=True)
    return t.drop_duplicates(subset=["review", "digest", "batch", "policy", "seed"],
                             keep="last").reset_index(drop=True)  # fmt: skip

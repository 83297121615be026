"""Reviews as tasks: the records of systematic reviews to screen (issue 16).

A review is a task of the same abstraction as a region or a study set: a few labelled
records are its support set (the prior knowledge a reviewer brings: at least one included
and one excluded record) and the rest are the query to rank. :class:`ReviewTaskSet` holds
every record of every review in flat columns, sorted by review; :func:`read_reviews` reads
CSV, TSV, Parquet or RIS files with the title/abstract/label columns found by their usual
names or mapped by hand.

Near-duplicates (the same DOI, or the same title once lower-cased and stripped of
punctuation and spaces, within one review) are grouped, array-at-a-time (a bipartite graph
of records and keys, its connected components by scipy), and kept together: a screener
shows a group once, and :meth:`ReviewTaskSet.duplicates` reports each group with its
labels, flagging groups whose labels disagree (full-text decisions can split copies of
one paper). Records without title or abstract are never grouped by their empty text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import sparse
from scipy.sparse.csgraph import connected_components

__all__ = ["ReviewTaskSet", "read_reviews", "duplicate_groups", "COLUMN_NAMES"]

# the names each field goes by in exported review files (first found wins), lower-cased
COLUMN_NAMES = {
    "title": ("title", "primary_title", "ti", "t1"),
    "abstract": ("abstract", "ab", "n2", "notes_abstract"),
    "label": ("label_included", "included", "final_included", "label", "label_abstract_screening",
              "asreview_label"),
    "review": ("review_id", "review"),
    "record_id": ("record_id", "id", "record"),
    "doi": ("doi", "do"),
}  # fmt: skip
MIN_TITLE_KEY = 20  # normalized titles shorter than this ("Editorial") are not grouped


@dataclass(frozen=True)
class ReviewTaskSet:
    """The records of one or more reviews, one row each, sorted by review.

    ``review`` (index into ``review_ids``), ``record_id``, ``title``, ``abstract`` (``""``
    where missing), ``label`` (1 included, 0 excluded, -1 unlabelled), ``doi`` (``""``
    where none) and ``group`` (near-duplicate group: records of one group share the id;
    a record alone has its own). ``source`` names the file read.
    """

    review_ids: np.ndarray
    review: np.ndarray
    record_id: np.ndarray
    title: np.ndarray
    abstract: np.ndarray
    label: np.ndarray
    doi: np.ndarray
    group: np.ndarray
    source: str = ""

    @classmethod
    def from_frame(cls, frame: pd.DataFrame, *, source: str = "") -> ReviewTaskSet:
        """Build from a frame with columns ``review``, ``record_id``, ``title``,
        ``abstract``, ``label`` (1/0/NaN) and optionally ``doi``; checks it (see
        :func:`read_reviews`) and groups near-duplicates."""
        where = f" in {source}" if source else ""
        if len(frame) == 0:
            raise ValueError(f"no records{where}: the review is empty.")
        frame = frame.reset_index(drop=True)
        rev = frame["review"].astype(str)
        lab = pd.to_numeric(frame["label"], errors="coerce")
        raw = frame["label"]
        bad = (raw.notna() & ~lab.isin([0, 1])).to_numpy()
        if bad.any():
            rows = np.flatnonzero(bad)[:5]
            shown = ", ".join(f"row {i + 1} ({raw.iloc[i]!r})" for i in rows)
            raise ValueError(f"labels{where} must be 1 (included), 0 (excluded) or empty "
                             f"(unlabelled); {int(bad.sum())} are not: {shown}.")  # fmt: skip
        order = np.argsort(pd.factorize(rev)[0], kind="stable")  # reviews in order of appearance
        frame, rev, lab = frame.iloc[order], rev.iloc[order], lab.iloc[order]
        codes, ids = pd.factorize(rev)
        text = {
            c: frame[c].fillna("").astype(str).str.strip().to_numpy() for c in ("title", "abstract")
        }
        doi = (frame["doi"] if "doi" in frame else pd.Series([""] * len(frame))).fillna("")
        doi = doi.astype(str).to_numpy()
        rid = frame["record_id"].astype(str).to_numpy()
        out = cls(np.asarray(ids, dtype=object), codes.astype(np.int64), rid, text["title"],
                  text["abstract"], lab.fillna(-1).astype(np.int8).to_numpy(), doi,
                  duplicate_groups(codes, text["title"], doi), source)  # fmt: skip
        empty = [str(r) for i, r in enumerate(out.review_ids) if not (out.review == i).any()]
        if empty:  # pragma: no cover - factorize never yields an unused code
            raise ValueError(f"review {empty[0]!r}{where} has no records.")
        return out

    @property
    def n_records(self) -> int:
        return int(self.review.size)

    @property
    def n_reviews(self) -> int:
        return int(self.review_ids.size)

    def text(self) -> np.ndarray:
        """Title and abstract joined (what the text features read), as Python strings
        (``np.char.add`` would pad every record to the longest abstract: a GB for the 22
        shared reviews, and seconds to build)."""
        title = pd.Series(self.title, dtype=object).astype(str)
        return (title + " " + pd.Series(self.abstract, dtype=object).astype(str)).to_numpy(object)

    def rows(self, review) -> np.ndarray:
        """Row indices of one review (by id or position)."""
        i = self._index(review)
        return np.flatnonzero(self.review == i)

    def _index(self, review) -> int:
        if isinstance(review, (int, np.integer)) and not isinstance(review, bool):
            if not 0 <= int(review) < self.n_reviews:
                raise ValueError(
                    f"review position {review} out of range (0..{self.n_reviews - 1})."
                )
            return int(review)
        hit = np.flatnonzero(self.review_ids.astype(str) == str(review))
        if hit.size == 0:
            shown = ", ".join(map(str, self.review_ids[:8]))
            raise ValueError(f"no review {review!r}{' in ' + self.source if self.source else ''}; "
                             f"reviews: {shown}{' ...' if self.n_reviews > 8 else ''}.")  # fmt: skip
        return int(hit[0])

    def summary(self) -> pd.DataFrame:
        """Per review: records, included, excluded, unlabelled, records without an
        abstract, near-duplicate groups (with more than one record) and groups whose
        labels disagree."""
        df = pd.DataFrame({"review": self.review_ids[self.review], "label": self.label,
                           "no_abstract": self.abstract == "", "group": self.group})  # fmt: skip
        size = df.groupby("group")["group"].transform("size")
        df["dup_group"] = np.where(size > 1, df["group"], -1)
        g = df.groupby("review", sort=False)
        out = pd.DataFrame({
            "records": g.size(), "included": g["label"].apply(lambda s: int((s == 1).sum())),
            "excluded": g["label"].apply(lambda s: int((s == 0).sum())),
            "unlabelled": g["label"].apply(lambda s: int((s == -1).sum())),
            "no_abstract": g["no_abstract"].sum().astype(int),
            "duplicate_groups": g["dup_group"].apply(lambda s: int(s[s >= 0].nunique())),
        })  # fmt: skip
        dup = self.duplicates()
        conflicts = dup[dup["conflicting"]].groupby("review").size()
        out["conflicting_groups"] = conflicts.reindex(out.index).fillna(0).astype(int)
        return out

    def duplicates(self) -> pd.DataFrame:
        """Each near-duplicate group with more than one record: review, group, size,
        record ids, labels and ``conflicting`` (its labelled records disagree)."""
        df = pd.DataFrame({"review": self.review_ids[self.review], "group": self.group,
                           "record_id": self.record_id, "label": self.label})  # fmt: skip
        df = df[df.groupby("group")["group"].transform("size") > 1]
        if df.empty:
            return pd.DataFrame(columns=["review", "group", "size", "record_ids", "labels",
                                         "conflicting"])  # fmt: skip
        g = df.groupby("group", sort=True)
        out = pd.DataFrame({"review": g["review"].first(), "size": g.size(),
                            "record_ids": g["record_id"].agg(list),
                            "labels": g["label"].agg(list)})  # fmt: skip
        known = df[df["label"] >= 0].groupby("group")["label"].nunique()
        out["conflicting"] = known.reindex(out.index).fillna(0).to_numpy() > 1
        return out.reset_index()

    def support(self, review, *, n_included: int = 1, n_excluded: int = 1,
                seed: int = 0) -> np.ndarray:  # fmt: skip
        """A random support set of one review (rows): ``n_included`` included and
        ``n_excluded`` excluded records drawn with ``seed`` (the prior knowledge of a
        screening simulation). At least one included and one excluded record are needed."""
        rows = self.rows(review)
        name = self.review_ids[self._index(review)]
        if n_included < 1 or n_excluded < 1:
            raise ValueError("a support set needs at least one included and one excluded "
                             f"record; got n_included={n_included}, n_excluded={n_excluded}.")  # fmt: skip
        inc, exc = rows[self.label[rows] == 1], rows[self.label[rows] == 0]
        if inc.size < n_included:
            raise ValueError(f"review {name!r} has {inc.size} included record(s); a support set "
                             f"needs at least one included record ({n_included} asked).")  # fmt: skip
        if exc.size < n_excluded:
            raise ValueError(f"review {name!r} has {exc.size} excluded record(s); a support set "
                             f"needs {n_excluded}.")  # fmt: skip
        rng = np.random.default_rng(seed)
        return np.concatenate([rng.choice(inc, n_included, replace=False),
                               rng.choice(exc, n_excluded, replace=False)])  # fmt: skip


def _normal_title(title: np.ndarray) -> pd.Series:
    s = pd.Series(title, dtype=object).fillna("").astype(str).str.lower()
    return s.str.replace(r"[\W_]+", "", regex=True)


def _normal_doi(doi: np.ndarray) -> pd.Series:
    s = pd.Series(doi, dtype=object).fillna("").astype(str).str.strip().str.lower()
    return s.str.replace(r"^(https?://(dx\.)?doi\.org/|doi:\s*)", "", regex=True)


def duplicate_groups(review: np.ndarray, title: np.ndarray, doi: np.ndarray) -> np.ndarray:
    """Near-duplicate group of each record: records of one review linked by the same DOI
    or the same normalized title (lower case, letters and digits only, at least
    :data:`MIN_TITLE_KEY` characters) fall in one group, transitively (connected
    components of the record-key graph). Returns one group id per record."""
    n = len(review)
    rev = pd.Series(np.asarray(review)).astype(str)
    keys = []
    t, d = _normal_title(title), _normal_doi(doi)
    keys.append(np.where(t.str.len() >= MIN_TITLE_KEY, "t|" + rev + "|" + t, ""))
    keys.append(np.where(d.str.len() > 0, "d|" + rev + "|" + d, ""))
    rec, key = [], []
    for k in keys:
        has = k != ""
        rec.append(np.flatnonzero(has))
        key.append(k[has])
    rec_all = np.concatenate(rec)
    codes, _ = pd.factorize(np.concatenate(key))
    m = int(codes.max()) + 1 if codes.size else 0
    graph = sparse.coo_matrix((np.ones(rec_all.size), (rec_all, n + codes)), shape=(n + m, n + m))
    _, comp = connected_components(graph, directed=False)
    return pd.factorize(comp[:n])[0].astype(np.int64)


def _find(columns: list[str], field: str, given: dict) -> str | None:
    if field in given:
        if given[field] not in columns:
            raise KeyError(field)
        return given[field]
    low = {c.lower().strip(): c for c in columns}
    return next((low[n] for n in COLUMN_NAMES[field] if n in low), None)


def _read_ris(path: Path) -> pd.DataFrame:
    """A RIS file as a frame: one row per record (``TY`` .. ``ER``), each tag a column
    (repeated tags joined with "; "); a label from ``LB`` (1/0) where present."""
    recs, cur = [], {}
    tag_line = re.compile(r"^([A-Z][A-Z0-9])  -\s?(.*)$")
    for line in path.read_text(encoding="utf-8-sig", errors="replace").splitlines():
        m = tag_line.match(line)
        if not m:
            continue
        tag, val = m.group(1), m.group(2).strip()
        if tag == "ER":
            recs.append(cur)
            cur = {}
        elif tag in cur:
            cur[tag] = f"{cur[tag]}; {val}"
        else:
            cur[tag] = val
    if cur:
        recs.append(cur)
    frame = pd.DataFrame(recs)
    return frame.rename(columns={"LB": "label"})


def read_reviews(path, *, columns: dict | None = None, review: str | None = None) -> ReviewTaskSet:
    """Read the records of one or more reviews from CSV/TSV (optionally gzipped), Parquet
    or RIS.

    Columns are found by their usual names (:data:`COLUMN_NAMES`: ``title``,
    ``abstract``, ``label_included``/``included``/``label``, ``review_id``, ``record_id``,
    ``doi``, any case) or mapped by hand, e.g. ``columns={"title": "Article Title",
    "label": "decision"}``. A title or an abstract column is required (a missing one is
    read as empty); labels are 1, 0 or empty (unlabelled). Without a review column, the
    whole file is one review named ``review`` (default: the file's stem).

    Examples
    --------
    >>> import pandas as pd, tempfile, os
    >>> d = tempfile.mkdtemp()
    >>> p = os.path.join(d, "r.csv")
    >>> t = "A randomized trial of X in adults"
    >>> pd.DataFrame({"Title": [t, t.upper() + ".", "Unrelated survey"],
    ...               "Abstract": ["...", None, "..."],
    ...               "included": [1, 1, 0]}).to_csv(p, index=False)
    >>> rs = read_reviews(p)
    >>> rs.review_ids.tolist(), rs.label.tolist(), len(set(rs.group))
    (['r'], [1, 1, 0], 2)
    """
    path = Path(path)
    given = dict(columns or {})
    unknown = set(given) - set(COLUMN_NAMES)
    if unknown:
        raise ValueError(f"`columns` maps unknown field(s) {sorted(unknown)}; fields: "
                         f"{', '.join(COLUMN_NAMES)}.")  # fmt: skip
    if not path.exists():
        raise FileNotFoundError(f"no file {path}.")
    name = path.name.lower()
    try:
        if name.endswith((".parquet", ".pq")):
            frame = pd.read_parquet(path)
        elif name.endswith((".ris", ".txt")):
            frame = _read_ris(path)
        elif name.endswith((".tsv", ".tsv.gz", ".tab")):
            frame = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, na_values=[""])
        elif name.endswith((".csv", ".csv.gz")):
            frame = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
        else:
            raise ValueError(f"{path}: unknown format; use .csv, .tsv, .parquet or .ris (gzip "
                             "allowed for .csv/.tsv).")  # fmt: skip
    except (pd.errors.ParserError, UnicodeDecodeError, OSError) as exc:
        raise ValueError(f"{path} could not be read: {str(exc).splitlines()[0]}") from None
    cols = [str(c) for c in frame.columns]
    try:
        found = {f: _find(cols, f, given) for f in COLUMN_NAMES}
    except KeyError as exc:
        field = exc.args[0]
        raise ValueError(f"{path}: `columns` maps {field} to {given[field]!r}, which is not a "
                         f"column; columns found: {', '.join(cols)}.") from None  # fmt: skip
    if found["title"] is None and found["abstract"] is None:
        raise ValueError(f"{path} has neither a title nor an abstract column; columns found: "
                         f"{', '.join(cols)}. Name them with `columns={{'title': ..., "
                         "'abstract': ...}}`.")  # fmt: skip
    n = len(frame)
    out = pd.DataFrame({
        "title": frame[found["title"]] if found["title"] else [""] * n,
        "abstract": frame[found["abstract"]] if found["abstract"] else [""] * n,
        "label": frame[found["label"]] if found["label"] else [np.nan] * n,
        "review": frame[found["review"]] if found["review"] else [review or path.name.split(".")[0]] * n,
        "record_id": frame[found["record_id"]] if found["record_id"] else np.arange(n).astype(str),
        "doi": frame[found["doi"]] if found["doi"] else [""] * n,
    })  # fmt: skip
    if found["review"] and review is not None:
        out = out[out["review"].astype(str) == str(review)]
        if out.empty:
            raise ValueError(f"{path} has no records of review {review!r}.")
    return ReviewTaskSet.from_frame(out, source=str(path))

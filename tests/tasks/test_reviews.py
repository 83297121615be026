"""ReviewTaskSet and read_reviews: the shared screening data, near-duplicate groups, the
formats, the support set and bad input."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from spatialmeta.tasks.reviews import ReviewTaskSet, duplicate_groups, read_reviews
from tests.conftest import shared_path


def test_the_shared_reviews_read_as_22_tasks():
    rs = read_reviews(shared_path("screening", "reviews.csv.gz"))
    assert rs.n_reviews == 22 and rs.n_records == 24522
    assert int((rs.label == 1).sum()) == 1395 and not (rs.label == -1).any()
    adhd = rs.rows("Cohen_2006_ADHD")
    assert adhd.size == 851 and int(rs.label[adhd].sum()) == 20
    s = rs.summary()
    assert s.loc["Cohen_2006_SkeletalMuscleRelaxants", "included"] == 9
    assert s["no_abstract"].sum() == int((rs.abstract == "").sum()) > 0
    # records of one review are contiguous, in file order
    assert (np.diff(rs.review) >= 0).all()
    dup = rs.duplicates()
    assert (dup["size"] >= 2).all() and dup["review"].isin(rs.review_ids).all()
    assert s["duplicate_groups"].sum() == len(dup)


def test_near_duplicates_group_by_doi_or_title_within_a_review_transitively():
    review = np.array([0, 0, 0, 0, 0, 1, 0, 0, 0])
    title = np.array([
        "Effect of drug X on blood pressure: a randomized trial",   # 0
        "EFFECT OF DRUG X ON BLOOD PRESSURE - A RANDOMIZED TRIAL.",  # 1: same title
        "A different paper entirely about statins",                   # 2: DOI of 1
        "Editorial",                                                  # 3: short title
        "Editorial",                                                  # 4: short title
        "Effect of drug X on blood pressure: a randomized trial",    # 5: other review
        "",                                                           # 6: no text
        "",                                                           # 7: no text
        "Unrelated cohort study of aspirin",                          # 8
    ])  # fmt: skip
    doi = np.array(
        ["", "10.1000/ABC", "https://doi.org/10.1000/abc", "", "", "", "", "", "doi: 10.9/z"]
    )
    g = duplicate_groups(review, title, doi)
    assert g[0] == g[1] == g[2]  # 0-1 by title, 1-2 by DOI (prefixes and case dropped)
    assert len({g[0], g[3], g[4], g[5], g[6], g[7], g[8]}) == 7


def test_conflicting_labels_in_a_group_are_flagged(tmp_path):
    p = tmp_path / "r.csv"
    pd.DataFrame({"title": ["Same long title of one paper", "same long title of one paper!",
                            "Another paper with a long title"], "abstract": ["a", "b", "c"],
                  "label_included": [1, 0, 0]}).to_csv(p, index=False)  # fmt: skip
    rs = read_reviews(p)
    d = rs.duplicates()
    assert len(d) == 1 and bool(d["conflicting"].iloc[0]) and d["labels"].iloc[0] == [1, 0]
    assert rs.summary()["conflicting_groups"].iloc[0] == 1


def test_formats_and_column_mapping_round_trip(tmp_path):
    frame = pd.DataFrame({"Article Title": ["First paper title here", "Second one"],
                          "AB": ["abs 1", None], "decision": ["1", "0"],
                          "DOI": ["10.1/x", ""]})  # fmt: skip
    frame.to_parquet(tmp_path / "r.parquet")
    rs = read_reviews(
        tmp_path / "r.parquet", columns={"title": "Article Title", "label": "decision"}
    )
    assert rs.title.tolist() == ["First paper title here", "Second one"]
    assert rs.abstract.tolist() == ["abs 1", ""] and rs.label.tolist() == [1, 0]
    assert rs.review_ids.tolist() == ["r"] and rs.doi.tolist() == ["10.1/x", ""]
    frame.to_csv(tmp_path / "r.tsv", sep="\t", index=False)
    assert read_reviews(
        tmp_path / "r.tsv", columns={"title": "Article Title", "label": "decision"}
    ).label.tolist() == [1, 0]
    ris = ("TY  - JOUR\nTI  - First paper title here\nAB  - abs 1\nDO  - 10.1/x\nLB  - 1\nER  - \n"
           "TY  - JOUR\nTI  - Second one\nAB  - part one\nAB  - part two\nER  - \n")  # fmt: skip
    (tmp_path / "r.ris").write_text(ris)
    r2 = read_reviews(tmp_path / "r.ris")
    assert r2.title.tolist() == ["First paper title here", "Second one"]
    assert r2.abstract.tolist() == ["abs 1", "part one; part two"] and r2.label.tolist() == [1, -1]


def test_support_sets_and_reviews_by_name():
    rs = read_reviews(shared_path("screening", "reviews.csv.gz"))
    s = rs.support("Cohen_2006_ADHD", n_included=2, n_excluded=3, seed=1)
    assert rs.label[s].tolist() == [1, 1, 0, 0, 0]
    assert (rs.review[s] == rs._index("Cohen_2006_ADHD")).all()
    assert not np.array_equal(s, rs.support("Cohen_2006_ADHD", n_included=2, n_excluded=3, seed=2))
    np.testing.assert_array_equal(
        s, rs.support("Cohen_2006_ADHD", n_included=2, n_excluded=3, seed=1)
    )
    with pytest.raises(ValueError, match=r"no review 'Cohen_2006_Nope'.*reviews: Bannach"):
        rs.rows("Cohen_2006_Nope")


def test_bad_input_is_named(tmp_path):
    p = tmp_path / "x.csv"
    pd.DataFrame({"name": ["a"], "text": ["b"], "label": [1]}).to_csv(p, index=False)
    with pytest.raises(ValueError, match=r"neither a title nor an abstract column; columns found: "
                                         r"name, text, label"):  # fmt: skip
        read_reviews(p)
    pd.DataFrame({"title": ["a", "b", "c"], "label": ["1", "yes", "2"]}).to_csv(p, index=False)
    with pytest.raises(ValueError, match=r"2 are not: row 2 \('yes'\), row 3 \('2'\)"):
        read_reviews(p)
    pd.DataFrame({"title": [], "label": []}).to_csv(p, index=False)
    with pytest.raises(ValueError, match=r"no records in .*x.csv: the review is empty"):
        read_reviews(p)
    pd.DataFrame({"title": ["a long enough title", "b"], "label": [0, 0]}).to_csv(p, index=False)
    with pytest.raises(ValueError, match=r"review 'x' has 0 included record\(s\); a support set "
                                         r"needs at least one included record"):  # fmt: skip
        read_reviews(p).support("x")
    with pytest.raises(ValueError, match=r"maps title to 'Titel', which is not a column"):
        read_reviews(p, columns={"title": "Titel"})
    (tmp_path / "x.xlsx").write_text("")
    with pytest.raises(ValueError, match=r"unknown format"):
        read_reviews(tmp_path / "x.xlsx")
    pd.DataFrame({"title": ["t"], "review_id": ["A"]}).to_csv(p, index=False)
    with pytest.raises(ValueError, match=r"no records of review 'B'"):
        read_reviews(p, review="B")


def test_from_frame_keeps_reviews_contiguous():
    rs = ReviewTaskSet.from_frame(pd.DataFrame({
        "review": ["b", "a", "b", "a"], "record_id": ["1", "2", "3", "4"],
        "title": ["t1", "t2", "t3", "t4"], "abstract": [None] * 4, "label": [1, 0, None, 1]}))  # fmt: skip
    assert rs.review_ids.tolist() == ["b", "a"] and rs.record_id.tolist() == ["1", "3", "2", "4"]
    assert rs.label.tolist() == [1, -1, 0, 1] and rs.text()[0] == "t1 "

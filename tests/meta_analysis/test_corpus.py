"""The corpus of meta-analyses: the long table, its padded arrays, and the shared corpus
(metadat and psymetadata .rda files) read without R."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from spatialmeta.meta_analysis.corpus import Corpus, load_corpus
from spatialmeta.meta_analysis.learned import learn_tau_prior
from tests.conftest import shared_path

REF = json.loads((Path(__file__).resolve().parents[1] / "reference" /
                  "metafor_reference.json").read_text())["datasets"]  # fmt: skip


def test_a_long_table_pads_into_the_arrays_the_engines_take():
    frame = pd.DataFrame({"ma": ["a", "a", "b", "b", "b", "c"], "y": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6],
                          "v": [0.01] * 6, "measure": ["SMD"] * 5 + ["OR"]})  # fmt: skip
    c = Corpus.from_table(frame, meta_id="ma", yi="y", vi="v", measure="measure")
    ids, yi, vi = c.padded()
    assert ids.tolist() == ["a", "b", "c"] and yi.shape == (3, 3)
    np.testing.assert_array_equal(yi[1], [0.3, 0.4, 0.5])
    assert np.isnan(yi[0, 2]) and np.isnan(vi[2, 1])
    ids, yi, _ = c.padded("SMD")
    assert ids.tolist() == ["a", "b"]
    assert c.counts().loc["SMD", "meta_analyses"] == 2 and c.counts().loc["OR", "studies"] == 1
    with pytest.raises(ValueError, match=r"no meta-analysis with measure 'RR'"):
        c.padded("RR")
    with pytest.raises(ValueError, match=r"no column 'yi'"):
        Corpus.from_table(frame, meta_id="ma")
    bad = frame.assign(v=[0.01, -1, 0.01, 0.01, 0.01, 0.01])
    with pytest.raises(ValueError, match=r"meta-analysis 'a' \(row 1\) has yi = 0.2, vi = -1"):
        Corpus.from_table(bad, meta_id="ma", yi="y", vi="v")


@pytest.fixture(scope="module")
def corpus():
    pytest.importorskip("rdata")
    return load_corpus(shared_path("meta_analysis"))


def test_the_shared_corpus_reads_without_r_and_names_what_it_skips(corpus):
    counts = corpus.counts()
    assert corpus.n_meta >= 40 and counts.loc["OR", "meta_analyses"] >= 10
    assert np.isfinite(corpus.table[["yi", "vi"]].to_numpy()).all() and (corpus.table.vi > 0).all()
    # BCG from its tpos/tneg/cpos/cneg counts: metafor's escalc("RR") values
    bcg = corpus.table[corpus.table.meta_id == "metadat/dat.bcg"]
    np.testing.assert_allclose(bcg.yi, REF["bcg"]["yi"], rtol=1e-12)
    np.testing.assert_allclose(bcg.vi, REF["bcg"]["vi"], rtol=1e-12)
    assert (bcg.measure == "RR").all()
    # what is not a plain meta-analysis is skipped with its reason, never silently
    assert "multilevel models" in corpus.skipped["metadat/dat.konstantopoulos2011"]
    assert all(isinstance(r, str) and r for r in corpus.skipped.values())
    kept = set(corpus.table.meta_id)
    assert not kept & set(corpus.skipped)


ALIASES = json.loads((Path(__file__).resolve().parents[1] / "reference" /
                      "corpus_alias_reference.json").read_text())  # fmt: skip


@pytest.mark.parametrize("name", sorted(ALIASES))
def test_datasets_with_aliased_columns_equal_metafor(corpus, name):
    """Me/Se/Ne, x.a/n.a, Correlation/SampleSize, cases/total, ... : escalc on the columns
    the loader maps, against metafor's escalc on the same .rda loaded by R
    (tests/reference/make_corpus_alias_reference.R)."""
    got = corpus.table[corpus.table.meta_id == name]
    assert len(got) == len(ALIASES[name]["yi"]) > 5
    np.testing.assert_allclose(got.yi, ALIASES[name]["yi"], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(got.vi, ALIASES[name]["vi"], rtol=1e-12)


def test_a_prior_learns_from_the_real_odds_ratio_corpus(corpus):
    import warnings

    ids, yi, vi = corpus.padded("OR")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = learn_tau_prior(yi, vi, family="lognormal_tau2", scale="logor")
    weak = [w for w in caught if "is weak" in str(w.message)]
    assert bool(weak) == (len(ids) < 20)  # the corpus-size warning, exactly when it applies
    assert res.converged and res.n_meta == len(ids)
    # Turner et al.'s marginal log-OR prior is log tau^2 ~ N(-2.56, 1.74^2): the same
    # order, from a few dozen metadat analyses (not Turner's Cochrane corpus)
    assert -6 < res.params["mu"] < 0 and 0 < res.params["sigma"] < 4


def test_a_corpus_from_a_folder_of_tables_and_from_study_sets(tmp_path):
    from spatialmeta.tasks.studies import StudyTaskSet

    a = pd.DataFrame({"study": ["x", "y", "z"], "g": [0.1, 0.4, 0.2], "v": [0.02, 0.03, 0.05]})
    b = pd.DataFrame({"study": ["u", "w"], "g": [0.6, 0.3], "v": [0.04, 0.01]})
    a.to_csv(tmp_path / "first.csv", index=False)
    b.to_csv(tmp_path / "second.csv", index=False)
    c = Corpus.from_folder(tmp_path, yi="g", vi="v", measure="SMD")
    ids, yi, vi = c.padded()
    assert ids.tolist() == ["first", "second"] and c.counts().loc["SMD", "studies"] == 5
    np.testing.assert_array_equal(yi[1, :2], [0.6, 0.3])
    sets = {"first": StudyTaskSet.from_frame(a, yi="g", vi="v", label="study", measure="SMD"),
            "second": StudyTaskSet.from_frame(b, yi="g", vi="v", label="study", measure="SMD")}  # fmt: skip
    same = Corpus.from_studies(sets)
    pd.testing.assert_frame_equal(same.table[["meta_id", "yi", "vi", "measure"]],
                                  c.table[["meta_id", "yi", "vi", "measure"]])  # fmt: skip
    b.assign(v=[0.04, -1.0]).to_csv(tmp_path / "second.csv", index=False)
    with pytest.raises(ValueError, match=r"second.csv: Corpus: study of meta-analysis 'second'"):
        Corpus.from_folder(tmp_path, yi="g", vi="v")
    with pytest.raises(ValueError, match=r"study set 'q' has no `yi`"):
        Corpus.from_studies({"q": object()})
    with pytest.raises(FileNotFoundError, match=r"no \*.csv file"):
        Corpus.from_folder(tmp_path / "empty")

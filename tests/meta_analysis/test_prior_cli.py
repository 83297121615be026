"""Priors on the command line: ``--prior`` specs, prior files (round trip and bad files
named), ``spatialmeta prior learn`` and ``spatialmeta pool --prior`` end to end."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from spatialmeta.cli import app
from spatialmeta.meta_analysis import bayes_pool, escalc, learn_tau_prior, published_prior
from spatialmeta.meta_analysis.prior_files import load_prior, resolve_prior, save_prior
from spatialmeta.meta_analysis.priors import TauPrior
from tests.meta_analysis.test_pool_job import BCG_COLS, bcg_frame


def _corpus_frame(seed=0, n=60):
    """A long table of n simulated meta-analyses on two measures."""
    rng = np.random.default_rng(seed)
    rows = []
    for j in range(n):
        m = "OR" if j % 2 else "SMD"
        tau = np.exp(rng.normal(-1.5 if m == "OR" else -3.0, 0.8) / 2)
        k = int(rng.integers(3, 12))
        vi = rng.uniform(0.01, 0.2, k)
        yi = rng.normal(0.2, np.sqrt(vi + tau**2))
        rows += [
            {"meta_id": f"ma{j}", "yi": a, "vi": b, "measure": m}
            for a, b in zip(yi, vi, strict=True)
        ]
    return pd.DataFrame(rows)


def test_specs_resolve_to_the_published_rows_and_families():
    outcome = "all-cause mortality"
    comparison = "pharmacological vs. placebo / control"
    assert resolve_prior(f"turner2015:{outcome},{comparison}")[0] == published_prior(
        "turner2015", outcome=outcome, comparison=comparison
    )
    assert resolve_prior("rhodes2015")[0] == published_prior("rhodes2015")
    assert resolve_prior("bartos2021:smd") == published_prior("bartos2021", scale="smd")
    assert resolve_prior("bartos2021", "RR") == published_prior("bartos2021", scale="logrr")
    tau, mu = resolve_prior("halft:0.3")
    assert tau.family == "halft_tau" and tau.params == {"scale": 0.3, "df": 3.0} and mu is None
    assert resolve_prior("lognormal:-2.5,1.2")[0].params == {"mu": -2.5, "sigma": 1.2}
    assert resolve_prior("uniform:2")[0].family == "uniform_tau"
    for spec, msg in (
        ("halfnormal:abc", r"halfnormal's parameters must be numbers"),
        ("halfnormal", r"halfnormal takes SCALE"),
        ("halfnormal:-1", r"scale must be > 0"),
        ("gamma:1", r"unknown prior 'gamma'; use turner2015"),
        ("bartos2021", r"give the scale, e.g. bartos2021:smd"),
        ("learned:", r"give a path"),
        ("learned:/nowhere/corpus", r"'/nowhere/corpus' does not exist"),
    ):
        with pytest.raises((ValueError, FileNotFoundError), match=msg):
            resolve_prior(spec)


def test_a_prior_file_round_trips_and_bad_files_name_the_field(tmp_path):
    t = _corpus_frame()
    from spatialmeta.meta_analysis.corpus import Corpus
    from spatialmeta.meta_analysis.prior_files import learn_corpus

    learned = learn_corpus(Corpus.from_table(t), pooling="separate")
    assert learned.design.columns == ("measure",)
    path = save_prior(learned, tmp_path / "prior.json")
    back = load_prior(path)
    for m in ("OR", "SMD"):
        assert back.prior_for(measure=m).params == learned.prior_for(measure=m).params
    assert resolve_prior(f"learned:{path}", "OR")[0].params == learned.prior_for(
        measure="OR").params  # fmt: skip
    doc = json.loads(path.read_text())
    bad = tmp_path / "bad.json"
    cases = [
        ("{not json", r"prior file '.*bad.json' does not parse as JSON"),
        (json.dumps({**doc, "format": "x"}), r"field 'format' must be 'spatialmeta-prior'"),
        (json.dumps({k: v for k, v in doc.items() if k != "coef"}), r"field 'coef' is missing"),
        (json.dumps({**doc, "coef": [1.0]}), r"field 'coef' has 1 numbers; a lognormal_tau2"),
        (json.dumps({**doc, "coef": ["a"] * len(doc["coef"])}), r"'coef' must be a list of finite"),
        (json.dumps({**doc, "family": "gamma"}), r"field 'family' is 'gamma'"),
        (json.dumps({**doc, "scale": "cohen"}), r"field 'scale' is 'cohen'"),
        (json.dumps({**doc, "design": {"columns": ["measure"], "levels": []}}),
         r"field 'design' has 1 columns but 0 level lists"),
    ]  # fmt: skip
    for text, msg in cases:
        bad.write_text(text)
        with pytest.raises(ValueError, match=msg):
            load_prior(bad)
    with pytest.raises(ValueError, match=r"depends on the measure; give `measure`"):
        resolve_prior(f"learned:{path}")
    with pytest.raises(ValueError, match=r"level 'RR', which the prior was not learned on"):
        resolve_prior(f"learned:{path}", "RR")


def test_prior_learn_writes_a_file_pool_uses(tmp_path):
    runner = CliRunner()
    corpus = tmp_path / "corpus.csv"
    _corpus_frame().to_csv(corpus, index=False)
    out = tmp_path / "or_prior.json"
    res = runner.invoke(app, ["prior", "learn", str(corpus), "--measure", "OR", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "Learned lognormal_tau2 prior from 30 meta-analyses" in res.output
    t = _corpus_frame()
    ids = t[t.measure == "OR"].meta_id.unique()
    arr = [t[t.meta_id == i] for i in ids]
    kmax = max(len(a) for a in arr)
    yi = np.array([np.r_[a.yi, [np.nan] * (kmax - len(a))] for a in arr])
    vi = np.array([np.r_[a.vi, [np.nan] * (kmax - len(a))] for a in arr])
    direct = learn_tau_prior(yi, vi, scale="logor")
    file_prior = load_prior(out)
    for name in ("mu", "sigma"):
        assert file_prior.params[name] == pytest.approx(direct.params[name], rel=1e-9)
    assert file_prior.prior.scale == "logor"
    bad = tmp_path / "bad.csv"
    t.drop(columns="vi").to_csv(bad, index=False)
    res = runner.invoke(app, ["prior", "learn", str(bad), "--out", str(tmp_path / "x.json")])
    assert res.exit_code == 2 and "the table has no column 'vi'" in res.output
    assert not (tmp_path / "x.json").exists()
    res = runner.invoke(app, ["prior", "learn", str(corpus), "--family", "gamma",
                              "--out", str(tmp_path / "x.json")])  # fmt: skip
    assert res.exit_code == 2 and "--family must be one of" in res.output
    res = runner.invoke(app, ["prior", "learn", str(corpus), "--pooling", "some",
                              "--out", str(tmp_path / "x.json")])  # fmt: skip
    assert res.exit_code == 2 and "--pooling must be one of partial, separate, none" in res.output
    res = runner.invoke(app, ["prior", "learn", str(corpus), "--out", str(tmp_path / "pp.json")])
    assert res.exit_code == 0 and "omega" in res.output  # two measures: partial pooling
    pp = load_prior(tmp_path / "pp.json")
    assert pp.group_name == "measure"
    with pytest.warns(UserWarning, match=r"the prior for a new measure is used"):
        assert resolve_prior(f"learned:{tmp_path / 'pp.json'}")[0] == pp.prior
    md = _corpus_frame()
    md.loc[md.meta_id.isin(["ma0", "ma2"]), "measure"] = "MD"
    from spatialmeta.meta_analysis.corpus import Corpus
    from spatialmeta.meta_analysis.prior_files import learn_corpus

    with pytest.warns(UserWarning, match=r"2 meta-analyses of raw mean differences \(MD\) left"):
        res = learn_corpus(Corpus.from_table(md))
    assert res.n_meta == 58 and {g for g, *_ in res.group_effects} == {"OR", "SMD"}
    assert (
        "Example: spatialmeta prior learn"
        in runner.invoke(app, ["prior", "learn", "--help"]).output
    )


def test_pool_with_a_prior_reports_the_posterior(tmp_path):
    d = tmp_path
    bcg_frame().to_csv(d / "bcg.csv", index=False)
    res = CliRunner().invoke(app, ["pool", str(d / "bcg.csv"), "--measure", "RR", *BCG_COLS,
                                   "--label", "trial", "--prior", "bartos2021:logrr",
                                   "--out", str(d / "report"), "--no-progress"])  # fmt: skip
    assert res.exit_code == 0, res.output
    r = json.loads((d / "report" / "results.json").read_text())
    f = bcg_frame()
    es = escalc("RR", ai=f.tpos, bi=f.tneg, ci=f.cpos, di=f.cneg)
    tau, mu = published_prior("bartos2021", scale="logrr")
    want = bayes_pool(np.asarray(es.yi), np.asarray(es.vi), tau_prior=tau, mu_prior=mu)
    for key in ("mu_median", "mu_lb", "mu_ub", "tau_median", "pred_lb", "bf01_tau", "bf01_mu"):
        assert r["bayes"][key] == pytest.approx(getattr(want, key), rel=1e-12), key
    np.testing.assert_allclose(r["bayes"]["theta"], want.theta, rtol=1e-12)
    assert (
        r["bayes"]["tau_prior"]["family"] == "invgamma_tau"
        and r["bayes"]["mu_prior"]["family"] == "t"
    )
    report = (d / "report" / "report.md").read_text()
    assert "## Bayesian random effects" in report and "![posterior plot](posterior.png)" in report
    for name in ("posterior.png", "posterior.svg", "shrinkage.png", "shrinkage.svg"):
        assert (d / "report" / name).stat().st_size > 1000
    assert "Bayesian random effects (--prior bartos2021:logrr): mu" in res.output


def test_pool_refuses_a_prior_on_another_scale_before_writing(tmp_path):
    bcg_frame().to_csv(tmp_path / "bcg.csv", index=False)
    for spec, msg in (("turner2015", "is on the logor scale, but the effect sizes are 'RR'"),
                      ("halfnormal:x", "--prior 'halfnormal:x': halfnormal's parameters")):  # fmt: skip
        res = CliRunner().invoke(app, ["pool", str(tmp_path / "bcg.csv"), "--measure", "RR",
                                       *BCG_COLS, "--prior", spec, "--out",
                                       str(tmp_path / "report"), "--no-progress"])  # fmt: skip
        assert res.exit_code == 2 and msg in res.output, res.output
        assert not (tmp_path / "report").exists()


def test_a_uniform_prior_is_proper_and_ends_the_grid():
    p = TauPrior("uniform_tau", {"upper": 2.0})
    assert p.pdf(1.0) == pytest.approx(0.5) and p.pdf(2.5) == 0 and p.pdf(-0.1) == 0
    y, v = np.array([0.1, 0.5, 0.3]), np.array([0.04, 0.05, 0.03])
    res = bayes_pool(y, v, tau_prior=p)
    assert 0 < res.tau_lb < res.tau_ub <= 2.0

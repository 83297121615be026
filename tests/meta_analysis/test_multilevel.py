"""Multilevel models against metafor 3.8's rma.mv(random = ~ 1 | outer/inner)
(tests/reference/multilevel_reference.json, from tests/reference/make_multilevel_reference.R):
dat.konstantopoulos2011 (districts/schools; REML, and ML with year) and dat.assink2016
(studies/effects; REML, with and without year). Variance components agree to 1e-6 (the
optimizers' tolerance; metafor's is the looser), everything else to 1e-6 or better."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from spatialmeta.meta_analysis import pool
from spatialmeta.meta_analysis.multilevel import pool_mv

REF = json.loads((Path(__file__).resolve().parents[1] / "reference" /
                  "multilevel_reference.json").read_text())["cases"]  # fmt: skip
CASES = {c["name"]: c for c in REF}


@pytest.mark.parametrize("name", sorted(CASES))
def test_three_level_models_equal_rma_mv(name):
    c = CASES[name]
    outer, inner = np.array(c["outer"]), np.array(c["inner"])
    mods = None if c["mods"] is None else np.array(c["mods"])[:, None]
    res = pool_mv(c["yi"], c["vi"], random=[outer, (outer, inner)], mods=mods,
                  method=c["method"], names=["outer", "outer/inner"])  # fmt: skip
    assert res.converged and list(res.n_levels) == c["s_nlevels"]
    np.testing.assert_allclose(res.sigma2, c["sigma2"], rtol=2e-6)
    for f in ("beta", "se", "zval", "ci_lb", "ci_ub"):
        np.testing.assert_allclose(np.atleast_1d(getattr(res, f)), c[f], rtol=1e-6, err_msg=f)
    np.testing.assert_allclose(res.pval, c["pval"], rtol=2e-6)
    assert res.QE == pytest.approx(c["QE"], rel=1e-10)
    assert res.QEp == pytest.approx(c["QEp"], rel=1e-9)
    assert res.logLik == pytest.approx(c["logLik"], rel=1e-9)
    assert "sigma^2.2" in res.summary()


@pytest.mark.parametrize("method", ["REML", "ML"])
def test_one_level_of_single_effects_is_the_random_effects_model(method):
    """random = ~ 1 | id (every effect its own cluster) is rma.uni's model: pool's tau^2."""
    c = CASES["konstantopoulos2011_REML"]
    y, v = np.array(c["yi"]), np.array(c["vi"])
    mv = pool_mv(y, v, random=[np.arange(y.size)], method=method)
    uni = pool(y, v, method=method)
    assert mv.sigma2[0] == pytest.approx(float(uni.tau2), rel=1e-6)
    assert mv.beta[0] == pytest.approx(float(uni.estimate), rel=1e-7)
    assert mv.se[0] == pytest.approx(float(uni.se), rel=1e-6)


def test_bad_input_is_named():
    y = np.array([0.1, 0.3, 0.2, 0.5])
    v = np.array([0.02, 0.03, 0.02, 0.04])
    g = np.array(["a", "a", "b", "b"])
    V = np.diag(v)
    V[0, 1] = V[1, 0] = 0.5  # a covariance far above the variances
    with pytest.raises(ValueError, match=r"`V` is not positive definite .* effect [01]"):
        pool_mv(y, V, random=[g])
    with pytest.raises(ValueError, match=r"random level 'level 1' has one cluster"):
        pool_mv(y, v, random=[np.array(["x"] * 4)])
    with pytest.raises(ValueError, match=r"random level 1 has 3 labels for 4 effects"):
        pool_mv(y, v, random=[g[:3]])
    with pytest.raises(ValueError, match=r"effect 2 has -1.0"):
        pool_mv(y, np.array([0.02, 0.03, -1.0, 0.04]), random=[g])
    with pytest.raises(ValueError, match=r"`method` must be 'REML' or 'ML'"):
        pool_mv(y, v, random=[g], method="DL")


SPATIAL = {c["name"]: c for c in json.loads(
    (Path(__file__).resolve().parents[1] / "reference" / "multilevel_reference.json").read_text()
)["spatial"]}  # fmt: skip


@pytest.mark.parametrize("name", sorted(SPATIAL))
def test_spatial_structures_equal_rma_mv(name):
    """rma.mv(random = ~ x + y | const, struct = SPEXP/SPGAU/SPRAT), and SPEXP with an
    independent nugget (random = list(~ x + y | const, ~ 1 | id)), on a simulated field."""
    from spatialmeta.meta_analysis.multilevel import Spatial

    c = SPATIAL[name]
    k = len(c["yi"])
    res = pool_mv(c["yi"], c["vi"], random=[np.arange(k)] if c["nugget"] else [],
                  spatial=Spatial(np.column_stack([c["x"], c["y"]]), c["struct"]))  # fmt: skip
    assert res.converged and res.structure == c["struct"]
    assert res.tau2 == pytest.approx(c["tau2"], rel=1e-5)
    assert res.rho == pytest.approx(c["rho"], rel=1e-5)
    if c["nugget"]:
        assert res.sigma2[0] == pytest.approx(c["sigma2"], abs=1e-8)  # metafor: 2e-11
    for f in ("beta", "se", "zval", "ci_lb", "ci_ub"):
        np.testing.assert_allclose(np.atleast_1d(getattr(res, f)), c[f], rtol=1e-6, err_msg=f)
    assert res.QE == pytest.approx(c["QE"], rel=1e-10)
    assert res.logLik == pytest.approx(c["logLik"], rel=1e-8)


def _field(seed, n=120, rng_range=3.0):
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, 10, (n, 2))
    D = np.sqrt(((xy[:, None] - xy[None]) ** 2).sum(-1))
    L = np.linalg.cholesky(0.05 * np.exp(-D / rng_range) + 1e-10 * np.eye(n))
    vi = rng.uniform(0.005, 0.02, n)
    return xy, 0.2 + L @ rng.normal(size=n) + rng.normal(0, np.sqrt(vi)), vi, rng


def test_a_spatially_correlated_field_widens_the_pooled_interval_and_shuffling_does_not():
    """Issue 15's acceptance on simulated spatially correlated effects (exponential, range
    3 on a 10 x 10 square): the spatial model's SE of the mean is over 2.5 times the
    independent random-effects one; with the positions shuffled (the same values, no
    spatial structure) the median ratio over four fields is under 1.6."""
    from spatialmeta.meta_analysis.multilevel import Spatial

    ratios, shuffled = [], []
    for seed in (1, 2, 3, 4):
        xy, y, v, rng = _field(seed)
        ids = np.arange(y.size)
        iid = float(pool(y, v).se)
        ratios.append(pool_mv(y, v, random=[ids], spatial=Spatial(xy)).se[0] / iid)
        perm = rng.permutation(y.size)
        shuffled.append(pool_mv(y, v, random=[ids], spatial=Spatial(xy[perm])).se[0] / iid)
    assert min(ratios) > 2.5, ratios
    assert np.median(shuffled) < 1.6, shuffled


def test_spatial_bad_input_and_great_circle_distances():
    from spatialmeta.meta_analysis.multilevel import Spatial

    y = np.array([0.1, 0.3, 0.2, 0.5])
    v = np.full(4, 0.02)
    with pytest.raises(ValueError, match=r"spatial structure 'SPCUBE' is not one of SPEXP"):
        pool_mv(y, v, spatial=Spatial(np.zeros((4, 2)), "SPCUBE"))
    with pytest.raises(ValueError, match=r"`Spatial.coords` must be finite \(k, 2\) = \(4, 2\)"):
        pool_mv(y, v, spatial=Spatial(np.zeros((3, 2))))
    # London-Paris and the equator's quarter, by the haversine formula on a 6371 km sphere
    d = Spatial(np.array([[-0.1276, 51.5072], [2.3522, 48.8566], [0, 0], [90, 0]]), "SPEXP",
                "gcd").distances(4)  # fmt: skip
    assert d[0, 1] == pytest.approx(343.5, abs=1.0)
    assert d[2, 3] == pytest.approx(np.pi / 2 * 6371.0, rel=1e-12)

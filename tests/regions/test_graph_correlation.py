"""RegionGraph.correlation: the CAR and diffusion correlations of a region graph, against
R's construction of the same CAR matrix and metafor's rma.mv with that matrix as ``R``
(tests/reference/known_correlation_reference.json, from
make_known_correlation_reference.R); libpysal's contiguity weights on the US states."""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import torch
from scipy import linalg
from torch_geometric.data import Data

from spatialmeta.meta_analysis import KnownCorrelation, pool_mv
from spatialmeta.regions import contiguity_graph
from spatialmeta.regions.graph import RegionGraph
from tests.conftest import shared_path

REF = json.loads((Path(__file__).resolve().parents[1] / "reference" /
                  "known_correlation_reference.json").read_text())  # fmt: skip


def _lattice():
    edges = torch.tensor(np.array(REF["edges"]).T, dtype=torch.long)
    return RegionGraph(Data(edge_index=edges, num_nodes=len(REF["ids"])), np.array(REF["ids"]),
                       (), ())  # fmt: skip


def test_car_correlation_equals_r_and_pools_as_metafor():
    """The 6 x 6 rook lattice: the CAR correlation (rho = 0.9) equals the one R built to
    1e-12, and pool_mv with it as a KnownCorrelation level (plus an independent one)
    equals rma.mv(random = list(~ 1 | region, ~ 1 | id), R = list(region = Rcar)):
    logLik to 1e-9, estimates to 1e-6, the variances to 1e-5 (the nugget, 1e-10 in
    metafor, to 1e-7)."""
    R, ids = _lattice().correlation("car", rho=REF["rho"])
    np.testing.assert_allclose(R, np.array(REF["R"]), rtol=1e-12, atol=1e-14)
    k = len(ids)
    res = pool_mv(REF["yi"], REF["vi"],
                  random=[KnownCorrelation(ids, R, levels=ids), np.arange(k)])  # fmt: skip
    assert res.logLik >= REF["logLik"] - 1e-9
    assert res.logLik == pytest.approx(REF["logLik"], rel=1e-9)
    assert res.sigma2[0] == pytest.approx(REF["sigma2"][0], rel=1e-5)
    assert res.sigma2[1] == pytest.approx(REF["sigma2"][1], abs=1e-7)
    for f in ("beta", "se", "zval", "ci_lb", "ci_ub"):
        np.testing.assert_allclose(getattr(res, f), REF[f], rtol=1e-6, err_msg=f)
    assert res.QE == pytest.approx(REF["QE"], rel=1e-10)
    # the correlated regions widen the pooled interval over independent regions (as in R)
    assert res.se[0] > 2 * REF["se_independent"] and REF["logLik"] > REF["logLik_independent"]


def test_graph_correlations_are_correlations_and_decay_with_steps():
    g = _lattice()
    hops = np.abs(np.subtract.outer(np.arange(36) % 6, np.arange(36) % 6)) + np.abs(
        np.subtract.outer(np.arange(36) // 6, np.arange(36) // 6)
    )
    for kind, kw in (("car", {"rho": 0.9}), ("diffusion", {"beta": 0.5})):
        R, _ = g.correlation(kind, **kw)
        assert np.allclose(np.diag(R), 1.0) and np.allclose(R, R.T)
        assert np.linalg.eigvalsh(R)[0] > 0
        mean_by_hop = [R[hops == h].mean() for h in range(1, 6)]
        assert np.all(np.diff(mean_by_hop) < 0), (kind, mean_by_hop)
    assert np.allclose(g.correlation("car", rho=0.0)[0], np.eye(36))  # rho = 0: independent
    short, long = g.correlation("diffusion", beta=0.2)[0], g.correlation("diffusion", beta=2.0)[0]
    assert short[0, 1] < long[0, 1] and short[0, 35] < long[0, 35]  # longer diffusion
    # the heat kernel by hand: exp(-beta L), scaled
    W = np.zeros((36, 36))
    W[tuple(np.array(REF["edges"]).T)] = 1.0
    K = linalg.expm(-0.5 * (np.diag(W.sum(1)) - W))
    np.testing.assert_allclose(g.correlation("diffusion", beta=0.5)[0],
                               K / np.sqrt(np.outer(np.diag(K), np.diag(K))), rtol=1e-12)  # fmt: skip


def test_car_on_us_states_uses_libpysal_contiguity():
    """On the US states' queen graph, the CAR correlation is the one built from libpysal's
    contiguity weights (an independent construction of W)."""
    libpysal_graph = pytest.importorskip("libpysal.graph")
    states = gpd.read_file(shared_path("us_states", "states.shp"))
    g = contiguity_graph(states, id_column="STATE_NAME", kind="queen")
    R, ids = g.correlation("car", rho=0.8)
    W = libpysal_graph.Graph.build_contiguity(states.set_index("STATE_NAME"), rook=False)
    Wd = W.sparse.toarray()
    order = [list(W.unique_ids).index(i) for i in ids]
    Wd = Wd[np.ix_(order, order)]
    cov = np.linalg.inv(np.diag(Wd.sum(1)) - 0.8 * Wd)
    np.testing.assert_allclose(R, cov / np.sqrt(np.outer(np.diag(cov), np.diag(cov))), rtol=1e-10)


def test_bad_settings_are_named():
    g = _lattice()
    with pytest.raises(ValueError, match=r"a CAR's `rho` must lie in \[0, 1\); got 1.0"):
        g.correlation("car", rho=1.0)
    with pytest.raises(ValueError, match=r"`beta` must be positive"):
        g.correlation("diffusion", beta=0.0)
    with pytest.raises(ValueError, match=r"`kind` must be 'car' or 'diffusion'"):
        g.correlation("sar")
    lone = RegionGraph(Data(edge_index=torch.tensor([[0, 1], [1, 0]]), num_nodes=3),
                       np.array(["a", "b", "c"]), (), ())  # fmt: skip
    with pytest.raises(ValueError, match=r"region 'c' has no neighbour"):
        lone.correlation("car")
    assert lone.correlation("diffusion")[0][2, 0] == 0.0

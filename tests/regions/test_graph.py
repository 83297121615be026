import geopandas as gpd
import numpy as np
import pytest
import shapely

from spatialmeta.data import synthetic_regions
from spatialmeta.regions import contiguity_graph, haversine_km
from tests.conftest import shared_path
from tests.regions.test_graph_builders import assert_graph_invariants


def _edges(graph):
    src, dst = graph.data.edge_index.numpy()
    return {(graph.region_ids[a], graph.region_ids[b]) for a, b in zip(src, dst, strict=True)}


@pytest.mark.parametrize("rook", [False, True])
def test_contiguity_matches_libpysal_on_us_states(rook):
    libpysal_graph = pytest.importorskip("libpysal.graph")
    states = gpd.read_file(shared_path("us_states", "states.shp"))
    ours = contiguity_graph(states, id_column="STATE_NAME", kind="rook" if rook else "queen")
    ref = libpysal_graph.Graph.build_contiguity(states.set_index("STATE_NAME"), rook=rook)
    adj = ref.adjacency.reset_index()
    adj = adj[adj.iloc[:, 2] > 0]
    theirs = set(zip(adj.iloc[:, 0], adj.iloc[:, 1], strict=True))
    assert _edges(ours) == theirs
    assert not ours.data.island.any()
    assert_graph_invariants(ours, states, id_column="STATE_NAME")


def test_graph_is_symmetric_with_consistent_attributes():
    regions = synthetic_regions((0, 40, 20, 55), 30, seed=1)
    g = contiguity_graph(regions)
    assert_graph_invariants(g, regions)
    e = _edges(g)
    assert all((b, a) in e for a, b in e)
    src, dst = g.data.edge_index.numpy()
    pos = g.data.pos.numpy().astype(float)
    d = haversine_km(pos[src, 0], pos[src, 1], pos[dst, 0], pos[dst, 1])
    np.testing.assert_allclose(g.data.edge_attr[:, 0].numpy(), d, rtol=1e-5)
    assert (g.data.edge_attr[:, 1] > 0).all()  # Voronoi neighbours share a border
    assert ((g.data.edge_attr[:, 2] >= 0) & (g.data.edge_attr[:, 2] < 360)).all()


def test_shared_border_length_is_geodesic():
    a = shapely.box(0, 0, 1, 1)
    b = shapely.box(1, 0, 2, 1)
    g = contiguity_graph(
        gpd.GeoDataFrame({"region_id": ["a", "b"]}, geometry=[a, b], crs="EPSG:4326")
    )
    # the shared meridian segment from 0 to 1 degree latitude: 111.195 km on the sphere
    assert g.data.edge_attr[0, 1].item() == pytest.approx(111.195, rel=1e-4)
    assert g.data.edge_attr[0, 2].item() == pytest.approx(90.0, abs=0.01)  # a → b points east


def test_queen_vs_rook_corner_touch():
    boxes = [shapely.box(0, 0, 1, 1), shapely.box(1, 1, 2, 2), shapely.box(1, 0, 2, 1)]
    frame = gpd.GeoDataFrame({"region_id": ["sw", "ne", "se"]}, geometry=boxes, crs="EPSG:4326")
    queen, rook = _edges(contiguity_graph(frame)), _edges(contiguity_graph(frame, kind="rook"))
    assert ("sw", "ne") in queen and ("sw", "ne") not in rook


def test_islands_linked_to_nearest_and_flagged():
    boxes = [
        shapely.box(0, 0, 1, 1),
        shapely.box(1, 0, 2, 1),
        shapely.box(5, 0, 6, 1),
        shapely.box(9, 0, 10, 1),
    ]
    frame = gpd.GeoDataFrame({"region_id": list("abcd")}, geometry=boxes, crs="EPSG:4326")
    g = contiguity_graph(frame, island_neighbours=1)
    assert_graph_invariants(g, frame)
    assert g.data.island.tolist() == [False, False, True, True]
    e = _edges(g)
    assert ("c", "b") in e and ("d", "c") in e and ("b", "c") in e
    assert g.degree().min() >= 1


def test_node_area_and_covariates():
    frame = gpd.GeoDataFrame(
        {"region_id": ["x"]}, geometry=[shapely.box(0, 0, 1, 1)], crs="EPSG:4326"
    )
    g = contiguity_graph(frame, covariates={"elevation": np.array([123.0])})
    names = list(g.node_features)
    # equal-area projection on WGS 84 vs pyproj's geodesic area on the same ellipsoid; they
    # differ only in edges (parallels vs geodesics), a few 1e-5 for a 1° box
    from pyproj import Geod

    geodesic = abs(Geod(ellps="WGS84").geometry_area_perimeter(frame.geometry.iloc[0])[0]) / 1e6
    assert g.data.x[0, names.index("area_km2")].item() == pytest.approx(geodesic, rel=1e-4)
    assert g.data.x[0, names.index("elevation")].item() == 123.0
    with pytest.raises(ValueError, match="covariate 'bad' has shape"):
        contiguity_graph(frame, covariates={"bad": np.zeros(3)})


def test_edges_geoparquet_round_trip(tmp_path):
    g = contiguity_graph(synthetic_regions((0, 40, 10, 50), 9, seed=0))
    g.to_geoparquet(tmp_path / "edges.parquet")
    back = gpd.read_parquet(tmp_path / "edges.parquet")
    assert len(back) == g.data.edge_index.shape[1]
    np.testing.assert_allclose(back.distance_km.to_numpy(), g.data.edge_attr[:, 0].numpy())
    assert back.crs.to_epsg() == 4326


def test_bad_input():
    frame = synthetic_regions((0, 40, 10, 50), 4, seed=0)
    with pytest.raises(ValueError, match="not unique"):
        contiguity_graph(frame.assign(region_id="r"))
    with pytest.raises(ValueError, match="'queen' or 'rook'"):
        contiguity_graph(frame, kind="bishop")
    with pytest.raises(KeyError, match="no column 'id'"):
        contiguity_graph(frame, id_column="id")

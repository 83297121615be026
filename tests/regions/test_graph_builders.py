"""Graph builders (kNN, distance band, tile grid, snapped contiguity, input repair) against
brute-force references computed independently here: all pairs on small sets, with
pyproj's geodesic on the same sphere for distances."""

import doctest
import warnings

import geopandas as gpd
import numpy as np
import pyproj
import pytest
import shapely
import torch

import spatialmeta.regions.graph as graph_module
from spatialmeta.data import synthetic_climate, synthetic_regions
from spatialmeta.raster import tile
from spatialmeta.regions import (
    EDGE_FEATURES,
    contiguity_graph,
    distance_band_graph,
    grid_graph,
    haversine_km,
    knn_graph,
)
from spatialmeta.regions.graph import EARTH_RADIUS_KM
from tests.conftest import shared_path

SPHERE = pyproj.Geod(a=EARTH_RADIUS_KM * 1000, b=EARTH_RADIUS_KM * 1000)
M_PER_DEG = np.pi / 180 * EARTH_RADIUS_KM * 1000


# --------------------------------------------------------------------------- helpers


def assert_graph_invariants(graph, regions=None, *, id_column="region_id", symmetric=None):
    """Checks every builder's output must pass.

    Shapes and dtypes agree with the feature names; no self-loops or duplicate edges;
    edges sorted by (source, target); symmetric (with equal distance and border both
    ways) unless the graph is directed; ``distance_km`` is the haversine distance between
    the node positions; border >= 0, bearing in [0, 360); lon/lat features are the
    positions; and with ``regions``, node order is the regions' id order and the positions
    are their (repaired) centroids.
    """
    d = graph.data
    n = graph.num_nodes
    ei = d.edge_index.numpy()
    e = ei.shape[1]
    assert d.edge_index.dtype == torch.long and ei.shape == (2, e)
    assert graph.edge_features == EDGE_FEATURES
    assert tuple(d.edge_attr.shape) == (e, len(EDGE_FEATURES))
    assert tuple(d.x.shape) == (n, len(graph.node_features))
    assert graph.node_features[:3] == ("lon", "lat", "area_km2")
    assert tuple(d.pos.shape) == (n, 2)
    assert d.island.dtype == torch.bool and tuple(d.island.shape) == (n,)
    assert len(graph.region_ids) == n
    src, dst = ei.astype(np.int64)
    assert ((ei >= 0) & (ei < n)).all()
    assert not (src == dst).any(), "self-loops"
    keys = src * n + dst
    assert (np.diff(keys) > 0).all(), "edges not sorted by (source, target), or duplicated"

    attr = d.edge_attr.numpy().astype(float)
    symmetric = not graph.directed if symmetric is None else symmetric
    if symmetric:
        assert not graph.directed
        reverse = dst * n + src
        at = np.searchsorted(keys, reverse)
        assert (at < e).all() and np.array_equal(keys[np.minimum(at, e - 1)], reverse), (
            "an edge lacks its reverse"
        )
        np.testing.assert_allclose(attr[at, :2], attr[:, :2], rtol=1e-6)
    else:
        assert graph.directed

    pos = d.pos.numpy().astype(float)
    expect = haversine_km(pos[src, 0], pos[src, 1], pos[dst, 0], pos[dst, 1])
    np.testing.assert_allclose(attr[:, 0], expect, rtol=1e-5, atol=2e-3)
    assert (attr[:, 1] >= 0).all()
    assert ((attr[:, 2] >= 0) & (attr[:, 2] < 360)).all()
    np.testing.assert_array_equal(d.x[:, :2].numpy(), d.pos.numpy())

    if regions is not None:
        np.testing.assert_array_equal(graph.region_ids, regions[id_column].to_numpy())
        geoms = shapely.make_valid(regions.to_crs("EPSG:4326").geometry.to_numpy())
        c = shapely.centroid(geoms)
        np.testing.assert_allclose(
            pos, np.column_stack([shapely.get_x(c), shapely.get_y(c)]), atol=1e-5
        )


def _edges(graph):
    src, dst = graph.data.edge_index.numpy()
    return {(graph.region_ids[a], graph.region_ids[b]) for a, b in zip(src, dst, strict=True)}


def _frame(geoms, ids=None, **columns):
    ids = list(ids) if ids is not None else [f"r{k}" for k in range(len(geoms))]
    return gpd.GeoDataFrame({"region_id": ids, **columns}, geometry=geoms, crs="EPSG:4326")


def _brute_km(regions):
    """All-pairs great-circle distances (km) between centroids, by pyproj on the sphere."""
    c = shapely.centroid(regions.to_crs("EPSG:4326").geometry.to_numpy())
    lon, lat = shapely.get_x(c), shapely.get_y(c)
    n = len(lon)
    a, b = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    _, _, m = SPHERE.inv(lon[a.ravel()], lat[a.ravel()], lon[b.ravel()], lat[b.ravel()])
    dist = np.asarray(m).reshape(n, n) / 1000
    np.fill_diagonal(dist, np.inf)
    return dist


def _states():
    return gpd.read_file(shared_path("us_states", "states.shp"))


# --------------------------------------------------------------------------- kNN


def _check_knn(regions, k, id_column="region_id"):
    ids = regions[id_column].to_numpy()
    dist = _brute_km(regions)
    nearest = np.argsort(dist, axis=1, kind="stable")[:, :k]
    directed = knn_graph(regions, k, id_column=id_column, symmetric=False)
    sym = knn_graph(regions, k, id_column=id_column)
    assert_graph_invariants(directed, regions, id_column=id_column)
    assert_graph_invariants(sym, regions, id_column=id_column)

    # directed: an edge from each of a region's k nearest to the region
    expect_directed = {(ids[nb], ids[r]) for r in range(len(ids)) for nb in nearest[r]}
    assert _edges(directed) == expect_directed
    assert directed.data.edge_index.shape[1] == len(ids) * k
    assert (directed.degree() == k).all()
    # the k-th nearest distance agrees too (so ties could not hide a wrong neighbour)
    src, dst = directed.data.edge_index.numpy()
    kth = np.zeros(len(ids))
    np.maximum.at(kth, dst, directed.data.edge_attr[:, 0].numpy().astype(float))
    np.testing.assert_allclose(kth, np.sort(dist, axis=1)[:, k - 1], rtol=1e-5)

    # symmetric: the union of both directions
    expect_sym = expect_directed | {(b, a) for a, b in expect_directed}
    assert _edges(sym) == expect_sym
    n_edges = sym.data.edge_index.shape[1]
    assert len(ids) * k <= n_edges <= 2 * len(ids) * k
    assert n_edges == 2 * len({frozenset(p) for p in expect_directed})
    assert (sym.degree() >= k).all()
    assert not sym.data.island.any() and not directed.data.island.any()
    return sym


@pytest.mark.parametrize("k", [1, 4])
def test_knn_matches_brute_force_on_us_states(k):
    _check_knn(_states(), k, id_column="STATE_NAME")


@pytest.mark.parametrize("k", [1, 6])
def test_knn_matches_brute_force_on_synthetic_regions(k):
    regions = synthetic_regions((-10, 35, 20, 60), 120, seed=4)
    sym = _check_knn(regions, k)
    # a projected copy gives the same graph (reprojected to lon/lat before measuring)
    projected = knn_graph(regions.to_crs("EPSG:3857"), k)
    assert_graph_invariants(projected, regions)
    assert _edges(projected) == _edges(sym)


def test_knn_border_is_shared_boundary_of_touching_neighbours():
    regions = synthetic_regions((0, 40, 10, 50), 25, seed=2)
    g = knn_graph(regions, 6)
    assert_graph_invariants(g, regions)
    queen = contiguity_graph(regions).edges_frame().set_index(["source", "target"])
    frame = g.edges_frame().set_index(["source", "target"])
    expect = queen.border_km.reindex(frame.index, fill_value=0.0)
    np.testing.assert_allclose(frame.border_km, expect, rtol=1e-5)
    assert (frame.border_km > 0).sum() > len(frame) // 2  # most 6-nearest touch


def test_knn_bad_k():
    regions = synthetic_regions((0, 40, 10, 50), 9, seed=0)
    for k in (0, 9, 2.5, True):
        with pytest.raises(ValueError, match=rf"`k` must be an integer from 1 to 8 .*got {k!r}"):
            knn_graph(regions, k)


# --------------------------------------------------------------------------- distance band


def _check_band(regions, max_km, id_column="region_id"):
    ids = regions[id_column].to_numpy()
    dist = _brute_km(regions)
    within = dist <= max_km
    islands = ~within.any(axis=1)
    g = distance_band_graph(regions, max_km, id_column=id_column)
    assert_graph_invariants(g, regions, id_column=id_column)
    expect = {(ids[a], ids[b]) for a, b in zip(*np.nonzero(within), strict=True)}
    nearest = dist.argmin(axis=1)
    links = {(ids[a], ids[nearest[a]]) for a in np.flatnonzero(islands)}
    expect |= links | {(b, a) for a, b in links}
    assert _edges(g) == expect
    np.testing.assert_array_equal(g.data.island.numpy(), islands)
    in_band = np.isin(g.data.edge_index[0].numpy(), np.flatnonzero(~islands)) & np.isin(
        g.data.edge_index[1].numpy(), np.flatnonzero(~islands)
    )
    assert (g.data.edge_attr[in_band, 0].numpy() <= max_km * (1 + 1e-6)).all()
    return g, islands


def test_distance_band_matches_brute_force_on_us_states():
    g, islands = _check_band(_states(), 450.0, id_column="STATE_NAME")
    assert islands.any() and not islands.all()  # the check above covered both kinds
    assert (g.degree() >= 1).all()


@pytest.mark.parametrize("max_km", [150.0, 200.0, 400.0])
def test_distance_band_matches_brute_force_on_synthetic_regions(max_km):
    _check_band(synthetic_regions((-10, 35, 20, 60), 120, seed=4), max_km)


def test_distance_band_islands_linked_and_flagged():
    boxes = [shapely.box(x, 0, x + 0.5, 0.5) for x in (0, 1, 2, 10, 30)]
    frame = _frame(boxes, list("abcde"))
    g = distance_band_graph(frame, 150)  # a..c are 111 km apart; d and e are far
    assert_graph_invariants(g, frame)
    assert g.data.island.tolist() == [False, False, False, True, True]
    assert _edges(g) == {
        ("a", "b"), ("b", "a"), ("b", "c"), ("c", "b"),
        ("d", "c"), ("c", "d"), ("e", "d"), ("d", "e"),
    }  # fmt: skip
    unlinked = distance_band_graph(frame, 150, island_neighbours=0)
    assert_graph_invariants(unlinked, frame)
    assert unlinked.data.island.tolist() == [False, False, False, True, True]
    assert unlinked.degree().tolist() == [1, 2, 1, 0, 0]
    two = distance_band_graph(frame, 150, island_neighbours=2)
    assert ("e", "c") in _edges(two) and ("d", "b") in _edges(two)


def test_distance_band_bad_radius():
    frame = synthetic_regions((0, 40, 10, 50), 9, seed=0)
    for bad in (0, -5.0, float("nan"), float("inf"), "100"):
        with pytest.raises(ValueError, match=r"`max_km` must be a finite number of km > 0"):
            distance_band_graph(frame, bad)
    with pytest.raises(ValueError, match=r"`island_neighbours` must be an integer >= 0; got -1"):
        distance_band_graph(frame, 100, island_neighbours=-1)


# --------------------------------------------------------------------------- tile grids


@pytest.fixture(scope="module")
def tiles():
    t = tile(synthetic_climate(bbox=(0, 40, 7, 45), resolution=1, years=1), 1)
    assert t.layout == (5, 7)
    return t


@pytest.mark.parametrize("neighbourhood", [4, 8])
def test_grid_degrees_and_adjacency(tiles, neighbourhood):
    g = grid_graph(tiles, neighbourhood)
    assert_graph_invariants(g, tiles.regions)
    deg = g.degree().reshape(5, 7)
    corner, edge, inner = (2, 3, 4) if neighbourhood == 4 else (3, 5, 8)
    expect = np.full((5, 7), inner)
    expect[[0, -1], :] = edge
    expect[:, [0, -1]] = edge
    expect[[0, 0, -1, -1], [0, -1, 0, -1]] = corner
    np.testing.assert_array_equal(deg, expect)

    row, col = tiles.regions["row"].to_numpy(), tiles.regions["col"].to_numpy()
    src, dst = g.data.edge_index.numpy()
    dr, dc = np.abs(row[src] - row[dst]), np.abs(col[src] - col[dst])
    if neighbourhood == 4:
        assert ((dr + dc) == 1).all()
        assert g.data.edge_index.shape[1] == 2 * (5 * 6 + 4 * 7)
        assert (g.data.edge_attr[:, 1] > 0).all()  # every rook pair shares a side
    else:
        assert (np.maximum(dr, dc) == 1).all()
        assert g.data.edge_index.shape[1] == 2 * (5 * 6 + 4 * 7 + 2 * 4 * 6)
        diagonal = (dr == 1) & (dc == 1)
        assert (g.data.edge_attr[diagonal, 1] == 0).all()
        assert (g.data.edge_attr[~diagonal, 1] > 0).all()
    assert not g.data.island.any()
    # the tiles are polygons too: the same graph as rook/queen contiguity
    kind = "rook" if neighbourhood == 4 else "queen"
    contiguity = contiguity_graph(tiles.regions, kind=kind)
    assert _edges(g) == _edges(contiguity)
    np.testing.assert_allclose(g.data.edge_attr.numpy(), contiguity.data.edge_attr.numpy())


def test_grid_from_shape_and_from_frame(tiles):
    g = grid_graph((5, 7), 8, bbox=(0, 40, 7, 45))
    assert_graph_invariants(g)
    assert g.region_ids[:2].tolist() == ["T0000", "T0001"]
    ref = grid_graph(tiles, 8)
    np.testing.assert_allclose(g.data.pos.numpy(), ref.data.pos.numpy(), atol=1e-5)
    assert _edges(g) == _edges(ref)
    # shuffled rows: same edges, node order follows the frame
    shuffled = tiles.regions.sample(frac=1.0, random_state=0)
    s = grid_graph(shuffled, 8)
    assert_graph_invariants(s, shuffled)
    assert _edges(s) == _edges(ref)


def test_grid_missing_tiles_and_islands(tiles):
    frame = tiles.regions
    # drop the ring around tile (2, 3): it becomes an island
    ring = (np.abs(frame.row - 2) <= 1) & (np.abs(frame.col - 3) <= 1)
    centre = (frame.row == 2) & (frame.col == 3)
    holed = frame[~ring | centre]
    g = grid_graph(holed, 4, island_neighbours=1)
    assert_graph_invariants(g, holed)
    island = dict(zip(g.region_ids, g.data.island.tolist(), strict=True))
    centre_id = frame.region_id[centre].item()
    assert island[centre_id] and sum(island.values()) == 1
    assert g.degree()[list(g.region_ids).index(centre_id)] == 1
    bare = grid_graph(holed, 4, island_neighbours=0)
    assert bare.degree()[list(bare.region_ids).index(centre_id)] == 0


def test_grid_bad_input(tiles):
    with pytest.raises(ValueError, match=r"`neighbourhood` must be 4 .* or 8 .*got 6"):
        grid_graph(tiles, 6)
    with pytest.raises(ValueError, match=r"`bbox` must be .*shape \(5, 7\); got None"):
        grid_graph((5, 7))
    with pytest.raises(TypeError, match=r"`tiles_or_shape` must be"):
        grid_graph((0, 7), bbox=(0, 0, 1, 1))
    with pytest.raises(KeyError, match=r"no column\(s\) \['row', 'col'\]"):
        grid_graph(synthetic_regions((0, 40, 10, 50), 4, seed=0))
    clash = tiles.regions.copy()
    clash.loc[1, ["row", "col"]] = clash.loc[0, ["row", "col"]].to_numpy()
    with pytest.raises(ValueError, match=r"tiles \['T0000', 'T0001'\] share a \(row, col\)"):
        grid_graph(clash)


# --------------------------------------------------------------------------- snapping


def test_snap_joins_squares_across_a_10_m_gap():
    # at 45-46 degrees N a 10 m gap at 45 N spans 10 / (M cos 45) degrees of longitude;
    # it narrows to 9.8 m at 46 N
    gap = 10 / (M_PER_DEG * np.cos(np.deg2rad(45)))
    boxes = [
        shapely.box(0, 45, 1, 46),  # a
        shapely.box(1, 45, 2, 46),  # b touches a exactly
        shapely.box(2 + gap, 45, 3, 46),  # c is 10 m east of b
        shapely.box(-1, 46, 0, 47),  # d touches a at a corner only
    ]
    frame = _frame(boxes, list("abcd"))
    exact = contiguity_graph(frame, island_neighbours=0)
    assert ("b", "c") not in _edges(exact) and exact.data.island.tolist() == [0, 0, 1, 0]
    too_small = contiguity_graph(frame, snap=5, island_neighbours=0)
    assert ("b", "c") not in _edges(too_small)
    for kind in ("queen", "rook"):
        g = contiguity_graph(frame, kind=kind, snap=50, island_neighbours=0)
        assert_graph_invariants(g, frame)
        e = _edges(g)
        assert ("b", "c") in e and ("a", "b") in e  # the exact pair stays
        assert (("a", "d") in e) == (kind == "queen")  # a corner is no rook border
        # d has a rook neighbour in no graph: flagged (and left unlinked) under rook
        assert g.data.island.tolist() == [False, False, False, kind == "rook"]
        border = g.edges_frame().set_index(["source", "target"]).border_km
        # the shared meridian segment (111.195 km) plus at most about snap at each end
        assert 111.19 <= border["b", "c"] <= 111.195 + 0.15
        assert 111.19 <= border["a", "b"] <= 111.195 + 0.15


def test_snap_measures_metres_not_degrees():
    # a 10 m north-south gap at 46 N: 8 m is too little, 12 m enough. A conversion of
    # metres to degrees by longitude alone would take 8 m as ~1.1e-4 degrees > the gap.
    gap = 10 / M_PER_DEG
    frame = _frame([shapely.box(0, 45, 1, 46), shapely.box(0, 46 + gap, 1, 47)], list("ab"))
    assert ("a", "b") not in _edges(contiguity_graph(frame, snap=8, island_neighbours=0))
    g = contiguity_graph(frame, kind="rook", snap=12, island_neighbours=0)
    assert_graph_invariants(g, frame)
    assert ("a", "b") in _edges(g)


def _gap_m_aeqd(a, b):
    """Distance in metres between two lon/lat geometries in an azimuthal equidistant
    projection centred between them (pyproj on the sphere): the brute-force reference.

    Edges are straight in lon/lat (as GEOS reads them), so the pieces near the gap are
    densified to 1 m before projecting; a projected straight edge would bow away.
    """
    p, q = shapely.get_coordinates(shapely.shortest_line(a, b))
    lon0, lat0 = (p + q) / 2
    window = shapely.box(lon0 - 0.002, lat0 - 0.002, lon0 + 0.002, lat0 + 0.002)
    a, b = (shapely.segmentize(shapely.intersection(g, window), 1e-5) for g in (a, b))
    aeqd = pyproj.Proj(proj="aeqd", lat_0=lat0, lon_0=lon0, R=EARTH_RADIUS_KM * 1000)

    def project(g):
        return shapely.transform(g, lambda c: np.column_stack(aeqd(c[:, 0], c[:, 1])))

    return shapely.distance(project(a), project(b))


@pytest.fixture(scope="module")
def shrunken():
    """Synthetic regions shrunk by 2e-5 to 3e-4 degrees each (gaps of 4-56 m between
    neighbours), and the brute-force gap in metres of every pair closer than 0.01 deg."""
    regions = synthetic_regions((5, 50, 15, 56), 40, seed=7)
    shrink = np.random.default_rng(0).uniform(2e-5, 3e-4, len(regions))
    shrunk = regions.assign(
        geometry=shapely.buffer(regions.geometry.to_numpy(), -shrink, join_style="mitre")
    )
    geoms, ids = shrunk.geometry.to_numpy(), shrunk.region_id.to_numpy()
    i, j = np.triu_indices(len(geoms), 1)
    close = shapely.distance(geoms[i], geoms[j]) < 0.01  # all pairs; far ones need no AEQD
    gaps = {
        (ids[a], ids[b]): _gap_m_aeqd(geoms[a], geoms[b])
        for a, b in zip(i[close], j[close], strict=True)
    }
    return regions, shrunk, gaps


@pytest.mark.parametrize("snap", [20.0, 45.0, 80.0])
def test_snap_matches_brute_force_on_shrunken_regions(shrunken, snap):
    regions, shrunk, gaps = shrunken
    expect = set()
    for (a, b), metres in gaps.items():
        if metres <= snap:
            expect |= {(a, b), (b, a)}
    g = contiguity_graph(shrunk, snap=snap, island_neighbours=0)
    assert_graph_invariants(g, shrunk)
    assert _edges(g) == expect
    assert len(expect) > 0
    if snap == 80.0:  # wide enough to close every gap: the original queen graph again
        assert _edges(g) == _edges(contiguity_graph(regions))
    else:
        assert len(expect) < len(_edges(contiguity_graph(regions)))
    rook = contiguity_graph(shrunk, kind="rook", snap=snap, island_neighbours=0)
    assert_graph_invariants(rook, shrunk)
    assert _edges(rook) <= _edges(g)


def test_snap_never_drops_exact_pairs():
    regions = synthetic_regions((0, 40, 20, 55), 60, seed=1)
    for kind in ("queen", "rook"):
        exact = contiguity_graph(regions, kind=kind)
        snapped = contiguity_graph(regions, kind=kind, snap=100)
        assert_graph_invariants(snapped, regions)
        assert _edges(exact) <= _edges(snapped)


def test_bad_snap():
    frame = synthetic_regions((0, 40, 10, 50), 4, seed=0)
    for bad in (-1, float("nan"), "50"):
        with pytest.raises(ValueError, match=r"`snap` must be a finite number of metres >= 0"):
            contiguity_graph(frame, snap=bad)


# --------------------------------------------------------------------------- input repair


BUILDERS = {
    "queen": lambda f: contiguity_graph(f),
    "rook_snap": lambda f: contiguity_graph(f, kind="rook", snap=20),
    "knn": lambda f: knn_graph(f, 1),
    "band": lambda f: distance_band_graph(f, 200),
    "grid": lambda f: grid_graph(f, 8),
}


def _row_of_three(third):
    geoms = [shapely.box(0, 0, 1, 1), shapely.box(1, 0, 2, 1), third]
    return _frame(geoms, ["left", "middle", "odd"], row=[0, 0, 0], col=[0, 1, 2])


@pytest.mark.parametrize("builder", list(BUILDERS))
def test_bow_tie_repaired_with_warning_naming_it(builder):
    bow_tie = shapely.Polygon([(2, 0), (3, 1), (3, 0), (2, 1), (2, 0)])
    assert not bow_tie.is_valid
    frame = _row_of_three(bow_tie)
    with pytest.warns(UserWarning, match=r"repaired invalid geometries of regions \['odd'\]"):
        g = BUILDERS[builder](frame)
    assert_graph_invariants(g, frame)
    area = g.data.x[:, list(g.node_features).index("area_km2")].numpy()
    assert area[2] == pytest.approx(area[0] / 2, rel=1e-3)  # two triangles, half a box
    assert ("middle", "odd") in _edges(g)  # the repaired polygon touches the middle box


@pytest.mark.parametrize("builder", list(BUILDERS))
@pytest.mark.parametrize("blank", [shapely.Polygon(), None])
def test_empty_geometry_raises_naming_it(builder, blank):
    frame = _row_of_three(blank)
    with pytest.raises(ValueError, match=r"regions \['odd'\] .*empty or missing geometries"):
        BUILDERS[builder](frame)


def test_repair_to_a_collection_keeps_the_polygon_border():
    # a ring with a spike: make_valid gives a GeometryCollection (square + line), which has
    # no GEOS boundary; the border comes from its polygon
    spike = shapely.Polygon([(2, 0), (3, 0), (3, 1), (3.5, 1.5), (3, 1), (2, 1), (2, 0)])
    assert shapely.make_valid(spike).geom_type == "GeometryCollection"
    frame = _row_of_three(spike)
    with pytest.warns(UserWarning, match=r"regions \['odd'\]"):
        g = contiguity_graph(frame, kind="rook")
    assert_graph_invariants(g, frame)
    border = g.edges_frame().set_index(["source", "target"]).border_km
    assert border["middle", "odd"] == pytest.approx(111.195, rel=1e-4)


def test_valid_input_raises_no_warning():
    regions = synthetic_regions((0, 40, 10, 50), 16, seed=0)
    row, col = np.divmod(np.arange(16), 4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for build in BUILDERS.values():
            build(regions.assign(row=row, col=col))


def test_shared_input_checks():
    regions = synthetic_regions((0, 40, 10, 50), 9, seed=0)
    for build in BUILDERS.values():
        with pytest.raises(ValueError, match=r"region ids in column 'region_id' are not unique"):
            build(regions.assign(region_id="r", row=0, col=range(9)))
    with pytest.raises(KeyError, match="no column 'id'"):
        knn_graph(regions, 2, id_column="id")
    with pytest.raises(TypeError, match="`regions` must be a geopandas.GeoDataFrame"):
        knn_graph(regions.geometry, 2)
    with pytest.raises(ValueError, match="covariate 'lat' clashes"):
        knn_graph(regions, 2, covariates={"lat": np.zeros(9)})
    g = knn_graph(regions, 2, covariates={"elevation": np.arange(9.0)})
    assert_graph_invariants(g, regions)
    assert g.node_features[-1] == "elevation"
    np.testing.assert_array_equal(g.data.x[:, -1].numpy(), np.arange(9.0))


def test_builders_scale_with_an_index_not_all_pairs(monkeypatch):
    # every distance the builders compute is per edge (island links go through the k-d
    # tree, not an islands x regions matrix): count the values haversine_km returns
    regions = synthetic_regions((-125, 24.5, -65, 49.5), 3000)
    seen = []
    real = graph_module.haversine_km

    def counting(*args):
        out = real(*args)
        seen.append(np.size(out))
        return out

    monkeypatch.setattr(graph_module, "haversine_km", counting)
    for build in (
        lambda: contiguity_graph(regions),
        lambda: knn_graph(regions, 6),
        lambda: distance_band_graph(regions, 100),
        lambda: distance_band_graph(regions, 1),  # every region an island
    ):
        seen.clear()
        g = build()
        assert g.num_nodes == len(regions)
        assert 0 < max(seen) <= g.data.edge_index.shape[1]


def test_docstring_examples_run():
    failures, tried = doctest.testmod(graph_module, verbose=False)
    assert tried >= 20 and failures == 0

"""Region graphs: contiguity (queen, rook, optionally snapped), k nearest neighbours,
distance bands and regular tile grids.

Every builder finds its pairs through an index, never by testing all pairs: an STRtree
query of every polygon at once for contiguity, a k-d tree on the centroids' 3-D unit
vectors for nearest neighbours and distance bands, row/column arithmetic for tiles. The
pairs then go through one assembler (:func:`_assemble`) that links islands to their
nearest neighbours, computes the edge attributes (great-circle distance, shared border,
bearing) and the node attributes (lon, lat, area, covariates) the same way for all
builders, and returns a :class:`RegionGraph`: a ``torch_geometric.data.Data`` plus the
region ids in node order.

Input is checked once, by :func:`_prepare`, for every builder: the id column must exist and
be unique, empty or missing geometries raise a ``ValueError`` naming the regions, and
invalid geometries (a self-intersecting "bow-tie", say) are repaired with
``shapely.make_valid`` with a ``UserWarning`` naming the regions.
"""

from __future__ import annotations

import numbers
import warnings
from dataclasses import dataclass

import geopandas as gpd
import numpy as np
import shapely
import torch
from scipy.spatial import cKDTree
from torch_geometric.data import Data

from spatialmeta._io import atomic_path

__all__ = [
    "RegionGraph",
    "contiguity_graph",
    "knn_graph",
    "distance_band_graph",
    "grid_graph",
    "haversine_km",
    "EARTH_RADIUS_KM",
    "EDGE_FEATURES",
]

EARTH_RADIUS_KM = 6371.0088
EDGE_FEATURES = ("distance_km", "border_km", "bearing_deg")
_M_PER_DEG = np.pi / 180.0 * EARTH_RADIUS_KM * 1000.0  # metres per degree of a great circle
_MAX_LAT_FOR_SNAP = 89.0  # beyond this a degree of longitude is too short to convert into


def haversine_km(lon1, lat1, lon2, lat2) -> np.ndarray:
    """Great-circle distance in km between points given in degrees (broadcasting).

    Examples
    --------
    >>> round(float(haversine_km(0.0, 0.0, 0.0, 1.0)), 3)
    111.195
    """
    lon1, lat1, lon2, lat2 = map(np.deg2rad, (lon1, lat1, lon2, lat2))
    a = (
        np.sin((lat2 - lat1) / 2) ** 2
        + np.cos(lat1) * np.cos(lat2) * np.sin((lon2 - lon1) / 2) ** 2
    )
    return 2 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.clip(a, 0.0, 1.0)))


def _bearing_deg(lon1, lat1, lon2, lat2) -> np.ndarray:
    lon1, lat1, lon2, lat2 = map(np.deg2rad, (lon1, lat1, lon2, lat2))
    y = np.sin(lon2 - lon1) * np.cos(lat2)
    x = np.cos(lat1) * np.sin(lat2) - np.sin(lat1) * np.cos(lat2) * np.cos(lon2 - lon1)
    return np.rad2deg(np.arctan2(y, x)) % 360.0


def _unit_vectors(lon, lat) -> np.ndarray:
    """Points on the unit sphere: the chord between two is ``2 sin(d / 2R)``, monotonic in
    the great-circle distance ``d``, so Euclidean neighbours are great-circle neighbours."""
    lon, lat = np.deg2rad(lon), np.deg2rad(lat)
    return np.column_stack([np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)])


def _line_length_km(lines: np.ndarray) -> np.ndarray:
    """Great-circle length of (multi)line geometries in lon/lat degrees, vectorized.

    Overlay results come in many two-point pieces; merging them first (non-lineal parts
    drop out) makes far fewer parts to split out.
    """
    out = np.zeros(len(lines))
    if len(lines) == 0:
        return out
    parts, part_of = shapely.get_parts(shapely.line_merge(lines), return_index=True)
    coords, coord_part = shapely.get_coordinates(parts, return_index=True)
    if len(coords) < 2:
        return out
    same = coord_part[1:] == coord_part[:-1]
    seg = haversine_km(coords[:-1, 0], coords[:-1, 1], coords[1:, 0], coords[1:, 1]) * same
    per_part = np.bincount(coord_part[:-1], weights=seg, minlength=len(parts))
    return np.bincount(part_of, weights=per_part, minlength=len(lines))


@dataclass(frozen=True)
class RegionGraph:
    """A region graph: a torch-geometric ``Data`` plus the region ids in node order.

    ``data.x`` holds node attributes (columns named in ``node_features``: ``lon``, ``lat``,
    ``area_km2``, then covariates), ``data.edge_index`` the edges as (source, target) rows,
    ``data.edge_attr`` the edge attributes (``edge_features``: ``distance_km`` between the
    centroids, ``border_km`` the shared boundary, 0 where the regions do not touch, and
    ``bearing_deg`` from source to target), ``data.pos`` the centroids (lon, lat) and
    ``data.island`` a flag for regions linked to their nearest neighbours for lack of a
    neighbour under the builder's rule.

    An undirected graph (``directed=False``, every builder's default) lists both
    directions of every neighbour pair. A directed one (:func:`knn_graph` with
    ``symmetric=False``) has an edge from each of a region's neighbours *to* the region,
    torch-geometric's source-to-target flow: a region aggregates from its neighbours.
    """

    data: Data
    region_ids: np.ndarray
    node_features: tuple[str, ...]
    edge_features: tuple[str, ...]
    directed: bool = False

    @property
    def num_nodes(self) -> int:
        return int(self.data.num_nodes)

    def degree(self) -> np.ndarray:
        """Number of neighbours of each region (edges into it; the same as edges out of it
        in an undirected graph)."""
        return np.bincount(self.data.edge_index[1].numpy(), minlength=self.num_nodes)

    def edges_frame(self) -> gpd.GeoDataFrame:
        """The edge list as a GeoDataFrame of centroid-to-centroid lines (EPSG:4326)."""
        src, dst = self.data.edge_index.numpy()
        pos = self.data.pos.numpy().astype(float)
        lines = shapely.linestrings(np.stack([pos[src], pos[dst]], axis=1))
        frame = gpd.GeoDataFrame(
            {"source": self.region_ids[src], "target": self.region_ids[dst]},
            geometry=lines,
            crs="EPSG:4326",
        )
        for j, name in enumerate(self.edge_features):
            frame[name] = self.data.edge_attr[:, j].numpy()
        return frame

    def correlation(self, kind: str = "car", rho: float = 0.9, beta: float = 1.0):
        """A correlation matrix between the regions implied by the graph, and the region
        ids naming its rows: ``KnownCorrelation(labels, *graph.correlation())`` pools
        region results with neighbours correlated (metafor's ``rma.mv(..., R = ...)``).

        ``kind``:

        * ``"car"`` (default): the proper conditional autoregressive model of disease
          mapping, covariance ``(D - rho W)^-1`` with ``W`` the 0/1 adjacency and ``D``
          the neighbour counts (positive definite for ``0 <= rho < 1``; ``rho = 0`` gives
          independent regions), scaled to unit diagonal;
        * ``"diffusion"``: the heat kernel ``exp(-beta L)`` of the graph Laplacian ``L = D -
          W`` (positive definite for any ``beta > 0``; correlation decays with the number
          of steps between regions and reaches further for a larger ``beta``, the
          diffusion time), scaled to unit diagonal.

        A directed graph is symmetrized (a pair is neighbours if either links the other).
        Dense: ``n x n`` for ``n`` regions.

        Examples
        --------
        >>> import numpy as np, torch
        >>> from torch_geometric.data import Data
        >>> path = Data(edge_index=torch.tensor([[0, 1, 1, 2], [1, 0, 2, 1]]), num_nodes=3)
        >>> g = RegionGraph(path, np.array(["a", "b", "c"]), (), ())
        >>> R, ids = g.correlation("car", rho=0.5)
        >>> R.round(3).tolist()[0], ids.tolist()
        ([1.0, 0.378, 0.143], ['a', 'b', 'c'])
        """
        from scipy import linalg

        n = self.num_nodes
        W = np.zeros((n, n))
        src, dst = self.data.edge_index.numpy()
        W[src, dst] = W[dst, src] = 1.0
        np.fill_diagonal(W, 0.0)
        deg = W.sum(1)
        if kind == "car":
            if not 0 <= rho < 1:
                raise ValueError(
                    f"RegionGraph.correlation: a CAR's `rho` must lie in [0, 1); got {rho!r}."
                )
            if (deg == 0).any():
                lone = str(self.region_ids[np.flatnonzero(deg == 0)[0]])
                raise ValueError(f"RegionGraph.correlation: region {lone!r} has no neighbour, so "
                                 "a CAR model leaves it undefined; build the graph with islands "
                                 "linked (the builders' default) or use kind='diffusion'.")  # fmt: skip
            cov = np.linalg.inv(np.diag(deg) - rho * W)
        elif kind == "diffusion":
            if not beta > 0:
                raise ValueError(f"RegionGraph.correlation: `beta` must be positive; got {beta!r}.")
            cov = linalg.expm(-beta * (np.diag(deg) - W))
        else:
            raise ValueError(f"RegionGraph.correlation: `kind` must be 'car' or 'diffusion'; got "
                             f"{kind!r}.")  # fmt: skip
        sd = np.sqrt(np.diag(cov))
        R = cov / sd[:, None] / sd[None, :]
        R = 0.5 * (R + R.T)
        np.fill_diagonal(R, 1.0)
        return R, self.region_ids.copy()

    def to_geoparquet(self, path) -> None:
        """Write the edge list as GeoParquet (opens in QGIS and geopandas)."""
        with atomic_path(path) as tmp:
            self.edges_frame().to_parquet(tmp)


# --------------------------------------------------------------------------- shared pieces


@dataclass(frozen=True)
class _Prepared:
    """Checked input shared by every builder: lon/lat geometries, centroids, node features."""

    ids: np.ndarray
    geoms: np.ndarray  # valid shapely geometries in EPSG:4326 (lon, lat degrees)
    lines: np.ndarray  # their boundaries
    lon: np.ndarray  # centroids, the nodes' positions
    lat: np.ndarray
    node_features: dict[str, np.ndarray]

    @property
    def n(self) -> int:
        return len(self.ids)

    @property
    def xyz(self) -> np.ndarray:
        return _unit_vectors(self.lon, self.lat)


def _check_int(value, name: str, minimum: int, fix: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"`{name}` must be an integer >= {minimum}; got {value!r}. {fix}")
    return int(value)


def _check_distance(value, name: str, unit: str, *, allow_zero: bool, fix: str) -> float:
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    ok = ok and np.isfinite(value) and (value >= 0 if allow_zero else value > 0)
    if not ok:
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(
            f"`{name}` must be a finite number of {unit} {bound}; got {value!r}. {fix}"
        )
    return float(value)


def _prepare(
    regions: gpd.GeoDataFrame, id_column: str, covariates: dict[str, np.ndarray] | None
) -> _Prepared:
    """Check ids and geometries, reproject to lon/lat, repair invalid polygons, and build the
    node features (centroid lon/lat, equal-area area, covariates); every builder starts here."""
    if not isinstance(regions, gpd.GeoDataFrame):
        raise TypeError(
            f"`regions` must be a geopandas.GeoDataFrame; got {type(regions).__name__}. Read "
            "polygons with geopandas.read_file or spatialmeta.raster.read_regions."
        )
    if id_column not in regions.columns:
        raise KeyError(
            f"regions have no column {id_column!r}; columns: {list(regions.columns)}. Pass the "
            "column of unique region ids as `id_column`."
        )
    if len(regions) == 0:
        raise ValueError("`regions` has no rows; a graph needs at least one region.")
    ids = regions[id_column].to_numpy()
    if len(np.unique(ids)) != len(ids):
        dup = regions[id_column][regions[id_column].duplicated()].unique()[:5]
        raise ValueError(
            f"region ids in column {id_column!r} are not unique: {np.asarray(dup).tolist()}. Give every "
            "region its own id (or dissolve the duplicates first)."
        )
    raw = regions.geometry.to_numpy()
    blank = shapely.is_missing(raw) | shapely.is_empty(raw)
    if blank.any():
        bad = ids[blank]
        raise ValueError(
            f"regions {np.asarray(bad[:10]).tolist()}{' ...' if len(bad) > 10 else ''} (column {id_column!r}) "
            f"have empty or missing geometries ({int(blank.sum())} in all); drop those rows or "
            "give them polygons before building a graph."
        )
    geo = regions.geometry
    if geo.crs is not None and not geo.crs.equals("EPSG:4326"):
        geo = geo.to_crs("EPSG:4326")
    geoms = np.array(geo.to_numpy(), dtype=object)
    invalid = ~shapely.is_valid(geoms)
    if invalid.any():
        bad = ids[invalid]
        reasons = shapely.is_valid_reason(geoms[invalid][:3])
        warnings.warn(
            f"repaired invalid geometries of regions {np.asarray(bad[:10]).tolist()}"
            f"{' ...' if len(bad) > 10 else ''} ({int(invalid.sum())} in all; e.g. "
            f"{np.asarray(reasons).tolist()}) with shapely.make_valid; repair them upstream "
            "(GeoSeries.make_valid) to silence this warning.",
            UserWarning,
            stacklevel=3,
        )
        geoms[invalid] = shapely.make_valid(geoms[invalid])

    centroid = shapely.centroid(geoms)
    lon, lat = shapely.get_x(centroid), shapely.get_y(centroid)
    lines = shapely.boundary(geoms)
    mixed = shapely.is_missing(lines)  # GEOS has no boundary for a GeometryCollection:
    if mixed.any():  # take its polygons' (make_valid can return polygons with lines)
        parts, owner = shapely.get_parts(geoms[mixed], return_index=True)
        areal = shapely.get_type_id(parts) == 3
        polys = [shapely.multipolygons(parts[areal & (owner == k)]) for k in range(mixed.sum())]
        lines[mixed] = shapely.boundary(np.array(polys, dtype=object))
    # EASE-Grid 2.0 (EPSG:6933) is equal-area on WGS 84
    area_km2 = gpd.GeoSeries(geoms, crs="EPSG:4326").to_crs("EPSG:6933").area.to_numpy() / 1e6
    feats = {"lon": lon, "lat": lat, "area_km2": area_km2}
    n = len(ids)
    for name, values in (covariates or {}).items():
        if name in feats:
            raise ValueError(
                f"covariate {name!r} clashes with a built-in node feature {list(feats)}; "
                "rename it in `covariates`."
            )
        values = np.asarray(values, dtype=float)
        if values.shape != (n,):
            raise ValueError(
                f"covariate {name!r} has shape {values.shape}; expected ({n},), one per region."
            )
        feats[name] = values
    return _Prepared(ids, geoms, lines, lon, lat, feats)


def _nearest(xyz: np.ndarray, rows: np.ndarray, k: int) -> np.ndarray:
    """The ``k`` nearest other points (great-circle) of ``xyz[rows]``: ``(len(rows), k)``."""
    _, idx = cKDTree(xyz).query(xyz[rows], k=k + 1)
    idx = np.asarray(idx).reshape(len(rows), k + 1)
    own = idx == rows[:, None]
    # a region whose centroid coincides with others may not come back first: drop the
    # farthest instead so that every row keeps k neighbours other than itself
    own[~own.any(axis=1), -1] = True
    return idx[~own].reshape(len(rows), k)


def _pairs(i: np.ndarray, j: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Unordered, unique pairs ``i < j`` (self-pairs dropped)."""
    a, b = np.minimum(i, j), np.maximum(i, j)
    keep = a != b
    key = np.unique(a[keep].astype(np.int64) * n + b[keep])
    return key // n, key % n


def _shared_border_km(prep: _Prepared, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Great-circle length of the boundary shared by regions ``i`` and ``j`` (0 where they
    do not touch), measured once per unordered pair."""
    key, inverse = np.unique(np.minimum(i, j) * prep.n + np.maximum(i, j), return_inverse=True)
    a, b = key // prep.n, key % prep.n
    out = np.zeros(len(key))
    touch = shapely.intersects(prep.geoms[a], prep.geoms[b])
    if touch.any():
        shared = shapely.intersection(prep.lines[a[touch]], prep.lines[b[touch]])
        out[touch] = _line_length_km(shared)
    return out[inverse.ravel()]


def _assemble(
    prep: _Prepared,
    i: np.ndarray,
    j: np.ndarray,
    *,
    border_km: np.ndarray | None = None,
    island_neighbours: int = 0,
    directed: bool = False,
) -> RegionGraph:
    """The one place where a builder's pairs become a :class:`RegionGraph`.

    Undirected ``(i, j)`` pairs (any order, duplicates allowed) get both directions; regions
    in no pair are flagged as islands and linked to their ``island_neighbours`` nearest
    regions. ``border_km`` (one per pair) comes from contiguity's own rule; otherwise the
    exact shared boundary is measured. Directed pairs are ``(source, target)`` as given.
    """
    n = prep.n
    i, j = np.asarray(i, dtype=np.int64), np.asarray(j, dtype=np.int64)
    island = np.zeros(n, dtype=bool)
    if not directed:
        if border_km is not None:  # keep each pair's border through the reordering
            lo, hi = np.minimum(i, j), np.maximum(i, j)
            key, first = np.unique(lo * n + hi, return_index=True)
            i, j, border_km = key // n, key % n, np.asarray(border_km, dtype=float)[first]
        else:
            i, j = _pairs(i, j, n)
        island[:] = True
        island[i] = island[j] = False
        if island.any() and n > 1 and island_neighbours > 0:
            isl = np.flatnonzero(island)
            k = min(island_neighbours, n - 1)
            # islands are in no pair yet, so their links are new pairs (unique among
            # themselves once two islands that are each other's nearest are merged)
            ni, nj = _pairs(np.repeat(isl, k), _nearest(prep.xyz, isl, k).ravel(), n)
            i, j = np.concatenate([i, ni]), np.concatenate([j, nj])
            if border_km is not None:  # linked islands do not touch under the rule
                border_km = np.concatenate([border_km, np.zeros(len(ni))])
        if border_km is None:
            border_km = _shared_border_km(prep, i, j)
        src, dst = np.concatenate([i, j]), np.concatenate([j, i])
        border = np.concatenate([border_km, border_km])
    else:
        src, dst = i, j
        border = _shared_border_km(prep, src, dst) if border_km is None else border_km

    lon, lat = prep.lon, prep.lat
    dist = haversine_km(lon[src], lat[src], lon[dst], lat[dst])
    bearing = _bearing_deg(lon[src], lat[src], lon[dst], lat[dst])
    order = np.lexsort((dst, src))
    edge_attr = np.column_stack([dist, border, bearing])[order]
    src, dst = src[order], dst[order]

    x = torch.tensor(np.column_stack(list(prep.node_features.values())), dtype=torch.float32)
    data = Data(
        x=x,
        edge_index=torch.tensor(np.stack([src, dst]), dtype=torch.long),
        edge_attr=torch.tensor(edge_attr.reshape(-1, len(EDGE_FEATURES)), dtype=torch.float32),
        pos=torch.tensor(np.column_stack([lon, lat]), dtype=torch.float32),
        island=torch.tensor(island),
        num_nodes=n,
    )
    return RegionGraph(data, prep.ids, tuple(prep.node_features), EDGE_FEATURES, directed)


# --------------------------------------------------------------------------- contiguity


def _snap_tolerance_deg(geoms: np.ndarray, snap_m: float) -> np.ndarray:
    """Per-polygon search radius in degrees that no gap of ``snap_m`` metres can exceed.

    GEOS measures distance in the coordinates it is given, lon/lat degrees here, where a
    metre is a different number of degrees in different directions and latitudes. No
    single projected CRS keeps distances true everywhere (an equidistant projection is true
    only from its centre or along a few lines, and regions can span continents), so the
    index search is made conservative instead: a gap of ``snap_m`` metres spans at most
    ``snap_m / (M cos phi)`` degrees, ``M`` metres per degree of a great circle and ``phi``
    the most poleward latitude the gap can reach (the polygon's, plus the gap). The search
    radius is that, a superset of the true neighbours; every candidate that does not touch
    is then measured in metres (:func:`_gap_m`).
    """
    b = shapely.bounds(geoms)
    phi = np.maximum(np.abs(b[:, 1]), np.abs(b[:, 3])) + snap_m / _M_PER_DEG
    phi = np.minimum(phi, _MAX_LAT_FOR_SNAP)
    return snap_m / (_M_PER_DEG * np.cos(np.deg2rad(phi)))


def _local_frame(geoms: np.ndarray, origin: np.ndarray, scale: np.ndarray, inverse=False):
    """Map each geometry's lon/lat to metres in its own equirectangular frame (``origin``,
    ``scale`` one row per geometry), or back with ``inverse``."""
    rep = np.repeat(np.arange(len(geoms)), shapely.get_num_coordinates(geoms))
    o, s = origin[rep], scale[rep]
    if inverse:
        return shapely.transform(geoms, lambda c: c / s + o)
    return shapely.transform(geoms, lambda c: (c - o) * s)


def _metre_scale(lat: np.ndarray) -> np.ndarray:
    """Metres per degree of longitude and latitude at ``lat`` (equirectangular)."""
    return np.column_stack([_M_PER_DEG * np.cos(np.deg2rad(lat)), np.full(len(lat), _M_PER_DEG)])


def _gap_m(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Distance in metres between lon/lat geometries ``a[k]`` and ``b[k]``, measured in an
    equirectangular frame centred on their nearest points: exact to well under a metre for
    gaps of metres to kilometres."""
    ends = shapely.get_coordinates(shapely.shortest_line(a, b)).reshape(-1, 2, 2)
    origin = ends.mean(axis=1)
    scale = _metre_scale(origin[:, 1])
    return shapely.distance(_local_frame(a, origin, scale), _local_frame(b, origin, scale))


def _snapped_border_km(prep: _Prepared, i: np.ndarray, j: np.ndarray, snap_m: float):
    """Length of boundary along which ``geoms[i]`` and ``geoms[j]`` run within ``snap_m`` of
    each other: the mean of (i's boundary inside j's boundary buffered by ``snap_m``) and
    the reverse, measured on the sphere. Each boundary is buffered once, in a frame where a
    degree of longitude is scaled by ``cos(lat)`` at the region's centroid so that the band
    is about ``snap_m`` metres wide in every direction."""
    lines = prep.lines
    origin = np.zeros((prep.n, 2))
    scale = _metre_scale(prep.lat)
    band = shapely.buffer(_local_frame(lines, origin, scale), snap_m)
    band = _local_frame(band, origin, scale, inverse=True)
    ab = _line_length_km(shapely.intersection(lines[i], band[j]))
    ba = _line_length_km(shapely.intersection(lines[j], band[i]))
    return (ab + ba) / 2


def contiguity_graph(
    regions: gpd.GeoDataFrame,
    *,
    id_column: str = "region_id",
    kind: str = "queen",
    snap: float = 0.0,
    island_neighbours: int = 2,
    covariates: dict[str, np.ndarray] | None = None,
) -> RegionGraph:
    """Build a queen or rook contiguity graph between polygons.

    Parameters
    ----------
    regions : geopandas.GeoDataFrame
        Polygons with a CRS; reprojected to EPSG:4326 for distances (no CRS: taken as
        lon/lat). Invalid polygons are repaired with a warning; empty ones raise.
    id_column : str
        Column of unique region ids.
    kind : {"queen", "rook"}
        Queen: any shared boundary point; rook: a shared boundary of positive length.
    snap : float
        Tolerance in metres (default 0: exact). Polygons within ``snap`` of each other
        count as touching, so slivers and tiny gaps between separately digitized borders do
        not break contiguity. Distances are great-circle metres: candidates come from an
        STRtree ``dwithin`` query with a conservative radius in degrees, and those that do
        not touch are measured in a local metric frame. With ``snap > 0`` the shared border
        (``border_km``, and rook's test) is measured on the boundaries buffered by
        ``snap``: the length of each boundary inside the other's band of half-width
        ``snap``, the two averaged. That counts up to about ``snap`` past each end of a
        shared section, and a point contact (a queen-only corner) measures about
        ``2 * snap`` (up to ``2.8 * snap`` for a vertex on an edge at 45 degrees), so rook
        with ``snap > 0`` keeps the exact rook pairs and adds pairs whose buffered border is
        longer than ``4 * snap``. Either way ``snap > 0`` never drops a pair that
        ``snap=0`` finds.
    island_neighbours : int
        Regions with no contiguous neighbour are linked to this many nearest regions
        (great-circle distance between centroids) and flagged in ``data.island``; 0 leaves
        them unconnected (still flagged).
    covariates : dict of str to array, optional
        Static node covariates (for example elevation), one value per region.

    Returns
    -------
    RegionGraph
        Undirected; edge attributes ``distance_km``, ``border_km``, ``bearing_deg``.

    Raises
    ------
    ValueError
        An unknown ``kind``, a negative ``snap``, duplicate ids, empty geometries or a
        covariate of the wrong length; the message names the argument or regions.
    KeyError
        ``id_column`` is not a column of ``regions``.

    References
    ----------
    Anselin, L. (1988). Spatial Econometrics: Methods and Models. doi:10.1007/978-94-015-7799-1

    Examples
    --------
    >>> from spatialmeta.data import synthetic_regions
    >>> g = contiguity_graph(synthetic_regions((0, 0, 3, 3), 9, seed=0))
    >>> g.num_nodes, bool((g.degree() > 0).all())
    (9, True)

    Two squares 10 m apart (a degree of longitude is 111.2 km at the equator) touch only
    with a tolerance:

    >>> import geopandas as gpd, shapely
    >>> gap = 10 / 111_195
    >>> pair = gpd.GeoDataFrame(
    ...     {"region_id": ["a", "b"]},
    ...     geometry=[shapely.box(0, 0, 1, 1), shapely.box(1 + gap, 0, 2, 1)],
    ...     crs="EPSG:4326",
    ... )
    >>> contiguity_graph(pair, island_neighbours=0).data.edge_index.shape[1]
    0
    >>> g = contiguity_graph(pair, kind="rook", snap=50)
    >>> g.data.edge_index.shape[1], round(g.data.edge_attr[0, 1].item())  # border, km
    (2, 111)
    """
    if kind not in ("queen", "rook"):
        raise ValueError(f"`kind` must be 'queen' or 'rook'; got {kind!r}. Pass kind='queen'.")
    snap_m = _check_distance(
        snap, "snap", "metres", allow_zero=True, fix="Pass a tolerance such as snap=50."
    )
    island_neighbours = _check_int(
        island_neighbours, "island_neighbours", 0, "Pass 0 to leave islands unconnected."
    )
    prep = _prepare(regions, id_column, covariates)
    geoms = prep.geoms
    tree = shapely.STRtree(geoms)
    if snap_m == 0:
        i, j = tree.query(geoms, predicate="intersects")
        i, j = _pairs(i, j, prep.n)
        border_km = _shared_border_km(prep, i, j)
    else:
        tol = _snap_tolerance_deg(geoms, snap_m)
        i, j = tree.query(geoms, predicate="dwithin", distance=tol)
        i, j = _pairs(i, j, prep.n)
        near = shapely.intersects(geoms[i], geoms[j])
        apart = np.flatnonzero(~near)
        if len(apart):
            near[apart] = _gap_m(geoms[i[apart]], geoms[j[apart]]) <= snap_m
        i, j = i[near], j[near]
        border_km = _snapped_border_km(prep, i, j, snap_m)
    if kind == "rook":
        # a shared boundary of positive length; with snap, the exact rook pairs (snapping
        # never drops a pair) plus pairs whose buffered border is longer than a point
        # contact can measure
        ok = border_km > 0
        if snap_m > 0:
            ok = (border_km > 4 * snap_m / 1000.0) | (_shared_border_km(prep, i, j) > 0)
        i, j, border_km = i[ok], j[ok], border_km[ok]
    return _assemble(prep, i, j, border_km=border_km, island_neighbours=island_neighbours)


# --------------------------------------------------------------------------- point-based


def knn_graph(
    regions: gpd.GeoDataFrame,
    k: int,
    *,
    id_column: str = "region_id",
    symmetric: bool = True,
    covariates: dict[str, np.ndarray] | None = None,
) -> RegionGraph:
    """Link each region to its ``k`` nearest regions by great-circle distance.

    Distances are between the regions' centroids: the planar centroid of each polygon in
    lon/lat degrees, the same point as ``data.pos``, so an edge's ``distance_km`` is the
    distance the neighbours were ranked by (a centroid can lie outside a concave polygon;
    it is not the representative point). The search is exact: a k-d tree
    (``scipy.spatial.cKDTree``) on the centroids' 3-D unit vectors, where the chord
    ``2 sin(d / 2R)`` is monotonic in the great-circle distance ``d``. Ties are broken by
    the tree's order.

    Parameters
    ----------
    regions : geopandas.GeoDataFrame
        Polygons (or points) with a CRS; reprojected to EPSG:4326.
    k : int
        Number of neighbours, ``1 <= k < len(regions)``.
    id_column : str
        Column of unique region ids.
    symmetric : bool
        True (default): undirected, an edge between two regions when either is among the
        other's ``k`` nearest, so degrees are ``>= k``. False: directed, an edge from each
        of a region's ``k`` nearest to the region (torch-geometric's source-to-target
        flow), so every region has exactly ``k`` incoming edges (``RegionGraph.degree``).
    covariates : dict of str to array, optional
        Static node covariates, one value per region.

    Returns
    -------
    RegionGraph
        ``border_km`` is the shared boundary of neighbours that touch, else 0;
        ``data.island`` is all False.

    Raises
    ------
    ValueError
        ``k`` is not an integer in ``[1, len(regions) - 1]`` (and the checks of
        :func:`contiguity_graph` on ids, geometries and covariates).

    Examples
    --------
    >>> from spatialmeta.data import synthetic_regions
    >>> regions = synthetic_regions((0, 40, 10, 50), 16, seed=0)
    >>> g = knn_graph(regions, 3, symmetric=False)
    >>> g.directed, g.data.edge_index.shape[1], set(g.degree().tolist())
    (True, 48, {3})
    >>> s = knn_graph(regions, 3)
    >>> s.directed, bool(s.degree().min() >= 3)
    (False, True)
    """
    prep = _prepare(regions, id_column, covariates)
    n = prep.n
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or not 1 <= k <= n - 1:
        raise ValueError(
            f"`k` must be an integer from 1 to {n - 1} (one less than the {n} regions); got "
            f"{k!r}. Pass a smaller k or more regions."
        )
    k = int(k)
    nodes = np.arange(n)
    region, neighbour = np.repeat(nodes, k), _nearest(prep.xyz, nodes, k).ravel()
    if symmetric:
        return _assemble(prep, region, neighbour)
    return _assemble(prep, neighbour, region, directed=True)


def distance_band_graph(
    regions: gpd.GeoDataFrame,
    max_km: float,
    *,
    id_column: str = "region_id",
    island_neighbours: int = 1,
    covariates: dict[str, np.ndarray] | None = None,
) -> RegionGraph:
    """Link every pair of regions whose centroids are at most ``max_km`` apart.

    Great-circle distance between centroids (as in :func:`knn_graph`), found exactly with
    ``cKDTree.query_pairs`` on the centroids' 3-D unit vectors within the chord
    ``2 sin(max_km / 2R)``. Regions with no neighbour in the band (islands) are linked to
    their ``island_neighbours`` nearest regions and flagged in ``data.island``, as in
    :func:`contiguity_graph`.

    Parameters
    ----------
    regions : geopandas.GeoDataFrame
        Polygons (or points) with a CRS; reprojected to EPSG:4326.
    max_km : float
        Band radius in km, > 0. The graph grows with its square: about
        ``n * density * pi * max_km**2`` edges.
    id_column : str
        Column of unique region ids.
    island_neighbours : int
        Nearest regions an island is linked to (default 1); 0 leaves islands unconnected.
    covariates : dict of str to array, optional
        Static node covariates, one value per region.

    Returns
    -------
    RegionGraph
        Undirected.

    Raises
    ------
    ValueError
        ``max_km`` is not a positive finite number, ``island_neighbours < 0`` (and the
        checks of :func:`contiguity_graph` on ids, geometries and covariates).

    Examples
    --------
    >>> from spatialmeta.data import synthetic_regions
    >>> regions = synthetic_regions((0, 40, 10, 50), 16, seed=0)
    >>> g = distance_band_graph(regions, 300)
    >>> bool((g.data.edge_attr[:, 0] <= 300).all()), int(g.data.island.sum())
    (True, 0)
    >>> g = distance_band_graph(regions, 100)  # closer than any two centroids
    >>> bool(g.data.island.all()), bool((g.degree() >= 1).all())
    (True, True)
    """
    max_km = _check_distance(
        max_km, "max_km", "km", allow_zero=False, fix="Pass a band radius such as max_km=100."
    )
    island_neighbours = _check_int(
        island_neighbours, "island_neighbours", 0, "Pass 0 to leave islands unconnected."
    )
    prep = _prepare(regions, id_column, covariates)
    chord = 2.0 * np.sin(min(max_km / (2.0 * EARTH_RADIUS_KM), np.pi / 2))
    pairs = cKDTree(prep.xyz).query_pairs(r=chord, output_type="ndarray")
    return _assemble(prep, pairs[:, 0], pairs[:, 1], island_neighbours=island_neighbours)


# --------------------------------------------------------------------------- tile grids


def _tile_frame(tiles, bbox, id_column: str) -> gpd.GeoDataFrame:
    """A GeoDataFrame with ``row``, ``col`` and geometry from any input of grid_graph."""
    if isinstance(tiles, gpd.GeoDataFrame):
        frame = tiles
    elif isinstance(getattr(tiles, "regions", None), gpd.GeoDataFrame):  # raster.Tiles
        frame = tiles.regions
    elif (
        isinstance(tiles, tuple | list)
        and len(tiles) == 2
        and all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in tiles)
        and min(tiles) >= 1
    ):
        if bbox is None or len(bbox) != 4 or not (bbox[0] < bbox[2] and bbox[1] < bbox[3]):
            raise ValueError(
                f"`bbox` must be (west, south, east, north) in degrees with west < east and "
                f"south < north when `tiles_or_shape` is a shape {tuple(tiles)}; got {bbox!r}. "
                "Pass e.g. bbox=(-10, 40, 10, 60), or a spatialmeta.raster.Tiles instead."
            )
        n_rows, n_cols = int(tiles[0]), int(tiles[1])
        row, col = np.divmod(np.arange(n_rows * n_cols), n_cols)
        west, south, east, north = map(float, bbox)
        xe, ye = np.linspace(west, east, n_cols + 1), np.linspace(south, north, n_rows + 1)
        width = max(4, len(str(n_rows * n_cols - 1)))
        return gpd.GeoDataFrame(
            {
                id_column: [f"T{k:0{width}d}" for k in range(n_rows * n_cols)],
                "row": row,
                "col": col,
            },
            geometry=shapely.box(xe[col], ye[row], xe[col + 1], ye[row + 1]),
            crs="EPSG:4326",
        )
    else:
        raise TypeError(
            "`tiles_or_shape` must be a spatialmeta.raster.Tiles, a GeoDataFrame with 'row' "
            f"and 'col' columns, or a layout shape (n_rows, n_cols) of positive ints; got "
            f"{tiles!r}. Make tiles with spatialmeta.raster.tile."
        )
    missing = [c for c in ("row", "col") if c not in frame.columns]
    if missing:
        raise KeyError(
            f"tiles have no column(s) {missing}; columns: {list(frame.columns)}. Pass the "
            "regions of spatialmeta.raster.tile(), which number tiles by 'row' and 'col'."
        )
    return frame


def grid_graph(
    tiles_or_shape,
    neighbourhood: int = 4,
    *,
    bbox: tuple[float, float, float, float] | None = None,
    id_column: str = "region_id",
    island_neighbours: int = 2,
    covariates: dict[str, np.ndarray] | None = None,
) -> RegionGraph:
    """Link regular tiles to their 4 (rook) or 8 (queen) neighbours in the tile layout.

    Neighbours come from the tiles' ``row`` and ``col`` indices alone, with array
    operations (a lookup table of the layout, shifted once per neighbour offset), not from
    geometry; tiles missing from the layout (dropped ocean tiles, say) simply have fewer
    neighbours. Edge and node attributes are computed from the tile polygons like every
    other builder's.

    Parameters
    ----------
    tiles_or_shape : spatialmeta.raster.Tiles, geopandas.GeoDataFrame or (int, int)
        A tiling from :func:`spatialmeta.raster.tile` (its ``regions``), any GeoDataFrame
        with integer ``row`` and ``col`` columns, or a layout shape ``(n_rows, n_cols)``
        with ``bbox``: equal lon/lat tiles in row-major order, row 0 southernmost (as
        :func:`~spatialmeta.raster.tile` numbers them), ids ``"T0000"``, ``"T0001"``, ...
    neighbourhood : {4, 8}
        4: tiles sharing a side (rook); 8: also tiles sharing a corner (queen).
    bbox : (west, south, east, north), optional
        Extent in degrees, needed with a shape only.
    id_column : str
        Column of unique region ids (``"region_id"`` in a tiling).
    island_neighbours : int
        Tiles with no neighbour in the layout are linked to this many nearest tiles and
        flagged, as in :func:`contiguity_graph`.
    covariates : dict of str to array, optional
        Static node covariates, one value per tile.

    Returns
    -------
    RegionGraph
        Undirected, nodes in the input's order; ``border_km`` is the shared side (0 for
        diagonal neighbours).

    Raises
    ------
    ValueError
        ``neighbourhood`` other than 4 or 8, a shape without ``bbox``, or two tiles at the
        same ``(row, col)`` (named).

    Examples
    --------
    >>> g = grid_graph((3, 4), 8, bbox=(0, 40, 4, 43))
    >>> g.num_nodes, g.degree().reshape(3, 4).tolist()
    (12, [[3, 5, 5, 3], [5, 8, 8, 5], [3, 5, 5, 3]])

    >>> from spatialmeta.data import synthetic_climate
    >>> from spatialmeta.raster import tile
    >>> t = tile(synthetic_climate(bbox=(0, 40, 5, 43), resolution=1, years=1), 1)
    >>> grid_graph(t).degree().reshape(t.layout).tolist()
    [[2, 3, 3, 3, 2], [3, 4, 4, 4, 3], [2, 3, 3, 3, 2]]
    """
    if isinstance(neighbourhood, bool) or neighbourhood not in (4, 8):
        raise ValueError(
            f"`neighbourhood` must be 4 (rook: shared sides) or 8 (queen: sides and "
            f"corners); got {neighbourhood!r}. Pass neighbourhood=4 or neighbourhood=8."
        )
    island_neighbours = _check_int(
        island_neighbours, "island_neighbours", 0, "Pass 0 to leave islands unconnected."
    )
    frame = _tile_frame(tiles_or_shape, bbox, id_column)
    prep = _prepare(frame, id_column, covariates)
    row, col = frame["row"].to_numpy(), frame["col"].to_numpy()
    if not (np.issubdtype(row.dtype, np.integer) and np.issubdtype(col.dtype, np.integer)):
        raise ValueError(
            f"tile 'row' and 'col' must be integers; got dtypes {row.dtype}, {col.dtype}. "
            "Cast them with .astype(int)."
        )
    if len(row) and min(row.min(), col.min()) < 0:
        raise ValueError("tile 'row' and 'col' must be >= 0; renumber the layout from 0.")
    # layout lookup with a spare row and column of -1 past the end: r + 1, c + 1 and
    # c - 1 = -1 (wrapping onto the spare column) all land on "no tile"
    lookup = np.full((row.max() + 2, col.max() + 2), -1, dtype=np.int64)
    nodes = np.arange(prep.n)
    lookup[row, col] = nodes
    if (lookup >= 0).sum() != prep.n:
        key = row.astype(np.int64) * (col.max() + 1) + col
        _, inverse, counts = np.unique(key, return_inverse=True, return_counts=True)
        clash = prep.ids[counts[inverse] > 1]
        raise ValueError(
            f"tiles {list(clash[:10])} share a (row, col) position; every tile needs its own "
            "place in the layout."
        )
    offsets = [(0, 1), (1, 0)] + ([(1, 1), (1, -1)] if neighbourhood == 8 else [])
    i, j = [], []
    for dr, dc in offsets:  # one shift of the whole layout per offset, not a loop over tiles
        other = lookup[row + dr, col + dc]
        ok = other >= 0
        i.append(nodes[ok])
        j.append(other[ok])
    return _assemble(
        prep, np.concatenate(i), np.concatenate(j), island_neighbours=island_neighbours
    )

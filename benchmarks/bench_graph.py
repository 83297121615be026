"""Region graphs for ~3,000 county-sized polygons: spatialmeta vs libpysal, side by side.

spatialmeta builds the whole RegionGraph (node attributes with an equal-area reprojection
for the areas, edge distances, shared borders and bearings); libpysal builds the adjacency
only. Each peer's edge set is compared with ours.

Examples:
    .venv/bin/python benchmarks/bench_graph.py --regions 3000 --k 6 --max-km 100
    .venv/bin/python benchmarks/bench_graph.py --segmentize 0.02  # ~140 vertices a polygon
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import geopandas as gpd
import shapely

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import best_of  # noqa: E402

from spatialmeta.data import synthetic_regions  # noqa: E402
from spatialmeta.regions import (  # noqa: E402
    contiguity_graph,
    distance_band_graph,
    knn_graph,
)


def _pairs(graph) -> set[tuple[str, str]]:
    src, dst = graph.data.edge_index.numpy()
    ids = graph.region_ids
    return set(zip(ids[src], ids[dst], strict=True))


def _libpysal_pairs(g) -> set[tuple[str, str]]:
    adj = g.adjacency.reset_index()
    adj = adj[adj.iloc[:, 2] != 0]
    return set(zip(adj.iloc[:, 0], adj.iloc[:, 1], strict=True))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--regions", type=int, default=3000, help="approximate polygon count")
    p.add_argument("--k", type=int, default=6, help="neighbours in the kNN graph")
    p.add_argument("--max-km", type=float, default=100.0, help="distance band radius, km")
    p.add_argument("--snap", type=float, default=50.0, help="contiguity tolerance, metres")
    p.add_argument(
        "--segmentize",
        type=float,
        default=0.0,
        help="add vertices every this many degrees (0.02: about 140 per polygon, closer to "
        "real county outlines than the Voronoi cells' 7)",
    )
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args(argv)

    regions = synthetic_regions(bbox=(-125, 24.5, -65, 49.5), n_regions=args.regions)
    if args.segmentize > 0:
        regions = regions.assign(
            geometry=shapely.segmentize(regions.geometry.to_numpy(), args.segmentize)
        )
    vertices = shapely.get_num_coordinates(regions.geometry.to_numpy())
    print(
        f"{len(regions)} polygons over the contiguous US, {vertices.mean():.1f} vertices each "
        f"on average; best-of-{args.repeat} median wall times\n"
    )

    ours = {
        "queen": lambda: contiguity_graph(regions),
        "rook": lambda: contiguity_graph(regions, kind="rook"),
        f"queen, snap={args.snap:g} m": lambda: contiguity_graph(regions, snap=args.snap),
        f"rook, snap={args.snap:g} m": lambda: contiguity_graph(
            regions, kind="rook", snap=args.snap
        ),
        f"knn k={args.k} (symmetric)": lambda: knn_graph(regions, args.k),
        f"knn k={args.k} (directed)": lambda: knn_graph(regions, args.k, symmetric=False),
        f"distance band {args.max_km:g} km": lambda: distance_band_graph(regions, args.max_km),
    }
    times, graphs = {}, {}
    for name, build in ours.items():
        times[name], graphs[name] = best_of(build, args.repeat)

    peers: dict[str, tuple[str, float, bool]] = {}
    try:
        from libpysal.graph import Graph

        indexed = regions.set_index("region_id")

        def centroids():
            # the same points as spatialmeta's node positions (planar lon/lat centroids)
            c = shapely.centroid(indexed.geometry.to_numpy())
            return gpd.GeoSeries(c, index=indexed.index, crs=indexed.crs)

        for rook, name in ((False, "queen"), (True, "rook")):
            t, g = best_of(
                lambda rook=rook: Graph.build_contiguity(indexed, rook=rook), args.repeat
            )
            same = _libpysal_pairs(g) == _pairs(graphs[name])
            peers[name] = (f"libpysal build_contiguity(rook={rook})", t, same)

        def lib_knn():
            return Graph.build_knn(centroids(), k=args.k, metric="haversine")

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t, g = best_of(lib_knn, args.repeat)
        directed = f"knn k={args.k} (directed)"
        # libpysal lists (focal, neighbour); spatialmeta's directed edges run neighbour -> focal
        same = {(b, a) for a, b in _libpysal_pairs(g)} == _pairs(graphs[directed])
        peers[directed] = ("libpysal build_knn(metric='haversine')", t, same)
    except ImportError:
        print("libpysal not installed: peers skipped\n")

    print(f"{'spatialmeta':30s} {'seconds':>8s} {'edges':>7s}   {'peer':40s} {'seconds':>8s} "
          f"{'ours/peer':>9s} {'same edges':>10s}")  # fmt: skip
    for name, t in times.items():
        edges = graphs[name].data.edge_index.shape[1]
        line = f"{name:30s} {t:8.3f} {edges:7d}"
        if name in peers:
            peer, tp, same = peers[name]
            line += f"   {peer:40s} {tp:8.3f} {t / tp:9.2f} {str(same):>10s}"
        print(line)
    q = graphs["queen"]
    print(
        f"\nqueen: mean degree {q.degree().mean():.2f}, islands {int(q.data.island.sum())}; "
        f"distance band: mean degree {graphs[list(ours)[-1]].degree().mean():.2f}, islands "
        f"{int(graphs[list(ours)[-1]].data.island.sum())}"
    )
    total = sum(times.values())
    print(f"all {len(times)} spatialmeta builds: {total:.2f} s")
    if not all(same for *_, same in peers.values()):
        raise SystemExit("edge sets differ from libpysal")


if __name__ == "__main__":
    main()

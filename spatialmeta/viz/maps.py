"""Choropleth maps of per-region results."""

from __future__ import annotations

import os

import geopandas as gpd
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from spatialmeta._io import atomic_path  # noqa: E402

__all__ = ["choropleth"]


def choropleth(
    regions: gpd.GeoDataFrame,
    values,
    *,
    column_label: str,
    title: str | None = None,
    path: str | os.PathLike | None = None,
    cmap: str = "RdBu",
    center: float | None = 0.0,
) -> matplotlib.figure.Figure:
    """Map one value per region; regions with NaN are drawn grey ("not evaluated").

    Parameters
    ----------
    regions : GeoDataFrame
        Polygons, in the order of ``values``.
    values : array-like
        One value per region (NaN for none).
    column_label : str
        Colour-bar label.
    center : float, optional
        Value at the middle of a diverging colour map (skill 0).
    path : path-like, optional
        Save a PNG here (atomically).
    """
    v = np.asarray(values, dtype=float)
    if len(v) != len(regions):
        raise ValueError(f"{len(v)} values for {len(regions)} regions; give one value per region.")
    frame = regions.assign(_value=v)
    fig, ax = plt.subplots(figsize=(8, 5.5), dpi=120)
    frame[~np.isfinite(v)].plot(ax=ax, color="#dddddd", edgecolor="white", linewidth=0.4)
    finite = frame[np.isfinite(v)]
    if len(finite):
        vmax = np.nanmax(np.abs(v - (center or 0.0))) if center is not None else None
        norm = (
            matplotlib.colors.TwoSlopeNorm(center, center - vmax, center + vmax)
            if center is not None and vmax > 0
            else None
        )
        finite.plot(
            column="_value",
            ax=ax,
            cmap=cmap,
            norm=norm,
            edgecolor="black",
            linewidth=0.5,
            legend=True,
            legend_kwds={"label": column_label, "shrink": 0.7},
        )
    ax.set_xlabel("longitude (°E)")
    ax.set_ylabel("latitude (°N)")
    ax.set_title(title or column_label)
    ax.set_aspect("equal")
    fig.tight_layout()
    if path is not None:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png")
    plt.close(fig)
    return fig

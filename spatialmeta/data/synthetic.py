"""The embedded default data: a synthetic monthly climate with the structure of the real thing.

Nothing here is downloaded: the generator is deterministic for a seed, so the demo,
the tests and the notebooks run anywhere. Each ingredient is one a real monthly
temperature/precipitation record has, so that learning over regions is not trivial:

* a regular lat/lon grid (EPSG:4326) with CF cell bounds;
* a seasonal cycle whose amplitude grows with latitude;
* a lapse-rate effect (6.5 K/km) from a synthetic terrain;
* spatially correlated anomalies (a Gaussian random field) with AR(1) persistence in time;
* a warming trend that varies smoothly from region to region;
* a skewed, precipitation-like variable (gamma marginals through a Gaussian copula).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import xarray as xr
from scipy import stats

__all__ = ["synthetic_climate", "gaussian_random_field"]

_EARTH_RADIUS_KM = 6371.0088
LAPSE_RATE_K_PER_KM = 6.5


def gaussian_random_field(
    shape: tuple[int, ...],
    lat: np.ndarray,
    lon: np.ndarray,
    length_scale_km: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """Draw unit-variance Gaussian random fields on a lat/lon grid.

    The field is white noise smoothed with a Gaussian kernel in spectral space, with the
    kernel width converted from kilometres to grid steps at the grid's mean latitude, so
    the correlation length is roughly isotropic on the sphere for regional domains.

    Parameters
    ----------
    shape : tuple of int
        Leading shape (for example ``(n_time,)``); the field has shape
        ``shape + (len(lat), len(lon))``.
    lat, lon : numpy.ndarray
        Cell-centre coordinates in degrees (regular spacing).
    length_scale_km : float
        Standard deviation of the smoothing kernel, in km.
    rng : numpy.random.Generator
        Source of randomness.

    Returns
    -------
    numpy.ndarray
        Fields with zero mean and unit variance (standardized over the grid).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> f = gaussian_random_field((2,), np.arange(10.0), np.arange(20.0), 300.0, rng)
    >>> f.shape
    (2, 10, 20)
    """
    ny, nx = len(lat), len(lon)
    dlat = abs(float(lat[1] - lat[0])) if ny > 1 else 1.0
    dlon = abs(float(lon[1] - lon[0])) if nx > 1 else 1.0
    km_y = np.deg2rad(dlat) * _EARTH_RADIUS_KM
    km_x = np.deg2rad(dlon) * _EARTH_RADIUS_KM * np.cos(np.deg2rad(np.mean(lat)))
    # pad to avoid wrap-around correlation across opposite domain edges
    pad_y = int(np.ceil(3 * length_scale_km / km_y))
    pad_x = int(np.ceil(3 * length_scale_km / km_x))
    py, px = ny + 2 * pad_y, nx + 2 * pad_x
    noise = rng.standard_normal(shape + (py, px))
    ky = np.fft.fftfreq(py) * 2 * np.pi / km_y
    kx = np.fft.rfftfreq(px) * 2 * np.pi / km_x
    kernel = np.exp(-0.5 * length_scale_km**2 * (ky[:, None] ** 2 + kx[None, :] ** 2))
    field = np.fft.irfft2(np.fft.rfft2(noise) * kernel, s=(py, px))
    field = field[..., pad_y : pad_y + ny, pad_x : pad_x + nx]
    axes = (-2, -1)
    field = field - field.mean(axis=axes, keepdims=True)
    return field / field.std(axis=axes, keepdims=True)


def _ar1(innovations: np.ndarray, phi: float) -> np.ndarray:
    """AR(1) along axis 0 with stationary unit variance (a scan over time, vectorized in space)."""
    out = np.empty_like(innovations)
    out[0] = innovations[0]
    scale = np.sqrt(1.0 - phi**2)
    for t in range(1, innovations.shape[0]):  # recursion in time; each step is a whole field
        out[t] = phi * out[t - 1] + scale * innovations[t]
    return out


def _bounds(centres: np.ndarray) -> np.ndarray:
    step = centres[1] - centres[0]
    return np.stack([centres - step / 2, centres + step / 2], axis=-1)


def synthetic_climate(
    *,
    bbox: tuple[float, float, float, float] = (-20.0, 30.0, 40.0, 70.0),
    resolution: float = 1.0,
    start: str = "1981-01",
    years: int = 40,
    seed: int = 0,
    ar1: float = 0.6,
    anomaly_sd: float = 1.2,
    length_scale_km: float = 500.0,
) -> xr.Dataset:
    """Generate a deterministic synthetic monthly climate on a regular lat/lon grid.

    Parameters
    ----------
    bbox : (west, south, east, north)
        Domain in degrees (EPSG:4326).
    resolution : float
        Grid spacing in degrees.
    start : str
        First month (``"YYYY-MM"``).
    years : int
        Length of record in years (``12 * years`` monthly steps).
    seed : int
        Seed; the same seed gives bit-identical output.
    ar1 : float
        Lag-1 autocorrelation of the monthly temperature anomalies.
    anomaly_sd : float
        Standard deviation of the temperature anomalies (K).
    length_scale_km : float
        Spatial correlation length of the anomalies (km).

    Returns
    -------
    xarray.Dataset
        Variables ``tas`` (K, near-surface air temperature), ``pr`` (mm/month) and
        ``orog`` (m), coordinates ``time``, ``lat`` (ascending), ``lon``, CF bounds
        ``lat_bnds``/``lon_bnds`` and a ``spatial_ref`` CRS variable (EPSG:4326).

    Examples
    --------
    >>> ds = synthetic_climate(bbox=(0, 40, 10, 50), resolution=2.0, years=2, seed=1)
    >>> dict(ds.tas.sizes)
    {'time': 24, 'lat': 5, 'lon': 5}
    >>> float(ds.tas.isel(time=0).mean()) == float(
    ...     synthetic_climate(bbox=(0, 40, 10, 50), resolution=2.0, years=2, seed=1)
    ...     .tas.isel(time=0).mean())
    True
    """
    west, south, east, north = bbox
    if not (west < east and south < north and -90 <= south and north <= 90):
        raise ValueError(
            f"`bbox` must be (west, south, east, north) with west < east and south < north "
            f"inside [-90, 90] latitude; got {bbox}."
        )
    if years < 1 or resolution <= 0:
        raise ValueError(f"`years` must be >= 1 and `resolution` > 0; got {years}, {resolution}.")
    rng = np.random.default_rng(seed)
    lat = np.arange(south + resolution / 2, north, resolution)
    lon = np.arange(west + resolution / 2, east, resolution)
    time = pd.date_range(start, periods=12 * years, freq="MS")
    nt, ny, nx = len(time), len(lat), len(lon)
    lat2d = np.broadcast_to(lat[:, None], (ny, nx))

    # terrain: smooth random field, positive, a few mountain ranges up to ~2.5 km
    terrain = gaussian_random_field((), lat, lon, 2.5 * length_scale_km, rng)
    orog = np.clip(900.0 * (terrain + 0.3), 0.0, None) + 40.0 * np.abs(
        gaussian_random_field((), lat, lon, 0.5 * length_scale_km, rng)
    )

    # temperature: mean by latitude, lapse rate, seasonal cycle growing with latitude
    abs_lat = np.abs(lat2d)
    mean_k = 305.0 - 0.6 * abs_lat - LAPSE_RATE_K_PER_KM * orog / 1000.0
    amplitude = 1.5 + 0.28 * abs_lat  # K, half peak-to-trough
    month = time.month.to_numpy()
    hemisphere = np.sign(lat2d + 1e-9)
    phase = 2 * np.pi * (month[:, None, None] - 1.5) / 12.0  # coldest mid-January (north)
    seasonal = -amplitude * np.cos(phase) * hemisphere

    # warming trend varying in space: 0.1 to 0.5 K/decade
    trend_field = gaussian_random_field((), lat, lon, 3.0 * length_scale_km, rng)
    trend_k_per_decade = 0.3 + 0.1 * trend_field
    decades = (np.arange(nt) / 120.0)[:, None, None]

    innovations = gaussian_random_field((nt,), lat, lon, length_scale_km, rng)
    anomalies = anomaly_sd * _ar1(innovations, ar1)
    tas = mean_k + seasonal + trend_k_per_decade * decades + anomalies

    # precipitation: gamma marginals (skewed), seasonality, orographic enhancement,
    # correlated in space/time through a Gaussian copula of another AR(1) field
    latent = _ar1(gaussian_random_field((nt,), lat, lon, 1.5 * length_scale_km, rng), 0.3)
    pr_mean = (60.0 + 0.04 * orog) * (1.0 + 0.3 * np.cos(phase + np.pi))
    shape = 2.0
    u = np.clip(stats.norm.cdf(latent), 1e-9, 1 - 1e-9)
    pr = stats.gamma.ppf(u, a=shape, scale=pr_mean / shape)

    coords = {
        "time": ("time", time, {"standard_name": "time", "axis": "T"}),
        "lat": (
            "lat",
            lat,
            {
                "standard_name": "latitude",
                "units": "degrees_north",
                "axis": "Y",
                "bounds": "lat_bnds",
            },
        ),
        "lon": (
            "lon",
            lon,
            {
                "standard_name": "longitude",
                "units": "degrees_east",
                "axis": "X",
                "bounds": "lon_bnds",
            },
        ),
    }
    ds = xr.Dataset(
        {
            "tas": (
                ("time", "lat", "lon"),
                tas.astype("float32"),
                {
                    "standard_name": "air_temperature",
                    "long_name": "Near-surface air temperature",
                    "units": "K",
                },
            ),
            "pr": (
                ("time", "lat", "lon"),
                pr.astype("float32"),
                {"long_name": "Monthly precipitation amount", "units": "mm month-1"},
            ),
            "orog": (
                ("lat", "lon"),
                orog.astype("float32"),
                {"standard_name": "surface_altitude", "units": "m"},
            ),
            "lat_bnds": (("lat", "bnds"), _bounds(lat)),
            "lon_bnds": (("lon", "bnds"), _bounds(lon)),
        },
        coords=coords,
        attrs={
            "title": "spatialmeta synthetic monthly climate",
            "Conventions": "CF-1.10",
            "source": f"spatialmeta.data.synthetic_climate(seed={seed})",
            "trend_K_per_decade_mean": float(trend_k_per_decade.mean()),
        },
    )
    ds["trend"] = (
        ("lat", "lon"),
        trend_k_per_decade.astype("float32"),
        {"long_name": "True warming trend used by the generator", "units": "K decade-1"},
    )
    return _with_crs(ds)


def _with_crs(ds: xr.Dataset) -> xr.Dataset:
    import rioxarray  # noqa: F401  (registers the .rio accessor)

    ds = ds.rio.set_spatial_dims(x_dim="lon", y_dim="lat")
    return ds.rio.write_crs("EPSG:4326")

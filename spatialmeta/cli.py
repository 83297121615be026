"""The ``spatialmeta`` command line: a typer app over the library and the flows.

Heavy imports (torch, Prefect, the geo stack) happen inside the commands, so ``--help``
answers at once.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import typer

__all__ = ["app", "main"]

app = typer.Typer(
    name="spatialmeta",
    help="Geospatial meta-learning: rasters → region tasks → meta-learned forecasts → pooled skill.\n\n"
    "Example: spatialmeta demo --out outputs/demo",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

_DEBUG_ENV = "SPATIALMETA_DEBUG"


def _fail(message: str, code: int = 1) -> None:
    """One line on stderr, non-zero exit, no traceback (set SPATIALMETA_DEBUG=1 for one)."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _known_errors():
    from spatialmeta._io import OutputError

    return (OutputError, ValueError, KeyError, FileNotFoundError, PermissionError, OSError)


@app.command()
def demo(
    out: Path = typer.Option(Path("outputs/demo"), "--out", "-o", help="Folder for every output."),
    years: int = typer.Option(40, help="Years of synthetic monthly data."),
    resolution: float = typer.Option(1.0, help="Grid spacing of the synthetic rasters, degrees."),
    regions: int = typer.Option(80, help="Approximate number of synthetic regions."),
    holdout: float = typer.Option(
        0.2, help="Fraction of regions held out (forecast from a short record)."
    ),
    support: int = typer.Option(
        36, help="Months a held-out region is known before the test period."
    ),
    episodes: int = typer.Option(600, help="Maximum meta-training episodes."),
    seed: int = typer.Option(0, help="Seed for data, hold-out and training."),
    progress: bool = typer.Option(True, help="Show progress bars."),
) -> None:
    """Run the main job end to end on the embedded synthetic data (a Prefect flow, no server needed).

    Writes forecasts (Zarr, GeoParquet), skill tables (CSV), a skill map and a forest plot (PNG)
    and a Markdown summary into OUT, and prints the summary.

    Example: spatialmeta demo --out outputs/demo --episodes 300
    """
    from spatialmeta._io import ensure_writable_dir

    try:
        ensure_writable_dir(out)
    except _known_errors() as exc:
        _fail(str(exc), 2)
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    try:
        from flows.pipeline import demo_pipeline

        result = demo_pipeline(
            out=str(out),
            years=years,
            resolution=resolution,
            n_regions=regions,
            holdout=holdout,
            support=support,
            episodes=episodes,
            seed=seed,
            progress=progress,
        )
    except _known_errors() as exc:
        if os.environ.get(_DEBUG_ENV):
            raise
        _fail(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
    from rich.console import Console
    from rich.markdown import Markdown

    console = Console()
    console.print(Markdown(result["summary"]))
    console.print(f"\nOutputs are in [bold]{out.resolve()}[/bold] (summary: {out / 'summary.md'})")


@app.command()
def synth(
    out: Path = typer.Option(..., "--out", "-o", help="Folder to write the data set into."),
    years: int = typer.Option(40, help="Years of monthly data."),
    resolution: float = typer.Option(1.0, help="Grid spacing, degrees."),
    regions: int = typer.Option(80, help="Approximate number of regions."),
    seed: int = typer.Option(0, help="Seed."),
) -> None:
    """Write the embedded synthetic climate (NetCDF, GeoTIFF, Zarr) and its regions (GeoPackage).

    Example: spatialmeta synth --out data/synthetic --years 20
    """
    from spatialmeta._io import ensure_writable_dir
    from spatialmeta.data import write_default_data

    try:
        ensure_writable_dir(out)
        paths = write_default_data(
            out, years=years, resolution=resolution, n_regions=regions, seed=seed
        )
    except _known_errors() as exc:
        _fail(str(exc))
    for name, p in vars(paths).items():
        typer.echo(f"{name}: {p}")


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()

"""Pooling studies as a flow: a study table → the meta-analysis report folder.

Wiring only: :func:`spatialmeta.jobs.pool.pool_job` as one content-keyed stage (the
table's bytes and the settings); an unchanged table is not pooled again.

Example
-------
    python -m flows.pool --studies studies.csv --out outputs/pool
"""

from __future__ import annotations

from typing import Annotated, Literal

from prefect import flow
from pydantic import Field

from flows._params import existing
from flows._stage import Stages, task_runner
from spatialmeta.jobs.pool import METHODS, TESTS, pool_job

__all__ = ["pool_studies"]


@flow(name="spatialmeta-pool-studies", task_runner=task_runner())
def pool_studies(
    studies: str,
    out: str,
    measure: str | None = None,
    method: Literal[METHODS] = "REML",  # type: ignore[valid-type]
    test: Literal[TESTS] = "z",  # type: ignore[valid-type]
    level: Annotated[float, Field(gt=50, lt=100)] = 95.0,
    mods: list[str] | None = None,
    result_storage: str | None = None,
) -> dict:
    """Pool the study table ``studies`` and write the report into ``out``."""
    existing("studies", studies)
    result = Stages(result_storage)(pool_job)(
        studies, out, measure=measure, method=method, test=test, level=level, mods=mods
    )
    return {"summary": result.summary, "outputs": {k: str(v) for k, v in result.files.items()}}


def main(argv: list[str] | None = None) -> None:
    import argparse

    from flows._server import local_api

    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--studies", required=True)
    p.add_argument("--out", required=True)
    a = p.parse_args(argv)
    with local_api():
        print(pool_studies(studies=a.studies, out=a.out)["summary"])


if __name__ == "__main__":
    main()

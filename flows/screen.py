"""Screening as a flow: a review's records and labels → the unlabelled records ranked.

Wiring only: :func:`spatialmeta.jobs.screen.screen_rank_job` as one content-keyed stage
(the records' and labels' bytes, the method); rerun when new labels arrive.

Example
-------
    python -m flows.screen --records records.csv --labels labels.csv --out outputs/screen
"""

from __future__ import annotations

from typing import Literal

from prefect import flow

from flows._params import existing
from flows._stage import Stages, task_runner
from spatialmeta.jobs.screen import METHODS, screen_rank_job

__all__ = ["screen"]

Method = Literal[tuple(METHODS)]  # type: ignore[valid-type]


@flow(name="spatialmeta-screen", task_runner=task_runner())
def screen(
    records: str,
    out: str,
    labels: str | None = None,
    review: str | None = None,
    method: Method = "asreview_default",
    result_storage: str | None = None,
) -> dict:
    """Rank the unlabelled records of ``review`` in ``records`` into ``out/ranked.csv``."""
    existing("records", records)
    if labels is not None:
        existing("labels", labels)
    result = Stages(result_storage)(screen_rank_job)(
        records, out=out, labels=labels, review=review, method=method
    )
    return {"summary": result.summary, "outputs": dict(result.outputs)}


def main(argv: list[str] | None = None) -> None:
    import argparse

    from flows._server import local_api

    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--records", required=True)
    p.add_argument("--labels")
    p.add_argument("--out", required=True)
    a = p.parse_args(argv)
    with local_api():
        print(screen(records=a.records, labels=a.labels, out=a.out)["summary"])


if __name__ == "__main__":
    main()

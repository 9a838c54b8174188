"""Result rows read back from MLflow: the finished training runs of an experiment
(:func:`rows_from_mlflow`) or the report of one pipeline run (:func:`rows_from_pipeline_run`).
The row format and the tables are :mod:`tdds_core.report`'s."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

from ..errors import TrackingError
from ..names import STAGE_CORESET, STAGE_EVALUATE, STAGE_PIPELINE, STAGE_TRAIN_FULL, TAG_PIPELINE_RUN, TAG_STAGE
from ..report import rows_from_runs
from .mlflow_tracker import MlflowTracker

__all__ = ["rows_from_mlflow", "rows_from_pipeline_run"]

_ALL_RUNS = 10 ** 9   # find_runs limit that means "every run" (it pages through them)


def rows_from_mlflow(tracking_uri: str, experiment: str,
                     stages: Sequence[str] = (STAGE_CORESET, STAGE_EVALUATE, STAGE_TRAIN_FULL)) -> list[dict]:
    """Result rows (:func:`tdds_core.report.rows_from_runs`) from the FINISHED runs of ``experiment``
    whose tag ``tdds.stage`` is in ``stages``, read oldest first, stage by stage."""
    if tracking_uri.startswith("sqlite:///"):
        db = Path(tracking_uri[len("sqlite:///"):].split("?", 1)[0])
        if not db.is_file():
            raise TrackingError(
                f"no MLflow database at {db}; run the grid first, or pass --tracking-uri / --config naming the "
                "tracking store the runs were logged to."
            )
    tracker = MlflowTracker(tracking_uri, experiment, create_experiment=False)
    return rows_from_runs(run for stage in stages
                          for run in tracker.find_runs(tags={TAG_STAGE: stage}, status="FINISHED",
                                                       max_results=_ALL_RUNS, order="oldest"))


def rows_from_pipeline_run(tracking_uri: str, experiment: str, pipeline_run_id: str) -> list[dict]:
    """The result rows of one pipeline run (a KFP run id, or ``tdds run``'s ``local-...``): the
    ``report/rows.json`` its parent MLflow run holds, whichever runs were reused from the cache.
    TrackingError when no parent run has that id or it has no report yet (still running, failed)."""
    tracker = MlflowTracker(tracking_uri, experiment, create_experiment=False)
    parents = tracker.find_runs(tags={TAG_STAGE: STAGE_PIPELINE, TAG_PIPELINE_RUN: pipeline_run_id}, max_results=1)
    if not parents:
        raise TrackingError(f"no pipeline run {pipeline_run_id!r} in MLflow experiment {experiment!r} at "
                            f"{tracker.uri_label}; pass the run id `tdds run` printed or `submit` returned, and the "
                            "tracking URI the pipeline logged to.")
    parent = parents[0]
    try:
        return json.loads(tracker.read_artifact(parent.id, "report/rows.json"))
    except TrackingError:
        raise TrackingError(f"pipeline run {pipeline_run_id!r} (MLflow run {parent.id}, {parent.status}) has no report "
                            "yet: wait until it finishes (a failed run has none; see its tasks' logs).") from None

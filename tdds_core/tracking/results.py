"""Result rows read back from MLflow: the finished training runs of an experiment
(:func:`rows_from_mlflow`) or the report of one pipeline run (:func:`rows_from_pipeline_run`).
The row format and the tables are :mod:`tdds_core.report`'s."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional, Sequence

from ..errors import TrackingError
from ..names import (STAGE_CORESET, STAGE_EVALUATE, STAGE_PIPELINE, STAGE_TRAIN_FULL, TAG_CONFIG_NAME, TAG_FINGERPRINT,
                     TAG_PIPELINE_RUN, TAG_STAGE)
from ..report import rows_from_runs
from .mlflow_tracker import MlflowTracker

__all__ = ["rows_from_mlflow", "rows_from_pipeline_run", "latest_pipeline_run"]

_ALL_RUNS = 10 ** 9   # find_runs limit that means "every run" (it pages through them)


def rows_from_mlflow(tracking_uri: str, experiment: str,
                     stages: Sequence[str] = (STAGE_CORESET, STAGE_EVALUATE, STAGE_TRAIN_FULL), *,
                     config_name: Optional[str] = None) -> list[dict]:
    """Result rows (:func:`tdds_core.report.rows_from_runs`) from the FINISHED runs of ``experiment``
    whose tag ``tdds.stage`` is in ``stages``, read oldest first, stage by stage, of ONE config and
    dataset version: the runs tagged ``tdds.config_name = config_name`` when such runs exist, then of
    the dataset fingerprint (``tdds.fingerprint``) of the newest of them; a console line says what
    was left out."""
    if tracking_uri.startswith("sqlite:///"):
        db = Path(tracking_uri[len("sqlite:///"):].split("?", 1)[0])
        if not db.is_file():
            raise TrackingError(
                f"no MLflow database at {db}; run the grid first, or pass --tracking-uri / --config naming the "
                "tracking store the runs were logged to."
            )
    tracker = MlflowTracker(tracking_uri, experiment, create_experiment=False)
    runs = [run for stage in stages for run in tracker.find_runs(tags={TAG_STAGE: stage}, status="FINISHED",
                                                                  max_results=_ALL_RUNS, order="oldest")]
    names = {r.tags.get(TAG_CONFIG_NAME) for r in runs}
    if config_name is not None and config_name in names:
        runs = [r for r in runs if r.tags.get(TAG_CONFIG_NAME) == config_name]
    elif len(names) > 1:
        newest = max(runs, key=lambda r: r.start_time).tags.get(TAG_CONFIG_NAME)
        runs = [r for r in runs if r.tags.get(TAG_CONFIG_NAME) == newest]
        print(f"tdds report: experiment {experiment!r} holds runs of the configs {sorted(map(str, names))}; "
              f"showing {newest!r} (the newest; pass --config or --pipeline-run to choose)", file=sys.stderr)
    fps = {r.tags.get(TAG_FINGERPRINT) for r in runs}
    if len(fps) > 1:
        newest = max(runs, key=lambda r: r.start_time).tags.get(TAG_FINGERPRINT)
        runs = [r for r in runs if r.tags.get(TAG_FINGERPRINT) == newest]
        print(f"tdds report: the runs span {len(fps)} dataset versions; showing the newest ({str(newest)[:12]}); "
              "pass --pipeline-run to choose one pipeline run", file=sys.stderr)
    return rows_from_runs(runs)


def latest_pipeline_run(tracking_uri: str, experiment: str, config_name: str) -> Optional[str]:
    """The id of the newest FINISHED pipeline run of the config ``config_name`` (its parent run's tag
    ``tdds.pipeline_run_id``), None when the experiment has none."""
    tracker = MlflowTracker(tracking_uri, experiment, create_experiment=False)
    for run in tracker.find_runs(tags={TAG_STAGE: STAGE_PIPELINE, TAG_CONFIG_NAME: config_name}, status="FINISHED",
                                 max_results=50):
        if run.tags.get(TAG_PIPELINE_RUN):
            return run.tags[TAG_PIPELINE_RUN]
    return None


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

"""Experiment tracking behind one interface: MLflow (SQLite file by default, or a server) or nothing.

``make_tracker(cfg, output_root)`` returns a :class:`Tracker`. MLflow is imported inside
:class:`MlflowTracker` only, so ``import tdds_core`` never loads it.

Runs::

    tracker = make_tracker(cfg, cfg.output, pipeline_run_id=run_id)
    with tracker.start_run("pipeline/quickstart", tags={TAG_STAGE: STAGE_PIPELINE}) as parent:
        name = run_name(STAGE_CORESET, method="tdds", rate=0.7, arch="resnet18", seed=42)
        key = run_key(name, fingerprint, params)
        with tracker.start_run(name, key=key, tags=coreset_tags(...)) as run:   # child of ``parent``
            if run.reused:          # finished earlier with the same key: skip the work
                ...
            tracker.log_params(params); tracker.log_metrics({METRIC_FINAL_ACC: 93.1})

* A run started inside another one is its child (tag ``mlflow.parentRunId``), unless ``parent=`` names
  another run.
* ``key=`` dedups finished work: the run carries the tag ``tdds.key``; when a FINISHED run with that
  key exists it is returned with ``reused=True``, no new run is created and every log call inside it is
  a no-op (a reused run is read-only). A FAILED or KILLED earlier run does not count.
* Runs end FINISHED on a clean exit, FAILED on an exception, KILLED on Ctrl-C.
* Reading back: ``find_runs(tags=..., status=...)`` and ``get_run(id)`` return :class:`RunRecord` objects;
  :func:`rows_from_mlflow` / :func:`rows_from_pipeline_run` give the report's result rows.
* A run that outlives one process (the pipeline's parent run): ``rid = create_run(name)`` leaves it
  RUNNING; any process attaches to it (``with tracker.attach(rid): tracker.log_params(...)``) and one
  ends it (``tracker.terminate(rid, "FAILED")``).
* ``identity`` names the store and experiment (``sqlite:/abs/mlflow.db#tdds-cifar10``) for cache keys.

Modules: ``base`` (the interface, :class:`NullTracker`, :class:`ParentedTracker`), ``lookup`` (keys,
code version, store identity, search filters), ``mlflow_tracker`` (the only module of
:mod:`tdds_core` that imports mlflow), ``stage_logs`` (what every stage logs the same way; figures
from :mod:`tdds_core.report`, which owns matplotlib), ``factory`` (:func:`make_tracker`; the
tracking URI is :class:`tdds_core.storage.Workspace`'s), ``results`` (rows read back). Tag, stage and metric names live in
:mod:`tdds_core.names` (re-exported here); accuracies are logged in **percent** (0..100).

No credential is ever logged: params come from the config, tags from :mod:`tdds_core.names`, and URIs
in messages are shown without any ``user:password@`` part.
"""
from ..names import (METRIC_BEST_ACC, METRIC_FINAL_ACC, METRIC_ITERATIONS, METRIC_NOISY_KEPT, METRIC_NUM_TRAIN,
                     METRIC_WALL_S, STAGE_CORESET, STAGE_EVALUATE, STAGE_PIPELINE, STAGE_REPORT, STAGE_SCORE,
                     STAGE_SELECT, STAGE_TRAIN_FULL, TAG_ARCH, TAG_ARTIFACT_KEY, TAG_ARTIFACT_URI, TAG_CODE_VERSION,
                     TAG_CONFIG_NAME, TAG_FINGERPRINT, TAG_GIT_SHA, TAG_KEY, TAG_METHOD, TAG_METHOD_NAME, TAG_NOTE,
                     TAG_PARENT_RUN, TAG_PIPELINE_RUN, TAG_RATE, TAG_SEED, TAG_SELECTION_SHA256, TAG_SELECTION_URI,
                     TAG_STAGE, format_rate, metric_name, run_name)
from .base import (MAX_PARAM_VALUE_LENGTH, RUN_STATUSES, NullTracker, ParentedTracker, RunHandle, RunRecord, Tracker,
                   flatten_params)
from .factory import default_experiment, default_tracking_uri, make_tracker
from .lookup import code_version, git_sha, run_key, tracker_identity
from .mlflow_tracker import MlflowTracker
from .results import latest_pipeline_run, rows_from_mlflow, rows_from_pipeline_run
from .stage_logs import artifact_tags, log_score_run, log_selection, run_params

__all__ = [
    "Tracker", "RunHandle", "RunRecord", "RUN_STATUSES", "MlflowTracker", "NullTracker", "ParentedTracker",
    "make_tracker", "default_tracking_uri", "default_experiment", "tracker_identity",
    "run_key", "code_version", "git_sha", "flatten_params", "MAX_PARAM_VALUE_LENGTH",
    "log_score_run", "log_selection", "run_params", "artifact_tags", "rows_from_mlflow", "rows_from_pipeline_run",
    "latest_pipeline_run",
    # re-exported from tdds_core.names (new code imports them from there)
    "run_name", "format_rate", "metric_name",
    "TAG_KEY", "TAG_STAGE", "TAG_METHOD", "TAG_METHOD_NAME", "TAG_RATE", "TAG_ARCH", "TAG_SEED",
    "TAG_FINGERPRINT", "TAG_CODE_VERSION", "TAG_GIT_SHA", "TAG_PIPELINE_RUN", "TAG_CONFIG_NAME",
    "TAG_ARTIFACT_URI", "TAG_ARTIFACT_KEY", "TAG_NOTE", "TAG_SELECTION_SHA256", "TAG_SELECTION_URI", "TAG_PARENT_RUN",
    "STAGE_PIPELINE", "STAGE_TRAIN_FULL", "STAGE_SCORE", "STAGE_SELECT", "STAGE_CORESET", "STAGE_EVALUATE",
    "STAGE_REPORT", "METRIC_FINAL_ACC", "METRIC_BEST_ACC", "METRIC_NOISY_KEPT", "METRIC_NUM_TRAIN",
    "METRIC_ITERATIONS", "METRIC_WALL_S",
]

"""The tracker a config asks for (:func:`make_tracker`). Where its runs go (the tracking URI, in the
order ``tracking.uri``, ``$MLFLOW_TRACKING_URI``, SQLite default, and the artifact location of a new
experiment) is decided by :class:`tdds_core.storage.Workspace`; the experiment by
:func:`default_experiment`."""
from __future__ import annotations

from typing import Any, Mapping, Optional

from ..names import TAG_CODE_VERSION, TAG_CONFIG_NAME, TAG_GIT_SHA, TAG_PIPELINE_RUN
from ..storage import Workspace
from .base import NullTracker, Tracker
from .lookup import code_version, git_sha
from .mlflow_tracker import MlflowTracker

__all__ = ["make_tracker", "default_tracking_uri", "default_experiment"]


def default_tracking_uri(output_root: str) -> str:
    """``sqlite:///<output root>/mlflow.db``; an S3 output root keeps the SQLite file in ``$TDDS_CACHE``
    (a cluster run should name a tracking server instead): :attr:`Workspace.default_tracking_uri`."""
    return Workspace(str(output_root)).default_tracking_uri


def default_experiment(cfg: Any) -> str:
    """``tracking.experiment``, else ``tdds-<dataset name>``."""
    return cfg.tracking.experiment or f"tdds-{cfg.data.name}"


def make_tracker(cfg: Any, output_root: Optional[str] = None, *, pipeline_run_id: Optional[str] = None,
                 default_tags: Optional[Mapping[str, Any]] = None) -> Tracker:
    """The tracker a config asks for.

    ``tracking.enabled: false`` -> :class:`NullTracker`. Otherwise :class:`MlflowTracker` with URI
    :attr:`Workspace.tracking_uri` of ``cfg`` and ``output_root`` (default ``cfg.output``):
    ``tracking.uri`` or ``$MLFLOW_TRACKING_URI`` or :func:`default_tracking_uri`; experiment
    ``tracking.experiment`` or ``tdds-<dataset name>``. Every run gets the tags code version, git sha,
    config name and ``pipeline_run_id`` (when given). With the SQLite default the artifacts of a new
    experiment go to ``<output root>/mlartifacts``; with another SQLite file, to ``mlartifacts``
    beside that file (MLflow's own default is ``./mlruns`` of the working directory).
    """
    if not cfg.tracking.enabled:
        return NullTracker()
    workspace = Workspace.of(cfg, output=output_root)
    tags: dict[str, Any] = {TAG_CODE_VERSION: code_version(), TAG_CONFIG_NAME: cfg.name}
    if git_sha():
        tags[TAG_GIT_SHA] = git_sha()
    if pipeline_run_id:
        tags[TAG_PIPELINE_RUN] = pipeline_run_id
    tags.update(default_tags or {})
    tracker = MlflowTracker(workspace.tracking_uri, default_experiment(cfg), default_tags=tags,
                            artifact_location=workspace.artifact_location)
    tracker.system_metrics_interval_s = float(cfg.tracking.system_metrics_interval_s)
    return tracker

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
* Reading back: ``find_runs(tags=..., status=...)`` and ``get_run(id)`` return :class:`RunRecord` objects.
* A run that outlives one process (the pipeline's parent run): ``rid = create_run(name)`` leaves it
  RUNNING; any process attaches to it (``with tracker.attach(rid): tracker.log_params(...)``) and one
  ends it (``tracker.terminate(rid, "FAILED")``).
* ``identity`` names the store and experiment (``sqlite:/abs/mlflow.db#tdds-cifar10``) for cache keys.

This is the only module of :mod:`tdds_core` that imports mlflow; the figures it logs are built by
:mod:`tdds_core.report` (which owns matplotlib).

Names and tags the report reads back (:func:`tdds_core.report.rows_from_mlflow`) are the constants
below. Accuracies (``final_acc``, ``best_acc``) are logged in **percent** (0..100).

No credential is ever logged: params come from the config, tags from this module, and URIs in
messages are shown without any ``user:password@`` part.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import logging
import os
import subprocess
import threading
import time
import urllib.error
import urllib.request
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional, Protocol, Sequence, runtime_checkable

from . import __version__
from .errors import ArtifactError, TrackingError
from .plan import format_rate
from .storage import is_remote, redact_url

__all__ = [
    "Tracker", "RunHandle", "RunRecord", "RUN_STATUSES", "MlflowTracker", "NullTracker", "make_tracker",
    "default_tracking_uri", "default_experiment", "tracker_identity", "run_name", "run_key", "format_rate",
    "code_version", "git_sha", "flatten_params",
    "log_score_run", "log_selection", "run_params", "artifact_tags", "metric_name",
    # tags, stages, metrics
    "TAG_KEY", "TAG_STAGE", "TAG_METHOD", "TAG_METHOD_NAME", "TAG_RATE", "TAG_ARCH", "TAG_SEED",
    "TAG_FINGERPRINT", "TAG_CODE_VERSION", "TAG_GIT_SHA", "TAG_PIPELINE_RUN", "TAG_CONFIG_NAME",
    "TAG_ARTIFACT_URI", "TAG_ARTIFACT_KEY", "TAG_NOTE", "TAG_SELECTION_SHA256", "TAG_SELECTION_URI", "TAG_PARENT_RUN",
    "STAGE_PIPELINE", "STAGE_TRAIN_FULL", "STAGE_SCORE", "STAGE_SELECT", "STAGE_CORESET", "STAGE_EVALUATE",
    "STAGE_REPORT", "METRIC_FINAL_ACC", "METRIC_BEST_ACC", "METRIC_NOISY_KEPT", "METRIC_NUM_TRAIN",
    "METRIC_ITERATIONS", "METRIC_WALL_S", "MAX_PARAM_VALUE_LENGTH",
]

log = logging.getLogger(__name__)

# ---------------------------------------------------------------- tags (strings on every tdds run)
TAG_KEY = "tdds.key"                    # dedup key of the work a run did (see run_key)
TAG_STAGE = "tdds.stage"                # one of the STAGE_* values below
TAG_METHOD = "tdds.method"              # method label as shown in tables (MethodSpec.display), "full" for full data
TAG_METHOD_NAME = "tdds.method_name"    # registered scoring function (tdds, el2n, ...)
TAG_RATE = "tdds.rate"                  # pruning rate, format_rate(rate) e.g. "0.70"; absent for full data
TAG_ARCH = "tdds.arch"                  # architecture trained/evaluated
TAG_SEED = "tdds.seed"                  # training seed
TAG_FINGERPRINT = "tdds.fingerprint"    # dataset fingerprint (full value)
TAG_CODE_VERSION = "tdds.code_version"  # tdds_core.__version__ (+ "+g<sha>" when the git sha is known)
TAG_GIT_SHA = "tdds.git_sha"            # git commit of the code, when known ($TDDS_GIT_SHA or `git rev-parse`)
TAG_PIPELINE_RUN = "tdds.pipeline_run_id"  # id of the pipeline run (one parent run per pipeline run)
TAG_CONFIG_NAME = "tdds.config_name"    # Config.name
TAG_ARTIFACT_URI = "tdds.artifact_uri"  # where the stage's artifact lives, as a URI (s3://... or file://...)
TAG_ARTIFACT_KEY = "tdds.artifact_key"  # the artifact's key under the output root (portable across machines)
TAG_NOTE = "mlflow.note.content"        # the run's description in the MLflow UI (Markdown)
TAG_SELECTION_SHA256 = "tdds.selection_sha256"  # SHA-256 of the selection's indices.npy
TAG_SELECTION_URI = "tdds.selection_uri"        # where the selection a coreset run trained on lives
TAG_PARENT_RUN = "mlflow.parentRunId"   # MLflow's own nesting tag

# ---------------------------------------------------------------- stage values of TAG_STAGE
STAGE_PIPELINE = "pipeline"
STAGE_TRAIN_FULL = "train-full"
STAGE_SCORE = "score"
STAGE_SELECT = "select"
STAGE_CORESET = "coreset"
STAGE_EVALUATE = "evaluate"   # cross-architecture coreset training
STAGE_REPORT = "report"

# ---------------------------------------------------------------- metrics
METRIC_FINAL_ACC = "final_acc"      # test accuracy after the last epoch, percent (0..100)
METRIC_BEST_ACC = "best_acc"        # best test accuracy over epochs, percent (0..100)
METRIC_NOISY_KEPT = "noisy_kept"    # fraction (0..1) of the kept samples whose label/image was corrupted
METRIC_NUM_TRAIN = "num_train"      # training samples used
METRIC_ITERATIONS = "iterations"    # optimizer steps
METRIC_WALL_S = "wall_s"            # wall-clock seconds of the stage

MAX_PARAM_VALUE_LENGTH = 6000       # MLflow's limit (mlflow.utils.validation.MAX_PARAM_VAL_LENGTH)
MAX_TAG_VALUE_LENGTH = 8000         # MLflow's limit (mlflow.utils.validation.MAX_TAG_VAL_LENGTH)
MAX_PARAM_KEY_LENGTH = 250
MAX_DIGEST_LENGTH = 36              # MLflow's dataset digest column
RUN_STATUSES = ("RUNNING", "SCHEDULED", "FINISHED", "FAILED", "KILLED")   # MLflow's run states
END_STATUSES = ("FINISHED", "FAILED", "KILLED")
SEARCH_PAGE_SIZE = 1000             # runs per search request (find_runs pages beyond it)


# ---------------------------------------------------------------- names
def run_name(stage: str, *, method: Optional[str] = None, rate: Optional[float] = None,
             arch: Optional[str] = None, seed: Optional[int] = None) -> str:
    """Run name that lines runs up in MLflow's compare view: ``coreset/tdds/p0.70/resnet18/s42``,
    ``score/tdds``, ``train-full/resnet18/s42``."""
    parts = [stage]
    if method is not None:
        parts.append(str(method))
    if rate is not None:
        parts.append(f"p{format_rate(rate)}")
    if arch is not None:
        parts.append(str(arch))
    if seed is not None:
        parts.append(f"s{seed}")
    return "/".join(parts)


def run_key(name: str, fingerprint: str, params: Mapping[str, Any]) -> str:
    """Dedup key for :meth:`Tracker.start_run`: the run name, the dataset fingerprint and a digest of
    everything that changes the result (``params``). The same work gets the same key."""
    from .config import config_digest

    return f"{name}|{str(fingerprint)[:12]}|{config_digest(dict(params))}"


def run_params(*, method: Optional[str] = None, label: Optional[str] = None,
               method_params: Optional[Mapping[str, Any]] = None, rate: Optional[float] = None,
               **fields: Any) -> dict[str, Any]:
    """The params every stage logs the same way, so one filter finds a method's runs at every stage
    (``params.method = 'tdds'``): ``method`` (the registered name), ``method_label`` (the table's row
    name, e.g. ``tdds[T=6,W=3]``), each method hyperparameter as ``method.<name>``, ``rate`` as
    :func:`format_rate` (the form of the ``tdds.rate`` tag), and ``fields`` (seed, arch, epochs, lr,
    weighting, ...) as given; None values are left out."""
    out: dict[str, Any] = {}
    if method is not None:
        out["method"] = method
        out["method_label"] = label or method
    for k, v in (method_params or {}).items():
        out[f"method.{k}"] = v
    if rate is not None:
        out["rate"] = format_rate(rate)
    out.update({k: v for k, v in fields.items() if v is not None})
    return out


def artifact_tags(uri: str, key: str) -> dict[str, str]:
    """Tags naming a stage's artifact portably: its store URI (``s3://...``, or ``file://...`` for a
    local output) and its key under the output root."""
    return {TAG_ARTIFACT_URI: uri if is_remote(uri) or "://" in uri else Path(uri).absolute().as_uri(),
            TAG_ARTIFACT_KEY: key}


def metric_name(*parts: Any) -> str:
    """A metric key MLflow accepts (letters, digits, ``_ - . / :`` and spaces) from name parts:
    ``metric_name("final_acc", "tdds[T=6]", "p0.70")`` = ``final_acc/tdds_T_6/p0.70``."""
    import re

    return "/".join(re.sub(r"[^\w.\-: ]+", "_", str(p)).strip("_") for p in parts if p not in (None, ""))[:MAX_PARAM_KEY_LENGTH]


def _check_key(key: str) -> str:
    if not key or any(c in key for c in "'\"\\\n\r") or len(key) > 5000:
        raise TrackingError(f"invalid run key {key!r}: use letters, digits and / | . - _ (no quotes or backslashes)")
    return key


@functools.lru_cache(maxsize=1)
def git_sha() -> Optional[str]:
    """The code's git commit: ``$TDDS_GIT_SHA`` or ``git rev-parse HEAD`` next to this package."""
    env = os.environ.get("TDDS_GIT_SHA")
    if env:
        return env
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent,
                             capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    sha = out.stdout.strip()
    return sha if out.returncode == 0 and len(sha) >= 7 else None


def code_version() -> str:
    sha = git_sha()
    return f"{__version__}+g{sha[:10]}" if sha else __version__


def flatten_params(params: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested dicts -> dotted keys; values as strings (lists/dicts as JSON), truncated to MLflow's
    6000-character limit (a truncated value ends with ``...``)."""
    out: dict[str, str] = {}
    for k, v in params.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, Mapping) and v:
            out.update(flatten_params(v, key))
            continue
        if isinstance(v, str):
            s = v
        elif isinstance(v, (bool, int, float)) or v is None:
            s = str(v)
        else:
            try:
                s = json.dumps(v, sort_keys=True, default=str)
            except (TypeError, ValueError):
                s = str(v)
        if len(s) > MAX_PARAM_VALUE_LENGTH:
            s = s[:MAX_PARAM_VALUE_LENGTH - 3] + "..."
        out[key[:MAX_PARAM_KEY_LENGTH]] = s
    return out


# ---------------------------------------------------------------- interface
@dataclass
class RunHandle:
    """A run as the caller sees it. ``reused``: a FINISHED run found by key (read-only)."""

    id: str
    name: str
    key: Optional[str] = None
    reused: bool = False
    parent_id: Optional[str] = None
    experiment_id: Optional[str] = None
    tags: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class RunRecord:
    """A stored run as read back: ``start_time`` in ms since the epoch, ``metrics`` the latest values."""

    id: str
    name: str
    status: str
    start_time: int
    parent_id: Optional[str] = None
    tags: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)


def _check_status(status: str, allowed: Sequence[str] = RUN_STATUSES) -> str:
    if status not in allowed:
        raise TrackingError(f"run status {status!r} is not one of {', '.join(allowed)}; pass one of those (upper case)")
    return status


def _check_order(order: str) -> str:
    if order not in ("newest", "oldest"):
        raise TrackingError(f"run order {order!r} is unknown; pass order='newest' or order='oldest'")
    return order


@runtime_checkable
class Tracker(Protocol):
    """What the stages and the grid call. Log calls go to the innermost active run (the innermost
    ``start_run`` or ``attach`` block)."""

    enabled: bool

    def start_run(self, name: str, *, parent: "RunHandle | str | None" = None,
                  tags: Optional[Mapping[str, Any]] = None,
                  key: Optional[str] = None,
                  system_metrics: bool = False) -> contextlib.AbstractContextManager[RunHandle]: ...
    def log_params(self, params: Mapping[str, Any]) -> None: ...
    def log_table(self, data: Mapping[str, Sequence[Any]], name: str) -> None: ...
    def set_description(self, markdown: str) -> None: ...
    def log_model(self, model: Any, name: str = "model", *, registered_name: Optional[str] = None) -> Optional[str]: ...
    def log_metrics(self, metrics: Mapping[str, float], step: Optional[int] = None) -> None: ...
    def log_artifact(self, path: str | os.PathLike, artifact_path: Optional[str] = None) -> None: ...
    def log_dict(self, obj: Any, name: str) -> None: ...
    def log_figure(self, fig: Any, name: str) -> None: ...
    def log_input_dataset(self, name: str, digest: str, source: str, context: str = "train",
                          tags: Optional[Mapping[str, str]] = None) -> None: ...
    def set_tags(self, tags: Mapping[str, Any]) -> None: ...
    def find_finished_run(self, key: str) -> Optional[str]: ...
    def has_finished_run(self, key: str) -> bool: ...
    def find_runs(self, *, tags: Mapping[str, str] = {}, status: Optional[str] = None,
                  max_results: int = 1000, order: str = "newest") -> list[RunRecord]: ...
    def get_run(self, run_id: str) -> RunRecord: ...
    def create_run(self, name: str, *, tags: Optional[Mapping[str, Any]] = None,
                   parent: Optional[str] = None) -> str: ...
    def attach(self, run_id: str) -> contextlib.AbstractContextManager[RunHandle]: ...
    def terminate(self, run_id: str, status: str = "FINISHED") -> None: ...
    @property
    def identity(self) -> str: ...
    @property
    def active_run(self) -> Optional[RunHandle]: ...


class _RunStack(threading.local):
    def __init__(self) -> None:
        self.runs: list[RunHandle] = []


class NullTracker:
    """Tracks nothing (``tracking.enabled: false``); runs still nest so callers need no branches."""

    enabled = False

    def __init__(self) -> None:
        self._stack = _RunStack()
        self._n = 0
        self._created: dict[str, RunRecord] = {}

    @contextlib.contextmanager
    def start_run(self, name: str, *, parent: "RunHandle | str | None" = None,
                  tags: Optional[Mapping[str, Any]] = None, key: Optional[str] = None,
                  system_metrics: bool = False) -> Iterator[RunHandle]:
        self._n += 1
        par = parent.id if isinstance(parent, RunHandle) else parent
        if par is None and self._stack.runs:
            par = self._stack.runs[-1].id
        run = RunHandle(id=f"null-{self._n}", name=name, key=key, parent_id=par)
        self._stack.runs.append(run)
        try:
            yield run
        finally:
            self._stack.runs.pop()

    @property
    def active_run(self) -> Optional[RunHandle]:
        return self._stack.runs[-1] if self._stack.runs else None

    def log_params(self, params: Mapping[str, Any]) -> None: pass
    def log_table(self, data: Mapping[str, Sequence[Any]], name: str) -> None: pass
    def set_description(self, markdown: str) -> None: pass
    def log_model(self, model: Any, name: str = "model", *, registered_name: Optional[str] = None) -> Optional[str]:
        return None
    def log_metrics(self, metrics: Mapping[str, float], step: Optional[int] = None) -> None: pass
    def log_artifact(self, path: str | os.PathLike, artifact_path: Optional[str] = None) -> None: pass
    def log_dict(self, obj: Any, name: str) -> None: pass
    def log_figure(self, fig: Any, name: str) -> None: pass
    def log_input_dataset(self, name: str, digest: str, source: str, context: str = "train",
                          tags: Optional[Mapping[str, str]] = None) -> None: pass
    def set_tags(self, tags: Mapping[str, Any]) -> None: pass
    def find_finished_run(self, key: str) -> Optional[str]: return None
    def has_finished_run(self, key: str) -> bool: return False

    @property
    def identity(self) -> str:
        """``"none"``: nothing is stored."""
        return "none"

    def find_runs(self, *, tags: Mapping[str, str] = {}, status: Optional[str] = None,
                  max_results: int = 1000, order: str = "newest") -> list[RunRecord]:
        """Always empty (nothing is stored); the arguments are still checked."""
        if status is not None:
            _check_status(status)
        _check_order(order)
        return []

    def create_run(self, name: str, *, tags: Optional[Mapping[str, Any]] = None,
                   parent: Optional[str] = None) -> str:
        """A ``null-...`` id, known to :meth:`get_run` of this instance (RUNNING until terminated)."""
        self._n += 1
        rid = f"null-{self._n}"
        self._created[rid] = RunRecord(rid, name, "RUNNING", int(time.time() * 1000), parent,
                                       {str(k): str(v) for k, v in (tags or {}).items() if v is not None})
        return rid

    def get_run(self, run_id: str) -> RunRecord:
        """A run made by :meth:`create_run` of this instance; any other id is a TrackingError."""
        try:
            return self._created[run_id]
        except KeyError:
            raise TrackingError(f"run {run_id!r} does not exist: tracking is off (tracking.enabled: false), "
                                "nothing is stored; enable tracking to read runs back") from None

    @contextlib.contextmanager
    def attach(self, run_id: str) -> Iterator[RunHandle]:
        """Nest log calls under ``run_id`` (they do nothing)."""
        rec = self._created.get(run_id)
        run = RunHandle(id=run_id, name=rec.name if rec else "", parent_id=rec.parent_id if rec else None)
        self._stack.runs.append(run)
        try:
            yield run
        finally:
            self._stack.runs.pop()

    def terminate(self, run_id: str, status: str = "FINISHED") -> None:
        _check_status(status, END_STATUSES)
        rec = self._created.get(run_id)
        if rec is not None:
            self._created[run_id] = dataclasses.replace(rec, status=status)


# ---------------------------------------------------------------- MLflow
@contextlib.contextmanager
def _file_lock(path: Optional[Path]):
    """An exclusive ``flock`` on ``path`` for the block (no-op for None or where flock is missing)."""
    if path is None:
        yield
        return
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


class MlflowTracker:
    """MLflow through ``MlflowClient`` with explicit run ids (no global active-run state).

    ``tracking_uri``: ``sqlite:///path/mlflow.db`` (no server) or ``http(s)://host:port``. An HTTP
    server is probed on ``/health`` first (``connect_retries`` attempts, ``connect_timeout_s`` each),
    so an unreachable server fails in seconds with a TrackingError. MLflow's own HTTP retries and
    timeout are bounded too (``MLFLOW_HTTP_REQUEST_MAX_RETRIES`` / ``..._TIMEOUT`` /
    ``..._BACKOFF_FACTOR``, set in the environment only when the user has not set them).

    ``artifact_location`` is used only when the experiment is created here (default: the server's
    or the store's own; for the SQLite default :func:`make_tracker` passes ``<output>/mlartifacts``).
    ``create_experiment=False`` (readers such as the report): a missing experiment is a TrackingError
    that lists the experiments the store has.

    ``client`` (the ``MlflowClient``) is internal: other modules use the methods below.
    """

    enabled = True
    _page_size = SEARCH_PAGE_SIZE   # runs per search request in find_runs
    system_metrics_interval_s = 10.0   # seconds between system-metric samples (start_run(system_metrics=True))

    def __init__(self, tracking_uri: str, experiment: str, *, default_tags: Optional[Mapping[str, Any]] = None,
                 artifact_location: Optional[str] = None, connect_retries: int = 3, connect_timeout_s: float = 3.0,
                 http_retries: int = 2, http_timeout_s: int = 30, create_experiment: bool = True):
        if not tracking_uri:
            raise TrackingError("no MLflow tracking URI; set tracking.uri or MLFLOW_TRACKING_URI, or use the SQLite default")
        self.tracking_uri = tracking_uri
        self.experiment_name = experiment
        self.default_tags = {k: str(v) for k, v in (default_tags or {}).items() if v is not None}
        self._stack = _RunStack()
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", str(http_retries))
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(http_timeout_s))
        if tracking_uri.startswith(("http://", "https://")):
            _probe_server(tracking_uri, connect_retries, connect_timeout_s)
        lock = None
        if tracking_uri.startswith("sqlite:///"):
            db = tracking_uri[len("sqlite:///"):]
            if db and not db.startswith(":memory:"):
                Path(db).expanduser().parent.mkdir(parents=True, exist_ok=True)
                lock = Path(db).expanduser().with_name(Path(db).name + ".lock")
        try:
            from mlflow import MlflowClient
        except ImportError as e:  # pragma: no cover - mlflow is a dependency
            raise TrackingError("MLflow tracking needs mlflow: pip install mlflow (or set tracking.enabled: false)") from e
        # two processes opening a new SQLite store at once both try to create its tables (and the
        # second fails): the first to take the lock creates them, the other then finds them
        with _file_lock(lock):
            self.client = MlflowClient(tracking_uri=tracking_uri)
            self.experiment_id = self._ensure_experiment(experiment, artifact_location, create_experiment)

    def __repr__(self) -> str:
        return f"MlflowTracker({self.uri_label!r}, experiment={self.experiment_name!r})"

    @property
    def uri_label(self) -> str:
        return redact_url(self.tracking_uri)

    @property
    def identity(self) -> str:
        """Where the runs live, stable across processes: ``sqlite:<resolved db path>#<experiment>``
        (relative paths and symlinks resolved), ``<URL without credentials>#<experiment>`` for a server."""
        return tracker_identity(self.tracking_uri, self.experiment_name)

    # -- plumbing --
    def _call(self, what: str, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except TrackingError:
            raise
        except Exception as e:  # noqa: BLE001 - MlflowException, requests errors, sqlalchemy errors
            msg = str(e).splitlines()[0] if str(e) else type(e).__name__
            if len(msg) > 400:
                msg = msg[:397] + "..."
            if getattr(e, "error_code", None) == "RESOURCE_DOES_NOT_EXIST":
                raise TrackingError(
                    f"MLflow {what} failed at {self.uri_label}: {msg}; check the run id and that tracking.uri / "
                    "MLFLOW_TRACKING_URI name the store the run was logged to."
                ) from None
            raise TrackingError(
                f"MLflow {what} failed at {self.uri_label}: {type(e).__name__}: {msg}; check that the tracking "
                "server is up (or the SQLite file is writable) and tracking.uri / MLFLOW_TRACKING_URI."
            ) from None

    def _ensure_experiment(self, name: str, artifact_location: Optional[str], create: bool = True) -> str:
        exp = self._call("experiment lookup", self.client.get_experiment_by_name, name)
        if exp is None and not create:
            found = self._call("experiment listing", self.client.search_experiments, max_results=50)
            names = ", ".join(e.name for e in found) or "none"
            raise TrackingError(
                f"MLflow experiment {name!r} not found at {self.uri_label} (found: {names}); pass --experiment / "
                "tracking.experiment (default tdds-<dataset>) or the tracking URI the runs were logged to."
            )
        if exp is None:
            try:
                return self._call("experiment creation", self.client.create_experiment, name,
                                  artifact_location=artifact_location)
            except TrackingError:  # created concurrently by another process?
                exp = self._call("experiment lookup", self.client.get_experiment_by_name, name)
                if exp is None:
                    raise
        if exp.lifecycle_stage == "deleted":
            raise TrackingError(
                f"MLflow experiment {name!r} at {self.uri_label} is deleted; restore it "
                f"(mlflow experiments restore --experiment-id {exp.experiment_id}) or set tracking.experiment."
            )
        return exp.experiment_id

    def _current(self) -> Optional[RunHandle]:
        if not self._stack.runs:
            raise TrackingError("no active run: call the log functions inside `with tracker.start_run(...)`")
        run = self._stack.runs[-1]
        return None if run.reused else run

    @property
    def active_run(self) -> Optional[RunHandle]:
        return self._stack.runs[-1] if self._stack.runs else None

    # -- runs --
    @contextlib.contextmanager
    def start_run(self, name: str, *, parent: "RunHandle | str | None" = None,
                  tags: Optional[Mapping[str, Any]] = None, key: Optional[str] = None,
                  system_metrics: bool = False) -> Iterator[RunHandle]:
        """A new run (see the module docstring); ``system_metrics``: sample CPU, memory, disk, network
        (and GPU with pynvml) into ``system/*`` metrics while it runs (every ``system_metrics_interval_s``)."""
        parent_id = parent.id if isinstance(parent, RunHandle) else parent
        if parent_id is None and self._stack.runs:
            parent_id = self._stack.runs[-1].id
        if key is not None:
            _check_key(key)
            found = self.find_finished_run(key)
            if found is not None:
                log.info("MLflow run %s (%s) finished earlier; reusing it", name, found)
                handle = RunHandle(id=found, name=name, key=key, reused=True, parent_id=parent_id,
                                   experiment_id=self.experiment_id)
                self._stack.runs.append(handle)
                try:
                    yield handle
                finally:
                    self._stack.runs.pop()
                return
        all_tags = dict(self.default_tags)
        all_tags.update({k: str(v) for k, v in (tags or {}).items() if v is not None})
        if key is not None:
            all_tags[TAG_KEY] = key
        if parent_id is not None:
            all_tags[TAG_PARENT_RUN] = parent_id
        run = self._call("run creation", self.client.create_run, self.experiment_id, run_name=name, tags=all_tags)
        handle = RunHandle(id=run.info.run_id, name=name, key=key, parent_id=parent_id,
                           experiment_id=self.experiment_id, tags=all_tags)
        self._stack.runs.append(handle)
        status = "FINISHED"
        monitor = self._system_monitor(handle.id) if system_metrics else None
        try:
            yield handle
        except KeyboardInterrupt:
            status = "KILLED"
            raise
        except BaseException:
            status = "FAILED"
            raise
        finally:
            self._stack.runs.pop()
            if monitor is not None:
                try:
                    monitor.finish()
                except Exception as e:  # noqa: BLE001 - system metrics never fail a run
                    log.warning("system metrics of run %s: %s", handle.id, e)
            try:
                self._call("run termination", self.client.set_terminated, handle.id, status)
            except TrackingError as e:
                if status == "FINISHED":
                    raise
                log.warning("%s", e)

    def find_finished_run(self, key: str) -> Optional[str]:
        """Id of the newest FINISHED run of this experiment tagged ``tdds.key = key``, else None."""
        runs = self.find_runs(tags={TAG_KEY: _check_key(key)}, status="FINISHED", max_results=1)
        return runs[0].id if runs else None

    def has_finished_run(self, key: str) -> bool:
        """Whether a FINISHED run of this experiment carries ``tdds.key = key``."""
        return self.find_finished_run(key) is not None

    def find_runs(self, *, tags: Mapping[str, str] = {}, status: Optional[str] = None,
                  max_results: int = 1000, order: str = "newest") -> list[RunRecord]:
        """Runs of this experiment whose tags equal ``tags`` (all of them) and whose status is
        ``status`` (any when None), newest (or oldest) first by start time, at most ``max_results``
        (any number: fetched in pages of 1000). Deleted runs are left out."""
        _check_order(order)
        if max_results < 1:
            raise TrackingError(f"max_results must be >= 1, got {max_results}")
        clauses = [f"tags.`{_filter_key(k)}` = '{_filter_value(k, v)}'" for k, v in tags.items()]
        if status is not None:
            clauses.append(f"attributes.status = '{_check_status(status)}'")
        flt = " and ".join(clauses)
        order_by = ["attributes.start_time " + ("DESC" if order == "newest" else "ASC")]
        out: list[RunRecord] = []
        token: Optional[str] = None
        while len(out) < max_results:
            page = self._call("run search", self.client.search_runs, [self.experiment_id], filter_string=flt,
                              max_results=min(self._page_size, max_results - len(out)), order_by=order_by,
                              page_token=token)
            out.extend(_record(r) for r in page)
            token = page.token
            if not token or not page:
                break
        return out

    def get_run(self, run_id: str) -> RunRecord:
        """The run ``run_id`` (any experiment of this store); a TrackingError when it does not exist."""
        return _record(self._call("run read", self.client.get_run, _check_run_id(run_id)))

    def create_run(self, name: str, *, tags: Optional[Mapping[str, Any]] = None,
                   parent: Optional[str] = None) -> str:
        """Create a run that stays RUNNING after this call (e.g. a pipeline's parent run, ended by another
        process with :meth:`terminate`). Gets ``default_tags`` like :meth:`start_run`; a child of
        ``parent`` when given (never of the active run). Returns its id."""
        all_tags = dict(self.default_tags)
        all_tags.update({str(k): str(v) for k, v in (tags or {}).items() if v is not None})
        if parent is not None:
            all_tags[TAG_PARENT_RUN] = _check_run_id(parent)
        run = self._call("run creation", self.client.create_run, self.experiment_id, run_name=name, tags=all_tags)
        return run.info.run_id

    @contextlib.contextmanager
    def attach(self, run_id: str) -> Iterator[RunHandle]:
        """Make the existing run ``run_id`` the active run for the log calls in the block (runs started
        inside become its children). The run is not ended on exit, whatever happens in the block."""
        run = self._call("run read", self.client.get_run, _check_run_id(run_id))
        rec, exp_id = _record(run), run.info.experiment_id
        if exp_id != self.experiment_id:
            raise TrackingError(
                f"MLflow run {rec.id} belongs to experiment id {exp_id}, not to {self.experiment_name!r} "
                f"(id {self.experiment_id}) at {self.uri_label}; use the tracking.experiment the run was created with."
            )
        handle = RunHandle(id=rec.id, name=rec.name, key=rec.tags.get(TAG_KEY), parent_id=rec.parent_id,
                           experiment_id=exp_id, tags=dict(rec.tags))
        self._stack.runs.append(handle)
        try:
            yield handle
        finally:
            self._stack.runs.pop()

    def terminate(self, run_id: str, status: str = "FINISHED") -> None:
        """End the run ``run_id`` with ``status`` (FINISHED, FAILED or KILLED)."""
        _check_status(status, END_STATUSES)
        self._call("run termination", self.client.set_terminated, _check_run_id(run_id), status)

    # -- logging --
    def log_params(self, params: Mapping[str, Any]) -> None:
        run = self._current()
        if run is None:
            return
        from mlflow.entities import Param

        flat = flatten_params(params)
        if not flat:
            return
        existing = self._call("run read", self.client.get_run, run.id).data.params
        changed = {k: (existing[k], v) for k, v in flat.items() if k in existing and existing[k] != v}
        if changed:
            k, (old, new) = next(iter(changed.items()))
            raise TrackingError(
                f"param {k!r} of MLflow run {run.name} ({run.id}) is already {old[:80]!r}, cannot set {new[:80]!r}: "
                "params are immutable; start a new run (different key) for different settings."
            )
        todo = [Param(k, v) for k, v in sorted(flat.items()) if k not in existing]
        for i in range(0, len(todo), 100):
            self._call("log_params", self.client.log_batch, run.id, params=todo[i:i + 100])

    def log_metrics(self, metrics: Mapping[str, float], step: Optional[int] = None) -> None:
        run = self._current()
        if run is None:
            return
        from mlflow.entities import Metric

        ts = int(time.time() * 1000)
        items = []
        for k, v in metrics.items():
            if v is None:
                continue
            try:
                fv = float(v)
            except (TypeError, ValueError):
                raise TrackingError(f"metric {k!r} = {v!r} is not a number; log it as a param or tag instead") from None
            items.append(Metric(str(k), fv, ts, int(step or 0)))
        for i in range(0, len(items), 1000):
            self._call("log_metrics", self.client.log_batch, run.id, metrics=items[i:i + 1000])

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        run = self._current()
        if run is None:
            return
        from mlflow.entities import RunTag

        items = [RunTag(str(k), str(v)) for k, v in tags.items() if v is not None]
        for i in range(0, len(items), 100):
            self._call("set_tags", self.client.log_batch, run.id, tags=items[i:i + 100])

    def log_artifact(self, path: str | os.PathLike, artifact_path: Optional[str] = None) -> None:
        run = self._current()
        if run is None:
            return
        p = Path(path)
        if p.is_dir():
            self._call("log_artifacts", self.client.log_artifacts, run.id, str(p), artifact_path)
        elif p.is_file():
            self._call("log_artifact", self.client.log_artifact, run.id, str(p), artifact_path)
        else:
            raise ArtifactError(f"cannot log {p} to MLflow: it does not exist")

    def log_dict(self, obj: Any, name: str) -> None:
        run = self._current()
        if run is None:
            return
        self._call("log_dict", self.client.log_dict, run.id, json.loads(json.dumps(obj, default=str)), name)

    def log_figure(self, fig: Any, name: str) -> None:
        run = self._current()
        if run is None:
            return
        self._call("log_figure", self.client.log_figure, run.id, fig, name)

    def read_artifact(self, run_id: str, path: str) -> bytes:
        """The bytes of the artifact ``path`` of run ``run_id`` (TrackingError when it has none)."""
        import tempfile

        with tempfile.TemporaryDirectory(prefix="tdds-artifact-") as tmp, _quiet("mlflow"):
            local = self._call(f"artifact download of {path}", self.client.download_artifacts, _check_run_id(run_id),
                               path, tmp)
            return Path(local).read_bytes()

    def log_table(self, data: Mapping[str, Sequence[Any]], name: str) -> None:
        """A table (column -> values, equal lengths) as ``name`` (a ``.json`` artifact MLflow's UI
        shows as a table and ``mlflow.load_table`` reads back)."""
        run = self._current()
        if run is None:
            return
        lengths = {k: len(v) for k, v in data.items()}
        if len(set(lengths.values())) > 1:
            raise TrackingError(f"table {name}: columns of different lengths {lengths}; pass one value per row in every column")
        clean = {str(k): json.loads(json.dumps(list(v), default=str)) for k, v in data.items()}
        self._call("log_table", self.client.log_table, run.id, clean, name)

    def set_description(self, markdown: str) -> None:
        """The active run's description in the MLflow UI (Markdown; cut to MLflow's 8000 characters)."""
        if len(markdown) > MAX_TAG_VALUE_LENGTH:
            markdown = markdown[:MAX_TAG_VALUE_LENGTH - 40] + "\n\n(cut; the full text is an artifact)"
        self.set_tags({TAG_NOTE: markdown})

    def log_model(self, model: Any, name: str = "model", *, registered_name: Optional[str] = None) -> Optional[str]:
        """``mlflow.pytorch.log_model`` of ``model`` (a ``torch.nn.Module``) into the active run, as a
        pickled model with the running torch as its requirement (no inference of the environment);
        registered as a new version of ``registered_name`` when given. Returns the model URI."""
        run = self._current()
        if run is None:
            return None
        import mlflow
        import mlflow.pytorch
        import torch

        with _FLUENT_LOCK, _fluent_scope(self.tracking_uri, self.experiment_id), warnings.catch_warnings(), \
                _quiet("mlflow"):
            warnings.simplefilter("ignore")
            info = self._call("log_model", mlflow.pytorch.log_model, model, name=name, run_id=run.id,
                              serialization_format="pickle",
                              pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"],
                              registered_model_name=registered_name)
        return info.model_uri

    def _system_monitor(self, run_id: str) -> Any:
        """A started ``SystemMetricsMonitor`` for ``run_id`` (None when it cannot start, e.g. no psutil)."""
        try:
            from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

            with _quiet("mlflow"):
                monitor = SystemMetricsMonitor(run_id, sampling_interval=self.system_metrics_interval_s,
                                               tracking_uri=self.tracking_uri)
                monitor.start()
            return monitor
        except Exception as e:  # noqa: BLE001 - optional
            log.warning("system metrics are off for run %s: %s", run_id, e)
            return None

    def log_input_dataset(self, name: str, digest: str, source: str, context: str = "train",
                          tags: Optional[Mapping[str, str]] = None) -> None:
        """Record a dataset the run read (``mlflow.log_input``'s entity, through the client): an
        ``mlflow.data`` MetaDataset named ``name`` whose digest is ``digest`` (the dataset
        fingerprint; MLflow keeps 36 characters, the input tag ``tdds.digest`` keeps it all)."""
        run = self._current()
        if run is None:
            return
        from mlflow.entities import DatasetInput, InputTag
        from mlflow.data.meta_dataset import MetaDataset

        ds = MetaDataset(_dataset_source(source), name=name, digest=str(digest)[:MAX_DIGEST_LENGTH])
        input_tags = [InputTag("mlflow.data.context", context), InputTag("tdds.digest", str(digest))]
        input_tags += [InputTag(str(k), str(v)) for k, v in (tags or {}).items()]
        self._call("log_input", self.client.log_inputs, run.id,
                   datasets=[DatasetInput(ds._to_mlflow_entity(), tags=input_tags)])


_FLUENT_LOCK = threading.Lock()


@contextlib.contextmanager
def _fluent_scope(tracking_uri: str, experiment_id: str) -> Iterator[None]:
    """MLflow's global tracking URI and experiment set for a fluent-only call (``log_model``), then
    put back (``$MLFLOW_TRACKING_URI`` too, which MLflow rewrites): the model lands in this tracker's
    store and experiment, not the default's."""
    from mlflow.tracking import fluent
    from mlflow.tracking._tracking_service import utils as tracking_utils

    prev_env = os.environ.get("MLFLOW_TRACKING_URI")
    prev_exp = getattr(fluent, "_active_experiment_id", None)
    fluent._active_experiment_id = experiment_id
    try:
        with tracking_utils._use_tracking_uri(tracking_uri):
            yield
    finally:
        fluent._active_experiment_id = prev_exp
        if prev_env is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = prev_env


@contextlib.contextmanager
def _quiet(name: str, level: int = logging.WARNING) -> Iterator[None]:
    """Raise the level of logger ``name`` for the block (MLflow's INFO chatter)."""
    lg = logging.getLogger(name)
    old = lg.level
    lg.setLevel(max(level, old))
    try:
        yield
    finally:
        lg.setLevel(old)


def _filter_key(key: str) -> str:
    if not key or any(c in key for c in "`'\"\n\r"):
        raise TrackingError(f"tag name {key!r} cannot be searched in MLflow (backquote, quote or newline); "
                            "use letters, digits and . _ - / in tag names")
    return key


def _filter_value(key: str, value: Any) -> str:
    v = str(value)
    if any(c in v for c in "'\"\n\r"):
        raise TrackingError(f"tag {key}={v!r} cannot be searched in MLflow: the value contains a quote or a newline; "
                            "use values without quotes (e.g. rename the dataset root or the method label)")
    return v


def _check_run_id(run_id: str) -> str:
    if not run_id or not isinstance(run_id, str) or any(c in run_id for c in "'\"/\\ \n"):
        raise TrackingError(f"invalid MLflow run id {run_id!r}: pass the id a run was created with (32 hex digits)")
    return run_id


def _record(run: Any) -> RunRecord:
    """An ``mlflow.entities.Run`` -> :class:`RunRecord`."""
    info, data = run.info, run.data
    tags = dict(data.tags)
    return RunRecord(id=info.run_id, name=info.run_name or tags.get("mlflow.runName", ""), status=info.status,
                     start_time=int(info.start_time or 0), parent_id=tags.get(TAG_PARENT_RUN), tags=tags,
                     params=dict(data.params), metrics={k: float(v) for k, v in data.metrics.items()})


def tracker_identity(tracking_uri: str, experiment: str) -> str:
    """:attr:`MlflowTracker.identity` without connecting: ``sqlite:<resolved db path>#<experiment>``
    or ``<URL without credentials>#<experiment>`` (a disabled tracker's identity is ``"none"``)."""
    return f"{_store_identity(tracking_uri)}#{experiment}"


def _store_identity(uri: str) -> str:
    """The tracking store of ``uri`` as a stable string: SQLite/file stores by resolved path, anything
    else (a server, a database URL) by its URL without credentials and trailing slash."""
    if uri.startswith("sqlite:///"):
        db = uri[len("sqlite:///"):].split("?", 1)[0]
        if not db or db.startswith(":memory:"):
            return "sqlite::memory:"
        return "sqlite:" + str(Path(db).resolve())
    if uri.startswith("file:"):
        from urllib.parse import unquote, urlsplit

        return "file:" + str(Path(unquote(urlsplit(uri).path)).resolve())
    if "://" not in uri:
        return "file:" + str(Path(uri).expanduser().resolve())
    return redact_url(uri).rstrip("/")


def _dataset_source(source: str) -> Any:
    """An ``mlflow.data`` source for a path / s3:// / http(s) URI; any other string is recorded as is."""
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.http_dataset_source import HTTPDatasetSource

    s = str(source)
    if s.startswith(("http://", "https://")):
        return HTTPDatasetSource(s)
    if s.startswith(("s3://", "gs://", "file://", "/")):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                return resolve_dataset_source(s)
            except Exception:  # noqa: BLE001 - fall through to the generic source
                pass
    from mlflow.data.code_dataset_source import CodeDatasetSource

    return CodeDatasetSource(tags={"source": s})


def _probe_server(uri: str, retries: int, timeout_s: float) -> None:
    url = uri.rstrip("/") + "/health"
    last = ""
    for attempt in range(1, max(1, retries) + 1):
        try:
            with urllib.request.urlopen(urllib.request.Request(url, method="GET"), timeout=timeout_s) as r:
                if r.status < 400:
                    return
                last = f"HTTP {r.status}"
        except urllib.error.HTTPError as e:
            if e.code == 403:
                raise TrackingError(
                    f"MLflow server {redact_url(uri)} refused the request (HTTP 403); if it runs behind another host "
                    "name, start it with --allowed-hosts naming that host, and check your credentials "
                    "(MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_TOKEN)."
                ) from None
            if e.code in (401,):
                raise TrackingError(
                    f"MLflow server {redact_url(uri)} asks for authentication (HTTP 401); set "
                    "MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD or MLFLOW_TRACKING_TOKEN."
                ) from None
            if e.code < 500:
                return  # no /health behind this proxy; the API calls will tell
            last = f"HTTP {e.code}"
        except (urllib.error.URLError, OSError) as e:
            last = f"{type(e).__name__}: {getattr(e, 'reason', e)}"
        if attempt < retries:
            time.sleep(0.3 * 2 ** (attempt - 1))
    raise TrackingError(
        f"cannot reach the MLflow tracking server {redact_url(uri)} after {retries} attempts ({last}); start it "
        "(mlflow server --backend-store-uri sqlite:///mlflow.db --host 127.0.0.1 --port 5000) or fix tracking.uri / "
        "MLFLOW_TRACKING_URI (unset both to use the local SQLite file)."
    )


# ---------------------------------------------------------------- factory
def default_tracking_uri(output_root: str) -> str:
    """``sqlite:///<output root>/mlflow.db``; an S3 output root keeps the SQLite file in ``$TDDS_CACHE``
    (a cluster run should name a tracking server instead)."""
    if is_remote(str(output_root)):
        from .storage import cache_root

        return "sqlite:///" + str((cache_root() / "mlflow.db").absolute())
    return "sqlite:///" + str((Path(output_root).expanduser() / "mlflow.db").absolute())


def default_experiment(cfg: Any) -> str:
    return cfg.tracking.experiment or f"tdds-{cfg.data.name}"


def make_tracker(cfg: Any, output_root: Optional[str] = None, *, pipeline_run_id: Optional[str] = None,
                 default_tags: Optional[Mapping[str, Any]] = None) -> "Tracker":
    """The tracker a config asks for.

    ``tracking.enabled: false`` -> :class:`NullTracker`. Otherwise :class:`MlflowTracker` with URI
    ``tracking.uri`` or ``$MLFLOW_TRACKING_URI`` or :func:`default_tracking_uri`, experiment
    ``tracking.experiment`` or ``tdds-<dataset name>``. Every run gets the tags code version, git sha,
    config name and ``pipeline_run_id`` (when given). With the SQLite default the artifacts of a new
    experiment go to ``<output root>/mlartifacts``; with another SQLite file, to ``mlartifacts``
    beside that file (MLflow's own default is ``./mlruns`` of the working directory).
    """
    if not cfg.tracking.enabled:
        return NullTracker()
    output_root = str(output_root or cfg.output)
    uri = cfg.tracking.uri or os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri(output_root)
    artifact_location = None
    if uri.startswith("sqlite:///") and not cfg.tracking.uri and not os.environ.get("MLFLOW_TRACKING_URI"):
        if is_remote(output_root):
            artifact_location = output_root.rstrip("/") + "/mlartifacts"
        else:
            artifact_location = (Path(output_root).expanduser().absolute() / "mlartifacts").as_uri()
    elif uri.startswith("sqlite:///") and uri[len("sqlite:///"):] not in ("", ":memory:"):
        # a SQLite file named by the user: artifacts beside it, not in ./mlruns of wherever this runs
        artifact_location = (Path(uri[len("sqlite:///"):]).expanduser().absolute().parent / "mlartifacts").as_uri()
    tags: dict[str, Any] = {TAG_CODE_VERSION: code_version(), TAG_CONFIG_NAME: cfg.name}
    if git_sha():
        tags[TAG_GIT_SHA] = git_sha()
    if pipeline_run_id:
        tags[TAG_PIPELINE_RUN] = pipeline_run_id
    tags.update(default_tags or {})
    tracker = MlflowTracker(uri, default_experiment(cfg), default_tags=tags, artifact_location=artifact_location)
    tracker.system_metrics_interval_s = float(cfg.tracking.system_metrics_interval_s)
    return tracker


# ---------------------------------------------------------------- helpers for the grid
def log_score_run(tracker: "Tracker", scores: Any, *, method: str, labels: Any = None, images: Any = None,
                  class_names: Optional[Sequence[str]] = None, k: int = 16, bins: int = 50) -> dict[str, float]:
    """Log a score stage into the active run: summary metrics (``score_mean``, ``score_std``,
    ``score_min``, ``score_max``), ``scores/histogram.png`` and, when ``images`` (uint8
    ``[N, C, H, W]``) and ``labels`` are given, ``scores/extremes.png`` with the ``k`` most and least
    important images titled with class name and score (figures from :mod:`tdds_core.report`). Returns
    the summary."""
    import numpy as np

    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 1 or len(s) == 0:
        raise TrackingError(f"scores must be a non-empty 1-D array, got shape {s.shape}")
    finite = s[np.isfinite(s)]
    summary = {
        "score_mean": float(finite.mean()) if len(finite) else float("nan"),
        "score_std": float(finite.std()) if len(finite) else float("nan"),
        "score_min": float(finite.min()) if len(finite) else float("nan"),
        "score_max": float(finite.max()) if len(finite) else float("nan"),
    }
    if not tracker.enabled:
        return summary
    from .report import extremes_grid_figure, score_histogram_figure  # report owns matplotlib

    tracker.log_metrics(summary)
    tracker.log_figure(score_histogram_figure(s, method=method, bins=bins), "scores/histogram.png")
    if images is not None and labels is not None:
        if len(images) != len(s) or len(labels) != len(s):
            raise TrackingError(
                f"images ({len(images)}), labels ({len(labels)}) and scores ({len(s)}) must have the same length N"
            )
        tracker.log_figure(extremes_grid_figure(images, labels, s, class_names=class_names, k=k, method=method),
                           "scores/extremes.png")
    return summary


SELECTION_FILES = ("indices.npy", "ids.txt", "selected.csv", "weights.npy", "manifest.json")


def log_selection(tracker: "Tracker", selection_folder: str | os.PathLike, fingerprint: str, *,
                  dataset_name: str = "dataset", dataset_source: Optional[str] = None,
                  selection_uri: Optional[str] = None) -> dict[str, Any]:
    """Log a selection into the active run: ``selection/{indices.npy, ids.txt, selected.csv,
    weights.npy, manifest.json}`` as artifacts (the folder's checksums are verified first), the training
    dataset as an input (digest = ``fingerprint``, context ``train``) and the selection itself as an
    input (digest = SHA-256 of ``indices.npy``, context ``selection``), plus the tags
    ``tdds.selection_sha256`` and ``tdds.selection_uri``. ``selection_folder`` is a local folder or a
    URI (:func:`tdds_core.storage.local_copy`). Returns ``{"sha256", "num_selected", "manifest"}``."""
    from .io import verify_manifest
    from .storage import local_copy

    uri = selection_uri or str(selection_folder)
    folder = local_copy(str(selection_folder))
    manifest = verify_manifest(folder)
    files = manifest.get("files", {})
    if "indices.npy" not in files:
        raise ArtifactError(f"{folder} is not a selection folder (no indices.npy in its manifest); pass the select stage's output")
    sha = files["indices.npy"]["sha256"]
    out = {"sha256": sha, "num_selected": manifest.get("num_selected"), "manifest": manifest}
    if not tracker.enabled:
        return out
    for name in SELECTION_FILES:
        if (folder / name).is_file():
            tracker.log_artifact(folder / name, "selection")
    tracker.log_input_dataset(dataset_name, fingerprint, dataset_source or f"tdds-dataset:{dataset_name}", context="train")
    label = f"selection:{manifest.get('method', '?')}@p{format_rate(manifest.get('rate'))}" \
        if manifest.get("rate") is not None else f"selection:{manifest.get('method', '?')}"
    tracker.log_input_dataset(label, sha, uri, context="selection", tags={TAG_SELECTION_SHA256: sha})
    tracker.set_tags({TAG_SELECTION_SHA256: sha, TAG_SELECTION_URI: uri})
    return out

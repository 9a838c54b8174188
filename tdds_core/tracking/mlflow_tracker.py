"""MLflow behind the :class:`~tdds_core.tracking.base.Tracker` interface: :class:`MlflowTracker`
(``MlflowClient`` with explicit run ids; a SQLite file or a server). The only module of
:mod:`tdds_core` that imports mlflow, and only inside functions, so ``import tdds_core`` never loads it."""
from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import warnings
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional, Sequence

from ..errors import ArtifactError, TrackingError
from ..names import EXPERIMENT_KIND, TAG_EXPERIMENT_KIND, TAG_KEY, TAG_NOTE, TAG_PARENT_RUN
from ..storage import redact_url
from .base import (END_STATUSES, MAX_DIGEST_LENGTH, MAX_TAG_VALUE_LENGTH, RunHandle, RunRecord, RunStack, check_order,
                   check_status, flatten_params)
from .lookup import check_key, check_run_id, record_of, run_filter, tracker_identity

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None

__all__ = ["MlflowTracker", "SEARCH_PAGE_SIZE"]

log = logging.getLogger(__name__)

SEARCH_PAGE_SIZE = 1000             # runs per search request (find_runs pages beyond it)


@contextlib.contextmanager
def _file_lock(path: Optional[Path]):
    """An exclusive ``flock`` on ``path`` for the block (no-op for None or where flock is missing)."""
    if path is None or fcntl is None:
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
        self._stack = RunStack()
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
                                  artifact_location=artifact_location,
                                  tags={TAG_EXPERIMENT_KIND: EXPERIMENT_KIND})
            except TrackingError:  # created concurrently by another process?
                exp = self._call("experiment lookup", self.client.get_experiment_by_name, name)
                if exp is None:
                    raise
        if exp.lifecycle_stage == "deleted":
            raise TrackingError(
                f"MLflow experiment {name!r} at {self.uri_label} is deleted; restore it "
                f"(mlflow experiments restore --experiment-id {exp.experiment_id}) or set tracking.experiment."
            )
        if create and exp.tags.get(TAG_EXPERIMENT_KIND) is None:
            self._mark_model_training(exp.experiment_id)
        return exp.experiment_id

    def _mark_model_training(self, experiment_id: str) -> None:
        """Tag the experiment as model training (``mlflow.experimentKind``), so the MLflow UI opens on
        runs and charts, not on GenAI traces; a store that refuses says so on the console."""
        try:
            self._call("experiment tag", self.client.set_experiment_tag, experiment_id, TAG_EXPERIMENT_KIND,
                       EXPERIMENT_KIND)
        except TrackingError as e:
            notice(f"the experiment is not marked as model training (the UI may open in GenAI mode): {e}")

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
            check_key(key)
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
                _finish_monitor(monitor, handle.id)
            try:
                self._call("run termination", self.client.set_terminated, handle.id, status)
            except TrackingError as e:
                if status == "FINISHED":
                    raise
                log.warning("%s", e)

    def find_finished_run(self, key: str) -> Optional[str]:
        """Id of the newest FINISHED run of this experiment tagged ``tdds.key = key``, else None."""
        runs = self.find_runs(tags={TAG_KEY: check_key(key)}, status="FINISHED", max_results=1)
        return runs[0].id if runs else None

    def has_finished_run(self, key: str) -> bool:
        """Whether a FINISHED run of this experiment carries ``tdds.key = key``."""
        return self.find_finished_run(key) is not None

    def find_runs(self, *, tags: Mapping[str, str] = {}, status: Optional[str] = None,
                  max_results: int = 1000, order: str = "newest") -> list[RunRecord]:
        """Runs of this experiment whose tags equal ``tags`` (all of them) and whose status is
        ``status`` (any when None), newest (or oldest) first by start time, at most ``max_results``
        (any number: fetched in pages of 1000). Deleted runs are left out."""
        check_order(order)
        if max_results < 1:
            raise TrackingError(f"max_results must be >= 1, got {max_results}")
        flt = run_filter(tags, status)
        order_by = ["attributes.start_time " + ("DESC" if order == "newest" else "ASC")]
        out: list[RunRecord] = []
        token: Optional[str] = None
        while len(out) < max_results:
            page = self._call("run search", self.client.search_runs, [self.experiment_id], filter_string=flt,
                              max_results=min(self._page_size, max_results - len(out)), order_by=order_by,
                              page_token=token)
            out.extend(record_of(r) for r in page)
            token = page.token
            if not token or not page:
                break
        return out

    def get_run(self, run_id: str) -> RunRecord:
        """The run ``run_id`` (any experiment of this store); a TrackingError when it does not exist."""
        return record_of(self._call("run read", self.client.get_run, check_run_id(run_id)))

    def create_run(self, name: str, *, tags: Optional[Mapping[str, Any]] = None,
                   parent: Optional[str] = None) -> str:
        """Create a run that stays RUNNING after this call (e.g. a pipeline's parent run, ended by another
        process with :meth:`terminate`). Gets ``default_tags`` like :meth:`start_run`; a child of
        ``parent`` when given (never of the active run). Returns its id."""
        all_tags = dict(self.default_tags)
        all_tags.update({str(k): str(v) for k, v in (tags or {}).items() if v is not None})
        if parent is not None:
            all_tags[TAG_PARENT_RUN] = check_run_id(parent)
        run = self._call("run creation", self.client.create_run, self.experiment_id, run_name=name, tags=all_tags)
        return run.info.run_id

    @contextlib.contextmanager
    def attach(self, run_id: str) -> Iterator[RunHandle]:
        """Make the existing run ``run_id`` the active run for the log calls in the block (runs started
        inside become its children). The run is not ended on exit, whatever happens in the block."""
        run = self._call("run read", self.client.get_run, check_run_id(run_id))
        rec, exp_id = record_of(run), run.info.experiment_id
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
        check_status(status, END_STATUSES)
        self._call("run termination", self.client.set_terminated, check_run_id(run_id), status)

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
        with tempfile.TemporaryDirectory(prefix="tdds-artifact-") as tmp, _quiet("mlflow"):
            local = self._call(f"artifact download of {path}", self.client.download_artifacts, check_run_id(run_id),
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

    def log_model(self, model: Any, name: str = "model", *, registered_name: Optional[str] = None,
                  metrics: Optional[Mapping[str, float]] = None, step: int = 0,
                  alias: Optional[str] = None) -> Optional[str]:
        """``mlflow.pytorch.log_model`` of ``model`` (a ``torch.nn.Module``) into the active run under
        ``name`` (a logged model of that name), as a pickled model with the running torch as its
        requirement (no inference of the environment). ``metrics`` (the run's final figures, at
        ``step``) are what the model's page shows: they are linked to the model (MLflow would link the
        run's step-0 values, the first epoch's). Registered as a new version of ``registered_name``
        when given, and ``alias`` then points at that version (MLflow's registry aliases; stages are
        deprecated). Returns the model URI."""
        run = self._current()
        if run is None:
            return None
        import mlflow
        import mlflow.pytorch
        import torch
        from mlflow.entities import Metric

        with _FLUENT_LOCK, _fluent_scope(self.tracking_uri, self.experiment_id), warnings.catch_warnings(), \
                _quiet("mlflow"):
            warnings.simplefilter("ignore")
            info = self._call("log_model", mlflow.pytorch.log_model, model, name=name, run_id=run.id,
                              serialization_format="pickle", step=-1,     # no step: link only ``metrics``
                              pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"])
        model_id = getattr(info, "model_id", None)
        if metrics and model_id:
            ts = int(time.time() * 1000)
            items = [Metric(str(k), float(v), ts, int(step), model_id=model_id, run_id=run.id)
                     for k, v in metrics.items() if v is not None]
            self._call("log_model metrics", self.client.log_batch, run.id, metrics=items)
        if registered_name:
            try:        # a registry that refuses costs the registration, not the training run
                with _FLUENT_LOCK, _fluent_scope(self.tracking_uri, self.experiment_id), _quiet("mlflow"):
                    version = mlflow.register_model(info.model_uri, registered_name).version
                if alias:
                    self.client.set_registered_model_alias(registered_name, alias, str(version))
            except Exception as e:  # noqa: BLE001 - MlflowException, requests errors
                notice(f"the model {name!r} was logged but not registered as {registered_name!r} "
                       f"({type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}); register it in the "
                       "MLflow UI, or set tracking.register_model: null")
        return info.model_uri

    def _system_monitor(self, run_id: str) -> Any:
        """A started ``SystemMetricsMonitor`` for ``run_id``; None, with a console line saying why, when
        it cannot start (e.g. psutil missing)."""
        try:
            from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

            with _quiet("mlflow"):
                monitor = SystemMetricsMonitor(run_id, sampling_interval=self.system_metrics_interval_s,
                                               tracking_uri=self.tracking_uri)
                monitor.start()
            monitor._tdds_first_step = monitor._logging_step
            return monitor
        except Exception as e:  # noqa: BLE001 - optional
            notice(f"system metrics are off for run {run_id}: {type(e).__name__}: {e} (pip install psutil; "
                   "or set tracking.system_metrics: false)")
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


def notice(message: str) -> None:
    """A tracking feature that cannot run says so on the console (stderr) and in the log."""
    log.warning("%s", message)
    print(f"tdds: MLflow: {message}", file=sys.stderr, flush=True)


def _finish_monitor(monitor: Any, run_id: str) -> None:
    """Stop ``monitor`` and flush it; a run shorter than one sampling interval still gets one sample
    (MLflow's monitor publishes only after a full interval, so a short run would have none)."""
    try:
        monitor._shutdown_event.set()
        if monitor._process is not None:
            monitor._process.join()
            monitor._process = None
        if monitor._logging_step == getattr(monitor, "_tdds_first_step", 0):
            monitor.collect_metrics()
            monitor.publish_metrics(monitor.aggregate_metrics())
        monitor.mlflow_logger.flush()
    except Exception as e:  # noqa: BLE001 - system metrics never fail a run
        notice(f"system metrics of run {run_id} were not written: {type(e).__name__}: {e}")


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

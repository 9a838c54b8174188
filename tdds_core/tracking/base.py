"""The tracker interface and the trackers that need no store: :class:`Tracker` (what the stages and
runners call), the run objects :class:`RunHandle` / :class:`RunRecord`, :class:`NullTracker`
(``tracking.enabled: false``) and :class:`ParentedTracker` (top-level runs under a given parent)."""
from __future__ import annotations

import contextlib
import dataclasses
import json
import threading
import time
from dataclasses import dataclass, field
from os import PathLike
from typing import Any, Iterator, Mapping, Optional, Protocol, Sequence, runtime_checkable

from ..errors import TrackingError
from ..names import MAX_PARAM_KEY_LENGTH

__all__ = ["Tracker", "RunHandle", "RunRecord", "NullTracker", "ParentedTracker", "flatten_params",
           "RUN_STATUSES", "END_STATUSES", "MAX_PARAM_VALUE_LENGTH", "MAX_TAG_VALUE_LENGTH", "MAX_DIGEST_LENGTH",
           "check_status", "check_order"]

MAX_PARAM_VALUE_LENGTH = 6000       # MLflow's limit (mlflow.utils.validation.MAX_PARAM_VAL_LENGTH)
MAX_TAG_VALUE_LENGTH = 8000         # MLflow's limit (mlflow.utils.validation.MAX_TAG_VAL_LENGTH)
MAX_DIGEST_LENGTH = 36              # MLflow's dataset digest column
RUN_STATUSES = ("RUNNING", "SCHEDULED", "FINISHED", "FAILED", "KILLED")   # MLflow's run states
END_STATUSES = ("FINISHED", "FAILED", "KILLED")


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


def check_status(status: str, allowed: Sequence[str] = RUN_STATUSES) -> str:
    """``status`` when it is one of ``allowed``, else a TrackingError."""
    if status not in allowed:
        raise TrackingError(f"run status {status!r} is not one of {', '.join(allowed)}; pass one of those (upper case)")
    return status


def check_order(order: str) -> str:
    """``order`` when it is ``"newest"`` or ``"oldest"``, else a TrackingError."""
    if order not in ("newest", "oldest"):
        raise TrackingError(f"run order {order!r} is unknown; pass order='newest' or order='oldest'")
    return order


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
    def log_model(self, model: Any, name: str = "model", *, registered_name: Optional[str] = None,
                  metrics: Optional[Mapping[str, float]] = None, step: int = 0,
                  alias: Optional[str] = None) -> Optional[str]: ...
    def log_metrics(self, metrics: Mapping[str, float], step: Optional[int] = None) -> None: ...
    def log_artifact(self, path: str | PathLike, artifact_path: Optional[str] = None) -> None: ...
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


class RunStack(threading.local):
    """The open runs of this thread, innermost last."""

    def __init__(self) -> None:
        self.runs: list[RunHandle] = []


class NullTracker:
    """Tracks nothing (``tracking.enabled: false``); runs still nest so callers need no branches."""

    enabled = False

    def __init__(self) -> None:
        self._stack = RunStack()
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
    def log_model(self, model: Any, name: str = "model", *, registered_name: Optional[str] = None,
                  metrics: Optional[Mapping[str, float]] = None, step: int = 0,
                  alias: Optional[str] = None) -> Optional[str]:
        return None
    def log_metrics(self, metrics: Mapping[str, float], step: Optional[int] = None) -> None: pass
    def log_artifact(self, path: str | PathLike, artifact_path: Optional[str] = None) -> None: pass
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
            check_status(status)
        check_order(order)
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
        check_status(status, END_STATUSES)
        rec = self._created.get(run_id)
        if rec is not None:
            self._created[run_id] = dataclasses.replace(rec, status=status)


class ParentedTracker:
    """A tracker whose top-level runs are children of ``parent_id``; everything else is the wrapped tracker's."""

    def __init__(self, tracker: Any, parent_id: Optional[str]):
        self._tracker = tracker
        self.parent_id = parent_id

    def start_run(self, name: str, *, parent: Any = None, tags: Optional[Mapping[str, Any]] = None,
                  key: Optional[str] = None, system_metrics: bool = False):
        if parent is None and self._tracker.active_run is None:
            parent = self.parent_id
        return self._tracker.start_run(name, parent=parent, tags=tags, key=key, system_metrics=system_metrics)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._tracker, name)

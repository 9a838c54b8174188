"""How runs are keyed, found and told apart: the dedup key of a run (:func:`run_key`), the code
version every run is tagged with (:func:`code_version`, :func:`git_sha`), the identity of a tracking
store (:func:`tracker_identity`) and the checks and filters a run search is built from."""
from __future__ import annotations

import functools
import os
import subprocess
from pathlib import Path
from typing import Any, Mapping, Optional
from urllib.parse import unquote, urlsplit

from .. import __version__
from ..config import config_digest
from ..errors import TrackingError
from ..names import TAG_PARENT_RUN
from ..storage import redact_url
from .base import RunRecord, check_status

__all__ = ["run_key", "check_key", "git_sha", "code_version", "tracker_identity", "run_filter", "check_run_id",
           "record_of"]


def run_key(name: str, fingerprint: str, params: Mapping[str, Any]) -> str:
    """Dedup key for :meth:`Tracker.start_run`: the run name, the dataset fingerprint and a digest of
    everything that changes the result (``params``). The same work gets the same key."""
    return f"{name}|{str(fingerprint)[:12]}|{config_digest(dict(params))}"


def check_key(key: str) -> str:
    """``key`` when a run search can carry it (no quotes, backslashes or newlines), else a TrackingError."""
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
    """``tdds_core.__version__``, plus ``+g<sha>`` (10 hex digits) when the git commit is known."""
    sha = git_sha()
    return f"{__version__}+g{sha[:10]}" if sha else __version__


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
        return "file:" + str(Path(unquote(urlsplit(uri).path)).resolve())
    if "://" not in uri:
        return "file:" + str(Path(uri).expanduser().resolve())
    return redact_url(uri).rstrip("/")


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


def run_filter(tags: Mapping[str, Any], status: Optional[str] = None) -> str:
    """An MLflow search filter: every tag of ``tags`` equal to its value and, when given, the run's
    status (names and values checked: no quotes or newlines)."""
    clauses = [f"tags.`{_filter_key(k)}` = '{_filter_value(k, v)}'" for k, v in tags.items()]
    if status is not None:
        clauses.append(f"attributes.status = '{check_status(status)}'")
    return " and ".join(clauses)


def check_run_id(run_id: str) -> str:
    """``run_id`` when it can be a run id (no quotes, slashes or spaces), else a TrackingError."""
    if not run_id or not isinstance(run_id, str) or any(c in run_id for c in "'\"/\\ \n"):
        raise TrackingError(f"invalid MLflow run id {run_id!r}: pass the id a run was created with (32 hex digits)")
    return run_id


def record_of(run: Any) -> RunRecord:
    """An ``mlflow.entities.Run`` -> :class:`RunRecord`."""
    info, data = run.info, run.data
    tags = dict(data.tags)
    return RunRecord(id=info.run_id, name=info.run_name or tags.get("mlflow.runName", ""), status=info.status,
                     start_time=int(info.start_time or 0), parent_id=tags.get(TAG_PARENT_RUN), tags=tags,
                     params=dict(data.params), metrics={k: float(v) for k, v in data.metrics.items()})

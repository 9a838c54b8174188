"""Where a run's things go, decided once: :class:`Workspace` knows the output root (a local folder or
``s3://bucket/prefix``), its store, the local folders used for work on a remote root, and the MLflow
tracking URI. The URI-level helpers (:func:`work_dir`, :func:`publish`, :func:`existing`) make the
same local-or-S3 decisions for an artifact URI.

Tracking URI, in this order: ``tracking.uri``; ``$MLFLOW_TRACKING_URI``; ``sqlite:///<output>/mlflow.db``
for a local output, ``sqlite:///$TDDS_CACHE/mlflow.db`` for an S3 output (a cluster run names a server)."""
from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path
from typing import Mapping, Optional

from ..config import Config, config_digest
from ..errors import ArtifactError
from ..io import MANIFEST, read_manifest
from .base import Store
from .cache import cache_root, local_copy
from .factory import is_complete, open_store, parent_and_key
from .uris import is_remote, join_uri

__all__ = ["Workspace", "work_dir", "publish", "existing", "fetch", "TRACKING_ENV"]

TRACKING_ENV = "MLFLOW_TRACKING_URI"
_SQLITE = "sqlite:///"


# ------------------------------------------------------------------------------------------ artifact URIs
def work_dir(uri: str) -> Path:
    """Where a stage writes the artifact at ``uri`` before publishing it: the folder itself when
    local; for S3 ``$TDDS_CACHE/work/<hash of uri>/<leaf>`` (an interrupted S3 run resumes from its
    local checkpoint on the same machine)."""
    if not is_remote(uri):
        return Path(uri)
    return cache_root() / "work" / hashlib.sha256(uri.encode()).hexdigest()[:16] / uri.rstrip("/").rsplit("/", 1)[-1]


def publish(work: Path, uri: str, *, replace: bool = False) -> bool:
    """Make the finished folder ``work`` the artifact at ``uri``. S3: upload it, manifest last
    (:meth:`Store.put_dir`; a complete artifact is kept unless ``replace``, and with ``replace`` one
    holding the same files is kept too). Local: copy ``work`` into ``uri`` when they are different
    folders. Returns True when something was written."""
    if is_remote(uri):
        store, key = parent_and_key(uri)
        if replace and store.is_complete(key) and _same_files(store.read_manifest(key), read_manifest(work)):
            return False
        return store.put_dir(work, key, overwrite=replace)
    if Path(uri).resolve() == Path(work).resolve():
        return False
    shutil.copytree(work, uri, dirs_exist_ok=True)
    return True


def _same_files(a: dict, b: dict) -> bool:
    return {k: v["sha256"] for k, v in a.get("files", {}).items()} == \
        {k: v["sha256"] for k, v in b.get("files", {}).items()}


def existing(uri: str) -> Optional[Path]:
    """A verified local copy of the finished artifact at ``uri`` (S3: cached), or None."""
    if is_remote(uri):
        return local_copy(uri) if is_complete(uri) else None
    p = Path(uri)
    return p if (p / MANIFEST).is_file() else None


def fetch(uri: str) -> Path:
    """:func:`existing`, or an ArtifactError when the artifact is absent."""
    p = existing(uri)
    if p is None:
        raise ArtifactError(f"{uri} does not exist or is incomplete; run the stage that writes it first.")
    return p


# ------------------------------------------------------------------------------------------ workspace
class Workspace:
    """One output root and its tracking URI.

    ``output``: a local folder or ``s3://bucket/prefix`` (as configured; keys join onto it).
    ``tracking_uri``: the configured ``tracking.uri`` (None: the environment's, then the default).
    ``environ``: where ``$MLFLOW_TRACKING_URI`` and the S3 endpoint (``AWS_ENDPOINT_URL_S3``, then
    ``AWS_ENDPOINT_URL``) are read; None = this process's environment at each use.
    """

    def __init__(self, output: str, *, tracking_uri: Optional[str] = None,
                 environ: Optional[Mapping[str, str]] = None):
        self.output = str(output)
        self.tracking_setting = tracking_uri
        self._environ = environ
        self._store: Optional[Store] = None

    @classmethod
    def of(cls, cfg: Config, *, output: Optional[str] = None,
           environ: Optional[Mapping[str, str]] = None) -> "Workspace":
        """The workspace of ``cfg`` (``output`` overrides ``cfg.output``)."""
        return cls(str(output or cfg.output), tracking_uri=cfg.tracking.uri, environ=environ)

    def __repr__(self) -> str:
        return f"Workspace({self.output!r})"

    @property
    def environ(self) -> Mapping[str, str]:
        return os.environ if self._environ is None else self._environ

    # -- the root --
    @property
    def remote(self) -> bool:
        """True for an S3 output root."""
        return is_remote(self.output)

    @property
    def root(self) -> str:
        """The output root: an absolute local folder, or the ``s3://`` URI."""
        return self.output if self.remote else str(Path(self.output).expanduser().absolute())

    @property
    def store(self) -> Store:
        """The store of the output root (built once; an S3 store uses the endpoint of ``environ``)."""
        if self._store is None:
            options = {}
            if self.remote and self._environ is not None:
                endpoint = self._environ.get("AWS_ENDPOINT_URL_S3") or self._environ.get("AWS_ENDPOINT_URL")
                options = {"endpoint_url": endpoint} if endpoint else {}
            self._store = open_store(self.output, **options)
        return self._store

    @property
    def identity(self) -> str:
        """Where the root's store is (:attr:`Store.identity`), for cache keys."""
        return self.store.identity

    @property
    def cache(self) -> Path:
        """The local cache folder (``$TDDS_CACHE``) that holds the work of a remote root."""
        return cache_root()

    # -- artifacts by key --
    def uri(self, key: str) -> str:
        """The URI of the store key ``key`` under the output root."""
        return join_uri(self.output, key)

    def work_dir(self, key: str) -> Path:
        """The local folder a stage writes ``key`` into (:func:`work_dir`)."""
        return work_dir(self.uri(key))

    def publish(self, work: Path, key: str, *, replace: bool = False) -> bool:
        """Publish the folder ``work`` as ``key`` (:func:`publish`)."""
        return publish(work, self.uri(key), replace=replace)

    def existing(self, key: str) -> Optional[Path]:
        """A verified local copy of the finished artifact ``key``, or None (:func:`existing`)."""
        return existing(self.uri(key))

    def fetch(self, key: str) -> Path:
        """:meth:`existing`, or an ArtifactError when the artifact is absent (:func:`fetch`)."""
        return fetch(self.uri(key))

    def mirror_uri(self, key: str) -> Optional[str]:
        """The URI a training run of ``key`` mirrors its checkpoints to (``<uri>/_partial``): the
        artifact's URI on a remote root, None on a local one (the work folder is the artifact)."""
        return self.uri(key) if self.remote else None

    # -- local folders --
    def report_dir(self) -> Path:
        """Where the report is written: ``<output>/report``, or for an S3 root
        ``$TDDS_CACHE/reports/<digest of the store's identity>`` (then published to ``report/``)."""
        if self.remote:
            return self.cache / "reports" / config_digest(self.identity, 16)
        return Path(self.output) / "report"

    def pipeline_root(self, name: str, context: str) -> Path:
        """The local KFP pipeline root of the config ``name`` in the cache context ``context``:
        ``<output>/kfp/<context>``, or ``$TDDS_CACHE/kfp/<name>-<context>`` for an S3 root."""
        if self.remote:
            return self.cache / "kfp" / f"{name}-{context}"
        return Path(self.output) / "kfp" / context

    # -- tracking --
    @property
    def tracking_uri(self) -> str:
        """``tracking.uri``, else ``$MLFLOW_TRACKING_URI``, else :attr:`default_tracking_uri`."""
        return self.tracking_setting or self.environ.get(TRACKING_ENV) or self.default_tracking_uri

    @property
    def tracking_is_default(self) -> bool:
        """True when neither ``tracking.uri`` nor ``$MLFLOW_TRACKING_URI`` names a tracking store."""
        return not self.tracking_setting and not self.environ.get(TRACKING_ENV)

    @property
    def default_tracking_uri(self) -> str:
        """``sqlite:///<output root>/mlflow.db``; an S3 root keeps the SQLite file in ``$TDDS_CACHE``."""
        if self.remote:
            return _SQLITE + str((self.cache / "mlflow.db").absolute())
        return _SQLITE + str((Path(self.output).expanduser() / "mlflow.db").absolute())

    @property
    def artifact_location(self) -> Optional[str]:
        """Where a new MLflow experiment keeps its artifacts (None: MLflow's choice). With the SQLite
        default, ``<output root>/mlartifacts``; with another SQLite file, ``mlartifacts`` beside it."""
        uri = self.tracking_uri
        if not uri.startswith(_SQLITE):
            return None
        if self.tracking_is_default:
            if self.remote:
                return self.output.rstrip("/") + "/mlartifacts"
            return (Path(self.output).expanduser().absolute() / "mlartifacts").as_uri()
        path = uri[len(_SQLITE):]
        if path in ("", ":memory:"):
            return None
        return (Path(path).expanduser().absolute().parent / "mlartifacts").as_uri()

"""Artifact storage: a local folder or an S3 prefix behind one interface, and the :class:`Workspace`
that knows where a run's things go.

``open_store(uri)`` takes a local path (or ``file://`` URI) or ``s3://bucket/prefix`` and returns a
:class:`Store`. Keys are relative, ``/``-separated names under the store's root (``score/ab12-cd34``);
``..``, absolute keys and empty parts are refused with a :class:`~tdds_core.errors.StorageError`.
Artifacts are folders with a ``manifest.json`` (:mod:`tdds_core.io`): ``put_dir`` uploads the
manifest last, ``get_dir`` checks every file's SHA-256, and a complete prefix is never uploaded again.

Modules: ``uris`` (keys and URIs; pure), ``base`` (:class:`Store`, :class:`ObjectInfo`), ``local``
(:class:`LocalStore`), ``s3`` (:class:`S3Store`, the only module that imports boto3, lazily),
``factory`` (:func:`open_store`, :func:`parent_and_key`), ``cache`` (``$TDDS_CACHE``,
:func:`local_copy`), ``workspace`` (:class:`Workspace`, and :func:`work_dir` / :func:`publish` /
:func:`existing` for an artifact URI)::

    is_remote("s3://b/runs")                   # True: the one test for S3 URIs
    join_uri(root, "scores/tdds-ab12")         # a key under an output root (local path or s3://)
    store_identity(uri)                        # "file:/abs" / "s3:<endpoint>/<bucket>/<prefix>"; contacts nothing
    folder = local_copy(in_uri)                # local path as is; S3: cached, checksum-verified copy
    ws = Workspace.of(cfg); ws.uri(key); ws.work_dir(key); ws.tracking_uri
"""
from .base import ObjectInfo, Store, TransferStats
from .cache import ENV_CACHE, cache_root, local_copy
from .factory import is_complete, open_store, parent_and_key, store_identity
from .local import LocalStore
from .s3 import ENV_MAX_POOL, ENV_MULTIPART_CHUNKSIZE, ENV_MULTIPART_THRESHOLD, ENV_RETRIES, S3Store, resolve_endpoint
from .uris import is_remote, join_uri, portable_uri, redact_url, split_uri, validate_key
from .workspace import Workspace, existing, fetch, publish, work_dir

__all__ = [
    "Store", "LocalStore", "S3Store", "ObjectInfo", "TransferStats", "open_store", "split_uri", "validate_key",
    "parent_and_key", "is_remote", "join_uri", "portable_uri", "store_identity", "is_complete", "local_copy",
    "cache_root", "redact_url", "resolve_endpoint", "Workspace", "work_dir", "publish", "existing", "fetch",
    "ENV_MULTIPART_THRESHOLD", "ENV_MULTIPART_CHUNKSIZE", "ENV_RETRIES", "ENV_MAX_POOL", "ENV_CACHE",
]

"""The local cache (``$TDDS_CACHE``, default ``~/.cache/tdds``) and :func:`local_copy`, a verified
local folder for an artifact wherever it is stored."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from ..errors import ArtifactError
from ..io import MANIFEST, sha256_file
from .factory import parent_and_key
from .s3 import S3Store
from .uris import split_uri

__all__ = ["ENV_CACHE", "cache_root", "local_copy"]

ENV_CACHE = "TDDS_CACHE"


def cache_root() -> Path:
    """``$TDDS_CACHE`` or ``~/.cache/tdds``."""
    return Path(os.environ.get(ENV_CACHE) or Path.home() / ".cache" / "tdds").expanduser()


def _cache_dir(store: S3Store, key: str) -> Path:
    tag = hashlib.sha256(f"{store.identity}|{key}".encode()).hexdigest()[:16]
    return cache_root() / "s3" / store.bucket / tag / key.rsplit("/", 1)[-1]


def local_copy(uri: str, **options: Any) -> Path:
    """A local path holding the artifact at ``uri``.

    A local URI is returned as it is (the reader checks it, e.g. :func:`~tdds_core.io.verify_manifest`).
    An S3 prefix with a manifest is downloaded into ``$TDDS_CACHE/s3/<bucket>/<hash of endpoint and
    URI>/<name>`` with every checksum verified; a second call finds the cached copy intact and
    downloads nothing. An S3 key that is a single file (no manifest) is downloaded to the cache and
    checked against the SHA-256 stored in its metadata when there is one. A missing artifact raises
    ArtifactError.
    """
    scheme, rest = split_uri(uri)
    if scheme == "file":
        return Path(rest)
    store, key = parent_and_key(uri, **options)
    assert isinstance(store, S3Store)
    dst = _cache_dir(store, key)
    if store.is_complete(key):
        store.get_dir(key, dst)
        return dst
    head = store.head(key)
    if head is None:
        raise ArtifactError(
            f"{uri} does not exist or is incomplete (no {MANIFEST}) at S3 endpoint {store.endpoint_label}; "
            "rerun the stage that writes it."
        )
    want = head.sha256
    if dst.is_file() and want and sha256_file(dst) == want:
        return dst
    store.get_file(key, dst)
    if want and sha256_file(dst) != want:
        dst.unlink()
        raise ArtifactError(f"{uri} is corrupt: its SHA-256 does not match the one stored with it; rewrite it.")
    return dst
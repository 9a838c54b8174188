"""Stores from URIs: :func:`open_store` (a local folder, ``file://`` or ``s3://bucket/prefix``), the
store one level above an artifact (:func:`parent_and_key`), and what follows from them."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import StorageError
from .base import Store
from .local import LocalStore
from .s3 import S3Store
from .uris import split_uri, validate_key

__all__ = ["open_store", "store_identity", "parent_and_key", "is_complete"]


def open_store(uri: str, **options: Any) -> Store:
    """A :class:`Store` for ``uri``: a local folder (path or ``file://``) or ``s3://bucket/prefix``.

    ``options`` go to :class:`S3Store` (``endpoint_url``, ``region``, ``multipart_threshold``,
    ``multipart_chunksize``, ``retries``, ``backoff_s``) and are ignored for local folders.
    """
    scheme, rest = split_uri(uri)
    if scheme == "s3":
        bucket, _, prefix = rest.partition("/")
        if prefix:
            validate_key(prefix)
        return S3Store(bucket, prefix, **options)
    return LocalStore(rest)


def store_identity(uri: str, **options: Any) -> str:
    """:attr:`Store.identity` of ``open_store(uri, **options)``: where ``uri``'s store is
    (``file:<resolved path>`` or ``s3:<endpoint or aws>/<bucket>/<prefix>``), for cache keys.
    Pure: builds the store without contacting its endpoint."""
    return open_store(uri, **options).identity


def parent_and_key(uri: str, **options: Any) -> tuple[Store, str]:
    """The store one level above ``uri`` and the key of ``uri`` in it (``s3://b/a/x`` -> (store of
    ``s3://b``, ``a/x``); ``/p/a/x`` -> (store of ``/p/a``, ``x``))."""
    scheme, rest = split_uri(uri)
    if scheme == "s3":
        bucket, _, key = rest.partition("/")
        if not key:
            raise StorageError(f"{uri} is a whole bucket; artifacts live under a prefix such as s3://{bucket}/runs/x")
        return S3Store(bucket, "", **options), validate_key(key)
    p = Path(rest)
    return LocalStore(p.parent), p.name


def is_complete(uri: str, **options: Any) -> bool:
    """True when the artifact at ``uri`` (local folder or S3 prefix) is finished (manifest present)."""
    store, key = parent_and_key(uri, **options)
    return store.is_complete(key)

"""Storage URIs and keys: the one test for S3 URIs, joining and splitting, key validation, and
URLs without credentials. Pure string work; contacts nothing."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional
from urllib.parse import urlsplit, urlunsplit

from ..errors import StorageError

__all__ = ["validate_key", "join_keys", "redact_url", "is_remote", "join_uri", "split_uri", "portable_uri"]


def validate_key(key: str, *, allow_root: bool = False) -> str:
    """Return ``key`` if it is a safe relative ``/``-separated name, else raise StorageError.

    Refused: absolute keys (``/x``, ``C:\\x``), ``..`` or ``.`` parts, empty parts (``a//b``,
    a trailing ``/``), backslashes and NUL. ``allow_root`` accepts ``""`` (the store's root).
    """
    if not isinstance(key, str):
        raise StorageError(f"storage key must be a string, not {type(key).__name__}")
    if key == "" and allow_root:
        return key
    fix = "use a relative name such as 'score/ab12cd34' (no '..', no leading '/', no empty parts)"
    if key == "":
        raise StorageError(f"empty storage key; {fix}")
    if key.startswith("/") or (len(key) > 1 and key[1] == ":"):
        raise StorageError(f"storage key {key!r} is absolute; {fix}")
    if "\\" in key or "\x00" in key:
        raise StorageError(f"storage key {key!r} contains a backslash or NUL; {fix}")
    for part in key.split("/"):
        if part in ("", ".", ".."):
            raise StorageError(f"storage key {key!r} has an empty, '.' or '..' part; {fix}")
    return key


def join_keys(*parts: str) -> str:
    """``parts`` joined with ``/``, empty parts and outer slashes dropped (not validated)."""
    out = [p.strip("/") for p in parts if p not in ("", None)]
    return "/".join(p for p in out if p)


def redact_url(url: Optional[str]) -> str:
    """``url`` without any ``user:password@`` part (for messages and logs)."""
    if not url:
        return str(url)
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable url>"
    if parts.username or parts.password:
        host = parts.hostname or ""
        if parts.port:
            host = f"{host}:{parts.port}"
        return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))
    return url


def is_remote(uri: str | os.PathLike) -> bool:
    """True for an S3 URI (``s3://bucket/...``); False for a local path or ``file://`` URI."""
    return isinstance(uri, str) and uri.startswith("s3://")


def join_uri(root: str, key: str) -> str:
    """``key`` under the output root ``root``: ``s3://b/runs`` + ``a/b`` -> ``s3://b/runs/a/b``;
    a local root -> ``str(Path(root) / key)``. ``key`` is not validated (see :func:`validate_key`)."""
    if is_remote(root):
        return root.rstrip("/") + "/" + key
    return str(Path(root) / key)


def split_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/a/b`` -> (``s3``, ``bucket/a/b``); a local path -> (``file``, absolute path)."""
    if not isinstance(uri, str) or not uri:
        raise StorageError(f"invalid storage URI {uri!r}; use a local folder or s3://bucket/prefix")
    if is_remote(uri):
        rest = uri[len("s3://"):].strip("/")
        if not rest:
            raise StorageError(f"storage URI {uri!r} names no bucket; use s3://bucket/prefix")
        return "s3", rest
    if uri.startswith("file://"):
        return "file", str(Path(uri[len("file://"):]).expanduser().absolute())
    if "://" in uri:
        raise StorageError(f"unsupported storage URI {uri!r}: use a local folder or s3://bucket/prefix")
    return "file", str(Path(uri).expanduser().absolute())



def portable_uri(uri: str) -> str:
    """``uri`` as a URI another machine can read: ``s3://`` and other schemes as they are, a local
    path as an absolute ``file://`` URI."""
    return uri if is_remote(uri) or "://" in uri else Path(uri).absolute().as_uri()

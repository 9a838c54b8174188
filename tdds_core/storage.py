"""Artifact storage: a local folder or an S3 prefix behind one interface.

``open_store(uri)`` takes a local path (or ``file://`` URI) or ``s3://bucket/prefix`` and returns a
:class:`Store`. Keys are relative, ``/``-separated names under the store's root (``score/ab12-cd34``);
``..``, absolute keys and empty parts are refused with a :class:`~tdds_core.errors.StorageError`.

Artifacts are folders with a ``manifest.json`` (see :mod:`tdds_core.io`). ``put_dir`` uploads every
file and the manifest **last**; ``get_dir`` refuses a prefix without a manifest and checks every
file's SHA-256 against it, so a reader sees an artifact complete or not at all. A prefix that is
already complete is not uploaded again (``put_dir`` returns ``False``): with content/config-derived
keys a rerun finds and reuses finished work.

Object metadata comes as :class:`ObjectInfo` (key, size, ETag, SHA-256 when known, modification
time) from :meth:`Store.head` and :meth:`Store.list_info`; :meth:`Store.fetch` downloads one object
in one request and returns the ObjectInfo of the bytes it wrote (for caches of many small objects,
such as the images of a manifest dataset).

S3 goes through boto3, imported lazily: this is the only module of ``tdds_core`` that imports
boto3 or botocore (``tests/test_storage.py`` checks it). Endpoint, region and credentials come from
the standard AWS environment and config files, so AWS, MinIO and moto all work:

* endpoint: ``AWS_ENDPOINT_URL_S3``, then ``AWS_ENDPOINT_URL``, then ``MLFLOW_S3_ENDPOINT_URL``
  (none = AWS itself); a custom endpoint uses path-style addressing;
* region: ``AWS_REGION`` / ``AWS_DEFAULT_REGION`` / ``~/.aws/config`` (default ``us-east-1``);
* credentials: ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` / ``AWS_PROFILE`` / instance roles.
  Credential values are never logged nor written anywhere.

Tuning (environment, or keyword arguments of :func:`open_store`):

* ``TDDS_S3_MULTIPART_THRESHOLD`` / ``TDDS_S3_MULTIPART_CHUNKSIZE`` (bytes; default 64 MiB / 16 MiB):
  files at least this large are sent as multipart uploads;
* ``TDDS_S3_RETRIES`` (default 3): attempts of each operation by tdds, each with botocore's own
  retries (``AWS_MAX_ATTEMPTS``, default 2) and exponential backoff in between; after them a
  StorageError names the endpoint and what to check;
* ``TDDS_S3_MAX_POOL`` (default 32): connections one S3 client keeps open (parallel downloads of
  a manifest dataset's images use up to this many);
* ``TDDS_CACHE`` (default ``~/.cache/tdds``): where :func:`local_copy` keeps downloaded artifacts.

Helpers::

    is_remote("s3://b/runs")                   # True: the one test for S3 URIs
    join_uri(root, "scores/tdds-ab12")         # a key under an output root (local path or s3://)
    store_identity(uri)                        # where a store is ("file:/abs" / "s3:<endpoint>/<bucket>/<prefix>"),
                                               # for cache keys; contacts nothing
    folder = local_copy(in_uri)                # local path as is; S3: cached, checksum-verified copy
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import random
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, TypeVar
from urllib.parse import urlsplit, urlunsplit

from .errors import ArtifactError, StorageError
from .io import MANIFEST, read_manifest, sha256_bytes, sha256_file, verify_manifest, write_manifest

__all__ = [
    "Store", "LocalStore", "S3Store", "ObjectInfo", "TransferStats", "open_store", "split_uri", "validate_key",
    "parent_and_key", "is_remote", "join_uri", "store_identity", "is_complete", "local_copy", "cache_root", "redact_url",
    "ENV_MULTIPART_THRESHOLD", "ENV_MULTIPART_CHUNKSIZE", "ENV_RETRIES", "ENV_MAX_POOL", "ENV_CACHE",
]

log = logging.getLogger(__name__)

ENV_MULTIPART_THRESHOLD = "TDDS_S3_MULTIPART_THRESHOLD"
ENV_MULTIPART_CHUNKSIZE = "TDDS_S3_MULTIPART_CHUNKSIZE"
ENV_RETRIES = "TDDS_S3_RETRIES"
ENV_MAX_POOL = "TDDS_S3_MAX_POOL"
ENV_CACHE = "TDDS_CACHE"
DEFAULT_MULTIPART_THRESHOLD = 64 << 20
DEFAULT_MULTIPART_CHUNKSIZE = 16 << 20
DEFAULT_RETRIES = 3
DEFAULT_MAX_POOL = 32
SHA_META = "sha256"  # S3 user metadata key (x-amz-meta-sha256) holding each object's SHA-256

T = TypeVar("T")


# --------------------------------------------------------------------------------------------- keys
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


def _join_keys(*parts: str) -> str:
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


# --------------------------------------------------------------------------------------------- stats
@dataclass
class TransferStats:
    """What a store moved (for logs and tests: a rerun of finished work uploads nothing)."""

    files_uploaded: int = 0
    bytes_uploaded: int = 0
    files_downloaded: int = 0
    bytes_downloaded: int = 0
    dirs_skipped: int = 0


@dataclass(frozen=True)
class ObjectInfo:
    """One stored object, from :meth:`Store.head`, :meth:`Store.list_info` or :meth:`Store.fetch`.

    ``key``: relative to the store's root. ``size``: bytes. ``etag``: changes whenever the content
    is rewritten (S3: the ETag without quotes; local: ``"<mtime_ns>-<inode>-<size>"``). ``sha256``: hex
    digest from the object's metadata (S3 ``x-amz-meta-sha256``, written by this module) when known,
    else None (always None from a listing, and for local files). ``last_modified``: POSIX timestamp.
    """

    key: str
    size: int
    etag: str
    sha256: Optional[str] = None
    last_modified: float = 0.0


# --------------------------------------------------------------------------------------------- base
class Store:
    """A place for artifacts: the shared logic over a few backend primitives.

    Public methods take keys relative to the store's root (see :func:`validate_key`).
    ``max_parallel`` is how many transfers are worth running on the store at once (S3: the client's
    connection pool); callers that download in threads cap their workers with it.
    """

    uri: str
    max_parallel: int = DEFAULT_MAX_POOL

    def __init__(self) -> None:
        self.stats = TransferStats()

    @property
    def identity(self) -> str:
        """Where the store is, as a stable string for cache keys: ``file:<resolved root>`` or
        ``s3:<endpoint without credentials, or aws>/<bucket>/<prefix>``. Contacts nothing."""
        raise NotImplementedError

    # -- backend primitives (implemented by LocalStore / S3Store) --
    def _exists(self, key: str) -> bool: raise NotImplementedError
    def _info(self, key: str) -> Optional[ObjectInfo]: raise NotImplementedError
    def _list_info(self, prefix: str, recursive: bool) -> list[ObjectInfo]: raise NotImplementedError
    def _fetch(self, key: str, local: Path) -> Optional[ObjectInfo]: raise NotImplementedError
    def _root_exists(self) -> bool: raise NotImplementedError
    def _put_file(self, local: Path, key: str, sha256: str) -> None: raise NotImplementedError
    def _get_file(self, key: str, local: Path) -> None: raise NotImplementedError
    def _put_bytes(self, key: str, data: bytes) -> None: raise NotImplementedError
    def _get_bytes(self, key: str) -> bytes: raise NotImplementedError
    def _list(self, prefix: str) -> list[str]: raise NotImplementedError
    def _delete(self, keys: list[str]) -> None: raise NotImplementedError
    def _remote_sha256(self, key: str) -> Optional[str]: return None

    # -- public API --
    def join(self, *parts: str) -> str:
        """URI of ``parts`` joined under this store (``open_store`` of it gives a sub-store)."""
        key = _join_keys(*parts)
        if key:
            validate_key(key)
        return self.uri.rstrip("/") + ("/" + key if key else "")

    def exists(self, key: str) -> bool:
        return self._exists(validate_key(key))

    def head(self, key: str) -> Optional[ObjectInfo]:
        """The :class:`ObjectInfo` of ``key``, or None when there is no such object (on S3 also when
        the bucket is missing: :meth:`root_exists` tells the two apart)."""
        return self._info(validate_key(key))

    def list_info(self, prefix: str = "", *, recursive: bool = True) -> list[ObjectInfo]:
        """An :class:`ObjectInfo` per object under the folder ``prefix`` (``""``: the whole store),
        sorted by key; ``recursive=False``: only the objects directly in it (S3: one ``/`` level)."""
        infos = self._list_info(validate_key(prefix.rstrip("/"), allow_root=True), recursive)
        return sorted(infos, key=lambda i: i.key)

    def fetch(self, key: str, local: str | os.PathLike) -> Optional[ObjectInfo]:
        """Download ``key`` to ``local`` in one request and return the :class:`ObjectInfo` of the bytes
        written (ETag and size from the same response, so a cache entry matches what it holds); None
        (nothing written) when the object does not exist.

        For caches of many small objects (safe to call from threads): the object is read into memory
        and written with temp file + rename but without fsync. Artifacts go through :meth:`get_file`
        / :meth:`get_dir` (multipart, fsync, checksums)."""
        info = self._fetch(validate_key(key), Path(local))
        if info is not None:
            self.stats.files_downloaded += 1
            self.stats.bytes_downloaded += info.size
        return info

    def root_exists(self) -> bool:
        """True when the store's container exists: the root folder (local) or the bucket (S3; a
        prefix exists as soon as an object is under it)."""
        return self._root_exists()

    def put_file(self, local: str | os.PathLike, key: str) -> None:
        local = Path(local)
        if not local.is_file():
            raise StorageError(f"cannot upload {local}: not a file")
        self._put_file(local, validate_key(key), sha256_file(local))
        self.stats.files_uploaded += 1
        self.stats.bytes_uploaded += local.stat().st_size

    def get_file(self, key: str, local: str | os.PathLike) -> Path:
        """Download ``key`` to ``local`` (atomically); returns ``local`` as a Path."""
        local = Path(local)
        local.parent.mkdir(parents=True, exist_ok=True)
        self._get_file(validate_key(key), local)
        self.stats.files_downloaded += 1
        self.stats.bytes_downloaded += local.stat().st_size
        return local

    def put_bytes(self, key: str, data: bytes) -> None:
        self._put_bytes(validate_key(key), bytes(data))
        self.stats.files_uploaded += 1
        self.stats.bytes_uploaded += len(data)

    def get_bytes(self, key: str) -> bytes:
        data = self._get_bytes(validate_key(key))
        self.stats.files_downloaded += 1
        self.stats.bytes_downloaded += len(data)
        return data

    def list(self, prefix: str = "") -> list[str]:
        """Every key under ``prefix`` (recursive, sorted, relative to the store's root)."""
        return sorted(self._list(validate_key(prefix.rstrip("/"), allow_root=True)))

    def delete(self, prefix: str) -> int:
        """Delete ``prefix`` (a key or everything under it); manifest first so the artifact turns
        incomplete before any file goes. Returns the number of keys deleted."""
        prefix = validate_key(prefix)
        keys = self._list(prefix)
        if self._exists(prefix):
            keys.append(prefix)
        mkey = _join_keys(prefix, MANIFEST)
        ordered = [k for k in keys if k == mkey] + [k for k in keys if k != mkey]
        if ordered:
            self._delete(ordered)
        return len(ordered)

    def is_complete(self, prefix: str) -> bool:
        """True when ``prefix`` holds a finished artifact (its manifest is present)."""
        return self._exists(_join_keys(validate_key(prefix, allow_root=True), MANIFEST))

    def read_manifest(self, prefix: str) -> dict:
        """The manifest of the artifact at ``prefix``; ArtifactError when it is absent."""
        prefix = validate_key(prefix, allow_root=True)
        mkey = _join_keys(prefix, MANIFEST)
        if not self._exists(mkey):
            raise ArtifactError(
                f"{self.join(prefix)} has no {MANIFEST}: the artifact is absent or its upload did not finish; "
                "rerun the stage that writes it."
            )
        try:
            return json.loads(self._get_bytes(mkey).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ArtifactError(f"{self.join(mkey)} is not valid JSON ({e}); delete the artifact and rerun its stage.") from e

    def put_dir(self, local_dir: str | os.PathLike, prefix: str, *, overwrite: bool = False) -> bool:
        """Upload an artifact folder: every file listed in its manifest, then ``manifest.json`` last.

        A folder without a manifest gets one first (:func:`tdds_core.io.write_manifest`); one with a
        manifest is verified before anything is sent. When ``prefix`` already holds a complete
        artifact nothing is uploaded and the result is ``False`` (unless ``overwrite``: then the old
        manifest is deleted first, so readers never see a mix). Files already present with the same
        SHA-256 (an interrupted earlier upload) are not sent again. Returns ``True`` when uploaded.
        """
        local_dir = Path(local_dir)
        prefix = validate_key(prefix)
        if not local_dir.is_dir():
            raise StorageError(f"cannot upload {local_dir}: not a folder")
        if self.is_complete(prefix):
            if not overwrite:
                log.info("%s is complete; reusing it (nothing uploaded)", self.join(prefix))
                self.stats.dirs_skipped += 1
                return False
            self._delete([_join_keys(prefix, MANIFEST)])
        if not (local_dir / MANIFEST).is_file():
            write_manifest(local_dir)
        manifest = verify_manifest(local_dir)
        for name, entry in sorted(manifest.get("files", {}).items()):
            validate_key(name)
            key = _join_keys(prefix, name)
            if self._remote_sha256(key) == entry["sha256"]:
                continue
            self._put_file(local_dir / name, key, entry["sha256"])
            self.stats.files_uploaded += 1
            self.stats.bytes_uploaded += int(entry.get("bytes", 0))
        mpath = local_dir / MANIFEST
        self._put_file(mpath, _join_keys(prefix, MANIFEST), sha256_file(mpath))
        self.stats.files_uploaded += 1
        self.stats.bytes_uploaded += mpath.stat().st_size
        return True

    def get_dir(self, prefix: str, local_dir: str | os.PathLike) -> dict:
        """Download the artifact at ``prefix`` into ``local_dir`` and check every file's SHA-256.

        Refuses (ArtifactError) a prefix without a manifest, and a file whose checksum differs from
        the manifest. Files land in a temporary sibling folder that is renamed into place once all
        are verified. When ``local_dir`` already holds the same, intact manifest nothing is
        downloaded. Returns the manifest.
        """
        prefix = validate_key(prefix, allow_root=True)
        local_dir = Path(local_dir)
        remote = self.read_manifest(prefix)
        if (local_dir / MANIFEST).is_file():
            try:
                if read_manifest(local_dir) == remote:
                    verify_manifest(local_dir)
                    return remote
            except ArtifactError:
                pass
        elif local_dir.is_dir() and any(local_dir.iterdir()):
            raise StorageError(
                f"cannot download {self.join(prefix)} into {local_dir}: the folder exists, is not empty and holds no "
                f"{MANIFEST}; choose an empty or new folder."
            )
        local_dir.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{local_dir.name}.", suffix=".part", dir=local_dir.parent))
        try:
            for name, entry in sorted(remote.get("files", {}).items()):
                validate_key(name)
                dst = tmp / name
                dst.parent.mkdir(parents=True, exist_ok=True)
                self.get_file(_join_keys(prefix, name), dst)
                digest = sha256_file(dst)
                if digest != entry.get("sha256"):
                    raise ArtifactError(
                        f"{self.join(prefix, name)} is corrupt: SHA-256 {digest[:12]}... does not match its manifest's "
                        f"{str(entry.get('sha256'))[:12]}...; delete the artifact and rerun the stage that writes it."
                    )
            (tmp / MANIFEST).write_text(json.dumps(remote, indent=2, sort_keys=True) + "\n")
            _swap_into_place(tmp, local_dir)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        return remote


def _swap_into_place(tmp: Path, final: Path) -> None:
    """Rename folder ``tmp`` to ``final``; an existing ``final`` is moved aside and removed."""
    if final.exists():
        trash = final.parent / f".{final.name}.{os.getpid()}.{random.randrange(1 << 30)}.old"
        os.replace(final, trash)
        try:
            os.replace(tmp, final)
        except OSError:
            os.replace(trash, final)
            raise
        shutil.rmtree(trash, ignore_errors=True)
    else:
        try:
            os.replace(tmp, final)
        except OSError:
            # another process put the same artifact there first: keep theirs if it is complete
            if (final / MANIFEST).is_file():
                return
            raise


def _atomic_write(dst: Path, write: Callable[[Any], Any], *, fsync: bool = True) -> None:
    """Write ``dst`` through ``write(file)`` into a temporary sibling renamed into place; an OSError
    becomes a StorageError naming the file and the fix. ``fsync=False`` for caches (a file torn by a
    crash is caught by its reader's size / checksum check)."""
    try:
        dst.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=".tmp", dir=dst.parent)
    except OSError as e:
        raise StorageError(f"cannot write {dst}: {e}; check the folder's permissions and free space") from e
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, dst)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(e, OSError):
            raise StorageError(f"cannot write {dst}: {e}; check the folder's permissions and free space") from e
        raise


# --------------------------------------------------------------------------------------------- local
class LocalStore(Store):
    """A folder on this machine. Writes go to a temporary file beside the target and are renamed."""

    def __init__(self, root: str | os.PathLike):
        super().__init__()
        self.root = Path(root).expanduser().absolute()
        self.uri = str(self.root)

    def __repr__(self) -> str:
        return f"LocalStore({self.uri!r})"

    @property
    def identity(self) -> str:
        return "file:" + str(self.root.resolve())

    def path(self, key: str) -> Path:
        """Local path of ``key``."""
        key = validate_key(key, allow_root=True)
        return self.root / key if key else self.root

    def _exists(self, key: str) -> bool:
        return self.path(key).is_file()

    def _put_file(self, local: Path, key: str, sha256: str) -> None:
        dst = self.path(key)
        if local.absolute() == dst:
            return
        with open(local, "rb") as fin:
            self._write(dst, lambda f: shutil.copyfileobj(fin, f, 1 << 20))

    def _write(self, dst: Path, write: Callable[[Any], Any]) -> None:
        _atomic_write(dst, write, fsync=True)

    def _get_file(self, key: str, local: Path) -> None:
        src = self.path(key)
        if not src.is_file():
            raise ArtifactError(f"{src} does not exist; rerun the stage that writes it.")
        if src == local.absolute():
            return
        with open(src, "rb") as fin:
            self._write(local, lambda f: shutil.copyfileobj(fin, f, 1 << 20))

    def _put_bytes(self, key: str, data: bytes) -> None:
        self._write(self.path(key), lambda f: f.write(data))

    def _get_bytes(self, key: str) -> bytes:
        src = self.path(key)
        if not src.is_file():
            raise ArtifactError(f"{src} does not exist; rerun the stage that writes it.")
        return src.read_bytes()

    def _list(self, prefix: str) -> list[str]:
        base = self.path(prefix)
        if not base.is_dir():
            return []
        out = []
        for p in base.rglob("*"):
            if p.is_file() and not _is_temp_name(p.name):
                out.append(p.relative_to(self.root).as_posix())
        return out

    def _stat_info(self, key: str, p: Path) -> Optional[ObjectInfo]:
        try:
            st = p.stat()
        except (FileNotFoundError, NotADirectoryError):
            return None
        if not p.is_file():
            return None
        return ObjectInfo(key, st.st_size, _local_etag(st), None, st.st_mtime)

    def _info(self, key: str) -> Optional[ObjectInfo]:
        return self._stat_info(key, self.path(key))

    def _list_info(self, prefix: str, recursive: bool) -> list[ObjectInfo]:
        base = self.path(prefix)
        if not base.is_dir():
            return []
        out = []
        for p in (base.rglob("*") if recursive else base.iterdir()):
            if not _is_temp_name(p.name):
                info = self._stat_info(p.relative_to(self.root).as_posix(), p)
                if info is not None:
                    out.append(info)
        return out

    def _fetch(self, key: str, local: Path) -> Optional[ObjectInfo]:
        src = self.path(key)
        if src == local.absolute():
            return self._info(key)
        try:
            fin = open(src, "rb")
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None
        except OSError as e:
            raise StorageError(f"cannot read {src}: {e}; check the file's permissions") from e
        with fin:
            st = os.fstat(fin.fileno())  # of the file being copied, even if it is replaced meanwhile
            _atomic_write(local, lambda f: shutil.copyfileobj(fin, f, 1 << 20), fsync=False)
        return ObjectInfo(key, st.st_size, _local_etag(st), None, st.st_mtime)

    def _root_exists(self) -> bool:
        return self.root.is_dir()

    def _delete(self, keys: list[str]) -> None:
        for k in keys:
            with contextlib.suppress(FileNotFoundError):
                self.path(k).unlink()

    def _remote_sha256(self, key: str) -> Optional[str]:
        p = self.path(key)
        return sha256_file(p) if p.is_file() else None


def _local_etag(st: os.stat_result) -> str:
    """ETag of a local file: ``<mtime_ns>-<inode>-<size>``. Every write replaces the file (a new
    inode), so a rewrite changes it even within the file system's timestamp granularity."""
    return f"{st.st_mtime_ns}-{st.st_ino}-{st.st_size}"


def _is_temp_name(name: str) -> bool:
    """A temporary file of an unfinished write (``.<name>.XXXX.tmp`` / ``.part``), never listed."""
    return name.startswith(".") and name.endswith((".tmp", ".part"))


# --------------------------------------------------------------------------------------------- S3
_RETRYABLE_CODES = {
    "500", "502", "503", "504", "InternalError", "ServiceUnavailable", "SlowDown", "RequestTimeout",
    "RequestTimeTooSkewed", "Throttling", "ThrottlingException", "RequestLimitExceeded",
}
_CREDENTIAL_CODES = {
    "InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "InvalidToken", "ExpiredToken",
    "TokenRefreshRequired", "InvalidClientTokenId", "UnrecognizedClientException", "403",
}
_CLIENTS: dict[tuple, Any] = {}


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw in (None, ""):
        return default
    try:
        return int(float(raw))
    except ValueError:
        raise StorageError(f"${name}={raw!r} is not a number; set it to an integer (bytes or a count)") from None


def resolve_endpoint(endpoint_url: Optional[str] = None) -> Optional[str]:
    """The S3 endpoint URL in force: argument, ``AWS_ENDPOINT_URL_S3``, ``AWS_ENDPOINT_URL``,
    ``MLFLOW_S3_ENDPOINT_URL``; None = AWS."""
    for v in (endpoint_url, os.environ.get("AWS_ENDPOINT_URL_S3"), os.environ.get("AWS_ENDPOINT_URL"),
              os.environ.get("MLFLOW_S3_ENDPOINT_URL")):
        if v:
            return v
    return None


def _error_chain(e: BaseException) -> list[BaseException]:
    out, seen = [], set()
    cur: Optional[BaseException] = e
    while cur is not None and id(cur) not in seen:
        out.append(cur)
        seen.add(id(cur))
        cur = cur.__cause__ or cur.__context__ or getattr(cur, "last_exception", None)
    return out


class S3Store(Store):
    """An S3 bucket and prefix (AWS, MinIO, moto), through boto3.

    Each object carries its SHA-256 as user metadata (``x-amz-meta-sha256``), so an interrupted
    ``put_dir`` resumes without sending finished files again.
    """

    def __init__(self, bucket: str, prefix: str = "", *, endpoint_url: Optional[str] = None,
                 region: Optional[str] = None, multipart_threshold: Optional[int] = None,
                 multipart_chunksize: Optional[int] = None, retries: Optional[int] = None,
                 backoff_s: float = 0.5, connect_timeout_s: float = 5.0, read_timeout_s: float = 60.0):
        super().__init__()
        if not bucket or "/" in bucket:
            raise StorageError(f"invalid S3 bucket name {bucket!r}; use s3://bucket/prefix")
        self.bucket = bucket
        self.prefix = validate_key(prefix.strip("/"), allow_root=True) if prefix else ""
        self.uri = f"s3://{bucket}" + (f"/{self.prefix}" if self.prefix else "")
        self.endpoint_url = resolve_endpoint(endpoint_url)
        self.region = region
        self.multipart_threshold = int(multipart_threshold or _env_int(ENV_MULTIPART_THRESHOLD, DEFAULT_MULTIPART_THRESHOLD))
        chunk = int(multipart_chunksize or _env_int(ENV_MULTIPART_CHUNKSIZE, DEFAULT_MULTIPART_CHUNKSIZE))
        self.multipart_chunksize = max(chunk, 5 << 20)  # S3's smallest part
        self.retries = max(1, int(retries if retries is not None else _env_int(ENV_RETRIES, DEFAULT_RETRIES)))
        self.backoff_s = float(backoff_s)
        self.connect_timeout_s = connect_timeout_s
        self.read_timeout_s = read_timeout_s
        self.max_parallel = max(10, _env_int(ENV_MAX_POOL, DEFAULT_MAX_POOL))
        self._client = None
        self._transfer_config = None

    def __repr__(self) -> str:
        return f"S3Store({self.uri!r}, endpoint={self.endpoint_label!r})"

    @property
    def endpoint_label(self) -> str:
        return redact_url(self.endpoint_url) if self.endpoint_url else "AWS S3 (no AWS_ENDPOINT_URL set)"

    @property
    def identity(self) -> str:
        endpoint = redact_url(self.endpoint_url).rstrip("/") if self.endpoint_url else "aws"
        return f"s3:{endpoint}/{self.bucket}/{self.prefix}"

    # -- client --
    @property
    def client(self) -> Any:
        if self._client is None:
            try:
                import boto3
                from botocore.config import Config as BotoConfig
            except ImportError as e:  # pragma: no cover - boto3 is a dependency
                raise StorageError("S3 storage needs boto3: pip install boto3") from e
            session = boto3.session.Session()
            region = self.region or session.region_name or "us-east-1"
            max_attempts = _env_int("AWS_MAX_ATTEMPTS", 2)
            cache_key = (self.endpoint_url, region, max_attempts, self.connect_timeout_s, self.read_timeout_s,
                         self.max_parallel, os.environ.get("AWS_ACCESS_KEY_ID"), os.environ.get("AWS_SECRET_ACCESS_KEY"),
                         os.environ.get("AWS_SESSION_TOKEN"), os.environ.get("AWS_PROFILE"))
            cache_key = tuple(hashlib.sha256(str(v).encode()).hexdigest() for v in cache_key)
            client = _CLIENTS.get(cache_key)
            if client is None:
                cfg = BotoConfig(
                    retries={"max_attempts": max_attempts, "mode": "standard"},
                    connect_timeout=self.connect_timeout_s, read_timeout=self.read_timeout_s,
                    max_pool_connections=self.max_parallel,
                    s3={"addressing_style": "path"} if self.endpoint_url else None,
                )
                client = session.client("s3", endpoint_url=self.endpoint_url, region_name=region, config=cfg)
                _CLIENTS[cache_key] = client
            self._client = client
        return self._client

    @property
    def transfer_config(self) -> Any:
        if self._transfer_config is None:
            from boto3.s3.transfer import TransferConfig

            self._transfer_config = TransferConfig(
                multipart_threshold=self.multipart_threshold, multipart_chunksize=self.multipart_chunksize,
                max_concurrency=4, use_threads=True,
            )
        return self._transfer_config

    def _full(self, key: str) -> str:
        return _join_keys(self.prefix, key)

    def _rel(self, full_key: str) -> str:
        if self.prefix:
            return full_key[len(self.prefix) + 1:]
        return full_key

    # -- errors and retries --
    def _call(self, what: str, fn: Callable[[], T], *, missing_ok: bool = False) -> T:
        """Run ``fn`` (a boto3 call on :attr:`client`) with bounded retries and backoff; a failure
        becomes one StorageError naming ``what``, the endpoint and the fix. With ``missing_ok`` a
        missing object (or a 404 without a code, e.g. HEAD of a missing bucket) raises
        :class:`_ObjectMissing` instead."""
        last: Optional[BaseException] = None
        for attempt in range(1, self.retries + 1):
            try:
                return fn()
            except Exception as e:  # noqa: BLE001 - classified below
                kind, code = self._classify(e)
                if kind == "missing" and missing_ok:
                    raise _ObjectMissing() from None
                if kind != "retry":
                    raise self._fatal(what, kind, code, e) from None
                last = e
                if attempt < self.retries:
                    delay = self.backoff_s * (2 ** (attempt - 1)) * (1 + random.random() * 0.25)
                    log.warning("S3 %s failed (attempt %d/%d: %s); retrying in %.1fs",
                                what, attempt, self.retries, type(e).__name__, delay)
                    time.sleep(delay)
        detail = _short(last)
        raise StorageError(
            f"cannot reach S3 endpoint {self.endpoint_label} for {what} after {self.retries} attempts: {detail}; "
            "check AWS_ENDPOINT_URL (or MLFLOW_S3_ENDPOINT_URL), that the server is up and reachable, "
            f"and your network; raise {ENV_RETRIES} for a flaky link."
        ) from None

    @staticmethod
    def _classify(e: BaseException) -> tuple[str, str]:
        from botocore.exceptions import (ClientError, ConnectionError as BotoConnectionError, HTTPClientError,
                                         NoCredentialsError, PartialCredentialsError, NoRegionError)

        for x in _error_chain(e):
            if isinstance(x, (NoCredentialsError, PartialCredentialsError)):
                return "nocreds", type(x).__name__
            if isinstance(x, NoRegionError):
                return "noregion", "NoRegionError"
            if isinstance(x, ClientError):
                err = x.response.get("Error", {}) or {}
                code = str(err.get("Code", ""))
                status = str(x.response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))
                if code in ("NoSuchBucket",):
                    return "nobucket", code
                if code in ("NoSuchKey", "404", "NotFound") or status == "404":
                    return "missing", code or status
                if code in _CREDENTIAL_CODES or status == "403":
                    return "denied", code or status
                if code in _RETRYABLE_CODES or status.startswith("5"):
                    return "retry", code or status
                return "client", code or status
            if isinstance(x, (BotoConnectionError, HTTPClientError, ConnectionError, TimeoutError)):
                return "retry", type(x).__name__
        return ("retry" if "Could not connect" in str(e) or "Connection" in type(e).__name__ else "other"), type(e).__name__

    def _fatal(self, what: str, kind: str, code: str, e: BaseException) -> BaseException:
        ep = self.endpoint_label
        if kind == "nocreds":
            return StorageError(
                f"no AWS credentials for S3 endpoint {ep} ({what}); set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
                "(or AWS_PROFILE) in the environment of this process."
            )
        if kind == "noregion":
            return StorageError(f"no AWS region for S3 endpoint {ep}; set AWS_DEFAULT_REGION (e.g. us-east-1).")
        if kind == "denied":
            return StorageError(
                f"S3 endpoint {ep} refused the request for {what} ({code}): the credentials are wrong or lack "
                f"permission on bucket {self.bucket!r}; check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY "
                "(or AWS_PROFILE) and the bucket policy."
            )
        if kind == "nobucket":
            return StorageError(
                f"S3 bucket {self.bucket!r} does not exist at endpoint {ep} ({what}); create it "
                f"(aws s3 mb s3://{self.bucket}) or fix the output URI."
            )
        if kind == "missing":
            return ArtifactError(f"{what}: the object does not exist at {ep}; rerun the stage that writes it.")
        return StorageError(f"S3 {what} failed at endpoint {ep} ({code}): {_short(e)}")

    # -- primitives --
    def _exists(self, key: str) -> bool:
        return self._info(key) is not None

    @staticmethod
    def _object_info(key: str, r: dict, size: Optional[int] = None) -> ObjectInfo:
        """An ObjectInfo from a HEAD / GET response or a listing entry (``Size``, ``ETag``, ...)."""
        modified = r.get("LastModified")
        return ObjectInfo(
            key=key,
            size=int(size if size is not None else r.get("ContentLength", r.get("Size", 0)) or 0),
            etag=str(r.get("ETag") or "").strip('"'),
            sha256=(r.get("Metadata") or {}).get(SHA_META),
            last_modified=modified.timestamp() if hasattr(modified, "timestamp") else 0.0,
        )

    def _info(self, key: str) -> Optional[ObjectInfo]:
        full = self._full(key)
        try:
            head = self._call(f"HEAD s3://{self.bucket}/{full}",
                              lambda: self.client.head_object(Bucket=self.bucket, Key=full), missing_ok=True)
        except _ObjectMissing:
            return None
        return self._object_info(key, head)

    def _remote_sha256(self, key: str) -> Optional[str]:
        info = self._info(key)
        return info.sha256 if info is not None else None

    def _root_exists(self) -> bool:
        try:
            self._call(f"HEAD bucket s3://{self.bucket}", lambda: self.client.head_bucket(Bucket=self.bucket),
                       missing_ok=True)
        except _ObjectMissing:
            return False
        return True

    def _fetch(self, key: str, local: Path) -> Optional[ObjectInfo]:
        full = self._full(key)

        def run() -> tuple[bytes, dict]:
            r = self.client.get_object(Bucket=self.bucket, Key=full)
            return r["Body"].read(), r  # read inside the retried call: a cut body is fetched again

        try:
            body, r = self._call(f"download of s3://{self.bucket}/{full}", run, missing_ok=True)
        except _ObjectMissing:
            return None
        _atomic_write(local, lambda f: f.write(body), fsync=False)
        return self._object_info(key, r, size=len(body))

    def _put_file(self, local: Path, key: str, sha256: str) -> None:
        full = self._full(key)
        extra = {"Metadata": {SHA_META: sha256}}
        self._call(f"upload of {local.name} to s3://{self.bucket}/{full}",
                   lambda: self.client.upload_file(str(local), self.bucket, full, ExtraArgs=extra,
                                                   Config=self.transfer_config))

    def _get_file(self, key: str, local: Path) -> None:
        full = self._full(key)
        fd, tmp = tempfile.mkstemp(prefix=f".{local.name}.", suffix=".part", dir=local.parent)
        os.close(fd)
        try:
            self._call(f"download of s3://{self.bucket}/{full}",
                       lambda: self.client.download_file(self.bucket, full, tmp, Config=self.transfer_config))
            os.replace(tmp, local)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)

    def _put_bytes(self, key: str, data: bytes) -> None:
        full = self._full(key)
        self._call(f"upload to s3://{self.bucket}/{full}",
                   lambda: self.client.put_object(Bucket=self.bucket, Key=full, Body=data,
                                                  Metadata={SHA_META: sha256_bytes(data)}))

    def _get_bytes(self, key: str) -> bytes:
        full = self._full(key)
        return self._call(f"download of s3://{self.bucket}/{full}",
                          lambda: self.client.get_object(Bucket=self.bucket, Key=full)["Body"].read())

    def _list(self, prefix: str) -> list[str]:
        return [info.key for info in self._list_info(prefix, True)]

    def _list_info(self, prefix: str, recursive: bool) -> list[ObjectInfo]:
        full = self._full(prefix)
        search = full + "/" if full else ""
        extra = {} if recursive else {"Delimiter": "/"}

        def run() -> list[dict]:
            objs = []
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=search,
                                                                              **extra):
                objs.extend(page.get("Contents", []) or [])
            return objs

        objs = self._call(f"listing of s3://{self.bucket}/{search}", run)
        return [self._object_info(self._rel(o["Key"]), o) for o in objs]

    def _delete(self, keys: list[str]) -> None:
        for i in range(0, len(keys), 1000):
            batch = [{"Key": self._full(k)} for k in keys[i:i + 1000]]
            # the manifest (first in ``keys``) goes in its own request so it is gone before any file
            if i == 0 and len(batch) > 1:
                first, rest = batch[:1], batch[1:]
                self._call("delete", lambda: self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": first}))
                batch = rest
            self._call("delete", lambda b=batch: self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": b}))


class _ObjectMissing(Exception):
    """Raised by :meth:`S3Store._call` with ``missing_ok=True`` when the object (or bucket) is not there."""


def _short(e: Optional[BaseException]) -> str:
    if e is None:
        return "unknown error"
    text = f"{type(e).__name__}: {e}"
    return text if len(text) < 300 else text[:297] + "..."


# --------------------------------------------------------------------------------------------- factory
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


def _parent_and_key(uri: str, **options: Any) -> tuple[Store, str]:
    """The store one level above ``uri`` and the key of ``uri`` in it."""
    scheme, rest = split_uri(uri)
    if scheme == "s3":
        bucket, _, key = rest.partition("/")
        if not key:
            raise StorageError(f"{uri} is a whole bucket; artifacts live under a prefix such as s3://{bucket}/runs/x")
        return S3Store(bucket, "", **options), validate_key(key)
    p = Path(rest)
    return LocalStore(p.parent), p.name


def parent_and_key(uri: str, **options: Any) -> tuple[Store, str]:
    """The store one level above ``uri`` and the key of ``uri`` in it (``s3://b/a/x`` -> (store of
    ``s3://b``, ``a/x``); ``/p/a/x`` -> (store of ``/p/a``, ``x``))."""
    return _parent_and_key(uri, **options)


def is_complete(uri: str, **options: Any) -> bool:
    """True when the artifact at ``uri`` (local folder or S3 prefix) is finished (manifest present)."""
    store, key = _parent_and_key(uri, **options)
    return store.is_complete(key)


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
    store, key = _parent_and_key(uri, **options)
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

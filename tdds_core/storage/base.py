"""The :class:`Store` base: artifact logic (folders with a manifest, uploaded manifest last and
checked on download) over a few backend primitives that :class:`~tdds_core.storage.local.LocalStore`
and :class:`~tdds_core.storage.s3.S3Store` implement; :class:`ObjectInfo`, :class:`TransferStats`
and the atomic file writes they share."""
from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from ..errors import ArtifactError, StorageError
from ..io import MANIFEST, read_manifest, sha256_file, verify_manifest, write_manifest
from .uris import join_keys, validate_key

__all__ = ["Store", "ObjectInfo", "TransferStats", "DEFAULT_MAX_POOL", "atomic_write", "swap_into_place"]

log = logging.getLogger(__name__)

DEFAULT_MAX_POOL = 32


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
        key = join_keys(*parts)
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
        mkey = join_keys(prefix, MANIFEST)
        ordered = [k for k in keys if k == mkey] + [k for k in keys if k != mkey]
        if ordered:
            self._delete(ordered)
        return len(ordered)

    def is_complete(self, prefix: str) -> bool:
        """True when ``prefix`` holds a finished artifact (its manifest is present)."""
        return self._exists(join_keys(validate_key(prefix, allow_root=True), MANIFEST))

    def read_manifest(self, prefix: str) -> dict:
        """The manifest of the artifact at ``prefix``; ArtifactError when it is absent."""
        prefix = validate_key(prefix, allow_root=True)
        mkey = join_keys(prefix, MANIFEST)
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
            self._delete([join_keys(prefix, MANIFEST)])
        if not (local_dir / MANIFEST).is_file():
            write_manifest(local_dir)
        manifest = verify_manifest(local_dir)
        for name, entry in sorted(manifest.get("files", {}).items()):
            validate_key(name)
            key = join_keys(prefix, name)
            if self._remote_sha256(key) == entry["sha256"]:
                continue
            self._put_file(local_dir / name, key, entry["sha256"])
            self.stats.files_uploaded += 1
            self.stats.bytes_uploaded += int(entry.get("bytes", 0))
        mpath = local_dir / MANIFEST
        self._put_file(mpath, join_keys(prefix, MANIFEST), sha256_file(mpath))
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
                self.get_file(join_keys(prefix, name), dst)
                digest = sha256_file(dst)
                if digest != entry.get("sha256"):
                    raise ArtifactError(
                        f"{self.join(prefix, name)} is corrupt: SHA-256 {digest[:12]}... does not match its manifest's "
                        f"{str(entry.get('sha256'))[:12]}...; delete the artifact and rerun the stage that writes it."
                    )
            (tmp / MANIFEST).write_text(json.dumps(remote, indent=2, sort_keys=True) + "\n")
            swap_into_place(tmp, local_dir)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        return remote


def swap_into_place(tmp: Path, final: Path) -> None:
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


def atomic_write(dst: Path, write: Callable[[Any], Any], *, fsync: bool = True) -> None:
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

"""A store in a folder on this machine: every write goes to a temporary sibling renamed into place."""
from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path
from typing import Any, Callable, Optional

from ..errors import ArtifactError, StorageError
from ..io import sha256_file
from .base import ObjectInfo, Store, atomic_write
from .uris import validate_key

__all__ = ["LocalStore"]


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
        atomic_write(dst, write, fsync=True)

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
            atomic_write(local, lambda f: shutil.copyfileobj(fin, f, 1 << 20), fsync=False)
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

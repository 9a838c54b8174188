"""Atomic file writes, SHA-256 checksums and manifests (complete-or-absent artifacts).

Every artifact folder ends with a ``manifest.json`` written last (atomically) that lists each file
with its SHA-256 and size. A folder without a manifest is incomplete; a file whose checksum differs
is corrupt. Readers call :func:`verify_manifest` / :func:`load_npy` and get an
:class:`~tdds_core.errors.ArtifactError` that names the file.
"""
from __future__ import annotations

import hashlib
import io
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from .errors import ArtifactError

MANIFEST = "manifest.json"


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, streamed in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class _Hashing:
    """A write-only file that hashes (SHA-256) and counts what passes through it."""

    def __init__(self, f: Any):
        self.f, self.h, self.n = f, hashlib.sha256(), 0

    def write(self, b: Any) -> int:
        view = memoryview(b).cast("B")
        self.h.update(view)
        self.n += len(view)
        return self.f.write(view)


def _atomic(path: Path, write) -> dict:
    """Write ``path`` through a temporary file, fsync and rename; returns the manifest entry of what
    was written (``{"sha256", "bytes"}``, hashed as it was written: no second read)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            hashing = _Hashing(f)
            write(hashing)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        return {"sha256": hashing.h.hexdigest(), "bytes": hashing.n}
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> dict:
    """Write ``data`` to a temporary file beside ``path`` and rename it into place; returns
    ``{"sha256", "bytes"}``."""
    return _atomic(Path(path), lambda f: f.write(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> dict:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def atomic_save_npy(path: str | os.PathLike, array: np.ndarray) -> dict:
    """``np.save`` through a temporary file and a rename; returns ``{"sha256", "bytes"}``."""
    return _atomic(Path(path), lambda f: np.save(f, np.ascontiguousarray(array), allow_pickle=False))


def atomic_torch_save(path: str | os.PathLike, obj: Any) -> None:
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def read_json(path: str | os.PathLike) -> Any:
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path} is missing: the stage that writes it did not finish; rerun it.")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ArtifactError(f"{path} is not valid JSON ({e}); delete it and rerun the stage.") from e


def write_manifest(folder: str | os.PathLike, files: Iterable[str] | None = None, **meta: Any) -> dict:
    """Checksum ``files`` (relative names; default: every file but the manifest) and write
    ``manifest.json`` last. Returns the manifest dict."""
    folder = Path(folder)
    if files is None:
        files = sorted(
            str(p.relative_to(folder)) for p in folder.rglob("*")
            if p.is_file() and str(p.relative_to(folder)) != MANIFEST
            and not any(part.startswith(".") for part in p.relative_to(folder).parts)
        )
    entries = {}
    for name in files:
        p = folder / name
        entries[name] = {"sha256": sha256_file(p), "bytes": p.stat().st_size}
    manifest = dict(meta)
    manifest["files"] = entries
    atomic_write_json(folder / MANIFEST, manifest)
    return manifest


def read_manifest(folder: str | os.PathLike) -> dict:
    folder = Path(folder)
    if not (folder / MANIFEST).is_file():
        raise ArtifactError(
            f"{folder} has no {MANIFEST}: the artifact is incomplete (its writer was interrupted) "
            "or this is not a tdds artifact folder; rerun the stage that writes it."
        )
    return read_json(folder / MANIFEST)


def verify_file(folder: str | os.PathLike, name: str, manifest: dict | None = None) -> Path:
    """Check one file of an artifact folder against its manifest entry; return its path."""
    folder = Path(folder)
    manifest = manifest if manifest is not None else read_manifest(folder)
    entry = manifest.get("files", {}).get(name)
    p = folder / name
    if entry is None:
        raise ArtifactError(f"{p} is not listed in {folder / MANIFEST}; the artifact is incomplete, rerun its stage.")
    if not p.is_file():
        raise ArtifactError(f"{p} is listed in the manifest but missing; rerun the stage that writes it.")
    digest = sha256_file(p)
    if digest != entry["sha256"]:
        raise ArtifactError(
            f"{p} is corrupt: SHA-256 {digest[:12]}... does not match the manifest's {entry['sha256'][:12]}...; "
            "delete the folder and rerun the stage."
        )
    return p


def verify_manifest(folder: str | os.PathLike) -> dict:
    """Check every file listed in ``folder/manifest.json``; return the manifest."""
    manifest = read_manifest(folder)
    for name in manifest.get("files", {}):
        verify_file(folder, name, manifest)
    return manifest


def load_npy(path: str | os.PathLike, mmap: bool = False) -> np.ndarray:
    """``np.load`` with a clear error for a missing, truncated or corrupt file."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path} is missing; rerun the stage that writes it.")
    try:
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise ArtifactError(f"{path} is truncated or not a valid .npy file ({e}); delete it and rerun the stage.") from e


def json_safe(v: Any) -> Any:
    """``v`` with NaN and infinities replaced by None (strict JSON), through dicts, lists and tuples."""
    if isinstance(v, float) and (math.isnan(v) or math.isinf(v)):
        return None
    if isinstance(v, dict):
        return {k: json_safe(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [json_safe(x) for x in v]
    return v

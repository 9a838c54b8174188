"""The ``manifest`` dataset: samples listed by id in a manifest file, locally or on S3.

A growing dataset that publishes "a manifest of sample ids" (a CSV or JSONL file, on S3 or on a
local disk) is re-pruned on its newest version with ``tdds run --pipeline reprune``::

    data:
      name: manifest
      root: s3://pets/manifest.csv        # or s3://pets/manifests/ : the newest manifest in the prefix
      image_size: 32
      options: {test_percent: 10, classes: [cat, dog, fox], workers: 16}

``data.root`` is a manifest URI (local path or ``s3://bucket/key``) ending in ``.csv`` or
``.jsonl``, or a folder / S3 prefix ending in ``/`` (a local folder may omit it): then the manifest
used is the newest one directly in it, i.e. the last ``*.csv`` / ``*.jsonl`` name in lexicographic
order (``v0001.csv`` < ``v0002.csv``, ``2024-05-01.jsonl`` < ``2024-06-01.jsonl``); the one used is
recorded in ``splits.info["manifest"]``.

Columns (a CSV with a header line, or JSONL objects with the same keys)::

    id,label,path,split
    cat/001,cat,images/cat/001.png,train
    dog/007,dog,s3://other-bucket/dogs/007.jpg,
    fox/003,fox,,test

* ``id`` (required, unique): the stable sample id (selections and re-pruning compare ids);
* ``label`` (required): the class name;
* ``path`` (optional, default the id): the image, relative to the manifest's own folder / prefix,
  or absolute (a local path or an ``s3://`` URI);
* ``split`` (optional): ``train`` or ``test``; absent or empty, the sample is a test sample when
  a hash of its id falls below ``test_percent`` (as ``imagefolder`` does), so a growing dataset
  keeps its split.

Samples keep the manifest's row order; classes are the sorted labels unless ``classes`` gives
the order (then another label is an error). The dataset fingerprint (over the training ids and
labels) changes when rows are appended; existing rows keep their ids and labels.

Images on S3 are listed once per bucket under their common prefix (sizes and ETags, one request
per 1,000 objects) and downloaded in parallel (``workers`` threads) into
``$TDDS_CACHE/manifest/<digest of the bucket's store identity (endpoint and bucket)>/<key>``, each
with a small ETag sidecar: an image cached with the same size and ETag is not fetched again, so a
grown manifest downloads only its new images. ``splits.info`` records ``downloaded``, ``cached``
(S3 objects reused from the cache), ``local`` (local images) and ``rows``. All S3 access goes
through :class:`tdds_core.storage.Store` (``root_exists``, ``list_info``, ``get_bytes``, ``fetch``).
"""
from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import logging
import os
import posixpath
import tempfile
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import numpy as np
from tqdm.auto import tqdm

from ..errors import ArtifactError, ConfigError, DataError, StorageError
from ..storage import cache_root, is_remote, open_store, validate_key
from .base import ArrayDataset, Splits, register_dataset
from .datasets import IMAGE_EXTS, _decode, _stable_bucket

if TYPE_CHECKING:
    from ..storage import ObjectInfo, S3Store

__all__ = ["manifest", "ManifestRow", "read_manifest_rows", "resolve_manifest", "MANIFEST_EXTS"]

log = logging.getLogger(__name__)

MANIFEST_EXTS = (".csv", ".jsonl")
SPLITS = ("train", "test")
_SIDE = ".tdds-etag"          # sidecar: <dir>/.<name>.tdds-etag holds {"etag", "size"} of the cached object
_FORMAT = "columns id,label[,path,split] (CSV with a header line, or JSONL objects with those keys)"


@dataclass(frozen=True)
class ManifestRow:
    """One sample of a manifest: ``line`` is its 1-based line in the file (for messages)."""

    id: str
    label: str
    path: str
    split: str          # "train", "test" or "" (hash split)
    line: int


# ------------------------------------------------------------------------------------------ S3 helpers
def _s3_store(bucket: str) -> S3Store:
    """The store of a whole bucket (keys are full object keys); contacts nothing yet."""
    return open_store(f"s3://{bucket}")  # type: ignore[return-value]


def _check_bucket(store: S3Store, uri: str) -> None:
    """DataError naming the bucket, the endpoint and the fix when ``store``'s bucket is missing."""
    if not store.root_exists():
        raise DataError(f"S3 bucket {store.bucket!r} (of {uri}) does not exist at endpoint {store.endpoint_label}; "
                        f"create it (aws s3 mb s3://{store.bucket}), upload the data, or fix data.root / the "
                        "manifest's path column.")


def _split_s3(uri: str) -> tuple[str, str]:
    rest = uri[len("s3://"):]
    bucket, _, key = rest.partition("/")
    if not bucket:
        raise ConfigError(f"{uri!r} names no S3 bucket; use s3://bucket/path/manifest.csv or s3://bucket/prefix/")
    return bucket, key


# ------------------------------------------------------------------------------------------ locating the manifest
def _is_manifest_name(name: str) -> bool:
    return name.lower().endswith(MANIFEST_EXTS) and not posixpath.basename(name).startswith(".")


def resolve_manifest(root: str) -> str:
    """The manifest URI that ``root`` names: ``root`` itself for a ``.csv`` / ``.jsonl`` file, the
    lexicographically last manifest directly in it for a folder or an S3 prefix ending in ``/``."""
    if not isinstance(root, str) or not root.strip():
        raise ConfigError("data.root: the manifest dataset needs data.root = a manifest file (.csv or .jsonl), "
                          "local or s3://bucket/key, or a folder / s3://bucket/prefix/ holding manifests.")
    root = root.strip()
    if root.startswith("file://"):
        root = root[len("file://"):]
    if is_remote(root):
        bucket, key = _split_s3(root)
        if _is_manifest_name(key):
            return root
        if key and not root.endswith("/"):
            raise ConfigError(f"data.root {root!r}: a manifest must end in .csv or .jsonl; for 'the newest manifest "
                              f"in a prefix' end the URI with '/' (s3://{bucket}/{key}/).")
        try:
            validate_key(key.rstrip("/"), allow_root=True)
        except StorageError:
            raise ConfigError(f"data.root {root!r}: the S3 prefix has an empty, '.' or '..' part; name the prefix "
                              f"that holds the manifests, e.g. s3://{bucket}/manifests/.") from None
        store = _s3_store(bucket)
        _check_bucket(store, root)
        prefix = key
        keys = [i.key for i in store.list_info(prefix, recursive=False) if _is_manifest_name(i.key[len(prefix):])]
        if not keys:
            raise DataError(f"data.root {root}: the prefix holds no manifest (*.csv or *.jsonl directly under it) at "
                            f"endpoint {store.endpoint_label}; upload one (e.g. {root}v0001.csv) or point data.root "
                            "at the manifest file itself.")
        return f"s3://{bucket}/{max(keys)}"
    if "://" in root:
        raise ConfigError(f"data.root {root!r}: unsupported URI scheme; use a local path or s3://bucket/key.")
    p = Path(root).expanduser().absolute()
    if p.is_dir() or root.endswith(("/", os.sep)):
        if not p.is_dir():
            raise DataError(f"data.root {root}: the folder does not exist; create it and put a manifest "
                            "(*.csv or *.jsonl) in it, or point data.root at the manifest file.")
        found = sorted(q.name for q in p.iterdir() if q.is_file() and _is_manifest_name(q.name))
        if not found:
            raise DataError(f"data.root {p}: the folder holds no manifest (*.csv or *.jsonl); add one "
                            f"(e.g. {p / 'v0001.csv'}) or point data.root at the manifest file itself.")
        return str(p / found[-1])
    if not _is_manifest_name(p.name):
        raise ConfigError(f"data.root {root!r}: a manifest must end in .csv or .jsonl (or name a folder of manifests).")
    return str(p)


def _read_manifest_bytes(uri: str) -> bytes:
    if is_remote(uri):
        bucket, key = _split_s3(uri)
        store = _s3_store(bucket)
        _check_bucket(store, uri)
        try:
            return store.get_bytes(key)
        except ArtifactError:  # the object is missing (the bucket is there)
            raise DataError(f"manifest {uri} does not exist at endpoint {store.endpoint_label}; upload it or fix "
                            f"data.root (see what is there: aws s3 ls s3://{bucket}/{posixpath.dirname(key)}/).") from None
    p = Path(uri)
    if not p.is_file():
        raise DataError(f"manifest {p} does not exist; create it ({_FORMAT}) or fix data.root.")
    try:
        return p.read_bytes()
    except OSError as e:
        raise DataError(f"cannot read manifest {p} ({e}); check its permissions or fix data.root.") from e


# ------------------------------------------------------------------------------------------ parsing
def read_manifest_rows(data: bytes, uri: str) -> list[ManifestRow]:
    """Parse a manifest (``uri`` decides CSV or JSONL and names the file in messages). Checks the
    columns, ids (non-empty, unique), labels (non-empty) and split values."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataError(f"manifest {uri} is not UTF-8 text ({e}); save it as UTF-8.") from None
    if not text.strip():
        raise DataError(f"manifest {uri} is empty; write {_FORMAT}, one row per sample.")
    raw = _parse_jsonl(text, uri) if uri.lower().endswith(".jsonl") else _parse_csv(text, uri)
    if not raw:
        raise DataError(f"manifest {uri} holds a header but no rows; add one row per sample (id,label[,path,split]).")
    rows: list[ManifestRow] = []
    first_line: dict[str, int] = {}
    for line, rec in raw:
        sid = _text(rec.get("id"))
        if not sid:
            raise DataError(f"manifest {uri} line {line}: empty id; give every row a unique, stable sample id.")
        if sid in first_line:
            raise DataError(f"manifest {uri} line {line}: duplicate id {sid!r} (first on line {first_line[sid]}); "
                            "ids must be unique: remove the duplicate row or give it its own id.")
        first_line[sid] = line
        label = _text(rec.get("label"))
        if not label:
            raise DataError(f"manifest {uri} line {line}: empty label for id {sid!r}; give every row a class name.")
        split = _text(rec.get("split")).lower()
        if split not in ("",) + SPLITS:
            raise DataError(f"manifest {uri} line {line}: invalid split {rec.get('split')!r} for id {sid!r}; use "
                            "'train', 'test' or leave it empty (then a hash of the id decides, by test_percent).")
        rows.append(ManifestRow(sid, label, _text(rec.get("path")) or sid, split, line))
    return rows


def _text(v: Any) -> str:
    return "" if v is None else str(v).strip()


def _parse_csv(text: str, uri: str) -> list[tuple[int, dict]]:
    reader = csv.DictReader(io.StringIO(text, newline=""))
    try:
        header = [h.strip().lower() for h in (reader.fieldnames or [])]
    except csv.Error as e:
        raise DataError(f"manifest {uri}: cannot parse the header line as CSV ({e}); write {_FORMAT}.") from None
    reader.fieldnames = header
    missing = [c for c in ("id", "label") if c not in header]
    if missing:
        raise DataError(f"manifest {uri}: the header line {','.join(header)!r} has no {' and no '.join(repr(m) for m in missing)} "
                        f"column; the first line must be a header naming the columns: id,label[,path,split].")
    out = []
    try:
        for rec in reader:
            if None in rec:
                raise DataError(f"manifest {uri} line {reader.line_num}: more fields than the header's "
                                f"{len(header)}; quote values that hold commas.")
            out.append((reader.line_num, rec))
    except csv.Error as e:
        raise DataError(f"manifest {uri} line {reader.line_num}: not valid CSV ({e}); fix the line.") from None
    return out


def _parse_jsonl(text: str, uri: str) -> list[tuple[int, dict]]:
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"manifest {uri} line {n}: not valid JSON ({e.msg}); each line must be one object like "
                            '{"id": "cat/001", "label": "cat", "path": "images/cat/001.png"}.') from None
        if not isinstance(rec, dict):
            raise DataError(f"manifest {uri} line {n}: a JSON {type(rec).__name__}, not an object; each line must be "
                            'one object like {"id": "cat/001", "label": "cat"}.')
        missing = [c for c in ("id", "label") if c not in rec]
        if missing:
            raise DataError(f"manifest {uri} line {n}: no {' and no '.join(repr(m) for m in missing)} key; every "
                            "line needs at least the keys id and label (path and split are optional).")
        out.append((n, rec))
    return out


# ------------------------------------------------------------------------------------------ image locations
def _base_of(manifest_uri: str) -> str:
    """The folder / prefix relative paths start from: the manifest's own."""
    if is_remote(manifest_uri):
        return manifest_uri.rsplit("/", 1)[0] + "/"
    return str(Path(manifest_uri).parent)


def _resolve(path: str, base: str, row: ManifestRow, uri: str) -> str:
    """An image location: ``s3://bucket/key`` or an absolute local path."""
    if is_remote(path):
        bucket, key = _split_s3(path)
        if not key or key.endswith("/"):
            raise DataError(f"manifest {uri} line {row.line}: path {path!r} of id {row.id!r} names no object; "
                            "use s3://bucket/key.")
        return path  # S3 keys are literal: not normalised
    if path.startswith("file://"):
        path = path[len("file://"):]
    if "://" in path:
        raise DataError(f"manifest {uri} line {row.line}: path {path!r} of id {row.id!r} has an unsupported scheme; "
                        "use a path relative to the manifest, an absolute local path or s3://bucket/key.")
    if os.path.isabs(path):
        return os.path.normpath(path)
    if is_remote(base):
        bucket, prefix = _split_s3(base)
        key = posixpath.normpath(posixpath.join(prefix, path))
        if key.startswith("..") or key == ".":
            raise DataError(f"manifest {uri} line {row.line}: path {path!r} of id {row.id!r} leaves bucket "
                            f"{bucket!r}; use a path inside the bucket or an absolute s3:// URI.")
        return f"s3://{bucket}/{key}"
    return os.path.normpath(os.path.join(base, path))


def _missing_hint(path: str) -> str:
    if Path(path).suffix.lower() not in IMAGE_EXTS:
        return (" (the path has no image extension: when the path column is empty the id is used as the path; "
                "set the path column, e.g. images/<class>/<name>.png)")
    return ""


# ------------------------------------------------------------------------------------------ S3 images -> cache
def _cache_dir(store: S3Store) -> Path:
    """``$TDDS_CACHE/manifest/<digest of the store's identity>``: one folder per endpoint and bucket."""
    tag = hashlib.sha256(store.identity.encode()).hexdigest()[:16]
    return cache_root() / "manifest" / tag


def _sidecar(local: Path) -> Path:
    return local.parent / f".{local.name}{_SIDE}"


def _cached(local: Path, etag: str, size: int) -> bool:
    try:
        meta = json.loads(_sidecar(local).read_text())
        return meta.get("etag") == etag and int(meta.get("size", -1)) == size and local.stat().st_size == size
    except (OSError, ValueError):
        return False


def _write_atomic(dst: Path, data: bytes) -> None:
    """Temp file + rename, without the fsync of :func:`tdds_core.io.atomic_write_bytes`: this is a
    cache of many small images, and a file torn by a crash fails the size check against its sidecar
    and is downloaded again."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=".part", dir=dst.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, dst)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _common_prefix(keys: list[str]) -> str:
    p = os.path.commonprefix(keys)
    return p[: p.rfind("/") + 1] if "/" in p else ""


def _fetch_s3(images: dict[str, list[tuple[str, ManifestRow]]], workers: int, uri: str) -> tuple[dict[str, Path], int, int]:
    """Bring every S3 image into the cache. ``images``: bucket -> [(key, row)]. Returns (local path
    per ``s3://`` URI, downloaded count, reused count)."""
    local: dict[str, Path] = {}
    todo: list[tuple[S3Store, str, Path, ManifestRow]] = []
    reused = 0
    for bucket, items in images.items():
        store = _s3_store(bucket)
        for key, row in items:
            try:
                validate_key(key)
            except StorageError:
                raise DataError(f"manifest {uri} line {row.line}: image key {key!r} of id {row.id!r} has an empty, "
                                "'.' or '..' part and cannot be cached; rename the object.") from None
        _check_bucket(store, f"s3://{bucket}/{items[0][0]}")
        base = _cache_dir(store)
        keys = sorted({k for k, _ in items})
        prefix = _common_prefix(keys)
        listing: dict[str, ObjectInfo] = {i.key: i for i in store.list_info(prefix)}
        seen: set[str] = set()
        for key, row in items:
            u = f"s3://{bucket}/{key}"
            if key in seen:
                continue
            seen.add(key)
            if key not in listing:
                raise DataError(f"manifest {uri} line {row.line}: image {u} of id {row.id!r} does not exist at endpoint "
                                f"{store.endpoint_label}; upload it or fix the row's path{_missing_hint(key)}.")
            dst = base / key
            local[u] = dst
            if _cached(dst, listing[key].etag, listing[key].size):
                reused += 1
            else:
                todo.append((store, key, dst, row))
    if todo:
        n_workers = max(1, min(int(workers), todo[0][0].max_parallel, len(todo)))
        bar = tqdm(total=len(todo), desc="downloading images", unit="img", leave=False, disable=len(todo) < 2000)

        def get(store: S3Store, key: str, dst: Path, row: ManifestRow) -> None:
            got = store.fetch(key, dst)
            if got is None:
                raise DataError(f"manifest {uri} line {row.line}: image s3://{store.bucket}/{key} of id {row.id!r} "
                                f"disappeared at endpoint {store.endpoint_label}; upload it or fix the row's path.")
            try:
                _write_atomic(_sidecar(dst), json.dumps({"etag": got.etag, "size": got.size}).encode())
            except OSError as e:
                raise StorageError(f"cannot write {dst} into the image cache ({e}); check free space and permissions "
                                   "of $TDDS_CACHE (default ~/.cache/tdds).") from None
            bar.update(1)

        with ThreadPoolExecutor(max_workers=n_workers, thread_name_prefix="manifest-dl") as ex:
            futures = [ex.submit(get, *t) for t in todo]
            try:
                for f in as_completed(futures):
                    f.result()
            except BaseException:
                for f in futures:
                    f.cancel()
                raise
            finally:
                bar.close()
    return local, len(todo), reused


# ------------------------------------------------------------------------------------------ the dataset
def _check_options(image_size: Any, channels: Any, test_percent: Any, classes: Any, workers: Any) -> Optional[list[str]]:
    if not isinstance(image_size, int) or isinstance(image_size, bool) or image_size < 1:
        raise ConfigError(f"data.image_size / data.options.image_size: {image_size!r} is not a positive integer; "
                          "set it to the side of the square images models see (e.g. 32).")
    if channels not in (1, 3):
        raise ConfigError(f"data.options.channels: {channels!r}; use 3 (RGB) or 1 (grayscale).")
    if not isinstance(test_percent, int) or isinstance(test_percent, bool) or not 0 <= test_percent < 100:
        raise ConfigError(f"data.options.test_percent: {test_percent!r}; use an integer in [0, 100) (the share of "
                          "rows without a split value that go to the test split).")
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
        raise ConfigError(f"data.options.workers: {workers!r}; use a positive integer (parallel S3 downloads).")
    if classes is None:
        return None
    if isinstance(classes, str) or not isinstance(classes, (list, tuple)) or not classes:
        raise ConfigError(f"data.options.classes: {classes!r}; give a non-empty list of class names, e.g. [cat, dog].")
    names = [str(c).strip() for c in classes]
    if any(not c for c in names):
        raise ConfigError("data.options.classes holds an empty class name; list the class names.")
    dup = sorted({c for c in names if names.count(c) > 1})
    if dup:
        raise ConfigError(f"data.options.classes lists {dup} more than once; list each class once.")
    return names


@register_dataset("manifest", options=("image_size", "channels", "test_percent", "classes", "workers"))
def manifest(root: Optional[str] = None, *, image_size: int = 32, channels: int = 3, test_percent: int = 10,
             classes: Optional[list[str]] = None, workers: int = 16, download: bool = False) -> Splits:
    """Samples listed in a manifest (local or S3; see the module docstring for the format).

    Returns :class:`Splits` named ``manifest``: images uint8 ``[N, channels, image_size, image_size]``,
    labels int64 ``[N]`` (indices into ``classes``), ids = the ``id`` column in manifest order,
    ``paths`` = the ``path`` column as written. ``info``: ``manifest`` (the URI used), ``rows``,
    ``downloaded``, ``cached``, ``local``.
    """
    del download
    explicit = _check_options(image_size, channels, test_percent, classes, workers)
    uri = resolve_manifest(root)  # type: ignore[arg-type]
    try:
        rows = read_manifest_rows(_read_manifest_bytes(uri), uri)
    except StorageError as e:
        raise StorageError(f"reading manifest {uri}: {e}") from None

    if explicit is not None:
        known = set(explicit)
        for r in rows:
            if r.label not in known:
                raise DataError(f"manifest {uri} line {r.line}: label {r.label!r} of id {r.id!r} is not in "
                                f"data.options.classes {explicit}; add it to the list or fix the row's label.")
        class_names = explicit
    else:
        class_names = sorted({r.label for r in rows})
    cidx = {c: i for i, c in enumerate(class_names)}

    base = _base_of(uri)
    sources = [_resolve(r.path, base, r, uri) for r in rows]
    s3_items: dict[str, list[tuple[str, ManifestRow]]] = {}
    n_local = 0
    for src, r in zip(sources, rows):
        if is_remote(src):
            b, k = _split_s3(src)
            s3_items.setdefault(b, []).append((k, r))
        else:
            n_local += 1
            if not Path(src).is_file():
                raise DataError(f"manifest {uri} line {r.line}: image {src} of id {r.id!r} does not exist; add the "
                                f"file or fix the row's path (relative paths start at {base}){_missing_hint(src)}.")
    downloaded = reused = 0
    local_of: dict[str, Path] = {}
    if s3_items:
        try:
            local_of, downloaded, reused = _fetch_s3(s3_items, workers, uri)
        except StorageError as e:
            raise StorageError(f"fetching the images of manifest {uri}: {e}") from None
    files = [local_of[s] if is_remote(s) else Path(s) for s in sources]

    is_test = [r.split == "test" or (r.split == "" and _stable_bucket(r.id) < test_percent) for r in rows]

    def build(pos: list[int]) -> ArrayDataset:
        if pos:
            imgs = _decode([files[i] for i in pos], image_size, channels,
                           describe=lambda j: (f"manifest {uri} line {rows[pos[j]].line}: image {sources[pos[j]]} "
                                               f"of id {rows[pos[j]].id!r}"),
                           fix="replace the image or remove the row")
        else:
            imgs = np.zeros((0, channels, image_size, image_size), np.uint8)
        return ArrayDataset(imgs, np.array([cidx[rows[i].label] for i in pos], dtype=np.int64),
                            [rows[i].id for i in pos], base, [rows[i].path for i in pos])

    train = build([i for i, t in enumerate(is_test) if not t])
    test = build([i for i, t in enumerate(is_test) if t])
    if s3_items:
        log.info("manifest %s: %d rows; %d images downloaded, %d reused from the cache", uri, len(rows), downloaded,
                 reused)
    info = {"manifest": uri, "rows": len(rows), "downloaded": downloaded, "cached": reused, "local": n_local}
    return Splits("manifest", train, test, class_names, (0.5,) * channels, (0.25,) * channels, flip=True,
                  crop_padding=max(1, image_size // 8), info=info)

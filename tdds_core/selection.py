"""From scores to a selection: which samples to keep, in what order, with what weights.

``select(scores, rate)`` keeps ``round((1 - rate) * N)`` samples (Python's ``round``, halves to
even). Without a sampler they are the top scores. Equal scores are ordered by a seeded random
permutation of the sample positions (:func:`tie_break_keys`: ``numpy.random.default_rng(seed)
.permutation(N)`` with the selection's ``seed``, default 0), not by position: on a dataset stored
class by class, position order would fill a tie with the first classes. The same scores and seed
give the same kept set, and selections at different rates from one scoring run with one seed are
still nested. ``class_balanced=True`` keeps the same fraction of every class (largest-remainder
apportionment, so the total is still exact), ties inside a class broken by the same permutation. A
selection strategy other than top-k (:mod:`tdds_core.strategies`: CCS's stratified sampling, DUAL's
Beta sampling, ...) comes in as a ``sampler``; the kept samples are then still listed in importance
order (ties by the same permutation).

Importance weights are the scores min-max normalised over ALL samples, as the authors do
(paper Eq. 13), reported for the kept ones (float32; samples with a ``-inf`` score get 0; all
weights are 1 when every score is equal).

A selection folder (``tdds-selection/1``)::

    indices.npy   int64 [M] positions, most important first
    ids.txt       M stable sample ids, same order
    scores.npy    float64 [M] scores, same order
    weights.npy   float32 [M] normalised importance, same order
    selected.csv  id,index,label,score,weight
    manifest.json written last: format, method, params, rate, class_balanced, fingerprint,
                  num_samples, num_selected, files (SHA-256); the select stage and `tdds select`
                  add strategy, strategy_params and elapsed_s (wall seconds of selecting)

``export_arrays`` / ``export_files`` / ``export_subset`` materialise the pruned dataset itself for
use outside tdds.
"""
from __future__ import annotations

import csv
import io
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Iterable, Optional, Sequence

import numpy as np

from .errors import ArtifactError, DataError, ScoringError
from .io import (MANIFEST, atomic_save_npy, atomic_write_text, load_npy, verify_manifest, write_manifest)
from .names import METHOD_RS2

__all__ = [
    "Selection", "num_to_keep", "tie_break_keys", "importance_order", "normalized_weights", "class_quotas", "select", "select_many",
    "write_selection", "load_selection", "export_arrays", "export_files", "export_subset", "SELECTION_FORMAT",
    "SUBSET_FORMAT",
]

SELECTION_FORMAT = "tdds-selection/1"
SUBSET_FORMAT = "tdds-subset/1"

Sampler = Callable[..., np.ndarray]


@dataclass(frozen=True)
class Selection:
    """The kept samples of one pruning rate, most important first.

    ``indices`` int64 positions, ``scores`` float64, ``weights`` float32, ``ids`` str and
    ``labels`` int64 (or None) are aligned, length ``num_selected``. ``meta`` holds the manifest
    of a loaded selection (method, params, fingerprint, ...).
    """

    indices: np.ndarray
    scores: np.ndarray
    weights: np.ndarray
    ids: list
    labels: Optional[np.ndarray]
    rate: float
    num_samples: int
    class_balanced: bool = False
    meta: dict = field(default_factory=dict)

    @property
    def num_selected(self) -> int:
        return int(len(self.indices))

    def mask(self) -> np.ndarray:
        """bool ``[N]``: True for kept samples."""
        m = np.zeros(self.num_samples, dtype=bool)
        m[self.indices] = True
        return m

    def __len__(self) -> int:
        return self.num_selected


# -- pure helpers --------------------------------------------------------------------------------
def num_to_keep(rate: float, num_samples: int) -> int:
    """``round((1 - rate) * N)`` for a pruning rate in ``(0, 1)``."""
    if isinstance(rate, bool) or not isinstance(rate, (int, float, np.floating)) or not (0.0 < float(rate) < 1.0):
        raise ScoringError(f"pruning rate {rate!r} is outside (0, 1); use e.g. 0.7 to prune 70% of the samples")
    return int(round((1.0 - float(rate)) * int(num_samples)))


def _check_scores(scores: Any) -> np.ndarray:
    s = np.asarray(scores)
    if s.ndim != 1:
        raise ScoringError(f"scores must be a 1-D [N] array, got shape {s.shape}")
    if not np.issubdtype(s.dtype, np.number) or np.issubdtype(s.dtype, np.complexfloating):
        raise ScoringError(f"scores must be real numbers, got dtype {s.dtype}")
    s = s.astype(np.float64, copy=False)
    if np.isnan(s).any():
        raise ScoringError(f"{int(np.isnan(s).sum())} scores are NaN; rescore with --nan-policy skip to rank "
                           "samples with NaN/Inf logits last")
    return s


def tie_break_keys(num_samples: int, seed: Optional[int]) -> np.ndarray:
    """int64 ``[N]`` secondary sort keys for equal scores (lower key first): a random permutation of
    ``0 .. N-1`` from ``numpy.random.default_rng(seed)``; ``seed=None`` gives the positions
    themselves (ties by position, lower first)."""
    n = int(num_samples)
    if seed is None:
        return np.arange(n, dtype=np.int64)
    return np.random.default_rng(int(seed)).permutation(n).astype(np.int64)


def importance_order(scores: np.ndarray, *, seed: Optional[int] = None) -> np.ndarray:
    """Positions sorted by score, highest first; equal scores by :func:`tie_break_keys` (``seed=None``:
    by position, lower first; an int: by a random permutation seeded with it, as :func:`select` does)."""
    s = _check_scores(scores)
    return np.lexsort((tie_break_keys(len(s), seed), -s)).astype(np.int64)


def normalized_weights(scores: np.ndarray) -> np.ndarray:
    """float64 ``[N]``: ``(s - min) / (max - min)`` over the finite scores; ``-inf`` -> 0;
    all 1 when the finite scores are all equal."""
    s = _check_scores(scores)
    finite = np.isfinite(s)
    w = np.zeros(len(s), dtype=np.float64)
    if not finite.any():
        return w
    lo, hi = float(s[finite].min()), float(s[finite].max())
    if hi > lo:
        w[finite] = (s[finite] - lo) / (hi - lo)
    else:
        w[finite] = 1.0
    if np.isposinf(s).any():
        w[np.isposinf(s)] = 1.0
    return w


def class_quotas(labels: np.ndarray, rate: Optional[float], *, n_keep: Optional[int] = None) -> dict[int, int]:
    """Samples to keep per class: ``(1-rate) * n_c`` by largest remainder (ties to the lower
    class), summing exactly to ``round((1-rate) * N)``. ``rate=None``: the fraction ``n_keep / N``
    (``n_keep`` given, as a selection strategy knows it)."""
    y = np.asarray(labels)
    classes, counts = np.unique(y, return_counts=True)
    if rate is None:
        if n_keep is None or not (0 <= int(n_keep) <= len(y)):
            raise ScoringError(f"class quotas need a pruning rate or n_keep in 0..{len(y)}, got n_keep={n_keep!r}")
        n_keep = int(n_keep)
        exact = counts * (n_keep / len(y)) if len(y) else counts * 0.0
    else:
        n_keep = num_to_keep(rate, len(y))
        exact = (1.0 - float(rate)) * counts
    base = np.minimum(np.floor(exact).astype(np.int64), counts)
    rem = n_keep - int(base.sum())
    frac = exact - base
    order = np.lexsort((classes, -frac))
    for i in order:
        if rem <= 0:
            break
        if base[i] < counts[i]:
            base[i] += 1
            rem -= 1
    return {int(c): int(q) for c, q in zip(classes, base)}


def _check_sampled(chosen: Any, n_keep: int, n: int, who: str) -> np.ndarray:
    c = np.asarray(chosen, dtype=np.int64).reshape(-1)
    if len(c) != n_keep or (len(c) and (c.min() < 0 or c.max() >= n)) or len(np.unique(c)) != len(c):
        raise ScoringError(f"sampler {who} returned {len(c)} positions for {n_keep} wanted (must be distinct, in range)")
    return c


def select(scores: np.ndarray, rate: float, *, labels: Optional[np.ndarray], ids: Optional[Sequence[str]] = None,
           class_balanced: bool = False, sampler: Optional[Sampler] = None, seed: int = 0) -> Selection:
    """Keep ``round((1 - rate) * N)`` samples.

    Parameters
    ----------
    scores : array ``(N,)``
        Higher = keep first (any registered method's output). NaN is an error; ``-inf`` ranks last.
    rate : float
        Pruning rate in ``(0, 1)``: the fraction removed.
    labels : array ``(N,)`` of int, or None
        Needed for ``class_balanced``; reported with the selection.
    ids : sequence of str, optional
        Stable sample ids (default: positions as strings).
    class_balanced : bool
        Keep the same fraction of every class instead of the global top.
    sampler : callable, optional
        ``sampler(scores, n_keep, *, labels, seed) -> positions``: a selection strategy other than
        top-k (:func:`tdds_core.strategies.strategy_sampler`: CCS, DUAL's Beta sampling, ...);
        applied per class when ``class_balanced``.
    seed : int
        Seeds the tie-break permutation of equal scores (:func:`tie_break_keys`) and is passed to
        the sampler (CCS's draws). Same scores, rate and seed -> same selection.

    Returns
    -------
    Selection
    """
    s = _check_scores(scores)
    n = len(s)
    n_keep = num_to_keep(rate, n)
    if n_keep < 1:
        raise ScoringError(f"pruning rate {rate} keeps round((1 - {rate}) * {n}) = 0 of {n} samples; lower the rate")
    y = None
    if labels is not None:
        y = np.asarray(labels)
        if y.shape != (n,):
            raise ScoringError(f"labels have shape {y.shape} but there are {n} scores")
        y = y.astype(np.int64)
    if class_balanced and y is None:
        raise ScoringError("class_balanced selection needs labels; pass the dynamics (--dynamics) or --labels")
    if ids is not None:
        ids = [str(i) for i in ids]
        if len(ids) != n:
            raise ScoringError(f"{len(ids)} ids for {n} scores")
    tie = tie_break_keys(n, seed)
    name = getattr(sampler, "__name__", "sampler")
    if not class_balanced:
        if sampler is None:
            kept = np.lexsort((tie, -s))[:n_keep]
        else:
            kept = _check_sampled(sampler(s, n_keep, labels=y, seed=seed), n_keep, n, name)
    else:
        parts = []
        for c, q in class_quotas(y, rate).items():
            members = np.flatnonzero(y == c)
            if q == 0:
                continue
            if sampler is None:
                mo = members[np.lexsort((tie[members], -s[members]))]
                parts.append(mo[:q])
            else:
                sub = _check_sampled(sampler(s[members], q, labels=y[members], seed=seed), q, len(members), name)
                parts.append(members[sub])
        kept = np.concatenate(parts)
    kept = np.asarray(kept, dtype=np.int64)
    kept = kept[np.lexsort((tie[kept], -s[kept]))]  # importance order, ties by the seeded permutation
    weights = normalized_weights(s)[kept].astype(np.float32)
    kept_ids = [ids[i] for i in kept] if ids is not None else [str(int(i)) for i in kept]
    return Selection(indices=kept, scores=s[kept].copy(), weights=weights, ids=kept_ids,
                     labels=None if y is None else y[kept], rate=float(rate), num_samples=n,
                     class_balanced=bool(class_balanced))


def select_many(scores: np.ndarray, rates: Iterable[float], *, labels: Optional[np.ndarray],
                ids: Optional[Sequence[str]] = None, class_balanced: bool = False, sampler: Optional[Sampler] = None,
                seed: int = 0) -> dict[float, Selection]:
    """:func:`select` for each rate from one scoring run: ``{rate: Selection}``."""
    out: dict[float, Selection] = {}
    for r in rates:
        out[float(r)] = select(scores, r, labels=labels, ids=ids, class_balanced=class_balanced, sampler=sampler,
                               seed=seed)
    return out


# -- selection folders ---------------------------------------------------------------------------
_FILES = ("indices.npy", "ids.txt", "scores.npy", "weights.npy", "selected.csv")


def _csv_text(sel: Selection) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["id", "index", "label", "score", "weight"])
    labels = sel.labels
    for j, (i, sid) in enumerate(zip(sel.indices, sel.ids)):
        w.writerow([sid, int(i), "" if labels is None else int(labels[j]), repr(float(sel.scores[j])),
                    repr(float(sel.weights[j]))])
    return buf.getvalue()


def write_selection(folder: str | os.PathLike, selection: Selection, *, method: str, params: Optional[dict] = None,
                    fingerprint: Optional[str], extra: Optional[dict] = None) -> dict:
    """Write ``selection`` as a ``tdds-selection/1`` folder (every file atomic, manifest last).
    An existing manifest is removed first, so an interrupted rewrite reads as incomplete.
    Returns the manifest."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for sid in selection.ids:
        if "\n" in sid or "\r" in sid:
            raise ArtifactError(f"sample id {sid!r} contains a line break; ids must be single-line strings")
    (folder / MANIFEST).unlink(missing_ok=True)
    atomic_save_npy(folder / "indices.npy", np.asarray(selection.indices, dtype=np.int64))
    atomic_write_text(folder / "ids.txt", "".join(f"{i}\n" for i in selection.ids))
    atomic_save_npy(folder / "scores.npy", np.asarray(selection.scores, dtype=np.float64))
    atomic_save_npy(folder / "weights.npy", np.asarray(selection.weights, dtype=np.float32))
    atomic_write_text(folder / "selected.csv", _csv_text(selection))
    meta = dict(
        format=SELECTION_FORMAT, method=method, params=dict(params or {}), rate=float(selection.rate),
        class_balanced=bool(selection.class_balanced), fingerprint=fingerprint,
        num_samples=int(selection.num_samples), num_selected=int(selection.num_selected),
        has_labels=selection.labels is not None,
    )
    meta.update(extra or {})
    return write_manifest(folder, files=list(_FILES), **meta)


def load_selection(folder: str | os.PathLike, *, expected_fingerprint: Optional[str] = None) -> Selection:
    """Read a selection folder, checking every file's SHA-256 and, when ``expected_fingerprint``
    is given, that the selection was made for the same dataset."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ArtifactError(f"selection folder {folder} does not exist; run `tdds select` first or check the path.")
    manifest = verify_manifest(folder)
    if manifest.get("format") != SELECTION_FORMAT:
        raise ArtifactError(f"{folder} is not a tdds selection (format {manifest.get('format')!r}); "
                            "point to a folder written by `tdds select`.")
    missing = [f for f in _FILES if f not in manifest.get("files", {})]
    if missing:
        raise ArtifactError(f"{folder} lacks {', '.join(missing)} in its manifest; rerun `tdds select`.")
    fp = manifest.get("fingerprint")
    if expected_fingerprint is not None and fp != expected_fingerprint:
        raise ArtifactError(
            f"{folder} was selected from data with fingerprint {fp!r}, but this run's data has fingerprint "
            f"{expected_fingerprint!r}; rerun `tdds score`/`tdds select` on this dataset or use the matching selection."
        )
    indices = load_npy(folder / "indices.npy").astype(np.int64)
    scores = load_npy(folder / "scores.npy").astype(np.float64)
    weights = load_npy(folder / "weights.npy").astype(np.float32)
    ids = (folder / "ids.txt").read_text().splitlines()
    labels_col = []
    with open(folder / "selected.csv", newline="") as f:
        for row in csv.DictReader(f):
            labels_col.append(row["label"])
    m = int(manifest.get("num_selected", len(indices)))
    if not (len(indices) == len(scores) == len(weights) == len(ids) == len(labels_col) == m):
        raise ArtifactError(f"{folder} is inconsistent: {len(indices)} indices, {len(scores)} scores, "
                            f"{len(weights)} weights, {len(ids)} ids for {m} selected; rerun `tdds select`.")
    labels = None
    if manifest.get("has_labels", True) and all(v != "" for v in labels_col):
        labels = np.asarray([int(v) for v in labels_col], dtype=np.int64)
    return Selection(indices=indices, scores=scores, weights=weights, ids=ids, labels=labels,
                     rate=float(manifest["rate"]), num_samples=int(manifest["num_samples"]),
                     class_balanced=bool(manifest.get("class_balanced", False)), meta=manifest)


# -- exporting the pruned dataset ----------------------------------------------------------------
def _check_aligned(n: int, **arrays: Any) -> None:
    for name, a in arrays.items():
        if len(a) != n:
            raise DataError(f"{name} has {len(a)} entries but there are {n} samples to export")


def export_arrays(folder: str | os.PathLike, images: np.ndarray, labels: np.ndarray, ids: Sequence[str],
                  weights: np.ndarray, *, meta: Optional[dict] = None) -> dict:
    """Write the kept samples of an in-memory dataset as ``subset.npz`` (compressed: ``images``
    uint8 ``[M, ...]``, ``labels`` int64, ``ids`` str, ``weights`` float32) plus a manifest.
    All arguments are already the kept samples, aligned. Returns the manifest."""
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise DataError(f"images must be uint8 (as stored by the dataset), got {images.dtype}")
    m = len(images)
    _check_aligned(m, labels=labels, ids=ids, weights=weights)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / MANIFEST).unlink(missing_ok=True)
    target = folder / "subset.npz"
    fd, tmp = tempfile.mkstemp(prefix=".subset.", suffix=".npz.tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez_compressed(f, images=images, labels=np.asarray(labels, dtype=np.int64),
                                ids=np.asarray([str(i) for i in ids], dtype=str),
                                weights=np.asarray(weights, dtype=np.float32))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return write_manifest(folder, files=["subset.npz"], format=SUBSET_FORMAT, kind="arrays", num_selected=m,
                          image_shape=list(images.shape[1:]), **(meta or {}))


def _safe_relpath(sid: str) -> PurePosixPath:
    p = PurePosixPath(str(sid).replace("\\", "/"))
    if not str(sid) or p.is_absolute() or any(part in ("", ".", "..") for part in p.parts):
        raise DataError(f"sample id {sid!r} is not a safe relative path; folder datasets use their relative file paths as ids")
    return p


def export_files(folder: str | os.PathLike, paths: Sequence[str | os.PathLike], ids: Sequence[str],
                 labels: np.ndarray, weights: np.ndarray, *, link: bool = True, meta: Optional[dict] = None) -> dict:
    """Materialise the kept samples of a folder dataset: ``files/<id>`` for each (a symlink to the
    source file, or a copy with ``link=False``), ``subset.csv`` (id, file, label, weight) and a
    manifest (checksum of ``subset.csv``; the files themselves are the dataset's). Returns the
    manifest."""
    m = len(paths)
    _check_aligned(m, ids=ids, labels=labels, weights=weights)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / MANIFEST).unlink(missing_ok=True)
    root = folder / "files"
    rows = []
    for src, sid, y, w in zip(paths, ids, np.asarray(labels), np.asarray(weights, dtype=np.float32)):
        src = Path(src)
        if not src.is_file():
            raise DataError(f"{src} does not exist; the dataset changed since it was scored, rescore it")
        rel = _safe_relpath(str(sid))
        dst = root.joinpath(*rel.parts)
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp = dst.with_name(f".{dst.name}.tmp")
        tmp.unlink(missing_ok=True)
        if link:
            os.symlink(src.resolve(), tmp)
        else:
            shutil.copy2(src, tmp)
        os.replace(tmp, dst)
        rows.append([str(sid), str(PurePosixPath("files", *rel.parts)), int(y), repr(float(w))])
    buf = io.StringIO()
    wr = csv.writer(buf, lineterminator="\n")
    wr.writerow(["id", "file", "label", "weight"])
    wr.writerows(rows)
    atomic_write_text(folder / "subset.csv", buf.getvalue())
    return write_manifest(folder, files=["subset.csv"], format=SUBSET_FORMAT, kind="files", num_selected=m,
                          link=bool(link), **(meta or {}))


def export_subset(folder: str | os.PathLike, selection: Selection, *, images: Optional[np.ndarray] = None,
                  paths: Optional[Sequence[str | os.PathLike]] = None, link: bool = True,
                  fingerprint: Optional[str] = None, method: Optional[str] = None) -> dict:
    """Export the samples of ``selection`` from a whole dataset given as ``images`` (uint8
    ``[N, ...]``, in-memory datasets) or ``paths`` (``N`` files, folder datasets), indexed by
    position. Returns the manifest."""
    if (method or selection.meta.get("method")) == METHOD_RS2:
        raise DataError("an RS2 selection keeps no fixed subset (it trains on a fresh random subset every epoch): "
                        "there is nothing to export; export the selection of another method")
    if (images is None) == (paths is None):
        raise DataError("export_subset needs exactly one of images (in-memory data) or paths (folder data)")
    if selection.labels is None:
        raise DataError("the selection has no labels; select with the dynamics (--dynamics) so labels are known")
    total = len(images) if images is not None else len(paths)
    if total != selection.num_samples:
        raise DataError(f"the dataset has {total} samples but the selection was made over {selection.num_samples}")
    meta = dict(rate=selection.rate, num_samples=selection.num_samples,
                fingerprint=fingerprint if fingerprint is not None else selection.meta.get("fingerprint"),
                method=method or selection.meta.get("method"), class_balanced=selection.class_balanced)
    idx = selection.indices
    if images is not None:
        return export_arrays(folder, np.asarray(images)[idx], selection.labels, selection.ids, selection.weights, meta=meta)
    return export_files(folder, [paths[i] for i in idx], selection.ids, selection.labels, selection.weights,
                        link=link, meta=meta)

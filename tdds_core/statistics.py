"""Training dynamics as per-sample statistics: a few numbers per sample and epoch instead of its C
logits (issue 17; the TDDS paper's section 4.3 is about the memory the logits cost).

Per epoch ``t`` and sample ``i``, from that epoch's logits ``z_t`` (float64) and ``p_t = softmax(z_t)``
(:func:`epoch_statistics`), the columns of :data:`COLUMNS`:

* ``kl``: the TDDS inner term of the pair ``(t-1, t)`` (the authors' semantics, tdds-facts.md):
  ``sum_c | p_{t,c} (log(p_{t,c} + 1e-8) - log(p_{t-1,c} + 1e-8)) |``; NaN at the first epoch;
* ``kl_signed``: the same without the absolute value (the paper's ablation);
* ``ce``: ``-log(p_{t,y} + 1e-8)`` (the TDDS loss ablation; EL2N-style losses);
* ``el2n``: ``|| p_t - onehot(y) ||_2`` (EL2N, Paul et al. 2021);
* ``p_target``: ``p_{t,y}`` (Dyn-Unc, DUAL);
* ``margin_p`` / ``margin_logit``: target minus the largest other class, in probability and in
  logit (AUM, Pleiss et al. 2020, uses the logit margin);
* ``correct``: 1 when ``argmax_c z_t == y`` (Forgetting, Toneva et al. 2019);
* ``entropy``: ``-sum_c p_{t,c} log p_{t,c}`` (Entropy on the last epoch).

Every column is one float64 per sample, so an epoch costs ``8 * 9 = 72`` bytes per sample whatever
the number of classes (float16 logits: ``2 C`` bytes). Because the TDDS inner terms are stored,
any ``(T, W, decay, start)`` is scored after training without the logits
(:func:`tdds_from_statistics`).

Folder layout (``tdds-stats/1``): ``epoch_XXXX.npy`` (float64 ``[N, len(columns)]``, rows in
sample-id order), ``labels.npy``, ``ids.txt`` and ``manifest.json`` (written last, checksums of every
file, the columns, the recorded epochs, the dataset fingerprint). The full-data run records one in
``<run>/stats`` with ``dynamics.record: stats`` or ``both`` (:class:`StatsWriter`, from the logits it
captures each epoch; resumable); :func:`write_statistics` converts a logits dynamics folder;
:func:`open_statistics` reads one back, one epoch at a time.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

import numpy as np

from .errors import ArtifactError, ScoringError

__all__ = ["COLUMNS", "STATS_FORMAT", "EPS", "epoch_statistics", "write_statistics", "open_statistics", "Statistics",
           "StatsWriter", "tdds_from_statistics", "column_over", "finite_scores"]

STATS_FORMAT = "tdds-stats/1"
EPS = 1e-8    # the authors' log offset
COLUMNS = ("kl", "kl_signed", "ce", "el2n", "p_target", "margin_p", "margin_logit", "correct", "entropy")


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e * (1.0 / e.sum(axis=1, keepdims=True))


def epoch_statistics(logits: np.ndarray, labels: np.ndarray,
                     prev_probs: Optional[np.ndarray] = None) -> tuple[np.ndarray, np.ndarray]:
    """One epoch's statistics: ``logits`` ``[N, C]``, ``labels`` ``(N,)`` int, ``prev_probs`` the
    previous epoch's probabilities ``[N, C]`` (None at the first epoch: ``kl`` columns NaN).
    Returns ``(stats [N, len(COLUMNS)] float64, probs [N, C] float64)`` (the probabilities feed the
    next epoch's call)."""
    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64)
    n = len(z)
    rows = np.arange(n)
    p = _softmax(z)
    logp = np.log(p + EPS)
    out = np.empty((n, len(COLUMNS)), dtype=np.float64)
    col = {c: i for i, c in enumerate(COLUMNS)}
    if prev_probs is None:
        out[:, col["kl"]] = out[:, col["kl_signed"]] = np.nan
    else:
        term = p * (logp - np.log(np.asarray(prev_probs, dtype=np.float64) + EPS))
        out[:, col["kl"]] = np.abs(term).sum(axis=1)
        out[:, col["kl_signed"]] = term.sum(axis=1)
    p_y = p[rows, y]
    out[:, col["ce"]] = -np.log(p_y + EPS)
    onehot_dist = p.copy()
    onehot_dist[rows, y] -= 1.0
    out[:, col["el2n"]] = np.sqrt((onehot_dist * onehot_dist).sum(axis=1))
    out[:, col["p_target"]] = p_y
    other_p, other_z = p.copy(), z.copy()
    other_p[rows, y] = -np.inf
    other_z[rows, y] = -np.inf
    out[:, col["margin_p"]] = p_y - other_p.max(axis=1)
    out[:, col["margin_logit"]] = z[rows, y] - other_z.max(axis=1)
    out[:, col["correct"]] = (z.argmax(axis=1) == y).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        out[:, col["entropy"]] = -np.where(p > 0, p * np.log(p), 0.0).sum(axis=1)
    return out, p


@dataclass
class Statistics:
    """A ``tdds-stats/1`` folder (:func:`open_statistics`): ``epochs``, ``num_samples``,
    ``num_classes``, ``labels``, ``ids``, ``fingerprint``; :meth:`column` reads one column of one epoch."""

    folder: Path
    manifest: dict
    labels: np.ndarray
    ids: list[str]

    @property
    def epochs(self) -> list[int]:
        return list(self.manifest["epochs"])

    @property
    def num_samples(self) -> int:
        return int(self.manifest["num_samples"])

    @property
    def num_classes(self) -> int:
        return int(self.manifest["num_classes"])

    @property
    def fingerprint(self) -> str:
        return str(self.manifest.get("fingerprint", ""))

    @property
    def columns(self) -> tuple[str, ...]:
        return tuple(self.manifest["columns"])

    def epoch(self, t: int) -> np.ndarray:
        """Epoch ``t``'s statistics, float64 ``[N, len(columns)]`` (checksum verified)."""
        from .io import load_npy, verify_file

        if t not in self.manifest["epochs"]:
            raise ScoringError(f"epoch {t} is not in the statistics at {self.folder} (recorded: "
                               f"{self.epochs[0]}..{self.epochs[-1]}); choose start/T within them.")
        name = _epoch_file(t)
        verify_file(self.folder, name, self.manifest)
        return load_npy(self.folder / name)

    def column(self, t: int, name: str) -> np.ndarray:
        """Column ``name`` of epoch ``t``, float64 ``(N,)``."""
        if name not in self.columns:
            raise ScoringError(f"the statistics at {self.folder} have no column {name!r} (they have "
                               f"{', '.join(self.columns)}); record them again with this version.")
        return self.epoch(t)[:, self.columns.index(name)]


def _epoch_file(t: int) -> str:
    return f"epoch_{int(t):04d}.npy"


class StatsWriter:
    """Records statistics epoch by epoch while training runs (the engine's ``dynamics.record: stats |
    both``): :meth:`write_epoch` takes the epoch's captured logits ``[N, C]`` (rows in id order, the
    same values a logits recording stores), writes that epoch's statistics and keeps its logits in
    ``_last_XXXX.npy`` (float32; not part of the artifact) so a resumed run computes the next
    epoch's TDDS term from exactly the same probabilities. :meth:`finalize` writes the manifest
    with every checksum and removes the side files. The manifest of an unfinished folder carries
    ``complete: false``."""

    def __init__(self, folder: str | Path, *, ids: Sequence[str], labels: np.ndarray, num_classes: int,
                 fingerprint: str):
        from .io import atomic_save_npy, atomic_write_text, read_manifest

        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.labels = np.asarray(labels, dtype=np.int64)
        self.meta = {"format": STATS_FORMAT, "kind": "stats", "columns": list(COLUMNS), "num_samples": len(self.labels),
                     "num_classes": int(num_classes), "fingerprint": fingerprint}
        self.files: dict[str, dict] = {}
        self.epochs: list[int] = []
        if (self.folder / "manifest.json").is_file():
            prev = read_manifest(self.folder)
            if prev.get("fingerprint") != fingerprint or prev.get("num_samples") != len(self.labels):
                raise ArtifactError(f"{self.folder} holds statistics of another dataset; choose another output folder "
                                    "or delete it.")
            self.files, self.epochs = dict(prev.get("files", {})), list(prev.get("epochs", []))
        if "labels.npy" not in self.files:
            self._put("labels.npy", lambda p: atomic_save_npy(p, self.labels))
            self._put("ids.txt", lambda p: atomic_write_text(p, "".join(f"{i}\n" for i in ids)))
            self._manifest(False)

    def _put(self, name: str, write: Any) -> None:
        from .io import sha256_file

        p = self.folder / name
        write(p)
        self.files[name] = {"sha256": sha256_file(p), "bytes": p.stat().st_size}

    def _manifest(self, complete: bool) -> None:
        from .io import atomic_write_json

        atomic_write_json(self.folder / "manifest.json", {**self.meta, "epochs": sorted(self.epochs),
                                                          "complete": complete, "files": self.files})

    def write_epoch(self, t: int, logits: np.ndarray) -> None:
        """Epoch ``t``'s statistics from its logits ``[N, C]``; the previous recorded epoch (``t - 1``)
        supplies the TDDS term's probabilities (NaN at the first recorded epoch)."""
        from .io import atomic_save_npy, load_npy

        z = np.asarray(logits, dtype=np.float32)
        before = self.folder / f"_last_{t - 1:04d}.npy"
        prev = _softmax(load_npy(before).astype(np.float64)) if before.is_file() else None
        stats, _ = epoch_statistics(z, self.labels, prev)
        self._put(_epoch_file(t), lambda p: atomic_save_npy(p, stats))
        atomic_save_npy(self.folder / f"_last_{t:04d}.npy", z)
        for old in self.folder.glob("_last_*.npy"):      # keep t and t - 1 (a resume restarts at t + 1 or at t)
            if old.name not in (f"_last_{t:04d}.npy", before.name):
                old.unlink(missing_ok=True)
        if t not in self.epochs:
            self.epochs.append(t)
        self._manifest(False)

    def finalize(self) -> None:
        for old in self.folder.glob("_last_*.npy"):
            old.unlink(missing_ok=True)
        self._manifest(True)


def write_statistics(dynamics: Any, out: str | Path) -> Statistics:
    """The statistics of every recorded epoch of ``dynamics`` (a logits dynamics folder opened with
    :func:`tdds_core.dynamics.open_dynamics`; its epochs must be consecutive) into the folder ``out``.
    Returns it opened."""
    from .io import atomic_save_npy, atomic_write_text, write_manifest

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    epochs = list(dynamics.epochs)
    if epochs != list(range(epochs[0], epochs[0] + len(epochs))):
        raise ArtifactError(f"the dynamics' epochs {epochs} are not consecutive: the TDDS terms need each "
                            "epoch and the one before it; record every epoch.")
    labels = np.asarray(dynamics.labels, dtype=np.int64)
    prev = None
    for t in epochs:
        stats, prev = epoch_statistics(np.asarray(dynamics.epoch(t)), labels, prev)
        atomic_save_npy(out / _epoch_file(t), stats)
    atomic_save_npy(out / "labels.npy", labels)
    atomic_write_text(out / "ids.txt", "".join(f"{i}\n" for i in dynamics.ids))
    files = [_epoch_file(t) for t in epochs] + ["labels.npy", "ids.txt"]
    write_manifest(out, files, kind="stats", format=STATS_FORMAT, columns=list(COLUMNS), epochs=epochs,
                   num_samples=int(dynamics.num_samples), num_classes=int(dynamics.num_classes),
                   fingerprint=str(getattr(dynamics, "fingerprint", "") or ""))
    return open_statistics(out)


def open_statistics(folder: str | Path) -> Statistics:
    """A ``tdds-stats/1`` folder written by :func:`write_statistics` (ArtifactError when it is not one)."""
    from .io import load_npy, read_manifest, verify_file

    folder = Path(folder)
    try:
        manifest = read_manifest(folder)
    except Exception as e:  # noqa: BLE001 - a missing or foreign folder
        raise ArtifactError(f"{folder} is not a statistics folder ({e}); write one with "
                            "tdds_core.statistics.write_statistics.") from None
    if manifest.get("format") != STATS_FORMAT:
        raise ArtifactError(f"{folder} holds {manifest.get('format') or manifest.get('kind')!r}, not {STATS_FORMAT!r} statistics")
    for name in ("labels.npy", "ids.txt"):
        verify_file(folder, name, manifest)
    ids = (folder / "ids.txt").read_text().splitlines()
    return Statistics(folder, manifest, load_npy(folder / "labels.npy"), ids)


def column_over(stats: Statistics, ts: Sequence[int], name: str) -> Iterator[np.ndarray]:
    """Column ``name`` of each epoch of ``ts``, in order, one epoch in memory at a time."""
    for t in ts:
        yield stats.column(t, name)


def finite_scores(scores: np.ndarray, nan_policy: str, method: str) -> np.ndarray:
    """``scores`` with non-finite entries refused (``raise``) or scored lowest (``skip``: -inf)."""
    bad = ~np.isfinite(scores)
    if bad.any():
        if nan_policy == "raise":
            raise ScoringError(f"{method}: {int(bad.sum())} samples have NaN/Inf statistics (training diverged: lower "
                               "train.lr), or pass nan_policy='skip' to score them lowest.")
        scores = np.where(bad, -np.inf, scores)
    return scores


def _pair_terms(stats: Statistics, ts: Sequence[int], inner: str, signed: bool) -> Iterator[np.ndarray]:
    """The ``T - 1`` inner terms of the trajectory ``ts`` (pair ``(ts[i], ts[i+1])`` -> term i)."""
    if inner == "kl":
        name = "kl_signed" if signed else "kl"
        for t in ts[1:]:
            yield stats.column(t, name)
    elif inner == "loss":
        prev = stats.column(ts[0], "ce")
        for t in ts[1:]:
            cur = stats.column(t, "ce")
            yield cur - prev if signed else np.abs(cur - prev)
            prev = cur
    elif inner == "el2n":
        for t in ts[1:]:
            yield stats.column(t, "el2n")
    else:
        raise ScoringError(f"inner must be kl, loss or el2n, not {inner!r}")


def tdds_from_statistics(stats: Statistics, *, T: int = 30, W: int = 10, decay: float = 0.9,
                         start: Optional[int] = None, inner: str = "kl", signed: bool = False,
                         aggregate: str = "ema") -> np.ndarray:
    """TDDS scores from recorded statistics, for any ``(T, W, decay, start)`` chosen after training:
    the same formula as :func:`tdds_core.scoring.tdds.tdds` (windows ``k = 0 .. T-W`` over the terms
    ``d_k .. d_{k+W-2}``, ``s_k = ||d - mean(d)||_2``, ``w_k = decay (1 - decay)^(T-W-k)``; or the
    mean over windows). Returns float64 ``(N,)``, higher = keep first."""
    T, W = int(T), int(W)
    if not 2 <= W <= T:
        raise ScoringError(f"TDDS needs 2 <= W <= T, got T={T}, W={W}")
    first = stats.epochs[0] if start is None else int(start)
    ts = list(range(first, first + T))
    missing = [t for t in ts if t not in stats.manifest["epochs"]]
    if missing:
        raise ScoringError(f"TDDS with start={first}, T={T} needs epochs {ts[0]}..{ts[-1]}; the statistics at "
                           f"{stats.folder} hold {stats.epochs[0]}..{stats.epochs[-1]}: lower T or start.")
    ring: list[np.ndarray] = []
    total = np.zeros(stats.num_samples, dtype=np.float64)
    windows = T - W + 1
    for i, d in enumerate(_pair_terms(stats, ts, inner, signed)):
        ring.append(d)
        if len(ring) > W - 1:
            ring.pop(0)
        k = i - (W - 2)          # the window whose last term this is
        if k < 0:
            continue
        block = np.stack(ring, axis=1)
        s_k = np.sqrt(((block - block.mean(axis=1, keepdims=True)) ** 2).sum(axis=1))
        w_k = decay * (1.0 - decay) ** (T - W - k) if aggregate == "ema" else 1.0 / windows
        total += w_k * s_k
    return total

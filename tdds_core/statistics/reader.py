"""Reading a ``tdds-stats/1`` folder: :func:`open_statistics` -> :class:`Statistics`, one column of
one epoch at a time (only that column and a row chunk are in memory), checksums verified once per
file and opened folder.

Folder layout: ``epoch_XXXX.npy`` (float64 or float32 ``[N, len(columns)]``, rows in sample-id
order), optionally ``final.npy`` (the same columns for the clean final pass: the final model in eval
mode without augmentation, ``kl`` NaN; the input of Entropy's default source) and ``features.npy``
(float32 ``[N, D]`` penultimate features of that pass, Moderate's input), ``labels.npy``, ``ids.txt``
and ``manifest.json`` (written last, checksums of every file, the columns, the recorded epochs, the
dataset fingerprint, ``final_pass``, ``computed_on``, ``dtype``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import ArtifactError, ScoringError
from ..io import load_npy, read_manifest, verify_file
from .columns import FEATURES, FINAL, STATS_FORMAT, epoch_file

__all__ = ["Statistics", "open_statistics"]


@dataclass
class Statistics:
    """A ``tdds-stats/1`` folder (:func:`open_statistics`): ``epochs``, ``num_samples``,
    ``num_classes``, ``labels``, ``ids``, ``fingerprint``; :meth:`column` reads one column of one
    epoch, :meth:`final_column` one of the clean final pass."""

    folder: Path
    manifest: dict
    labels: np.ndarray
    ids: list[str]
    verified: set = field(default_factory=set, repr=False)   # files whose checksum this object checked

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

    @property
    def has_final(self) -> bool:
        """Whether the folder holds the clean final pass's statistics (``final.npy``)."""
        return FINAL in self.manifest.get("files", {})

    @property
    def has_features(self) -> bool:
        """Whether the folder holds the clean final pass's penultimate features (``features.npy``)."""
        return FEATURES in self.manifest.get("files", {})

    def features(self) -> np.ndarray:
        """float32 ``[N, D]`` penultimate features of the final model's clean pass (Moderate)."""
        if not self.has_features:
            raise ArtifactError(f"{self.folder} has no features.npy; train with dynamics.save_features: true "
                                "(Moderate needs it).")
        self._verify(FEATURES)
        return load_npy(self.folder / FEATURES)

    def _verify(self, name: str) -> None:
        """Check ``name``'s checksum once per opened folder (every later read is of the checked bytes)."""
        if name not in self.verified:
            verify_file(self.folder, name, self.manifest)
            self.verified.add(name)

    def _read(self, name: str) -> np.ndarray:
        self._verify(name)
        arr = load_npy(self.folder / name)
        if arr.shape != (self.num_samples, len(self.columns)):
            raise ArtifactError(f"{self.folder / name} has shape {arr.shape}, the manifest says "
                                f"({self.num_samples}, {len(self.columns)}); delete the folder and record it again.")
        return arr

    @property
    def dtype(self) -> str:
        """Their storage dtype (``float64`` or ``float32``; every read returns float64)."""
        return str(self.manifest.get("dtype", "float64"))

    def epoch(self, t: int) -> np.ndarray:
        """Epoch ``t``'s statistics, float64 ``[N, len(columns)]`` (checksum verified)."""
        if t not in self.manifest["epochs"]:
            raise ScoringError(f"epoch {t} is not in the statistics at {self.folder} (recorded: "
                               f"{self.epochs[0]}..{self.epochs[-1]}); choose start/T within them.")
        return self._read(epoch_file(t)).astype(np.float64, copy=False)

    def _index(self, name: str) -> int:
        if name not in self.columns:
            raise ScoringError(f"the statistics at {self.folder} have no column {name!r} (they have "
                               f"{', '.join(self.columns)}); record them again with this version.")
        return self.columns.index(name)

    def _column(self, name: str, i: int) -> np.ndarray:
        """Column ``i`` of the file ``name`` (checksum verified once), read in row chunks: only the
        column and a chunk are ever in memory (a memory map would keep every page it touched)."""
        self._verify(name)
        path = self.folder / name
        n, k = self.num_samples, len(self.columns)
        try:
            with open(path, "rb") as f:
                fmt = np.lib.format
                read_header = {(1, 0): fmt.read_array_header_1_0, (2, 0): fmt.read_array_header_2_0}.get(fmt.read_magic(f))
                if read_header is None:
                    raise ArtifactError(f"{path} is not a .npy file of a known version; record it again.")
                shape, fortran, dtype = read_header(f)
                if tuple(shape) != (n, k) or fortran or dtype != np.dtype(self.dtype):
                    raise ArtifactError(f"{path} holds a {dtype} array of shape {shape}, the manifest says {self.dtype} "
                                        f"({n}, {k}); delete the folder and record it again.")
                out = np.empty(n, dtype=np.float64)
                rows = max(1, (1 << 20) // k)
                for a in range(0, n, rows):
                    b = min(n, a + rows)
                    chunk = np.fromfile(f, dtype=dtype, count=(b - a) * k)
                    if chunk.size != (b - a) * k:
                        raise ArtifactError(f"{path} is truncated; delete the folder and record it again.")
                    out[a:b] = chunk.reshape(b - a, k)[:, i]
        except (OSError, ValueError) as e:
            raise ArtifactError(f"{path} cannot be read ({e}); delete the folder and record it again.") from e
        return out

    def column(self, t: int, name: str) -> np.ndarray:
        """Column ``name`` of epoch ``t``, float64 ``(N,)``."""
        i = self._index(name)
        if t not in self.manifest["epochs"]:
            self.epoch(t)   # the error naming the recorded epochs
        return self._column(epoch_file(t), i)

    def final_column(self, name: str) -> np.ndarray:
        """Column ``name`` of the clean final pass, float64 ``(N,)`` (ArtifactError when not recorded)."""
        i = self._index(name)
        if not self.has_final:
            raise ArtifactError(
                f"{self.folder} holds no statistics of the clean final pass (final.npy: the final model in eval mode "
                "without augmentation), which entropy's default source='clean' reads. Record the run again with this "
                "version of tdds (dynamics.record: stats or both), convert a logits folder that has final_logits.npy "
                "(`tdds stats`), or score from the last training epoch with source='last_epoch' "
                "(CLI: --param source=last_epoch).")
        return self._column(FINAL, i)


def open_statistics(folder: str | Path) -> Statistics:
    """A ``tdds-stats/1`` folder (ArtifactError when it is not one)."""
    folder = Path(folder)
    try:
        manifest = read_manifest(folder)
    except Exception as e:  # noqa: BLE001 - a missing or foreign folder
        raise ArtifactError(f"{folder} is not a statistics folder ({e}); write one with `tdds stats` "
                            "(tdds_core.statistics.write_statistics) or train with dynamics.record: stats.") from None
    if manifest.get("format") != STATS_FORMAT:
        raise ArtifactError(f"{folder} holds {manifest.get('format') or manifest.get('kind')!r}, not {STATS_FORMAT!r} "
                            "statistics")
    for name in ("labels.npy", "ids.txt"):
        verify_file(folder, name, manifest)
    ids = (folder / "ids.txt").read_text().splitlines()
    return Statistics(folder, manifest, load_npy(folder / "labels.npy"), ids)

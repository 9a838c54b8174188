"""What every stage shares about artifacts: where one lives, how it is written (into a work folder,
then published to the store, manifest last), how a finished one is found and fetched, and the S3
mirror of a training folder's in-progress state. Light (numpy only): the score and select stages
use it without the engine."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .config import Config
from .dynamics import open_dynamics
from .errors import ArtifactError
from .io import load_npy, read_json, verify_manifest
from .statistics import open_statistics
from .storage import existing, fetch, join_uri, parent_and_key, publish, work_dir

__all__ = ["StageOutput", "work_dir", "publish", "existing", "fetch", "load_scores", "uri_of", "open_recorded",
           "RemoteCheckpoint"]


@dataclass
class StageOutput:
    uri: str                       # where the artifact lives (local folder or s3://...)
    local: Path                    # a local folder holding it (the same folder for local outputs)
    result: Any = None             # the TrainResult of a training stage
    reused: bool = False           # the artifact existed already
    info: dict = field(default_factory=dict)
    key: str = ""                  # its store key under the output root (tdds_core.plan's *_key)


# ------------------------------------------------------------------------------------------ locations
class RemoteCheckpoint:
    """Mirror of a training folder's in-progress state under ``<uri>/_partial/`` on S3, so that a
    retried task on another machine resumes from the last epoch instead of starting over.
    Files are pushed dynamics first and ``checkpoint.pt`` last; only new or rewritten files are sent
    (known by size and modification time: nothing already sent is read or hashed again)."""

    def __init__(self, uri: str, work: Path):
        self.store, key = parent_and_key(uri)
        self.prefix = f"{key}/_partial"
        self.work = work
        self.sent: dict[str, tuple[int, int]] = {}

    @staticmethod
    def _signature(p: Path) -> tuple[int, int]:
        st = p.stat()
        return st.st_size, st.st_mtime_ns      # every write is a new file renamed into place

    def restore(self) -> int:
        n = 0
        for k in self.store.list(self.prefix):
            rel = k[len(self.prefix) + 1:]
            dst = self.work / rel
            self.store.get_file(k, dst)
            self.sent[rel] = self._signature(dst)
            n += 1
        return n

    def push(self, _out: Path) -> None:
        files = [p for p in self.work.rglob("*") if p.is_file() and not p.name.startswith(".")]
        files.sort(key=lambda p: (p.name == "checkpoint.pt", str(p)))
        for p in files:
            rel = str(p.relative_to(self.work))
            sig = self._signature(p)
            if self.sent.get(rel) != sig:
                self.store.put_file(p, f"{self.prefix}/{rel}")
                self.sent[rel] = sig

    def clear(self) -> None:
        self.store.delete(self.prefix)


def open_recorded(train_dir: Path) -> Any:
    """What a full-data run recorded for scoring: its logits (``dynamics/``, a Dynamics) when it has
    them, else its per-sample statistics (``stats/``, tdds_core.statistics); ArtifactError when neither."""
    if (train_dir / "dynamics" / "manifest.json").is_file():
        return open_dynamics(train_dir / "dynamics")
    if (train_dir / "stats" / "manifest.json").is_file():
        return open_statistics(train_dir / "stats")
    raise ArtifactError(f"{train_dir} recorded neither logits nor statistics; train with dynamics.record: true, stats "
                        "or both.")


def load_scores(score_dir: Path) -> tuple[np.ndarray, dict]:
    verify_manifest(score_dir)
    return load_npy(score_dir / "scores.npy"), read_json(score_dir / "score.json")




def uri_of(cfg: Config, key: str) -> str:
    """Where the artifact with store key ``key`` of ``cfg``'s output root lives."""
    return join_uri(cfg.output, key)

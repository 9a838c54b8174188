"""What every stage shares: where an artifact lives, how it is written (into a work folder, then
published to the store, manifest last), how a finished one is found and fetched, and the claim an
output root carries (one full-data experiment per root)."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import plan as P
from ..config import Config, config_digest
from ..data import Splits
from ..errors import ArtifactError
from ..io import atomic_write_json, load_npy, read_json, verify_manifest
from ..storage import is_remote, join_uri

if TYPE_CHECKING:       # the engine (torch) is imported where training runs, so scoring stays numpy-only
    from ..engine import TrainResult

__all__ = ["StageOutput", "work_dir", "publish", "train_into", "existing", "fetch", "claim_output", "load_scores",
           "uri_of", "open_recorded"]


@dataclass
class StageOutput:
    uri: str                       # where the artifact lives (local folder or s3://...)
    local: Path                    # a local folder holding it (the same folder for local outputs)
    result: TrainResult | None = None
    reused: bool = False           # the artifact existed already
    info: dict = field(default_factory=dict)


# ------------------------------------------------------------------------------------------ locations
def work_dir(uri: str) -> Path:
    """Where a stage writes before publishing: the folder itself when local, a cache folder for S3
    (so an interrupted S3 run resumes from its local checkpoint on the same machine)."""
    if not is_remote(uri):
        return Path(uri)
    from ..storage import cache_root

    return cache_root() / "work" / hashlib.sha256(uri.encode()).hexdigest()[:16] / uri.rstrip("/").rsplit("/", 1)[-1]


def publish(work: Path, uri: str) -> None:
    if is_remote(uri):
        from ..storage import parent_and_key

        store, key = parent_and_key(uri)
        store.put_dir(work, key)


class _RemoteCheckpoint:
    """Mirror of a training folder's in-progress state under ``<uri>/_partial/`` on S3, so that a
    retried task on another machine resumes from the last epoch instead of starting over.
    Files are pushed dynamics first and ``checkpoint.pt`` last; only new or rewritten files are sent
    (known by size and modification time: nothing already sent is read or hashed again)."""

    def __init__(self, uri: str, work: Path):
        from ..storage import parent_and_key

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


def train_into(uri: str, splits: Splits, spec, on_epoch, *, cfg: Config | None = None) -> TrainResult:
    """Train into the stage folder of ``uri`` and publish it; on S3, resume from and mirror to
    ``_partial``. With ``cfg.train.processes`` above 1 (the full-data run), the training runs in that
    many processes (:mod:`tdds_core.launch`, torchrun) and ``on_epoch`` gets the epochs afterwards."""
    from ..engine import train
    from ..launch import train_in_processes, under_torchrun

    if cfg is not None and cfg.train.nodes > 1 and not under_torchrun():
        return _train_on_nodes(uri, cfg, on_epoch)
    work = work_dir(uri)
    remote = _RemoteCheckpoint(uri, work) if is_remote(uri) else None
    if remote is not None and not (work / "checkpoint.pt").is_file():
        remote.restore()
    if cfg is not None and cfg.train.processes > 1 and not under_torchrun():
        result = train_in_processes(cfg, work, mirror=uri if remote is not None else None)
        for rec in result.history if on_epoch is not None else ():
            on_epoch(rec)
    else:
        result = train(splits, spec, work, on_epoch=on_epoch, on_checkpoint=None if remote is None else remote.push)
    if remote is not None:
        publish(work, uri)
        remote.clear()
    return result


def _train_on_nodes(uri: str, cfg: Config, on_epoch) -> TrainResult:
    """The full-data run as a PyTorchJob over ``train.nodes`` pods (:func:`tdds_core.launch.train_on_nodes`):
    its folder lies on ``pipeline.shared_volume`` and is published to ``uri`` when the job succeeds."""
    import shutil

    from ..launch import train_on_nodes

    leaf = uri.rstrip("/").rsplit("/", 1)[-1]
    assert cfg.pipeline.shared_volume is not None      # Config refuses nodes > 1 without one
    work = Path(cfg.pipeline.shared_volume.mount_path) / "tdds" / hashlib.sha256(uri.encode()).hexdigest()[:16] / leaf
    name = f"tdds-{P.slug(cfg.name).lower().replace('_', '-').replace('.', '-')[:30]}-{hashlib.sha256(uri.encode()).hexdigest()[:10]}"
    result = train_on_nodes(cfg, work, uri if is_remote(uri) else None, name=name,
                            image=cfg.pipeline.gpu_image or cfg.pipeline.image)
    for rec in result.history if on_epoch is not None else ():
        on_epoch(rec)
    if is_remote(uri):
        publish(work, uri)
        _RemoteCheckpoint(uri, work).clear()
    elif Path(uri).resolve() != work.resolve():
        shutil.copytree(work, uri, dirs_exist_ok=True)
    return result


def existing(uri: str) -> Path | None:
    """A verified local copy of a finished artifact at ``uri``, or None."""
    if is_remote(uri):
        from ..storage import is_complete, local_copy

        return local_copy(uri) if is_complete(uri) else None
    p = Path(uri)
    if (p / "manifest.json").is_file():
        return p
    return None


def fetch(uri: str) -> Path:
    """A local, verified copy of the finished artifact at ``uri`` (ArtifactError when absent)."""
    p = existing(uri)
    if p is None:
        raise ArtifactError(f"{uri} does not exist or is incomplete; run the stage that writes it first.")
    return p


# ------------------------------------------------------------------------------------------ output root
def claim_output(cfg: Config) -> None:
    """Record which experiment an output root holds (``experiment.json``) and refuse a config whose
    full-data identity (:func:`tdds_core.plan.claim_identity`) differs: one root, one full-data run,
    never mixed. Methods, rates, seeds and evaluation settings may change (the grid grows); runtime
    settings may change freely. The full-data settings are validated first, so a config that cannot
    run never claims the root."""
    import json

    from ..engine import full_data_spec

    full_data_spec(cfg)  # ConfigError (unknown architecture, drop_last with dynamics) before anything is written
    ident = P.claim_identity(cfg)
    digest = config_digest(ident)
    key = "experiment.json"
    body = {"name": cfg.name, "digest": digest, "identity": ident}
    if is_remote(cfg.output):
        from ..storage import open_store

        store = open_store(cfg.output)
        if store.exists(key):
            prev = json.loads(store.get_bytes(key))
            _check_claim(prev, digest, cfg.output)
        else:
            store.put_bytes(key, json.dumps(body, indent=2, sort_keys=True).encode())
        return
    p = Path(cfg.output) / key
    if p.is_file():
        _check_claim(read_json(p), digest, cfg.output)
    else:
        p.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(p, body)


def _check_claim(prev: dict, digest: str, root: str) -> None:
    if prev.get("digest") != digest:
        raise ArtifactError(
            f"output {root} holds the experiment {prev.get('name')!r} with other data/model/train/dynamics settings; "
            "refusing to mix runs: set another `output` (or --out), or delete that folder."
        )


def open_recorded(train_dir: Path) -> Any:
    """What a full-data run recorded for scoring: its logits (``dynamics/``, a Dynamics) when it has
    them, else its per-sample statistics (``stats/``, tdds_core.statistics); ArtifactError when neither."""
    from ..dynamics import open_dynamics
    from ..statistics import open_statistics

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

"""The pipeline stages as library functions; the CLI, the grid and the KFP components are thin
shells over them.

Every stage writes one artifact under the run's output root (a local folder or ``s3://...``) at a
key derived from content and config (dataset fingerprint, stage, parameters), written completely
or not at all (manifest last). A stage whose artifact already exists returns it without redoing
the work, so reruns and interrupted grids continue where they stopped.

| stage | key |
|---|---|
| :func:`train_full` | ``train/<fingerprint>-<spec digest>`` |
| :func:`score` | ``scores/<method>-<digest of train key, method, params>`` |
| :func:`select` | ``selections/<method>-p<rate>-<digest>`` |
| :func:`train_coreset` | ``coreset/<selection name>/<arch>-s<seed>-<spec digest>`` |
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from . import plan as P
from .config import Config, MethodSpec, config_digest
from .data import Splits, create_dataset
from .engine import TrainResult, coreset_spec, full_data_spec, load_result, train
from .errors import ArtifactError
from .io import atomic_save_npy, atomic_write_json, load_npy, read_json, verify_manifest, write_manifest
from .storage import is_remote, join_uri


@dataclass
class StageOutput:
    uri: str                       # where the artifact lives (local folder or s3://...)
    local: Path                    # a local folder holding it (the same folder for local outputs)
    result: TrainResult | None = None
    reused: bool = False           # the artifact existed already
    info: dict = field(default_factory=dict)


# ------------------------------------------------------------------------------------------ locations
def _work_dir(uri: str) -> Path:
    """Where a stage writes before publishing: the folder itself when local, a cache folder for S3
    (so an interrupted S3 run resumes from its local checkpoint on the same machine)."""
    if not is_remote(uri):
        return Path(uri)
    from .storage import cache_root

    return cache_root() / "work" / hashlib.sha256(uri.encode()).hexdigest()[:16] / uri.rstrip("/").rsplit("/", 1)[-1]


def _publish(work: Path, uri: str) -> None:
    if is_remote(uri):
        from .storage import parent_and_key

        store, key = parent_and_key(uri)
        store.put_dir(work, key)


class _RemoteCheckpoint:
    """Mirror of a training folder's in-progress state under ``<uri>/_partial/`` on S3, so that a
    retried task on another machine resumes from the last epoch instead of starting over.
    Files are pushed dynamics first and ``checkpoint.pt`` last; only changed files are sent."""

    def __init__(self, uri: str, work: Path):
        from .storage import parent_and_key

        self.store, key = parent_and_key(uri)
        self.prefix = f"{key}/_partial"
        self.work = work
        self.sent: dict[str, str] = {}

    def restore(self) -> int:
        from .io import sha256_file

        n = 0
        for k in self.store.list(self.prefix):
            rel = k[len(self.prefix) + 1:]
            dst = self.work / rel
            self.store.get_file(k, dst)
            self.sent[rel] = sha256_file(dst)
            n += 1
        return n

    def push(self, _out: Path) -> None:
        from .io import sha256_file

        files = [p for p in self.work.rglob("*") if p.is_file() and not p.name.startswith(".")]
        files.sort(key=lambda p: (p.name == "checkpoint.pt", str(p)))
        for p in files:
            rel = str(p.relative_to(self.work))
            digest = sha256_file(p)
            if self.sent.get(rel) != digest:
                self.store.put_file(p, f"{self.prefix}/{rel}")
                self.sent[rel] = digest

    def clear(self) -> None:
        self.store.delete(self.prefix)


def _train_into(uri: str, splits: Splits, spec, on_epoch) -> TrainResult:
    """Train into the stage folder of ``uri`` and publish it; on S3, resume from and mirror to ``_partial``."""
    work = _work_dir(uri)
    if not is_remote(uri):
        return train(splits, spec, work, on_epoch=on_epoch)
    remote = _RemoteCheckpoint(uri, work)
    if not (work / "checkpoint.pt").is_file():
        remote.restore()
    result = train(splits, spec, work, on_epoch=on_epoch, on_checkpoint=remote.push)
    _publish(work, uri)
    remote.clear()
    return result


def _existing(uri: str) -> Path | None:
    """A verified local copy of a finished artifact at ``uri``, or None."""
    if is_remote(uri):
        from .storage import is_complete, local_copy

        return local_copy(uri) if is_complete(uri) else None
    p = Path(uri)
    if (p / "manifest.json").is_file():
        return p
    return None


def fetch(uri: str) -> Path:
    """A local, verified copy of the finished artifact at ``uri`` (ArtifactError when absent)."""
    p = _existing(uri)
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

    full_data_spec(cfg)  # ConfigError (unknown architecture, drop_last with dynamics) before anything is written
    ident = P.claim_identity(cfg)
    digest = config_digest(ident)
    key = "experiment.json"
    body = {"name": cfg.name, "digest": digest, "identity": ident}
    if is_remote(cfg.output):
        from .storage import open_store

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


# ------------------------------------------------------------------------------------------ stage 1
def train_full(cfg: Config, *, splits: Splits | None = None, on_epoch: Callable[[dict], Any] | None = None) -> StageOutput:
    """Full-data training with dynamics capture (resumes an interrupted run)."""
    splits = splits or create_dataset(cfg.data)
    spec = full_data_spec(cfg)
    claim_output(cfg)
    uri = join_uri(cfg.output, P.train_key(cfg, splits.fingerprint))
    done = _existing(uri)
    if done is not None:
        return StageOutput(uri, done, load_result(done), reused=True)
    result = _train_into(uri, splits, spec, on_epoch)
    return StageOutput(uri, _work_dir(uri), result)


# ------------------------------------------------------------------------------------------ stage 2
def score(cfg: Config, train_uri: str, method: MethodSpec | str, params: dict | None = None, *,
          nan_policy: str = "raise", splits: Splits | None = None) -> StageOutput:
    """Score every sample of the full-data run at ``train_uri`` with one method.

    Writes ``scores.npy`` (float64 ``[N]``, sample order, higher = keep first) and ``score.json``.
    With ``splits``, dynamics from another dataset version are refused."""
    from .dynamics import check_matches, open_dynamics
    from .scoring import compute_scores

    m = method if isinstance(method, MethodSpec) else MethodSpec(name=method)
    params = dict(m.params if params is None else params)
    uri = join_uri(cfg.output, P.score_key(train_uri, m.name, params, nan_policy))
    done = _existing(uri)
    if done is not None:
        return StageOutput(uri, done, reused=True, info=read_json(done / "score.json"))
    dyn = open_dynamics(fetch(train_uri) / "dynamics")
    if splits is not None:
        check_matches(dyn, num_samples=len(splits.train), num_classes=splits.num_classes, fingerprint=splits.fingerprint,
                      what=f"dataset {splits.name!r}")
    scores = compute_scores(m.name, dyn, nan_policy=nan_policy, **params)
    info = {"method": m.name, "label": m.display, "params": params, "fingerprint": dyn.fingerprint,
            "num_samples": dyn.num_samples, "train_uri": train_uri, "nan_policy": nan_policy}
    work = _work_dir(uri)
    work.mkdir(parents=True, exist_ok=True)
    atomic_save_npy(work / "scores.npy", np.asarray(scores, dtype=np.float64))
    atomic_write_json(work / "score.json", info)
    write_manifest(work, ["scores.npy", "score.json"], kind="scores", **{k: info[k] for k in ("method", "fingerprint")})
    _publish(work, uri)
    return StageOutput(uri, work, info=info)


def load_scores(score_dir: Path) -> tuple[np.ndarray, dict]:
    verify_manifest(score_dir)
    return load_npy(score_dir / "scores.npy"), read_json(score_dir / "score.json")


# ------------------------------------------------------------------------------------------ stage 3
def select(cfg: Config, train_uri: str, scores_uri: str, rate: float, *, label: str | None = None) -> StageOutput:
    """Keep the top ``round((1 - rate) N)`` samples (or the method's own sampler) as a selection folder."""
    from .dynamics import open_dynamics
    from .scoring import get_sampler
    from .selection import select as select_samples
    from .selection import write_selection

    scores_dir = fetch(scores_uri)
    scores, info = load_scores(scores_dir)
    label = label or info.get("label") or info["method"]
    uri = join_uri(cfg.output, P.selection_key(cfg, scores_uri, label, rate))
    done = _existing(uri)
    if done is not None:
        return StageOutput(uri, done, reused=True, info={"label": label, "method": info["method"], "rate": rate})
    dyn = open_dynamics(fetch(train_uri) / "dynamics")
    if dyn.fingerprint != info["fingerprint"] or len(scores) != dyn.num_samples:
        raise ArtifactError(f"scores at {scores_uri} belong to another dataset version than the dynamics at {train_uri}; rescore.")
    sampler = get_sampler(info["method"], info["params"])
    sel = select_samples(scores, rate, labels=dyn.labels, ids=dyn.ids, class_balanced=cfg.selection.class_balanced,
                         sampler=sampler, seed=int(info["params"].get("seed", 0)))
    work = _work_dir(uri)
    write_selection(work, sel, method=info["method"], params={**info["params"], "label": label},
                    fingerprint=dyn.fingerprint)
    _publish(work, uri)
    return StageOutput(uri, work, info={"label": label, "method": info["method"], "rate": rate})


# ------------------------------------------------------------------------------------------ stage 4/5
def train_coreset(cfg: Config, selection_uri: str, *, arch: str | None = None, seed: int | None = None,
                  splits: Splits | None = None, on_epoch: Callable[[dict], Any] | None = None) -> StageOutput:
    """Train (weighted) on a selection; the test set is never pruned. Also used per architecture."""
    from .selection import load_selection

    splits = splits or create_dataset(cfg.data)
    sel_dir = fetch(selection_uri)
    sel = load_selection(sel_dir, expected_fingerprint=splits.fingerprint)
    spec = coreset_spec(cfg, rate=sel.rate, positions=sel.indices, weights=sel.weights, num_full=len(splits.train),
                        arch=arch, seed=seed)
    uri = join_uri(cfg.output, P.coreset_key(cfg, selection_uri, spec.arch, spec.seed))
    done = _existing(uri)
    if done is not None:
        return StageOutput(uri, done, load_result(done), reused=True)
    result = _train_into(uri, splits, spec, on_epoch)
    return StageOutput(uri, _work_dir(uri), result)


def evaluate_cross_arch(cfg: Config, selection_uri: str, archs: list[str] | None = None, *,
                        seed: int | None = None, splits: Splits | None = None) -> list[tuple[str, StageOutput]]:
    """Train each architecture on the same selection; one (arch, output) per architecture."""
    splits = splits or create_dataset(cfg.data)
    return [(a, train_coreset(cfg, selection_uri, arch=a, seed=seed, splits=splits)) for a in (archs or cfg.evaluate.archs)]

"""One plan of the work a config asks for, and one declaration of what each stage depends on.

* :data:`FIELDS` classifies every config field as ``IDENTITY`` (it can change a stored number, so it
  is part of the keys) or ``RUNTIME`` (speed, display, location: never part of a key). A new config
  field must be added here (``tests/test_plan.py`` fails otherwise).
* :data:`STAGE_READS` names the config sections each stage reads. From these two come the artifact
  keys (:func:`train_key`, ...), the MLflow run keys (:func:`run_key_of`), the output-root claim
  (:func:`claim_identity`) and the per-stage config a cached KFP task gets (:func:`stage_config`).
* :meth:`Plan.from_config` lists the work items once: train-full, a score item per method setting,
  a pair per (setting, rate), a coreset item per (pair, seed) and an evaluation item per (evaluated
  pair, architecture). ``tdds grid``, the KFP DAG and the report iterate it.

The numerics settings (``train.device``, ``amp``, ``channels_last``, ``compile``) are identity by
their *effective* values on the machine that trains (:func:`numerics`): on a CPU, ``amp: auto`` and
``amp: off`` train the same numbers and share a key; a bf16 GPU run and an fp32 CPU run do not.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Iterator, Literal

from .config import Config, MethodSpec, config_digest
from .errors import ConfigError

__all__ = ["IDENTITY", "RUNTIME", "FIELDS", "STAGE_READS", "Plan", "ScoreItem", "PairItem", "CoresetItem",
           "EvalItem", "config_fields", "identity", "numerics", "stage_config", "claim_identity", "slug",
           "format_rate", "method_label", "train_key", "score_key", "selection_key", "coreset_key", "run_key_of",
           "experiment_key", "runtime_spec_fields"]

IDENTITY: Literal["identity"] = "identity"
RUNTIME: Literal["runtime"] = "runtime"

# every leaf field of Config (dotted path) -> identity | runtime. Dicts and lists are leaves.
FIELDS: dict[str, str] = {
    "name": RUNTIME,                     # labels and folder names only
    "output": RUNTIME,                   # where; the store's identity keys the caches instead
    "data.name": IDENTITY, "data.root": RUNTIME,   # the content is keyed by the dataset fingerprint
    "data.download": RUNTIME, "data.train_subset": IDENTITY, "data.test_subset": IDENTITY,
    "data.subset_seed": IDENTITY, "data.image_size": IDENTITY, "data.resident": RUNTIME,
    "data.resident_max_bytes": RUNTIME, "data.num_workers": RUNTIME, "data.options": IDENTITY,
    "data.noise.label_noise": IDENTITY, "data.noise.corruption": IDENTITY,
    "data.noise.corruption_types": IDENTITY, "data.noise.seed": IDENTITY,
    "model.arch": IDENTITY, "model.options": IDENTITY,
    "train.epochs": IDENTITY, "train.batch_size": IDENTITY, "train.lr": IDENTITY, "train.momentum": IDENTITY,
    "train.nesterov": IDENTITY, "train.weight_decay": IDENTITY, "train.schedule": IDENTITY, "train.seed": IDENTITY,
    "train.augment": IDENTITY, "train.device": IDENTITY, "train.amp": IDENTITY, "train.channels_last": IDENTITY,
    "train.compile": IDENTITY, "train.eval_batch_size": RUNTIME, "train.drop_last": IDENTITY,
    "train.eval_every": IDENTITY,        # which epochs are evaluated changes best_acc
    "train.progress": RUNTIME,
    "dynamics.record": IDENTITY, "dynamics.mode": IDENTITY, "dynamics.dtype": IDENTITY,
    "dynamics.epoch_start": IDENTITY, "dynamics.epoch_stop": IDENTITY, "dynamics.save_features": IDENTITY,
    "methods": IDENTITY,                 # per score item
    "selection.rates": IDENTITY,         # per pair
    "selection.class_balanced": IDENTITY, "selection.export": RUNTIME,
    "coreset.strategy": IDENTITY, "coreset.weighting": IDENTITY, "coreset.batch_size": IDENTITY,
    "coreset.batch_rule": IDENTITY, "coreset.batch_rule_thresholds": IDENTITY, "coreset.epochs": IDENTITY,
    "coreset.seeds": IDENTITY,           # per coreset item
    "evaluate.archs": IDENTITY, "evaluate.rates": IDENTITY, "evaluate.methods": IDENTITY,   # which eval items exist
    "tracking.enabled": RUNTIME, "tracking.uri": RUNTIME, "tracking.experiment": RUNTIME,
    "pipeline.image": RUNTIME, "pipeline.gpu_image": RUNTIME, "pipeline.accelerator_type": RUNTIME,
    "pipeline.gpus": RUNTIME, "pipeline.cpu_request": RUNTIME, "pipeline.memory_request": RUNTIME,
    "pipeline.retries": RUNTIME, "pipeline.caching": RUNTIME, "pipeline.pipeline_root": RUNTIME,
}

# the config sections each stage reads (its key uses their identity fields; a cached KFP task gets
# them as configured and every other section at its default). The item fields (a score item's
# method, a pair's rate, a coreset item's seed, an eval item's arch) come with the item instead.
_COMMON = ("name", "output", "data", "model", "train", "dynamics", "tracking")
STAGE_READS: dict[str, tuple[str, ...]] = {
    "train-full": ("data", "model", "train", "dynamics"),
    "score": (),
    "select": ("selection.class_balanced",),
    "coreset": ("data", "model", "train", "coreset"),
}
_ITEM_FIELDS = {"selection.rates", "coreset.seeds", "methods"}   # carried by the items, not the stage config


def config_fields(model: Any = Config, prefix: str = "") -> Iterator[str]:
    """Every leaf field path of the config model (nested models recurse; dicts and lists are leaves)."""
    from pydantic import BaseModel

    for name, f in model.model_fields.items():
        path = f"{prefix}{name}"
        ann = f.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            yield from config_fields(ann, path + ".")
        else:
            yield path


def _get(cfg: Any, path: str) -> Any:
    for part in path.split("."):
        cfg = getattr(cfg, part)
    return cfg


def _json(v: Any) -> Any:
    from pydantic import BaseModel

    if isinstance(v, BaseModel):
        return v.model_dump(mode="json")
    if isinstance(v, list):
        return [_json(x) for x in v]
    if isinstance(v, tuple):
        return [_json(x) for x in v]
    return v


def numerics(cfg: Config) -> dict[str, Any]:
    """The effective numerics of training on this machine: device class, bf16 autocast,
    channels_last and torch.compile as the engine applies them (CUDA only)."""
    from .engine import effective_numerics

    t = cfg.train
    return effective_numerics(t.device, t.amp, t.channels_last, t.compile)


_NUMERICS = ("train.device", "train.amp", "train.channels_last", "train.compile")


def identity(cfg: Config, stage: str) -> dict[str, Any]:
    """The identity fields ``stage`` reads (``{path: value}``; numerics resolved, item fields left out)."""
    if stage not in STAGE_READS:
        raise ConfigError(f"unknown stage {stage!r}; one of {', '.join(STAGE_READS)}")
    reads = STAGE_READS[stage]
    out: dict[str, Any] = {}
    for path, kind in FIELDS.items():
        if kind != IDENTITY or path in _ITEM_FIELDS or path in _NUMERICS:
            continue
        if any(path == r or path.startswith(r + ".") for r in reads):
            out[path] = _json(_get(cfg, path))
    if any(r == "train" for r in reads):
        out["numerics"] = numerics(cfg)
    return out


def runtime_spec_fields() -> tuple[str, ...]:
    """Names of :class:`~tdds_core.engine.TrainSpec` fields that are runtime settings (not in its digest)."""
    return tuple(p.rsplit(".", 1)[1] for p, k in FIELDS.items() if k == RUNTIME and p.startswith(("train.", "data.")))


def stage_config(cfg: Config, stage: str) -> Config:
    """``cfg`` as a cached stage task gets it: the sections it reads (plus the common ones) as
    configured, every other field at its default. KFP keys its cache on a task's inputs, so a
    stage's key changes only when something it reads changes (a new rate leaves train-full alone)."""
    if stage not in STAGE_READS:
        raise ConfigError(f"unknown stage {stage!r}; one of {', '.join(STAGE_READS)}")
    keep = set(_COMMON) | set(STAGE_READS[stage])
    data = cfg.model_dump(mode="json")
    default = Config().model_dump(mode="json")
    out: dict[str, Any] = {}
    for section, value in data.items():
        if section in keep:
            out[section] = value
        elif isinstance(value, dict):
            kept = {f for f in value if f"{section}.{f}" in keep}
            out[section] = {f: (value[f] if f in kept else default[section][f]) for f in value}
        else:
            out[section] = default[section]
    return Config.model_validate(out)


def claim_identity(cfg: Config) -> dict[str, Any]:
    """What an output root holds one of: the full-data run's identity (its sections' identity fields)."""
    return identity(cfg, "train-full")


# ------------------------------------------------------------------------------------------ names
def slug(s: str) -> str:
    """A path- and tag-safe form of a label: runs of other characters become ``-``."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", s).strip("-") or "x"


def format_rate(rate: float | None) -> str:
    """``0.7`` -> ``"0.70"`` (two decimals unless more are needed); None -> ``""``."""
    if rate is None:
        return ""
    r = float(rate)
    s = f"{r:.2f}"
    return s if abs(float(s) - r) < 1e-12 else repr(r)


def method_label(method: MethodSpec, params: dict) -> str:
    """The row name of a method setting: its label, or name plus params."""
    if method.label:
        return method.label
    if params == method.params or method.per_rate:
        return method.display
    return MethodSpec(name=method.name, params=params).display


# ------------------------------------------------------------------------------------------ keys
def train_key(cfg: Config, fingerprint: str) -> str:
    """Store key of the full-data run: ``train/<fingerprint>-<identity digest>``."""
    return f"train/{fingerprint[:12]}-{config_digest({'id': identity(cfg, 'train-full'), 'fp': fingerprint}, 12)}"


def score_key(train: str, method: str, params: dict, nan_policy: str = "raise") -> str:
    """Store key of one method setting's scores (``train``: the train key)."""
    leaf = train.rstrip("/").rsplit("/", 1)[-1]
    digest = config_digest({"train": leaf, "method": method, "params": params, "nan_policy": nan_policy})
    return f"scores/{slug(method)}-{digest}"


def selection_key(cfg: Config, score: str, label: str, rate: float) -> str:
    """Store key of the selection of one (score setting, rate) pair."""
    leaf = score.rstrip("/").rsplit("/", 1)[-1]
    digest = config_digest({"scores": leaf, "rate": float(rate), "id": identity(cfg, "select")})
    return f"selections/{slug(label)}-p{format_rate(rate)}-{digest}"


def coreset_key(cfg: Config, selection: str, arch: str, seed: int) -> str:
    """Store key of a coreset (or cross-architecture) training run on a selection."""
    leaf = selection.rstrip("/").rsplit("/", 1)[-1]
    ident = identity(cfg, "coreset")
    if arch != cfg.model.arch:
        ident.pop("model.options", None)   # another architecture is built with its defaults
    return f"coreset/{leaf}/{slug(arch)}-s{seed}-{config_digest({'id': ident, 'arch': arch, 'seed': seed}, 12)}"


def run_key_of(stage: str, output: str, artifact_key: str) -> str:
    """MLflow dedup key of the run that made (or logged) the artifact at ``artifact_key`` of the
    store at ``output``: the same work in another store is another run."""
    from .storage import store_identity

    return f"{stage}|{config_digest(store_identity(output), 8)}|{artifact_key}"


def experiment_key(cfg: Config, fingerprint: str) -> str:
    """Key of a whole experiment (the grid's parent run): every identity field and the dataset."""
    ident = {p: _json(_get(cfg, p)) for p, k in FIELDS.items() if k == IDENTITY and p not in _NUMERICS}
    ident["numerics"] = numerics(cfg)
    return f"pipeline|{cfg.name}|{fingerprint[:12]}|{config_digest(ident)}"


# ------------------------------------------------------------------------------------------ plan
@dataclass(frozen=True)
class ScoreItem:
    key: str                 # plan key of the setting: <label slug>-<digest>
    label: str               # row name
    method: MethodSpec
    params: dict


@dataclass(frozen=True)
class PairItem:
    key: str                 # <score item key>@p<rate>
    score: ScoreItem
    rate: float


@dataclass(frozen=True)
class CoresetItem:
    pair: PairItem
    seed: int


@dataclass(frozen=True)
class EvalItem:
    pair: PairItem
    arch: str
    seed: int


@dataclass(frozen=True)
class Plan:
    """The work of one config, in order: score settings, (setting, rate) pairs, coreset runs per
    (pair, seed) and cross-architecture runs per (evaluated pair, architecture)."""

    scores: tuple[ScoreItem, ...]
    pairs: tuple[PairItem, ...]
    coresets: tuple[CoresetItem, ...]
    evals: tuple[EvalItem, ...]

    @classmethod
    def from_config(cls, cfg: Config) -> "Plan":
        scores: dict[str, ScoreItem] = {}
        pairs: dict[str, PairItem] = {}
        evals: list[EvalItem] = []
        for m in cfg.methods:
            for rate in (m.rates or cfg.selection.rates):
                params = m.params_for(rate)
                label = method_label(m, params)
                skey = f"{slug(label)}-{config_digest({'name': m.name, 'params': params, 'label': label}, 8)}"
                item = scores.setdefault(skey, ScoreItem(skey, label, m, params))
                pkey = f"{skey}@p{format_rate(rate)}"
                if pkey in pairs:
                    continue
                pair = pairs[pkey] = PairItem(pkey, item, float(rate))
                evaluated = any(abs(rate - r) < 1e-9 for r in cfg.evaluate.rates) and (
                    m.name in cfg.evaluate.methods or label in cfg.evaluate.methods)
                if evaluated:
                    # the model's own architecture is the coreset row itself
                    evals += [EvalItem(pair, a, cfg.coreset.seeds[0]) for a in cfg.evaluate.archs if a != cfg.model.arch]
        if not pairs:
            raise ConfigError("the config names no (method, pruning rate) pair; set methods and selection.rates")
        coresets = tuple(CoresetItem(p, s) for p in pairs.values() for s in cfg.coreset.seeds)
        return cls(tuple(scores.values()), tuple(pairs.values()), coresets, tuple(evals))

    def rates(self) -> list[tuple[float, list[PairItem]]]:
        """The pairs grouped by pruning rate, ascending."""
        by_rate: dict[float, list[PairItem]] = {}
        for p in self.pairs:
            by_rate.setdefault(p.rate, []).append(p)
        return sorted(by_rate.items())

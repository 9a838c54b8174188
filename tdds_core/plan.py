"""One plan of the work a config asks for, and one declaration of what each stage depends on.

* :data:`FIELDS` classifies every config field as ``IDENTITY`` (it can change a stored number, so it
  is part of the keys) or ``RUNTIME`` (speed, display, location: never part of a key). A new config
  field must be added here (``tests/test_plan.py`` fails otherwise).
* each stage declares the config sections it reads (``Stage.reads``, :mod:`tdds_core.stages`).
  From these two come the artifact
  keys (:func:`train_key`, ...), the MLflow run keys (:func:`run_key_of`), the output-root claim
  (:func:`claim_identity`) and the per-stage config a cached KFP task gets (:func:`stage_config`).
* :meth:`Plan.from_config` lists the work items once: train-full, a score item per method setting,
  a pair per (setting, rate), a coreset item per (pair, seed) and an evaluation item per (evaluated
  pair, architecture). ``tdds grid``, the KFP DAG and the report iterate it.

The numerics settings (``train.device``, ``amp``, ``channels_last``, ``compile``, ``deterministic``)
and the number of processes training one run (torchrun's world size) are identity by their
*effective* values on the machine that trains (:func:`numerics`): on a CPU, ``amp: auto`` and
``amp: off`` train the same numbers and share a key; a bf16 GPU run and an fp32 CPU run do not.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from pydantic import BaseModel, ConfigDict, ValidationError

from .config import Config, MethodSpec, config_digest
from .errors import ConfigError
from .fields import (FIELDS, IDENTITY, NUMERICS as _NUMERICS, RUNTIME, config_fields, methods_read_statistics,
                     runtime_spec_fields)
from .names import STAGE_CORESET, STAGE_SCORE, STAGE_SELECT, STAGE_TRAIN_FULL, format_rate, slug
from .numerics import effective_numerics
from .scoring import check_recorded_inputs, is_method, method_weighting, resolve_params, selection_strategy
from .stage_registry import get_stage
from .storage import store_identity

__all__ = ["IDENTITY", "RUNTIME", "FIELDS", "stage_reads", "Plan", "ScoreItem", "PairItem", "RateItem",
           "EvalItem", "parse_item", "config_fields", "identity", "numerics", "stage_config", "claim_identity", "slug",
           "format_rate", "method_label", "coreset_weighting", "train_key", "score_key", "selection_key", "coreset_key", "run_key_of",
           "experiment_key", "configured_identity", "check_plan", "runtime_spec_fields", "ARTIFACT_VERSION", "RUNTIME_OPTIONS"]

# sections every cached stage task gets besides the ones its stage reads (Stage.reads)
_COMMON = ("name", "output", "data", "model", "train", "dynamics", "tracking")
_ITEM_FIELDS = {"selection.rates", "coreset.seeds", "methods"}   # carried by the items, not the stage config
# identity fields added after artifacts were stored: in a key only when set away from this default, so
# every artifact stored before the field existed keeps its key
KEYED_WHEN_SET: dict[str, Any] = {"dynamics.stop_training": False}


def _get(cfg: Any, path: str) -> Any:
    for part in path.split("."):
        cfg = getattr(cfg, part)
    return cfg


def _json(v: Any) -> Any:
    if isinstance(v, BaseModel):
        return v.model_dump(mode="json")
    if isinstance(v, list):
        return [_json(x) for x in v]
    if isinstance(v, tuple):
        return [_json(x) for x in v]
    return v


def numerics(cfg: Config, stage: Optional[str] = None) -> dict[str, Any]:
    """The effective numerics of training on this machine: device class, bf16 autocast,
    channels_last and torch.compile as the engine applies them (:func:`tdds_core.numerics.effective_numerics`);
    for the train-full stage also the processes that train it (``train.processes``)."""
    t = cfg.train
    k = t.processes * t.nodes
    processes = k if stage == STAGE_TRAIN_FULL and k > 1 else None
    return effective_numerics(t.device, t.amp, t.channels_last, t.compile, t.deterministic, processes=processes)


def stage_reads(stage: str) -> tuple[str, ...]:
    """The config sections (or fields) ``stage`` reads, as its registration declares them."""
    return get_stage(stage).reads


def identity(cfg: Config, stage: str) -> dict[str, Any]:
    """The identity fields ``stage`` reads (``{path: value}``; numerics resolved, item fields left out)."""
    reads = stage_reads(stage)
    out: dict[str, Any] = {}
    for path, kind in FIELDS.items():
        if kind != IDENTITY or path in _ITEM_FIELDS or path in _NUMERICS:
            continue
        if any(path == r or path.startswith(r + ".") for r in reads):
            value = _json(_get(cfg, path))
            if path in KEYED_WHEN_SET and value == KEYED_WHEN_SET[path]:
                continue
            out[path] = value
    if out.get("dynamics.record") == "auto" and not methods_read_statistics(cfg):
        out["dynamics.record"] = "auto:logits"   # auto decides by the methods too (DynamicsConfig.resolved)
    if any(r == "train" for r in reads):
        out["numerics"] = numerics(cfg, stage)
    return out


def stage_config(cfg: Config, stage: str) -> Config:
    """``cfg`` as a cached stage task gets it: the sections it reads (plus the common ones) as
    configured, every other field at its default. KFP keys its cache on a task's inputs, so a
    stage's key changes only when something it reads changes (a new rate leaves train-full alone)."""
    keep = set(_COMMON) | set(stage_reads(stage))
    if stage == STAGE_TRAIN_FULL and cfg.train.nodes > 1:
        keep.add("pipeline")    # it launches a PyTorchJob of the pipeline's image, volumes and resources
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
    return identity(cfg, STAGE_TRAIN_FULL)


# ------------------------------------------------------------------------------------------ names
def coreset_weighting(cfg: Config, method: MethodSpec | str | None, rate: Optional[float] = None) -> str:
    """The loss weighting a method's coreset trains with at ``rate``: the method entry's (its
    ``per_rate`` entry's first), else ``coreset.weighting``, whose ``method`` rule takes the method's
    registered default (TDDS: ``batch``; the baselines: ``none``; a selection of no known method: ``none``)."""
    spec = method if isinstance(method, MethodSpec) or method is None else MethodSpec(name=method)
    if spec is not None and spec.weighting_for(rate):
        return spec.weighting_for(rate)
    if cfg.coreset.weighting != "method":
        return cfg.coreset.weighting
    return method_weighting(spec.name) if spec is not None and is_method(spec.name) else "none"


def method_label(method: MethodSpec, params: dict) -> str:
    """The row name of a method setting: its label, or name plus params."""
    if method.label:
        return method.label
    if params == method.params or method.per_rate:
        return method.display
    return MethodSpec(name=method.name, params=params, strategy=method.strategy,
                      strategy_params=method.strategy_params).display


# ------------------------------------------------------------------------------------------ keys
# bumped when what a stage stores changes meaning, so older artifacts are not reused:
# train-full 2: dynamics carry the clean final pass (final_logits.npy) and fp32-head logits;
# score 2: entropy reads the clean pass, moderate is Moderate-DS, aum uses probabilities, ccs cuts
ARTIFACT_VERSION = {STAGE_TRAIN_FULL: 2, STAGE_SCORE: 2}


def train_key(cfg: Config, fingerprint: str) -> str:
    """Store key of the full-data run: ``train/<fingerprint>-<identity digest>``."""
    ident = {"id": identity(cfg, STAGE_TRAIN_FULL), "fp": fingerprint, "v": ARTIFACT_VERSION[STAGE_TRAIN_FULL]}
    return f"train/{fingerprint[:12]}-{config_digest(ident, 12)}"


# scorer options that change how fast scores are computed, never a score: not in any key
RUNTIME_OPTIONS = frozenset({"block_rows", "workers"})


def score_key(train: str, method: str, params: dict, nan_policy: str = "raise") -> str:
    """Store key of one method setting's scores (``train``: the train key; runtime options left out)."""
    leaf = train.rstrip("/").rsplit("/", 1)[-1]
    params = {k: v for k, v in params.items() if k not in RUNTIME_OPTIONS}
    digest = config_digest({"train": leaf, "method": method, "params": params, "nan_policy": nan_policy,
                            "v": ARTIFACT_VERSION[STAGE_SCORE]})
    return f"scores/{slug(method)}-{digest}"


def selection_key(cfg: Config, score: str, label: str, rate: float, strategy: Optional[dict] = None) -> str:
    """Store key of the selection of one (score setting, rate) pair. ``strategy`` (``{"name", "params"}``)
    enters the digest only when given, i.e. when it is not the method's own (``StrategyChoice.key()``):
    every selection made with its method's default keeps the key it had before strategies existed."""
    leaf = score.rstrip("/").rsplit("/", 1)[-1]
    ident: dict[str, Any] = {"scores": leaf, "rate": float(rate), "id": identity(cfg, STAGE_SELECT)}
    if strategy is not None:
        ident["strategy"] = strategy
    digest = config_digest(ident)
    return f"selections/{slug(label)}-p{format_rate(rate)}-{digest}"


def coreset_key(cfg: Config, selection: str, arch: str, seed: int, weighting: str) -> str:
    """Store key of a coreset (or cross-architecture) training run on a selection with a weighting."""
    leaf = selection.rstrip("/").rsplit("/", 1)[-1]
    ident = identity(cfg, STAGE_CORESET)
    ident.pop("coreset.weighting", None)   # the resolved weighting below is what trains
    if arch != cfg.model.arch:
        ident.pop("model.options", None)   # another architecture is built with its defaults
    digest = config_digest({"id": ident, "arch": arch, "seed": seed, "weighting": weighting}, 12)
    return f"coreset/{leaf}/{slug(arch)}-s{seed}-{digest}"


def run_key_of(stage: str, output: str, artifact_key: str) -> str:
    """MLflow dedup key of the run that made (or logged) the artifact at ``artifact_key`` of the
    store at ``output``: the same work in another store is another run."""
    return f"{stage}|{config_digest(store_identity(output), 8)}|{artifact_key}"


def configured_identity(cfg: Config) -> dict[str, Any]:
    """Every identity field as configured (``{path: value}``; the numerics as written, not as they
    resolve on this machine): what two tasks of one pipeline agree on, whatever machine runs them."""
    return {p: _json(_get(cfg, p)) for p, k in FIELDS.items() if k == IDENTITY}


def experiment_key(cfg: Config, fingerprint: str) -> str:
    """Key of a whole experiment (the grid's parent run): every identity field and the dataset."""
    ident = {p: v for p, v in configured_identity(cfg).items() if p not in _NUMERICS}
    ident["numerics"] = numerics(cfg, STAGE_TRAIN_FULL)
    return f"pipeline|{cfg.name}|{fingerprint[:12]}|{config_digest(ident)}"


# ------------------------------------------------------------------------------------------ plan
class _Item(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ScoreItem(_Item):
    """One method setting: its plan key (``<label slug>-<digest>``), row name, method and params."""

    key: str
    label: str
    method: MethodSpec
    params: dict


class PairItem(_Item):
    """One (setting, pruning rate) pair: key ``<score item key>@p<rate>``."""

    key: str
    score: ScoreItem
    rate: float


class RateItem(_Item):
    """One pruning rate and its pairs (a selection task materializes them together)."""

    rate: float
    pairs: tuple[PairItem, ...]


class EvalItem(_Item):
    """One cross-architecture run: an evaluated pair on another architecture."""

    pair: PairItem
    arch: str
    seed: int


class Once(_Item):
    """The item of a stage that runs once."""


_LOOPS: dict[str, type[_Item]] = {"once": Once, "scores": ScoreItem, "rates": RateItem, "pairs": PairItem,
                                  "evals": EvalItem}


def parse_item(loop: str, item_json: str) -> _Item:
    """A loop item from its JSON (as the pipeline passes it); ConfigError when it is not one."""
    try:
        return _LOOPS[loop].model_validate_json(item_json or "{}")
    except (KeyError, ValidationError) as e:
        raise ConfigError(f"loop item {str(item_json)[:200]!r} is not a {loop!r} item of the plan ({e}); compile "
                          "the pipeline again.") from None


@dataclass(frozen=True)
class Plan:
    """The work of one config, in order: score settings, (setting, rate) pairs, the pairs by rate,
    and cross-architecture runs per (evaluated pair, architecture). Coreset runs are one per
    (pair, seed of ``coreset.seeds``)."""

    scores: tuple[ScoreItem, ...]
    pairs: tuple[PairItem, ...]
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
                what = {'name': m.name, 'params': params, 'label': label}
                if m.strategy_for(rate) or m.strategy_params:     # in the key only when set: older keys stay
                    what.update(strategy=m.strategy_for(rate), strategy_params=m.strategy_params)
                skey = f"{slug(label)}-{config_digest(what, 8)}"
                item = scores.setdefault(skey, ScoreItem(key=skey, label=label, method=m, params=params))
                pkey = f"{skey}@p{format_rate(rate)}"
                if pkey in pairs:
                    continue
                pair = pairs[pkey] = PairItem(key=pkey, score=item, rate=float(rate))
                evaluated = any(abs(rate - r) < 1e-9 for r in cfg.evaluate.rates) and (
                    m.name in cfg.evaluate.methods or label in cfg.evaluate.methods)
                if evaluated:
                    # the model's own architecture is the coreset row itself
                    evals += [EvalItem(pair=pair, arch=a, seed=cfg.coreset.seeds[0])
                              for a in cfg.evaluate.archs if a != cfg.model.arch]
        if not pairs:
            raise ConfigError("the config names no (method, pruning rate) pair; set methods and selection.rates")
        return cls(tuple(scores.values()), tuple(pairs.values()), tuple(evals))

    @property
    def rates(self) -> tuple[RateItem, ...]:
        """The pairs grouped by pruning rate, ascending."""
        by_rate: dict[float, list[PairItem]] = {}
        for p in self.pairs:
            by_rate.setdefault(p.rate, []).append(p)
        return tuple(RateItem(rate=r, pairs=tuple(ps)) for r, ps in sorted(by_rate.items()))

    def items(self, loop: str) -> tuple[_Item, ...]:
        """The items a stage with this ``loop`` runs once per."""
        return {"once": (Once(),), "scores": self.scores, "rates": self.rates, "pairs": self.pairs,
                "evals": self.evals}[loop]

    def items_json(self, loop: str) -> list[str]:
        """The items as JSON strings (the KFP loop items; kfp.local needs strings, see pipelines/prune.py)."""
        return [it.model_dump_json() for it in self.items(loop)]

    def digest(self) -> str:
        return config_digest({loop: self.items_json(loop) for loop in _LOOPS}, 16)


def check_plan(cfg: Config) -> Plan:
    """The plan of ``cfg``, refusing before any work what a stage would refuse later: a method the
    dynamics cannot feed, unknown method options, an unknown selection strategy or strategy option
    (ConfigError naming the entry and listing the known ones)."""
    plan = Plan.from_config(cfg)
    check_recorded_inputs([item.method.name for item in plan.scores], cfg.dynamics.record)
    for item in plan.scores:
        resolve_params(item.method.name, **item.params)
    for pair in plan.pairs:
        m = pair.score.method
        selection_strategy(m.name, pair.score.params, pair.rate, m.strategy_for(pair.rate), m.strategy_params)
    return plan

"""The Kubeflow pipeline's steps as plain functions: each KFP component in ``components/`` parses its
inputs, makes ONE call here and writes what it gets back (:func:`emit`). Nothing here imports kfp;
the work itself is done by :mod:`tdds_core.stages` and the ``tracked_*`` functions of
:mod:`tdds_core.grid`.

What flows between the pipeline's tasks
---------------------------------------
* The config travels as one JSON string parameter (``Config.to_json()``), validated by
  :func:`open_run`; each cached stage gets the part of it that it reads
  (:func:`stage_config_json`, fixed when the pipeline is built), so KFP's cache key of a stage
  changes only when something the stage reads changes.
* Every stage artifact lives in tdds's own store under ``cfg.output`` (local folder or ``s3://``) at
  its content/config-derived key. A KFP output artifact holds only a small JSON *pointer* to it
  (``{"format": "tdds-pointer/1", "kind", "uri", "key", "fingerprint", ...}``, also copied into the
  artifact's metadata), and a Metrics artifact holds the result rows (JSON) plus ``final_acc`` /
  ``best_acc`` logged as KFP metrics. Pointers hold no run-specific values, so the cache keys of
  downstream tasks (which include upstream artifacts) stay stable from run to run.
* :func:`collect` merges the pointers of a loop's outputs into one (``kind: score-set`` after the
  score loop, ``kind: selections`` after the rate loop): kfp 2.17 cannot feed a collected artifact
  list into a task inside another loop, so each fan-in goes through one small task.
* :func:`select` materializes the selections of one pruning rate (one task per rate, every method
  setting) and points to them (``kind: selections``); the pair and cross-architecture loops pick
  their item from the merged selections.

Parent and child MLflow runs
----------------------------
:func:`open_run` (not cached) loads the dataset, computes its fingerprint and creates the parent run
``pipeline/<name>`` (RUNNING, tagged with the pipeline run id and the *pipeline key*: a digest of
the experiment name, the output root and the dataset fingerprint). Cached stage tasks must not
take per-run inputs (that would defeat the cache), so a stage finds its parent by the pipeline key
(the newest RUNNING one; two such pipelines running at once would share it) and starts its child
run with ``parent=`` (:class:`ParentedTracker`). A stage KFP serves from its cache does not run, and a stage whose finished MLflow run already exists (same ``tdds.key``) reuses it; either
way no duplicate child appears. :func:`report` (not cached) logs the table into a ``report`` child
and ends the parent FINISHED; :func:`close_run` (the exit handler) ends it FAILED if the pipeline
stopped before that.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

from .config import Config, MethodSpec, config_digest, parse_config
from .errors import ArtifactError, ConfigError, DataError, PipelineError
from .plan import PairItem, ScoreItem, slug as _slug

__all__ = [
    "POINTER_FORMAT", "TAG_PIPELINE_KEY", "StepResult", "PipelinePlan", "ParentedTracker", "load_config_json",
    "pipeline_plan", "pipeline_key", "stage_config_json", "build_digest", "open_run",
    "train_full", "score", "collect", "select", "train_coreset",
    "evaluate_cross_arch", "report", "close_run", "reprune", "emit", "read_pointer", "read_rows",
    "find_parent_run", "effective_run_id", "missing_work",
]

POINTER_FORMAT = "tdds-pointer/1"
TAG_PIPELINE_KEY = "tdds.pipeline_key"   # digest of (config, dataset fingerprint): how a stage finds its parent run
ROWS_FORMAT = "tdds-rows/1"


@dataclass
class StepResult:
    """What a step hands back to its component: a pointer for the output artifact, result rows and
    scalar metrics for the Metrics artifact."""

    pointer: Optional[dict] = None
    rows: list[dict] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)
    text: str = ""


# ------------------------------------------------------------------------------------------ config
def load_config_json(config_json: str) -> Config:
    """Validate the pipeline's ``config_json`` parameter into a :class:`Config`."""
    try:
        data = json.loads(config_json)
    except (TypeError, json.JSONDecodeError) as e:
        raise ConfigError(f"config_json is not valid JSON ({e}); pass Config.to_json() of a config "
                          "(tdds compile/submit/run do).") from None
    if not isinstance(data, dict):
        raise ConfigError("config_json must hold a JSON object (the config's sections), not "
                          f"{type(data).__name__}")
    return parse_config(data, source="(pipeline parameter config_json)")


# ------------------------------------------------------------------------------------------ plan
@dataclass(frozen=True)
class PipelinePlan:
    """The loop items of the pipeline, computed from the config when the pipeline is built.

    ``scores``: one per distinct (method, params) setting, ``{"key", "label", "spec", "params"}``;
    ``rates``: one per distinct pruning rate, ``{"rate", "pairs"}`` (the pairs at that rate, as above);
    ``pairs``: one per (setting, rate), ``{"key", "score_key", "rate", "label"}``; ``evals``: one per
    (evaluated pair, architecture), ``{"key", "arch"}``. The pipeline loops over their JSON strings
    (``*_items``): KFP turns numbers in loop items into floats, and dict items inside an exit
    handler do not compile correctly in kfp 2.17.
    """

    scores: list[dict]
    pairs: list[dict]
    evals: list[dict]

    @property
    def rates(self) -> list[dict]:
        by_rate: dict[str, list[dict]] = {}
        for p in self.pairs:
            by_rate.setdefault(p["rate"], []).append(p)
        return [{"rate": r, "pairs": ps} for r, ps in sorted(by_rate.items(), key=lambda kv: float(kv[0]))]

    @staticmethod
    def _items(xs: list[dict]) -> list[str]:
        return [json.dumps(x, sort_keys=True) for x in xs]

    @property
    def score_items(self) -> list[str]:
        return self._items(self.scores)

    @property
    def rate_items(self) -> list[str]:
        return self._items(self.rates)

    @property
    def pair_items(self) -> list[str]:
        return self._items(self.pairs)

    @property
    def eval_items(self) -> list[str]:
        return self._items(self.evals)

    def digest(self) -> str:
        return config_digest({"scores": self.scores, "pairs": self.pairs, "evals": self.evals}, 16)


def pipeline_plan(cfg: Config) -> PipelinePlan:
    """The loop items of :meth:`tdds_core.plan.Plan.from_config` as the pipeline's JSON items."""
    from .plan import Plan

    plan = Plan.from_config(cfg)
    scores = [{"key": it.key, "label": it.label, "spec": it.method.model_dump(mode="json"), "params": it.params}
              for it in plan.scores]
    pairs = [{"key": p.key, "score_key": p.score.key, "rate": repr(p.rate), "label": p.score.label} for p in plan.pairs]
    evals = [{"key": e.pair.key, "arch": e.arch} for e in plan.evals]
    return PipelinePlan(scores, pairs, evals)


def pipeline_key(cfg: Config, fingerprint: str) -> str:
    """How a stage finds the open parent run: the experiment (name, output root) and the dataset
    version. Computable from every stage's config projection (:func:`stage_config_json`)."""
    return config_digest({"name": cfg.name, "output": cfg.output, "fingerprint": fingerprint}, 20)


def stage_config_json(cfg: Config, stage: str) -> str:
    """``cfg`` as the JSON a cached stage task gets (:func:`tdds_core.plan.stage_config`)."""
    from .plan import stage_config

    try:
        return stage_config(cfg, stage).to_json()
    except ConfigError as e:
        raise PipelineError(str(e)) from None


def effective_run_id(run_id: str, job_id: str) -> str:
    """The pipeline run's id: the ``run_id`` parameter when given (``tdds run`` sets one), else
    KFP's job id (``dsl.PIPELINE_JOB_ID_PLACEHOLDER``)."""
    rid = (run_id or "").strip() or (job_id or "").strip()
    if not rid or rid.startswith("{{"):
        raise PipelineError("no pipeline run id: pass run_id, or run on a KFP backend that fills "
                            "dsl.PIPELINE_JOB_ID_PLACEHOLDER")
    return rid


# ------------------------------------------------------------------------------------------ MLflow glue
class ParentedTracker:
    """A tracker whose top-level runs are children of ``parent_id`` (``start_run(parent=...)``);
    everything else is the wrapped tracker's."""

    def __init__(self, tracker: Any, parent_id: Optional[str]):
        self._tracker = tracker
        self.parent_id = parent_id

    def start_run(self, name: str, *, parent: Any = None, tags: Optional[Mapping[str, Any]] = None,
                  key: Optional[str] = None):
        if parent is None and self._tracker.active_run is None:
            parent = self.parent_id
        return self._tracker.start_run(name, parent=parent, tags=tags, key=key)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._tracker, name)


def find_parent_run(tracker: Any, *, pipeline_key_value: Optional[str] = None,
                    run_id: Optional[str] = None, status: str = "RUNNING") -> Optional[Any]:
    """The newest pipeline parent run (a :class:`~tdds_core.tracking.RunRecord`) with the given
    pipeline key or pipeline run id and ``status``, or None."""
    from .tracking import STAGE_PIPELINE, TAG_PIPELINE_RUN, TAG_STAGE

    if not tracker.enabled:
        return None
    tags = {TAG_STAGE: STAGE_PIPELINE}
    if pipeline_key_value:
        tags[TAG_PIPELINE_KEY] = pipeline_key_value
    if run_id:
        if "'" in run_id:
            raise PipelineError(f"pipeline run id {run_id!r} contains a quote")
        tags[TAG_PIPELINE_RUN] = run_id
    runs = tracker.find_runs(tags=tags, status=status, max_results=1)
    return runs[0] if runs else None


def _stage_tracker(cfg: Config, fingerprint: str) -> Any:
    """The tracker a stage logs with: children of the pipeline run that is open for this config and
    dataset version (none found: top-level runs)."""
    from .tracking import TAG_PIPELINE_RUN, make_tracker

    tracker = make_tracker(cfg, cfg.output)
    parent = find_parent_run(tracker, pipeline_key_value=pipeline_key(cfg, fingerprint))
    if parent is None:
        return tracker
    rid = parent.tags.get(TAG_PIPELINE_RUN)
    if rid:
        tracker.default_tags[TAG_PIPELINE_RUN] = rid
    return ParentedTracker(tracker, parent.id)


def _attached_tracker(cfg: Config, parent_run_id: str) -> Any:
    from .tracking import TAG_PIPELINE_RUN, make_tracker

    tracker = make_tracker(cfg, cfg.output)
    if parent_run_id and tracker.enabled:
        rid = tracker.get_run(parent_run_id).tags.get(TAG_PIPELINE_RUN)
        if rid:
            tracker.default_tags[TAG_PIPELINE_RUN] = rid
    return ParentedTracker(tracker, parent_run_id or None)


# ------------------------------------------------------------------------------------------ pointers
def _rel_key(output: str, uri: str) -> str:
    root = output.rstrip("/")
    if uri.startswith(root + "/"):
        return uri[len(root) + 1:]
    try:
        return str(Path(uri).resolve().relative_to(Path(output).resolve()))
    except ValueError:
        return uri


def _pointer(cfg: Config, kind: str, uri: str, fingerprint: str, **extra: Any) -> dict:
    return {"format": POINTER_FORMAT, "kind": kind, "uri": uri, "key": _rel_key(cfg.output, uri),
            "fingerprint": fingerprint, **extra}


def read_pointer(source: str | os.PathLike | Mapping, kind: Optional[str] = None) -> dict:
    """A pointer from an artifact file (path), a JSON string or a dict; checks format and kind."""
    if isinstance(source, Mapping):
        p = dict(source)
    else:
        s = str(source)
        if s.lstrip().startswith("{"):
            p = json.loads(s)
        else:
            path = Path(s)
            if not path.is_file():
                raise ArtifactError(f"pipeline artifact {path} is missing; the upstream task did not write it.")
            p = json.loads(path.read_text())
    if p.get("format") != POINTER_FORMAT or "uri" not in p:
        raise ArtifactError(f"not a tdds pointer ({str(p)[:120]}); the input must come from a tdds component.")
    if kind and p.get("kind") != kind:
        raise ArtifactError(f"expected a {kind!r} pointer, got {p.get('kind')!r} ({p['uri']}); check the pipeline wiring.")
    return p


def missing_work(pointer: Mapping, output: str, store: Any, tracker: Any) -> list[str]:
    """What a pointer (a cached task's output) names that is gone: artifacts not complete in
    ``store`` and, for tracked stages, runs with no finished run in ``tracker``. A cache entry whose
    pointer names missing work must not be trusted."""
    from . import plan as P
    from .tracking import STAGE_CORESET, STAGE_EVALUATE, STAGE_SCORE, STAGE_TRAIN_FULL

    kind = pointer.get("kind")
    if kind in ("score-set", "selections"):
        return [m for item in pointer.get("items", {}).values() for m in missing_work(item, output, store, tracker)]
    stage = {"train": STAGE_TRAIN_FULL, "scores": STAGE_SCORE, "selection": None,
             "coreset": STAGE_EVALUATE if "arch" in pointer else STAGE_CORESET}.get(kind)
    if kind not in ("train", "scores", "selection", "coreset"):
        return []
    missing = []
    for uri in pointer.get("uris") or [pointer["uri"]]:
        key = _rel_key(output, uri)
        if not store.is_complete(key):
            missing.append(uri)
        elif stage and tracker.enabled and tracker.find_finished_run(P.run_key_of(stage, output, key)) is None:
            missing.append(f"{stage} run of {uri}")
    return missing


def read_rows(path: str | os.PathLike) -> list[dict]:
    """The result rows a Metrics artifact file holds (see :func:`emit`)."""
    p = Path(path)
    if not p.is_file():
        raise ArtifactError(f"metrics artifact {p} is missing; the upstream task did not write it.")
    data = json.loads(p.read_text())
    if data.get("format") != ROWS_FORMAT:
        raise ArtifactError(f"{p} does not hold tdds result rows; the input must come from a tdds component.")
    return list(data["rows"])


def _clean(v: Any) -> Any:
    if isinstance(v, float) and (math.isnan(v) or math.isinf(v)):
        return None
    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    return v


def emit(result: StepResult, *, artifact: Any = None, metrics: Any = None) -> None:
    """Write a step's result into KFP output artifacts (duck-typed: ``.path``, ``.metadata``,
    ``.log_metric``): the pointer as JSON into ``artifact.path`` and its metadata; the rows as JSON
    into ``metrics.path`` and every scalar via ``metrics.log_metric``."""
    from .io import atomic_write_json

    if artifact is not None and result.pointer is not None:
        Path(artifact.path).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(Path(artifact.path), result.pointer)
        artifact.metadata.update(_clean(result.pointer))
    if metrics is not None:
        Path(metrics.path).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(Path(metrics.path), {"format": ROWS_FORMAT, "rows": _clean(result.rows)})
        for k, v in result.metrics.items():
            if v is not None and not (isinstance(v, float) and math.isnan(v)):
                metrics.log_metric(k, float(v))


# ------------------------------------------------------------------------------------------ steps
def _splits(cfg: Config, fingerprint: Optional[str] = None):
    from .data import create_dataset

    splits = create_dataset(cfg.data)
    if fingerprint and splits.fingerprint != fingerprint:
        raise DataError(
            f"dataset {cfg.data.name!r} changed while the pipeline ran (fingerprint {fingerprint[:12]} when it "
            f"started, {splits.fingerprint[:12]} now); rerun the pipeline on the new version."
        )
    return splits


def build_digest(cfg: Config) -> str:
    """Digest of what a pipeline built from ``cfg`` bakes in: the plan and every stage's config."""
    from .plan import STAGE_READS

    return config_digest({"plan": pipeline_plan(cfg).digest(),
                          "stages": {s: stage_config_json(cfg, s) for s in STAGE_READS}}, 16)


def open_run(config_json: str, *, run_id: str = "", job_id: str = "", build: str = "") -> tuple[str, str]:
    """Check that the config is the one the pipeline was built from (``build`` =
    :func:`build_digest`), fingerprint the dataset and open the parent MLflow run. Returns
    ``(parent_run_id or "", fingerprint)``."""
    from .tracking import (STAGE_PIPELINE, TAG_CONFIG_NAME, TAG_FINGERPRINT, TAG_STAGE, make_tracker,
                           run_name)
    from .reprune import TAG_DATASET, dataset_identity

    cfg = load_config_json(config_json)
    if build and build_digest(cfg) != build:
        raise PipelineError("config_json differs from the config the pipeline was built from (its loops and stage "
                            "settings are fixed when it is built); compile the pipeline again from this config "
                            "(tdds compile --config ...) instead of changing the parameter.")
    splits = _splits(cfg)
    fp = splits.fingerprint
    rid = effective_run_id(run_id, job_id)
    tracker = make_tracker(cfg, cfg.output, pipeline_run_id=rid)
    if not tracker.enabled:
        return "", fp
    existing = find_parent_run(tracker, run_id=rid)   # a retried open-run: keep the same parent
    if existing is not None:
        return existing.id, fp
    tags = {TAG_STAGE: STAGE_PIPELINE, TAG_PIPELINE_KEY: pipeline_key(cfg, fp), TAG_FINGERPRINT: fp,
            TAG_DATASET: dataset_identity(cfg.data), TAG_CONFIG_NAME: cfg.name}
    parent = tracker.create_run(run_name(STAGE_PIPELINE, method=cfg.name), tags=tags)
    with tracker.attach(parent):
        tracker.log_params(cfg.flat())
        tracker.log_dict(cfg.model_dump(mode="json"), "config.json")
    return parent, fp


def train_full(config_json: str, *, fingerprint: str) -> StepResult:
    """Full-data training with dynamics capture (child run ``train-full/...``)."""
    from . import grid

    cfg = load_config_json(config_json)
    splits = _splits(cfg, fingerprint)
    out = grid.tracked_train_full(cfg, _stage_tracker(cfg, fingerprint), splits)
    r = out.result
    row = {"method": "full", "rate": None, "seed": cfg.train.seed, "arch": cfg.model.arch, "final_acc": r.final_acc,
           "best_acc": r.best_acc, "num_train": r.num_train, "iterations": r.iterations, "wall_s": r.wall_s,
           "stage": "train-full", "uri": out.uri}
    return StepResult(_pointer(cfg, "train", out.uri, fingerprint, arch=cfg.model.arch, seed=cfg.train.seed),
                      [row], {"final_acc": r.final_acc, "best_acc": r.best_acc, "num_train": r.num_train})


def score(config_json: str, *, method_json: str, train_pointer: Mapping) -> StepResult:
    """Score every sample with one method setting (a ``scores`` item of :func:`pipeline_plan`)."""
    from . import grid

    cfg = load_config_json(config_json)
    tp = read_pointer(train_pointer, "train")
    item = json.loads(method_json)
    m = MethodSpec.model_validate(item["spec"])
    splits = _splits(cfg, tp["fingerprint"])
    out = grid.tracked_score(cfg, _stage_tracker(cfg, tp["fingerprint"]), splits, tp["uri"],
                             ScoreItem(item["key"], item["label"], m, item["params"]))
    return StepResult(_pointer(cfg, "scores", out.uri, tp["fingerprint"], score_key=item["key"], label=item["label"],
                               method=m.name, params=item["params"], train_uri=tp["uri"]))


def collect(pointers: Sequence[Mapping | str], kind: str) -> StepResult:
    """Merge the pointers a loop produced into one (a fan-in): ``kind="score-set"`` merges ``scores``
    pointers by score key, ``kind="selections"`` merges the items of per-rate ``selections``
    pointers by pair key. All must share one dataset fingerprint; a key seen twice is an error."""
    member = {"score-set": "scores", "selections": "selections"}
    if kind not in member:
        raise PipelineError(f"collect: unknown kind {kind!r}; one of {', '.join(member)}")
    ps = [read_pointer(x, member[kind]) for x in pointers]
    if not ps:
        raise ArtifactError(f"collect: no {member[kind]} outputs to merge; the loop before this task ran no iteration.")
    fingerprints = {p["fingerprint"] for p in ps}
    if len(fingerprints) != 1:
        raise ArtifactError(f"collect: the {member[kind]} outputs come from {len(fingerprints)} dataset versions; "
                            "rerun the pipeline on one version.")
    items: dict[str, dict] = {}
    for p in ps:
        for key, item in ({p["score_key"]: p} if kind == "score-set" else p.get("items", {})).items():
            if key in items and items[key] != item:
                raise ArtifactError(f"collect: two different {member[kind]} outputs for {key!r}; the pipeline was "
                                    "built from another config: compile it again.")
            items[key] = item
    first = ps[0]
    # the merged pointer names the folder its items live in (scores/) or the nominal selections/
    up = (lambda v: v.rstrip("/").rsplit("/", 1)[0]) if kind == "score-set" else (lambda v: v)
    pointer = {"format": POINTER_FORMAT, "kind": kind, "uri": up(first["uri"]), "key": up(first["key"]),
               "fingerprint": first["fingerprint"], "items": dict(sorted(items.items()))}
    if "train_uri" in first:
        pointer["train_uri"] = first["train_uri"]
    return StepResult(pointer, metrics={"items": float(len(items))})


def select(config_json: str, *, train_pointer: Mapping, scores: Mapping | str | Sequence[Mapping | str],
           rate_json: Optional[str] = None) -> StepResult:
    """Materialize the selections of one pruning rate (``rate_json``: a ``rates`` item of the plan,
    which names its pairs, so the config needs only its ``selection`` options; None: every pair of
    the config's plan) from the score pointers (a ``score-set`` pointer or a list of ``scores``
    pointers); the result points to them (``{"kind": "selections", "items": {pair key: selection
    pointer}}``)."""
    from . import stages
    from .io import read_manifest

    cfg = load_config_json(config_json)
    tp = read_pointer(train_pointer, "train")
    if isinstance(scores, (str, os.PathLike, Mapping)):
        scores = list(read_pointer(scores, "score-set")["items"].values())
    by_key = {p["score_key"]: p for p in (read_pointer(x, "scores") for x in scores)}
    pairs = pipeline_plan(cfg).pairs if rate_json is None else _pair(rate_json, field="pairs")["pairs"]
    if not all(isinstance(p, dict) and {"key", "score_key", "rate"} <= p.keys() for p in pairs):
        raise PipelineError(f"rate item {rate_json!r} does not list the pipeline plan's pairs; compile the pipeline again.")
    items, metrics = {}, {}
    for pair in pairs:
        sp = by_key.get(pair["score_key"])
        if sp is None:
            raise ArtifactError(f"no scores for {pair['label']!r} among the collected score outputs; the pipeline "
                                "was built from another config: compile it again.")
        rate = float(pair["rate"])
        out = stages.select(cfg, tp["uri"], sp["uri"], rate, label=sp["label"])
        n = int(read_manifest(out.local).get("num_selected", 0))
        items[pair["key"]] = _pointer(cfg, "selection", out.uri, tp["fingerprint"], pair_key=pair["key"],
                                      label=sp["label"], method=sp["method"], rate=rate, score_uri=sp["uri"],
                                      train_uri=tp["uri"], num_selected=n)
        metrics[f"num_selected.{_slug(pair['key'])}"] = float(n)
    return StepResult(_pointer(cfg, "selections", _uri_join(cfg.output, "selections"), tp["fingerprint"],
                               train_uri=tp["uri"], items=items), metrics=metrics)


def _pick(selections: Mapping | str, pair: str) -> dict:
    sp = read_pointer(selections, "selections")
    item = sp.get("items", {}).get(pair)
    if item is None:
        raise ArtifactError(f"no selection for pair {pair!r} in {sp['uri']}; the pipeline was built from another "
                            "config: compile it again.")
    return read_pointer(item, "selection")


def _pair(item_json: str, field: str = "key") -> dict:
    """A loop item (JSON) of the plan; ``field`` must be in it."""
    try:
        item = json.loads(item_json)
        item[field]
    except (TypeError, ValueError, KeyError):
        raise PipelineError(f"loop item {item_json!r} is not an item of the pipeline plan; compile the pipeline "
                            "again.") from None
    return item


def _pair_item(sp: Mapping) -> PairItem:
    """The plan pair a selection pointer stands for (label, method and rate are all a coreset run needs)."""
    score = ScoreItem(sp["pair_key"].rsplit("@", 1)[0], sp["label"], MethodSpec(name=sp["method"]), {})
    return PairItem(sp["pair_key"], score, float(sp["rate"]))


def _mean(xs: Sequence[float]) -> float:
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else float("nan")


def train_coreset(config_json: str, *, selections: Mapping | str, pair_json: str) -> StepResult:
    """Train on the selection of one pair (a ``pairs`` item of the plan), one child run per seed of
    ``coreset.seeds``."""
    from . import grid, stages

    cfg = load_config_json(config_json)
    sp = _pick(selections, _pair(pair_json)["key"])
    splits = _splits(cfg, sp["fingerprint"])
    tracker = _stage_tracker(cfg, sp["fingerprint"])
    sel = stages.StageOutput(sp["uri"], stages.fetch(sp["uri"]))
    pair = _pair_item(sp)
    rows = [{**grid.tracked_coreset(cfg, tracker, splits, sel, pair, seed=seed), "stage": "coreset"}
            for seed in cfg.coreset.seeds]
    metrics = {"final_acc": _mean([r["final_acc"] for r in rows]), "best_acc": _mean([r["best_acc"] for r in rows]),
               "rate": float(sp["rate"]), "num_train": float(rows[0]["num_train"])}
    if len(rows) > 1:
        metrics.update({f"final_acc_s{r['seed']}": r["final_acc"] for r in rows})
    return StepResult(_pointer(cfg, "coreset", rows[0]["uri"], sp["fingerprint"], uris=[r["uri"] for r in rows],
                               label=sp["label"], rate=float(sp["rate"]), selection_uri=sp["uri"]), rows, metrics)


def evaluate_cross_arch(config_json: str, *, selections: Mapping | str, item_json: str) -> StepResult:
    """Train the architecture of an ``evals`` item of the plan on its pair's selection (child run
    ``evaluate/...``)."""
    from . import grid, stages
    from .tracking import STAGE_EVALUATE

    cfg = load_config_json(config_json)
    item = _pair(item_json)
    arch = item["arch"]
    sp = _pick(selections, item["key"])
    splits = _splits(cfg, sp["fingerprint"])
    sel = stages.StageOutput(sp["uri"], stages.fetch(sp["uri"]))
    row = grid.tracked_coreset(cfg, _stage_tracker(cfg, sp["fingerprint"]), splits, sel, _pair_item(sp),
                               seed=cfg.coreset.seeds[0], arch=arch, stage=STAGE_EVALUATE)
    row = {**row, "stage": "evaluate"}
    return StepResult(_pointer(cfg, "coreset", row["uri"], sp["fingerprint"], label=sp["label"], rate=float(sp["rate"]),
                               arch=arch, selection_uri=sp["uri"]), [row],
                      {"final_acc": row["final_acc"], "best_acc": row["best_acc"], "rate": float(sp["rate"])})


def report(config_json: str, *, parent_run_id: str, rows: Sequence[dict], out_dir: str | os.PathLike) -> StepResult:
    """The methods x rates table (CSV, Markdown) and plot into ``out_dir``, the store's ``report/``
    and a ``report/<name>`` child run; then the parent run ends FINISHED."""
    from . import grid
    from .storage import open_store
    from .tracking import STAGE_REPORT, TAG_STAGE, run_name

    cfg = load_config_json(config_json)
    tracker = _attached_tracker(cfg, parent_run_id)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = [dict(r) for r in rows]
    with tracker.start_run(run_name(STAGE_REPORT, method=cfg.name), tags={TAG_STAGE: STAGE_REPORT}):
        md = grid.write_report(cfg, rows, tracker, out)
        tracker.log_dict(_clean(rows), "report/rows.json")
    from .io import atomic_write_json

    atomic_write_json(out / "rows.json", _clean(rows))
    (out / "manifest.json").unlink(missing_ok=True)
    open_store(cfg.output).put_dir(out, "report", overwrite=True)
    if parent_run_id and tracker.enabled:
        tracker.terminate(parent_run_id, "FINISHED")
    best = [r for r in rows if r.get("rate") is not None and r.get("final_acc") is not None]
    metrics = {"rows": float(len(rows))}
    if best:
        metrics["best_coreset_final_acc"] = max(r["final_acc"] for r in best)
    return StepResult(_pointer(cfg, "report", _uri_join(cfg.output, "report"), rows[0].get("fingerprint", "") if rows else ""),
                      rows, metrics, text=md)


def _uri_join(root: str, key: str) -> str:
    from .stages import join_uri

    return join_uri(root, key)


def close_run(config_json: str, *, run_id: str = "", job_id: str = "") -> str:
    """Exit handler: end the pipeline's parent run FAILED if it is still RUNNING (the report step
    ends it FINISHED on success). Returns the parent's final status ("" without tracking)."""
    from .tracking import make_tracker

    cfg = load_config_json(config_json)
    rid = effective_run_id(run_id, job_id)
    tracker = make_tracker(cfg, cfg.output)
    if not tracker.enabled:
        return ""
    parent = find_parent_run(tracker, run_id=rid)
    if parent is None:
        return "FINISHED"
    tracker.terminate(parent.id, "FAILED")
    return "FAILED"


def reprune(config_json: str, *, parent_run_id: str, selections: Mapping | str) -> StepResult:
    """For every selection of this dataset version: compare with the previous version's selection
    and record kept / dropped / added ids and the Jaccard overlap (:mod:`tdds_core.reprune`)."""
    from .reprune import record_reprune

    cfg = load_config_json(config_json)
    tracker = _attached_tracker(cfg, parent_run_id)
    rows, metrics = [], {}
    for p in (read_pointer(x, "selection") for x in read_pointer(selections, "selections")["items"].values()):
        row = record_reprune(cfg, tracker, selection_uri=p["uri"], train_uri=p["train_uri"], label=p["label"],
                             method=p["method"], rate=float(p["rate"]), fingerprint=p["fingerprint"])
        rows.append(row)
        tag = _slug(p["pair_key"])
        for k in ("kept", "dropped", "added", "jaccard"):
            metrics[f"{tag}.{k}"] = row[k]
    return StepResult(None, rows, metrics)

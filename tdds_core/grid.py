"""The methods x rates x seeds experiment (the paper's Table 1 for any dataset), with tracking.

``run_grid(cfg)``: full-data training once; every method scored (a method entry may carry
parameters and per-rate overrides, each distinct setting is its own row); a selection per
(method, rate); a coreset run per (method, rate, seed); cross-architecture runs for the rates and
methods ``cfg.evaluate`` names; then the table (CSV, Markdown) and the accuracy-vs-rate plot.
Every piece is keyed by content and config, so an interrupted grid continues where it stopped,
and tracking runs are deduplicated by the same keys.

The ``tracked_*`` functions wrap one stage in its MLflow child run; the KFP components call them too.
"""
from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import plan as P
from . import stages
from .config import Config
from .data import Splits, create_dataset
from .engine import coreset_batch_size
from .io import atomic_write_text
from .storage import is_remote
from .tracking import (METRIC_BEST_ACC, METRIC_FINAL_ACC, METRIC_ITERATIONS, METRIC_NOISY_KEPT, METRIC_NUM_TRAIN,
                       METRIC_WALL_S, STAGE_CORESET, STAGE_EVALUATE, STAGE_PIPELINE, STAGE_SCORE,
                       STAGE_TRAIN_FULL, TAG_ARCH, TAG_ARTIFACT_URI, TAG_FINGERPRINT, TAG_METHOD,
                       TAG_METHOD_NAME, TAG_RATE, TAG_SEED, TAG_STAGE, NullTracker, Tracker, format_rate,
                       log_score_run, log_selection, make_tracker, run_name)

log = logging.getLogger(__name__)


def _epoch_logger(tracker: Tracker):
    def on_epoch(rec: dict) -> None:
        keys = ("train_loss", "train_acc", "test_loss", "test_acc", "lr", "img_per_s")
        tracker.log_metrics({k: float(rec[k]) for k in keys if k in rec}, step=int(rec["epoch"]))
    return on_epoch


def _result_metrics(res) -> dict[str, float]:
    m = {METRIC_FINAL_ACC: res.final_acc, METRIC_BEST_ACC: res.best_acc, METRIC_NUM_TRAIN: res.num_train,
         METRIC_ITERATIONS: res.iterations, METRIC_WALL_S: res.wall_s, "img_per_s": res.img_per_s,
         "epochs_run": res.epochs}
    m.update({f"class_acc_{i}": v for i, v in enumerate(res.per_class_acc)})
    return m


def result_row(method: str, rate: float | None, seed: int, arch: str, res, uri: str | None = None) -> dict:
    """One row of the results table from a training result."""
    row = {"method": method, "rate": rate, "seed": seed, "arch": arch, "final_acc": res.final_acc,
           "best_acc": res.best_acc, "num_train": res.num_train, "iterations": res.iterations, "wall_s": res.wall_s}
    if uri is not None:
        row["uri"] = uri
    return row


def tracked_train_full(cfg: Config, tracker: Tracker, splits: Splits) -> stages.StageOutput:
    name = run_name(STAGE_TRAIN_FULL, arch=cfg.model.arch, seed=cfg.train.seed)
    key = P.run_key_of(STAGE_TRAIN_FULL, cfg.output, P.train_key(cfg, splits.fingerprint))
    tags = {TAG_STAGE: STAGE_TRAIN_FULL, TAG_METHOD: "full", TAG_ARCH: cfg.model.arch, TAG_SEED: cfg.train.seed,
            TAG_FINGERPRINT: splits.fingerprint}
    with tracker.start_run(name, key=key, tags=tags) as run:
        out = stages.train_full(cfg, splits=splits, on_epoch=None if run.reused else _epoch_logger(tracker))
        if not run.reused:
            tracker.log_params(P.identity(cfg, "train-full"))
            tracker.log_metrics(_result_metrics(out.result))
            tracker.set_tags({TAG_ARTIFACT_URI: out.uri})
            tracker.log_input_dataset(cfg.data.name, splits.fingerprint, source=str(cfg.data.root or cfg.data.name))
            if "noise" in splits.info:
                tracker.log_dict(splits.info["noise"], "noise.json")
    return out


def tracked_score(cfg: Config, tracker: Tracker, splits: Splits, train_uri: str, item: P.ScoreItem) -> stages.StageOutput:
    """Score one method setting of the plan inside its child run."""
    m, params, label = item.method, item.params, item.label
    name = run_name(STAGE_SCORE, method=label)
    key = P.run_key_of(STAGE_SCORE, cfg.output, P.score_key(train_uri, m.name, params))
    tags = {TAG_STAGE: STAGE_SCORE, TAG_METHOD: label, TAG_METHOD_NAME: m.name, TAG_FINGERPRINT: splits.fingerprint}
    with tracker.start_run(name, key=key, tags=tags) as run:
        out = stages.score(cfg, train_uri, m.model_copy(update={"label": label}), params, splits=splits)
        if not run.reused:
            tracker.log_params({"method": m.name, **{f"param.{k}": v for k, v in params.items()}})
            tracker.set_tags({TAG_ARTIFACT_URI: out.uri})
            scores, _ = stages.load_scores(out.local)
            log_score_run(tracker, scores, method=label, labels=splits.train.labels, images=splits.train.images,
                          class_names=splits.classes)
            tracker.log_artifact(out.local / "scores.npy", "scores")
    return out


def noisy_kept(splits: Splits, indices: np.ndarray) -> float | None:
    """Fraction of the noisy training samples that a coreset kept (None without injected noise)."""
    mask = splits.info.get("noisy_mask")
    if mask is None or not mask.any():
        return None
    return float(mask[np.asarray(indices, dtype=np.int64)].sum() / mask.sum())


def tracked_coreset(cfg: Config, tracker: Tracker, splits: Splits, selection: stages.StageOutput, pair: P.PairItem, *,
                    seed: int, arch: str | None = None, stage: str = STAGE_CORESET) -> dict:
    """Train on the selection of one plan pair inside a child run; returns the result row."""
    from .selection import load_selection

    arch = arch or cfg.model.arch
    label, rate = pair.score.label, pair.rate
    name = run_name(stage, method=label, rate=rate, arch=arch, seed=seed)
    key = P.run_key_of(stage, cfg.output, P.coreset_key(cfg, selection.uri, arch, seed))
    tags = {TAG_STAGE: stage, TAG_METHOD: label, TAG_METHOD_NAME: pair.score.method.name, TAG_RATE: format_rate(rate),
            TAG_ARCH: arch, TAG_SEED: seed, TAG_FINGERPRINT: splits.fingerprint}
    sel = load_selection(stages.fetch(selection.uri), expected_fingerprint=splits.fingerprint)
    kept_noisy = noisy_kept(splits, sel.indices)
    with tracker.start_run(name, key=key, tags=tags) as run:
        out = stages.train_coreset(cfg, selection.uri, arch=arch, seed=seed, splits=splits,
                                   on_epoch=None if run.reused else _epoch_logger(tracker))
        if not run.reused:
            tracker.log_params({"method": label, "rate": rate, "arch": arch, "seed": seed,
                                "strategy": cfg.coreset.strategy, "weighting": cfg.coreset.weighting,
                                "batch_size": coreset_batch_size(cfg, rate), "selection_uri": selection.uri})
            metrics = _result_metrics(out.result)
            if kept_noisy is not None:
                metrics[METRIC_NOISY_KEPT] = kept_noisy
            tracker.log_metrics(metrics)
            tracker.set_tags({TAG_ARTIFACT_URI: out.uri})
            log_selection(tracker, stages.fetch(selection.uri), splits.fingerprint, dataset_name=cfg.data.name,
                          selection_uri=selection.uri)
    row = result_row(label, rate, seed, arch, out.result, out.uri)
    if kept_noisy is not None:
        row["noisy_kept"] = kept_noisy
    return row


@dataclass
class GridResult:
    rows: list[dict]
    report_dir: Path | None
    table_md: str
    run_id: str | None = None
    outputs: dict[str, Any] = field(default_factory=dict)


def write_report(cfg: Config, rows: list[dict], tracker: Tracker, out_dir: Path) -> str:
    """Table (CSV, Markdown) and plot into ``out_dir`` (manifest last) and onto the active (parent) run."""
    from .io import write_manifest
    from .report import build_table, plot_accuracy_vs_rate, to_csv, to_markdown

    out_dir.mkdir(parents=True, exist_ok=True)
    table = build_table(rows)
    md = to_markdown(table)
    atomic_write_text(out_dir / "table.csv", to_csv(table))
    atomic_write_text(out_dir / "table.md", md)
    plot_accuracy_vs_rate(rows, out_dir / "accuracy_vs_rate.png", title=f"{cfg.name}: {cfg.data.name}")
    write_manifest(out_dir, ["table.csv", "table.md", "accuracy_vs_rate.png"], kind="report", name=cfg.name)
    for name in ("table.csv", "table.md", "accuracy_vs_rate.png"):
        tracker.log_artifact(out_dir / name, "report")
    return md


def publish_report(cfg: Config, report_dir: Path) -> None:
    """Upload the report to ``<output>/report`` when the output is on S3 and the table changed."""
    if not is_remote(cfg.output):
        return
    import json

    from .io import read_manifest
    from .storage import open_store

    store = open_store(cfg.output)
    local = read_manifest(report_dir)
    if store.is_complete("report"):
        remote = json.loads(store.get_bytes("report/manifest.json"))
        if {k: v["sha256"] for k, v in remote.get("files", {}).items()} == {k: v["sha256"] for k, v in local["files"].items()}:
            return
    store.put_dir(report_dir, "report", overwrite=True)


def check_grid(cfg: Config) -> None:
    """Refuse, before any work, a grid whose methods, method options or evaluation architectures are
    unknown (the error lists the known ones), so a typo does not surface after full-data training."""
    from .engine import check_arch
    from .scoring import resolve_params

    for item in P.Plan.from_config(cfg).scores:
        resolve_params(item.method.name, **item.params)
    if cfg.evaluate.rates:
        for arch in cfg.evaluate.archs:
            check_arch(arch, "evaluate.archs")


def run_grid(cfg: Config, *, tracker: Tracker | None = None, pipeline_run_id: str | None = None) -> GridResult:
    """Run the whole experiment of ``cfg`` (see module docstring); returns the rows and the table.

    The parent run is keyed by the config's identity: rerunning a finished grid creates no new runs."""
    check_grid(cfg)
    plan = P.Plan.from_config(cfg)
    splits = create_dataset(cfg.data)
    # the tracker first: an unreachable tracking server fails before the output root is claimed
    tracker = tracker or make_tracker(cfg, cfg.output, pipeline_run_id=pipeline_run_id or uuid.uuid4().hex[:12])
    stages.claim_output(cfg)
    name = run_name(STAGE_PIPELINE, method=cfg.name)
    key = P.run_key_of(STAGE_PIPELINE, cfg.output, P.experiment_key(cfg, splits.fingerprint))
    with tracker.start_run(name, key=key, tags={TAG_STAGE: STAGE_PIPELINE, TAG_FINGERPRINT: splits.fingerprint}) as parent:
        if not parent.reused:
            tracker.log_params(cfg.flat())
        full = tracked_train_full(cfg, tracker, splits)
        rows = [result_row("full", None, cfg.train.seed, cfg.model.arch, full.result)]
        scored = {it.key: tracked_score(cfg, tracker, splits, full.uri, it) for it in plan.scores}
        chosen = {p.key: stages.select(cfg, full.uri, scored[p.score.key].uri, p.rate, label=p.score.label)
                  for p in plan.pairs}
        rows += [tracked_coreset(cfg, tracker, splits, chosen[c.pair.key], c.pair, seed=c.seed) for c in plan.coresets]
        rows += [tracked_coreset(cfg, tracker, splits, chosen[e.pair.key], e.pair, seed=e.seed, arch=e.arch,
                                 stage=STAGE_EVALUATE) for e in plan.evals]
        report_dir = _report_dir(cfg)
        md = write_report(cfg, rows, tracker, report_dir)
        publish_report(cfg, report_dir)
        run_id = parent.id if not isinstance(tracker, NullTracker) else None
    return GridResult(rows, report_dir, md, run_id)


def _report_dir(cfg: Config) -> Path:
    if is_remote(cfg.output):
        from .storage import cache_root

        return cache_root() / "reports" / cfg.name
    return Path(cfg.output) / "report"


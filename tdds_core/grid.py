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

from . import stages
from .config import Config, MethodSpec
from .data import Splits, create_dataset
from .engine import coreset_batch_size
from .io import atomic_write_text
from .tracking import (METRIC_BEST_ACC, METRIC_FINAL_ACC, METRIC_ITERATIONS, METRIC_NOISY_KEPT, METRIC_NUM_TRAIN,
                       METRIC_WALL_S, STAGE_CORESET, STAGE_EVALUATE, STAGE_PIPELINE, STAGE_SCORE,
                       STAGE_TRAIN_FULL, TAG_ARCH, TAG_ARTIFACT_URI, TAG_FINGERPRINT, TAG_METHOD,
                       TAG_METHOD_NAME, TAG_RATE, TAG_SEED, TAG_STAGE, NullTracker, Tracker, format_rate,
                       log_score_run, log_selection, make_tracker, run_key, run_name)

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


def tracked_train_full(cfg: Config, tracker: Tracker, splits: Splits) -> stages.StageOutput:
    name = run_name(STAGE_TRAIN_FULL, arch=cfg.model.arch, seed=cfg.train.seed)
    key = run_key(name, splits.fingerprint, {"data": cfg.data.model_dump(mode="json"), "model": cfg.model.model_dump(mode="json"),
                                             "train": cfg.train.model_dump(mode="json"), "dynamics": cfg.dynamics.model_dump(mode="json")})
    tags = {TAG_STAGE: STAGE_TRAIN_FULL, TAG_METHOD: "full", TAG_ARCH: cfg.model.arch, TAG_SEED: cfg.train.seed,
            TAG_FINGERPRINT: splits.fingerprint}
    with tracker.start_run(name, key=key, tags=tags) as run:
        out = stages.train_full(cfg, splits=splits, on_epoch=None if run.reused else _epoch_logger(tracker))
        if not run.reused:
            tracker.log_params({k: v for k, v in cfg.flat().items() if k.split(".", 1)[0] in stages.IDENTITY_SECTIONS})
            tracker.log_metrics(_result_metrics(out.result))
            tracker.set_tags({TAG_ARTIFACT_URI: out.uri})
            tracker.log_input_dataset(cfg.data.name, splits.fingerprint, source=str(cfg.data.root or cfg.data.name))
            if "noise" in splits.info:
                tracker.log_dict(splits.info["noise"], "noise.json")
    return out


def tracked_score(cfg: Config, tracker: Tracker, splits: Splits, train_uri: str, method: MethodSpec,
                  params: dict) -> stages.StageOutput:
    label = method_label(method, params)
    name = run_name(STAGE_SCORE, method=label)
    key = run_key(name, splits.fingerprint, {"train": train_uri, "method": method.name, "params": params})
    tags = {TAG_STAGE: STAGE_SCORE, TAG_METHOD: label, TAG_METHOD_NAME: method.name, TAG_FINGERPRINT: splits.fingerprint}
    with tracker.start_run(name, key=key, tags=tags) as run:
        out = stages.score(cfg, train_uri, method.model_copy(update={"label": label}), params, splits=splits)
        if not run.reused:
            tracker.log_params({"method": method.name, **{f"param.{k}": v for k, v in params.items()}})
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


def tracked_coreset(cfg: Config, tracker: Tracker, splits: Splits, selection: stages.StageOutput, *, label: str,
                    method_name: str, rate: float, seed: int, arch: str | None = None,
                    stage: str = STAGE_CORESET) -> dict:
    """Train on a selection inside a child run; returns the result row."""
    from .selection import load_selection

    arch = arch or cfg.model.arch
    name = run_name(stage, method=label, rate=rate, arch=arch, seed=seed)
    key = run_key(name, splits.fingerprint, {"selection": selection.uri, "coreset": cfg.coreset.model_dump(mode="json"),
                                             "train": cfg.train.model_dump(mode="json"), "arch": arch, "seed": seed})
    tags = {TAG_STAGE: stage, TAG_METHOD: label, TAG_METHOD_NAME: method_name, TAG_RATE: format_rate(rate),
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
    r = out.result
    row = {"method": label, "rate": rate, "seed": seed, "arch": arch, "final_acc": r.final_acc, "best_acc": r.best_acc,
           "num_train": r.num_train, "iterations": r.iterations, "wall_s": r.wall_s, "uri": out.uri}
    if kept_noisy is not None:
        row["noisy_kept"] = kept_noisy
    return row


def method_label(method: MethodSpec, params: dict) -> str:
    if method.label:
        return method.label
    if params == method.params or method.per_rate:
        return method.display
    return MethodSpec(name=method.name, params=params).display


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
    if not stages.is_remote(cfg.output):
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

    for m in cfg.methods:
        for rate in (m.rates or cfg.selection.rates):
            resolve_params(m.name, **m.params_for(rate))
    if cfg.evaluate.rates:
        for arch in cfg.evaluate.archs:
            check_arch(arch, "evaluate.archs")


def run_grid(cfg: Config, *, tracker: Tracker | None = None, pipeline_run_id: str | None = None) -> GridResult:
    """Run the whole experiment of ``cfg`` (see module docstring); returns the rows and the table.

    The parent run is keyed by the config: rerunning a finished grid creates no new runs."""
    check_grid(cfg)
    splits = create_dataset(cfg.data)
    # the tracker first: an unreachable tracking server fails before the output root is claimed
    tracker = tracker or make_tracker(cfg, cfg.output, pipeline_run_id=pipeline_run_id or uuid.uuid4().hex[:12])
    stages.claim_output(cfg)
    rows: list[dict] = []
    name = run_name(STAGE_PIPELINE, method=cfg.name)
    key = run_key(name, splits.fingerprint, cfg.model_dump(mode="json", exclude={"tracking", "pipeline", "output"}))
    with tracker.start_run(name, key=key, tags={TAG_STAGE: STAGE_PIPELINE, TAG_FINGERPRINT: splits.fingerprint}) as parent:
        if not parent.reused:
            tracker.log_params(cfg.flat())
        full = tracked_train_full(cfg, tracker, splits)
        r = full.result
        rows.append({"method": "full", "rate": None, "seed": cfg.train.seed, "arch": cfg.model.arch,
                     "final_acc": r.final_acc, "best_acc": r.best_acc, "num_train": r.num_train,
                     "iterations": r.iterations, "wall_s": r.wall_s})
        for m in cfg.methods:
            for rate in (m.rates or cfg.selection.rates):
                params = m.params_for(rate)
                sc = tracked_score(cfg, tracker, splits, full.uri, m, params)
                sel = stages.select(cfg, full.uri, sc.uri, rate)
                label = method_label(m, params)
                for seed in cfg.coreset.seeds:
                    rows.append(tracked_coreset(cfg, tracker, splits, sel, label=label, method_name=m.name, rate=rate, seed=seed))
                if is_evaluated(cfg, m, label, rate):
                    for arch in cfg.evaluate.archs:
                        if arch == cfg.model.arch:
                            continue  # the coreset row above is this architecture's row
                        rows.append(tracked_coreset(cfg, tracker, splits, sel, label=label, method_name=m.name, rate=rate,
                                                    seed=cfg.coreset.seeds[0], arch=arch, stage=STAGE_EVALUATE))
        report_dir = _report_dir(cfg)
        md = write_report(cfg, rows, tracker, report_dir)
        publish_report(cfg, report_dir)
        run_id = parent.id if not isinstance(tracker, NullTracker) else None
    return GridResult(rows, report_dir, md, run_id)


def is_evaluated(cfg: Config, m: MethodSpec, label: str, rate: float) -> bool:
    return any(abs(rate - r) < 1e-9 for r in cfg.evaluate.rates) and (m.name in cfg.evaluate.methods or label in cfg.evaluate.methods)


def _report_dir(cfg: Config) -> Path:
    if stages.is_remote(cfg.output):
        from .storage import cache_root

        return cache_root() / "reports" / cfg.name
    return Path(cfg.output) / "report"

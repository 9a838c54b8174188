"""The local runner: the whole experiment of a config in this process (``tdds grid``), with tracking.

``run_grid(cfg)`` runs every registered stage (:mod:`tdds_core.stages`) in order over the plan's
items (:class:`tdds_core.plan.Plan`): full-data training once, every method setting scored, a
selection per (setting, rate), a coreset run per (pair, seed), cross-architecture runs for the
pairs ``cfg.evaluate`` names (these trainings ``coreset.concurrent_runs`` at a time,
:mod:`tdds_core.concurrent`), then the table (CSV, Markdown) and the accuracy-vs-rate plot. The
KFP pipeline runs the same stages one task per item. Every piece is keyed by content and config,
so an interrupted grid continues where it stopped, and MLflow runs are deduplicated by the same keys.
"""
from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from . import plan as P
from .concurrent import resolve_workers, run_items
from .config import Config
from .cost import with_costs
from .data import create_dataset
from .engine import check_arch
from .errors import ConfigError
from .names import STAGE_PIPELINE, TAG_FINGERPRINT, TAG_STAGE, run_name
from .plugins import load_plugins

from .stage_registry import Context, State, chain
from .stages.report import report_dir
from .stages.train_full import claim_output
from .tracking import NullTracker, Tracker, make_tracker

__all__ = ["GridResult", "check_grid", "only_methods", "run_grid", "split_names"]


@dataclass
class GridResult:
    rows: list[dict]
    report_dir: Optional[Path]
    table_md: str
    run_id: Optional[str] = None
    outputs: dict[str, Any] = field(default_factory=dict)


def split_names(text: str) -> list[str]:
    """Comma-separated row names; commas inside brackets (``dual[epochs=3,window=3]``) do not separate."""
    return [n.strip() for n in re.split(r",(?![^\[]*\])", text) if n.strip()]


def only_methods(cfg: Config, names: list[str]) -> Config:
    """A copy of ``cfg`` with only the method entries whose label, name or row name is in ``names``
    (ConfigError naming the unknown ones and the known rows)."""
    keys = [{m.label, m.name, m.display} for m in cfg.methods]
    unknown = [n for n in names if not any(n in k for k in keys)]
    if unknown:
        raise ConfigError(f"--methods: {', '.join(unknown)} not in the config's methods; use some of: "
                          f"{', '.join(m.display for m in cfg.methods)}")
    return cfg.model_copy(update={"methods": [m for m, k in zip(cfg.methods, keys) if k & set(names)]})


def check_grid(cfg: Config) -> P.Plan:
    """The plan of ``cfg``, refusing before any work a grid whose methods, method options or
    evaluation architectures are unknown (the error lists the known ones)."""
    load_plugins()
    plan = P.check_plan(cfg)
    if cfg.evaluate.rates:
        for arch in cfg.evaluate.archs:
            check_arch(arch, "evaluate.archs")
    return plan


def run_grid(cfg: Config, *, tracker: Optional[Tracker] = None, pipeline_run_id: Optional[str] = None,
             pipeline: str = "prune") -> GridResult:
    """Run every stage of the ``pipeline`` chain over the plan of ``cfg``; returns the rows and the table.

    The parent run is keyed by the config's identity: rerunning a finished grid creates no new runs."""
    plan = check_grid(cfg)
    splits = create_dataset(cfg.data)
    # the tracker first: an unreachable tracking server fails before the output root is claimed
    pipeline_run_id = pipeline_run_id or f"grid-{uuid.uuid4().hex[:12]}"
    tracker = tracker or make_tracker(cfg, cfg.output, pipeline_run_id=pipeline_run_id)
    claim_output(cfg)
    key = P.run_key_of(STAGE_PIPELINE, cfg.output, P.experiment_key(cfg, splits.fingerprint))
    with tracker.start_run(f"{run_name(STAGE_PIPELINE, method=cfg.name)}/{pipeline_run_id}", key=key,
                           tags={TAG_STAGE: STAGE_PIPELINE, TAG_FINGERPRINT: splits.fingerprint}) as parent:
        if not parent.reused:
            tracker.log_params(cfg.flat())
        ctx = Context(cfg, splits.fingerprint, tracker, parent_run_id=parent.id, _splits=splits)
        state = State(fingerprint=splits.fingerprint)
        workers = resolve_workers(cfg)
        for stage in chain(pipeline):
            items = plan.items(stage.loop)
            # independent trainings side by side (coreset.concurrent_runs); everything else in order, here
            parts = (run_items(stage, ctx, items, state, workers) if stage.gpu and stage.loop != "once"
                     else [stage.run(ctx, item, state) for item in items])
            if not stage.side:
                state = state.merge(parts)
        run_id = parent.id if not isinstance(tracker, NullTracker) else None
    out = report_dir(cfg)
    md = (out / "table.md").read_text() if (out / "table.md").is_file() else ""
    outputs = {stage: {key: ref.uri for key, ref in refs.items()} for stage, refs in state.refs.items()}
    return GridResult(with_costs(cfg, state.rows, outputs), out, md, run_id, outputs)

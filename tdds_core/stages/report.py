"""Stage report: the methods x rates table (CSV, Markdown), the accuracy-vs-rate plot and the rows
(JSON) from every row of the run, into the store's ``report/`` and onto the pipeline's parent MLflow
run, which then holds the whole picture (:func:`log_to_parent`): summary metrics per method and rate,
the table, the plot and a Markdown description. Runs every time (also when every stage before it
came from a cache); in the KFP pipeline it then ends the parent run FINISHED."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..config import Config, config_digest
from ..io import atomic_write_json, atomic_write_text, json_safe, write_manifest
from ..names import STAGE_REPORT, TAG_PIPELINE_RUN, format_rate, metric_name
from ..report import (TABLE_COLUMNS, build_table, paired_differences, plot_accuracy_vs_rate, scale_note, to_csv,
                      to_markdown)
from ..stage_registry import Context, Stage, State, register_stage
from ..storage import Workspace

__all__ = ["report_dir", "write_report", "log_to_parent", "summary_metrics", "curve_metrics"]
REPORT_FILES = ("table.csv", "table.md", "accuracy_vs_rate.png", "rows.json")


def report_dir(cfg: Config) -> Path:
    """Where the report is written: ``<output>/report``, or a cache folder for an S3 output."""
    return Workspace.of(cfg).report_dir()



def write_report(cfg: Config, rows: list[dict], out: Path) -> str:
    """Table, plot and rows into ``out`` (manifest last); returns the Markdown table."""
    out.mkdir(parents=True, exist_ok=True)
    table = build_table(rows)
    full = next((r for r in rows if r.get("rate") is None and r.get("num_train")), None)
    note = scale_note(int(full["num_train"]) if full else None, cfg.coreset.epochs or cfg.train.epochs,
                      len(cfg.coreset.seeds))
    md = to_markdown(table) + (f"\n{note}" if note else "")
    atomic_write_text(out / "table.csv", to_csv(table))
    atomic_write_text(out / "table.md", md)
    plot_accuracy_vs_rate(rows, out / "accuracy_vs_rate.png", title=f"{cfg.name}: {cfg.data.name}")
    atomic_write_json(out / "rows.json", json_safe(rows))
    write_manifest(out, list(REPORT_FILES), kind="report", name=cfg.name)
    return md


TAG_REPORT_DIGEST = "tdds.report_digest"   # digest of the rows a parent's summary was logged from


def summary_metrics(rows: list[dict], arch: str, reference: str = "random") -> dict[str, float]:
    """The parent run's metrics from result rows: ``final_acc/<method>/p<rate>`` (mean over seeds;
    ``/<arch>`` appended for another architecture than ``arch``), ``final_acc/full``, and
    ``diff_vs_<reference>/<method>/p<rate>`` (mean paired difference in points)."""
    out: dict[str, float] = {}
    for t in build_table(rows):
        if t["final_acc_mean"] is None:
            continue
        other = t["arch"] if t["arch"] and t["arch"] != arch else None
        rate = None if t["rate"] is None else f"p{format_rate(t['rate'])}"
        out[metric_name("final_acc", t["method"], rate, other)] = float(t["final_acc_mean"])
    for d in paired_differences(rows, reference=reference):
        other = d["arch"] if d["arch"] and d["arch"] != arch else None
        out[metric_name(f"diff_vs_{reference}", d["method"], f"p{format_rate(d['rate'])}", other)] = float(d["mean"])
    return out


def curve_metrics(rows: list[dict], arch: str) -> list[tuple[str, int, float]]:
    """``acc_vs_rate/<method>`` at step = rate in percent (MLflow's charts draw accuracy against the
    pruning rate from it): (metric, step, mean final accuracy) for the model's own architecture."""
    return [(metric_name("acc_vs_rate", t["method"]), int(round(100 * t["rate"])), float(t["final_acc_mean"]))
            for t in build_table(rows) if t["rate"] is not None and t["final_acc_mean"] is not None
            and (t["arch"] or arch) == arch]


def description(cfg: Config, md: str, run_id: str) -> str:
    """The parent run's Markdown description: what ran and the results table."""
    return (f"## tdds pipeline `{cfg.name}` ({cfg.data.name})\n\nPipeline run `{run_id}`; "
            f"methods {', '.join(m.display for m in cfg.methods)}; pruning rates "
            f"{', '.join(format_rate(r) for r in cfg.selection.rates)}; coreset seeds {list(cfg.coreset.seeds)}.\n"
            "Artifacts: `report/` (table.csv, table.md, accuracy_vs_rate.png, rows.json), `results_table.json`.\n\n"
            f"Final test accuracy (%), mean ± std over seeds:\n\n{md}")


def log_to_parent(ctx: Context, rows: list[dict], out: Path, md: str) -> bool:
    """Log the report onto the parent run ``ctx.parent_run_id``: the metrics of
    :func:`summary_metrics` and :func:`curve_metrics`, the table (``results_table.json``, MLflow's
    table view), the report files under ``report/`` and the description. Skipped when the parent
    already holds the report of the same rows; returns whether it logged."""
    cfg, tracker = ctx.cfg, ctx.tracker
    digest = config_digest(json_safe(rows), 16)
    parent = tracker.get_run(ctx.parent_run_id)
    if parent.tags.get(TAG_REPORT_DIGEST) == digest:
        return False
    table = build_table(rows)
    with tracker.attach(ctx.parent_run_id):
        tracker.log_metrics(summary_metrics(rows, cfg.model.arch))
        for name, step, value in curve_metrics(rows, cfg.model.arch):
            tracker.log_metrics({name: value}, step=step)
        tracker.log_table({c: [(";".join(map(str, t[c])) if c == "seeds" else t[c]) for t in table]
                           for c in TABLE_COLUMNS}, "results_table.json")
        for name in REPORT_FILES:
            tracker.log_artifact(out / name, "report")
        tracker.set_description(description(cfg, md, parent.tags.get(TAG_PIPELINE_RUN, parent.id)))
        tracker.set_tags({TAG_REPORT_DIGEST: digest})
    return True


def run(ctx: Context, item: Any, state: State) -> State:
    cfg, tracker = ctx.cfg, ctx.tracker
    out = report_dir(cfg)
    md = write_report(cfg, state.rows, out)
    Workspace.of(cfg).publish(out, "report", replace=True)     # S3: uploaded unless the same files are there
    if tracker.enabled and ctx.parent_run_id:
        log_to_parent(ctx, state.rows, out, md)
    if ctx.finish_parent and ctx.parent_run_id and tracker.enabled:
        tracker.terminate(ctx.parent_run_id, "FINISHED")
    return state.part(STAGE_REPORT, {})


STAGE = register_stage(Stage(STAGE_REPORT, order=90, loop="once", run=run, cached=False))

"""Stage report: the methods x rates table (CSV, Markdown), the accuracy-vs-rate plot and the rows
(JSON) from every row of the run, into the store's ``report/`` and onto the pipeline's parent MLflow
run, which then opens on the answer (:func:`log_to_parent`): the table first in its description, the
plot first among its artifacts, a few rounded headline figures, every cell in ``results_table.json``,
and one ``summary/<method>`` child run per method whose ``test_acc`` / ``diff_vs_random`` are logged
at step = pruning rate in percent (MLflow's chart view: one line per method on one axis). Runs every time (also when every stage before it
came from a cache); in the KFP pipeline it then ends the parent run FINISHED.

The cost of each row (:mod:`tdds_core.cost`: dynamics share, scoring, selection and training seconds)
is added to the rows it writes, logged on each coreset and cross-architecture run as the ``cost_*``
metrics (:func:`log_costs`), tabled in ``cost.md`` and the parent's ``results_table.json``, and drawn
as ``time_to_accuracy.png`` (accuracy against total cost) beside the accuracy-vs-rate plot."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from .. import plan as P
from ..config import Config, config_digest
from ..cost import outputs_of, with_costs
from ..io import atomic_write_json, atomic_write_text, json_safe, write_manifest
from ..names import (COST_METRICS, METRIC_DIFF_VS_RANDOM, METRIC_TEST_ACC, STAGE_CORESET, STAGE_EVALUATE, STAGE_REPORT,
                     STAGE_SUMMARY, TAG_ARCH, TAG_LABEL, TAG_METHOD, TAG_METHOD_NAME, TAG_PIPELINE_RUN, TAG_STAGE, rate_step,
                     rate_text, slug)
from ..report import (TABLE_COLUMNS, build_table, full_accuracy, paired_differences, plot_accuracy_vs_rate, scale_note,
                      to_csv, to_markdown)
from ..report_cost import cost_columns, cost_markdown, plot_time_to_accuracy
from ..tracking import run_params
from ..stage_registry import Context, Stage, State, register_stage
from ..storage import Workspace

__all__ = ["report_dir", "write_report", "log_to_parent", "log_summaries", "log_costs", "headline_metrics",
           "method_curves", "table_columns", "description", "TABLE_FILE"]
REPORT_FILES = ("table.csv", "table.md", "accuracy_vs_rate.png", "cost.md", "time_to_accuracy.png", "rows.json")


def report_dir(cfg: Config) -> Path:
    """Where the report is written: ``<output>/report``, or a cache folder for an S3 output."""
    return Workspace.of(cfg).report_dir()



def write_report(cfg: Config, rows: list[dict], out: Path) -> str:
    """Tables, plots and rows into ``out`` (manifest last); returns the Markdown table of accuracies.
    ``rows`` with the cost fields (:func:`tdds_core.cost.with_costs`) fill ``cost.md`` and
    ``time_to_accuracy.png``; without them those show ``–`` and only the full-data point."""
    out.mkdir(parents=True, exist_ok=True)
    table = build_table(rows)
    full = next((r for r in rows if r.get("rate") is None and r.get("num_train")), None)
    note = scale_note(int(full["num_train"]) if full else None, cfg.coreset.epochs or cfg.train.epochs,
                      len(cfg.coreset.seeds))
    md = to_markdown(table) + (f"\n{note}" if note else "")
    atomic_write_text(out / "table.csv", to_csv(table))
    atomic_write_text(out / "table.md", md)
    plot_accuracy_vs_rate(rows, out / "accuracy_vs_rate.png", title=f"{cfg.name}: {cfg.data.name}")
    atomic_write_text(out / "cost.md", cost_markdown(rows))
    plot_time_to_accuracy(rows, out / "time_to_accuracy.png", title=f"{cfg.name}: {cfg.data.name}, accuracy vs total cost")
    atomic_write_json(out / "rows.json", json_safe(rows))
    write_manifest(out, list(REPORT_FILES), kind="report", name=cfg.name)
    return md


TAG_REPORT_DIGEST = "tdds.report_digest"   # digest of the rows a parent's summary was logged from
TABLE_FILE = "results_table.json"            # the table on the parent run (MLflow's table view), every cell


def _own(table: list[dict], arch: str) -> list[dict]:
    """The cells of the model's own architecture (cross-architecture cells stay in the table)."""
    return [t for t in table if (t["arch"] or arch) == arch]


def method_curves(rows: list[dict], arch: str, reference: str = "random") -> dict[str, list[tuple[int, dict]]]:
    """Per method label: ``[(step, {"test_acc": mean final accuracy, "diff_vs_random": mean paired
    difference}), ...]`` at step = pruning rate in percent, the model's own architecture only (what
    the summary runs log; rounded to 2 decimals; the reference's own difference is 0)."""
    diffs = {(d["method"], round(d["rate"], 6)): d["mean"] for d in paired_differences(rows, reference=reference)
             if (d["arch"] or arch) == arch}
    out: dict[str, list[tuple[int, dict]]] = {}
    for t in _own(build_table(rows), arch):
        if t["rate"] is None or t["final_acc_mean"] is None:
            continue
        m = {METRIC_TEST_ACC: round(float(t["final_acc_mean"]), 2)}
        d = 0.0 if t["method"] == reference else diffs.get((t["method"], round(t["rate"], 6)))
        if d is not None:
            m[METRIC_DIFF_VS_RANDOM] = round(float(d), 2)
        out.setdefault(t["method"], []).append((rate_step(t["rate"]), m))
    return out


def headline_metrics(rows: list[dict], arch: str, reference: str = "random") -> dict[str, float]:
    """The parent run's few figures, rounded to 2 decimals: ``full_acc`` (full data), ``best_test_acc``
    (best coreset cell of the own architecture), ``best_diff_vs_random`` (largest mean paired
    difference to random); each only when it exists. Every cell is in ``results_table.json``."""
    table = _own(build_table(rows), arch)
    out: dict[str, float] = {}
    full = full_accuracy(table)
    if full is not None:
        out["full_acc"] = round(full[0], 2)
    cells = [t["final_acc_mean"] for t in table if t["rate"] is not None and t["final_acc_mean"] is not None]
    if cells:
        out["best_test_acc"] = round(max(cells), 2)
    diffs = [d["mean"] for d in paired_differences(rows, reference=reference) if (d["arch"] or arch) == arch]
    if diffs:
        out[f"best_diff_vs_{reference}"] = round(max(diffs), 2)
    return out


def table_columns(rows: list[dict], reference: str = "random") -> dict[str, list]:
    """``results_table.json``: :data:`TABLE_COLUMNS` per cell (rate as a number, 0.5) plus
    ``diff_vs_random_mean`` (points, paired by seed; None where no reference row pairs) and the cost
    means over seeds (:data:`tdds_core.report_cost.COST_CELL_COLUMNS`; None where not known)."""
    table = build_table(rows)
    diffs = {(d["method"], round(d["rate"], 6), d["arch"]): d["mean"] for d in paired_differences(rows, reference=reference)}
    cols = {c: [(";".join(map(str, t[c])) if c == "seeds" else t[c]) for t in table] for c in TABLE_COLUMNS}
    cols[f"diff_vs_{reference}_mean"] = [
        None if t["rate"] is None else (0.0 if t["method"] == reference else diffs.get((t["method"], round(t["rate"], 6), t["arch"])))
        for t in table]
    cols.update(cost_columns(rows, table))
    return cols


def description(cfg: Config, table_md: str, run_id: str) -> str:
    """The parent run's Markdown description, opening on the answer: the methods x rates table in its
    first lines (what MLflow's run page shows before "Show more"), then what it is and what ran."""
    lines = table_md.splitlines()
    first = next((i for i, x in enumerate(lines) if x.startswith("|")), len(lines))
    end = next((i for i in range(first, len(lines)) if not lines[i].startswith("|")), len(lines))
    rest = "\n".join(x for x in lines[:first] + lines[end:] if not x.startswith("### "))
    while "\n\n\n" in rest:
        rest = rest.replace("\n\n\n", "\n\n")
    return ("\n".join(lines[first:end]) + "\n\n"
            f"**Test accuracy (%) by method and pruning rate** (above), `{cfg.name}` on {cfg.data.name}. "
            + rest.strip() + "\n\n"
            f"Pipeline run `{run_id}`; methods {', '.join(m.display for m in cfg.methods)}; pruning rates "
            f"{', '.join(rate_text(r) for r in cfg.selection.rates)}; coreset seeds {list(cfg.coreset.seeds)}. "
            f"Curves: the `{STAGE_SUMMARY}/<method>` child runs (`test_acc`, `diff_vs_random` at step = rate in %; "
            "chart view). Artifacts: `accuracy_vs_rate.png`, `time_to_accuracy.png` (accuracy vs total cost), "
            "`results_table.json` (every cell, costs included), `report/` (`cost.md`: the cost of each cell).\n")


def log_summaries(ctx: Context, rows: list[dict], digest: str) -> list[str]:
    """One child run ``summary/<label>`` of the parent per method: ``test_acc`` and ``diff_vs_random``
    at step = rate in percent, so MLflow's chart view draws every method on one axis. Returns the
    labels logged."""
    cfg, tracker = ctx.cfg, ctx.tracker
    by_label = {m.display: m.name for m in cfg.methods}
    curves = method_curves(rows, cfg.model.arch)
    for label, points in curves.items():
        name = by_label.get(label) or label.split("[", 1)[0]     # a label is "<name>[<options>]" unless set
        tags = {TAG_STAGE: STAGE_SUMMARY, TAG_METHOD: name, TAG_LABEL: label, TAG_METHOD_NAME: name,
                TAG_ARCH: cfg.model.arch, TAG_REPORT_DIGEST: digest}
        key = f"{STAGE_SUMMARY}|{ctx.parent_run_id}|{digest}|{slug(label)}"
        with tracker.start_run(f"{STAGE_SUMMARY}/{label}", parent=ctx.parent_run_id, tags=tags, key=key) as run:
            if run.reused:
                continue
            tracker.log_params(run_params(method=name, label=label, arch=cfg.model.arch))
            for step, metrics in points:
                tracker.log_metrics(metrics, step=step)
    return list(curves)


def log_to_parent(ctx: Context, rows: list[dict], out: Path, md: str) -> bool:
    """Log the report onto the parent run ``ctx.parent_run_id``: the summary child runs
    (:func:`log_summaries`), the headline metrics (:func:`headline_metrics`), the plot first among
    its artifacts, the table (``results_table.json``, MLflow's table view), the report files under
    ``report/`` and the description (:func:`description`). Skipped when the parent already holds the
    report of the same rows; returns whether it logged."""
    cfg, tracker = ctx.cfg, ctx.tracker
    digest = config_digest(json_safe(rows), 16)
    parent = tracker.get_run(ctx.parent_run_id)
    if parent.tags.get(TAG_REPORT_DIGEST) == digest:
        return False
    log_summaries(ctx, rows, digest)
    own_md = to_markdown(_own(build_table(rows), cfg.model.arch))
    with tracker.attach(ctx.parent_run_id):
        tracker.log_metrics(headline_metrics(rows, cfg.model.arch))
        tracker.log_artifact(out / "accuracy_vs_rate.png")
        tracker.log_artifact(out / "time_to_accuracy.png")
        tracker.log_table(table_columns(rows), TABLE_FILE)
        for name in REPORT_FILES:
            tracker.log_artifact(out / name, "report")
        tracker.set_description(description(cfg, own_md, parent.tags.get(TAG_PIPELINE_RUN, parent.id)))
        tracker.set_tags({TAG_REPORT_DIGEST: digest})
    return True


def log_costs(ctx: Context, rows: list[dict], state: State) -> int:
    """The cost fields of each coreset and cross-architecture row (:data:`~tdds_core.names.COST_METRICS`)
    as metrics on the run that trained it (found by its key, the row by its artifact URI); only values
    the run does not hold already, so a rerun logs nothing. Returns the number of runs logged to."""
    cfg, tracker = ctx.cfg, ctx.tracker
    by_uri = {r["uri"]: r for r in rows if r.get("uri")}
    logged = 0
    for stage in (STAGE_CORESET, STAGE_EVALUATE):
        for ref in state.refs.get(stage, {}).values():
            row = by_uri.get(ref.uri)
            costs = {m: float(row[m]) for m in COST_METRICS if row is not None and row.get(m) is not None}
            run_id = tracker.find_finished_run(P.run_key_of(ref.run_stage or stage, cfg.output, ref.key)) if costs else None
            if run_id is None:
                continue
            held = tracker.get_run(run_id).metrics
            new = {m: v for m, v in costs.items() if held.get(m) != v}
            if new:
                with tracker.attach(run_id):
                    tracker.log_metrics(new)
                logged += 1
    return logged


def run(ctx: Context, item: Any, state: State) -> State:
    cfg, tracker = ctx.cfg, ctx.tracker
    out = report_dir(cfg)
    rows = with_costs(cfg, state.rows, outputs_of(state.refs))
    md = write_report(cfg, rows, out)
    Workspace.of(cfg).publish(out, "report", replace=True)     # S3: uploaded unless the same files are there
    if tracker.enabled:
        log_costs(ctx, rows, state)
    if tracker.enabled and ctx.parent_run_id:
        log_to_parent(ctx, rows, out, md)
    if ctx.finish_parent and ctx.parent_run_id and tracker.enabled:
        tracker.terminate(ctx.parent_run_id, "FINISHED")
    return state.part(STAGE_REPORT, {})


STAGE = register_stage(Stage(STAGE_REPORT, order=90, loop="once", run=run, cached=False))

"""Stage report: the methods x rates table (CSV, Markdown), the accuracy-vs-rate plot and the rows
(JSON) from every row of the run, into the store's ``report/`` and a ``report/<name>`` child of the
parent run (reused while parent and rows are the same). Runs every time; in the KFP pipeline it then ends the
parent run FINISHED."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..config import Config, config_digest
from ..io import atomic_write_json, atomic_write_text, json_safe, write_manifest
from ..storage import cache_root, is_remote, open_store
from ..tracking import STAGE_REPORT, TAG_STAGE, run_name
from ._registry import Context, Stage, State, register_stage

__all__ = ["report_dir", "write_report"]
REPORT_FILES = ("table.csv", "table.md", "accuracy_vs_rate.png", "rows.json")


def report_dir(cfg: Config) -> Path:
    """Where the report is written: ``<output>/report``, or a cache folder for an S3 output."""
    if is_remote(cfg.output):
        return cache_root() / "reports" / config_digest(open_store(cfg.output).identity, 16)
    return Path(cfg.output) / "report"



def write_report(cfg: Config, rows: list[dict], out: Path) -> str:
    """Table, plot and rows into ``out`` (manifest last); returns the Markdown table."""
    from ..report import build_table, plot_accuracy_vs_rate, scale_note, to_csv, to_markdown

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


def _publish(cfg: Config, out: Path) -> None:
    """Upload the report to the store's ``report/`` unless the same files are there already."""
    import json

    from ..io import read_manifest

    store = open_store(cfg.output)
    if store.is_complete("report"):
        remote = json.loads(store.get_bytes("report/manifest.json"))
        local = read_manifest(out)
        if {k: v["sha256"] for k, v in remote.get("files", {}).items()} == \
                {k: v["sha256"] for k, v in local["files"].items()}:
            return
    store.put_dir(out, "report", overwrite=True)


def run(ctx: Context, item: Any, state: State) -> State:
    cfg, tracker = ctx.cfg, ctx.tracker
    out = report_dir(cfg)
    # one report run per parent run and table (a rerun of a finished grid reuses it)
    key = (f"{STAGE_REPORT}|{config_digest(open_store(cfg.output).identity, 8)}|{ctx.parent_run_id or ''}|"
           f"{config_digest(json_safe(state.rows), 16)}")
    with tracker.start_run(run_name(STAGE_REPORT, method=cfg.name), key=key, tags={TAG_STAGE: STAGE_REPORT}) as run:
        write_report(cfg, state.rows, out)
        if not run.reused:
            for name in REPORT_FILES:
                tracker.log_artifact(out / name, "report")
    if is_remote(cfg.output):
        _publish(cfg, out)
    if ctx.finish_parent and ctx.parent_run_id and tracker.enabled:
        tracker.terminate(ctx.parent_run_id, "FINISHED")
    return state.part(STAGE_REPORT, {})


STAGE = register_stage(Stage(STAGE_REPORT, order=90, loop="once", run=run, cached=False))

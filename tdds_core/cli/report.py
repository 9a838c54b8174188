"""``tdds report``: the methods x rates table of one pipeline run (or of one config's runs) from
MLflow, printed and written as table.csv / table.md / accuracy_vs_rate.png (the pipeline's names)."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..config import load_config
from ..errors import StorageError
from ..io import atomic_write_text
from ..report import build_table, plot_accuracy_vs_rate, to_csv, to_markdown
from ..storage import Workspace, is_remote
from ..tracking import default_experiment, latest_pipeline_run, rows_from_mlflow, rows_from_pipeline_run

TABLE_FILES = ("table.csv", "table.md", "accuracy_vs_rate.png")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report", help="Methods x pruning-rates table (mean ± std over seeds) of a pipeline run, from MLflow.",
        description="Read one pipeline run's results from MLflow and write table.csv, table.md and "
                    "accuracy_vs_rate.png (test accuracy in percent). Which runs: --pipeline-run ID; else the newest "
                    "finished pipeline run of the config's name; else the finished training runs of one config and "
                    "one dataset version (the newest), never a mix.",
    )
    p.add_argument("--config", default=None, help="Config whose name, tracking.uri / tracking.experiment and output "
                   "are the defaults.")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="Override a config field (repeatable).")
    p.add_argument("--pipeline-run", default=None, metavar="ID",
                   help="The pipeline run to report (the id `tdds run` printed or `tdds submit` returned; tag "
                        "tdds.pipeline_run_id of its parent MLflow run).")
    p.add_argument("--tracking-uri", default=None,
                   help="MLflow tracking URI (default: tracking.uri, $MLFLOW_TRACKING_URI, or sqlite:///<output>/mlflow.db).")
    p.add_argument("--experiment", default=None, help="Experiment name (default: tracking.experiment or tdds-<dataset>).")
    p.add_argument("--out", default=None, help="Folder for table.csv / table.md / accuracy_vs_rate.png "
                   "(default: <output>/report).")
    p.add_argument("--metric", default="final_acc", choices=["final_acc", "best_acc"],
                   help="Accuracy shown: after the last epoch (final_acc, default) or the best epoch's (best_acc).")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, args.overrides)
    ws = Workspace.of(cfg)
    uri = args.tracking_uri or ws.tracking_uri
    experiment = args.experiment or default_experiment(cfg)
    out = args.out or ("report" if ws.remote else str(Path(ws.output) / "report"))
    if is_remote(out):
        raise StorageError("--out must be a local folder; copy the report to S3 afterwards if you need it there")
    pipeline_run = args.pipeline_run
    if pipeline_run is None and args.config is not None:
        pipeline_run = latest_pipeline_run(uri, experiment, cfg.name)
    if pipeline_run is not None:
        rows = rows_from_pipeline_run(uri, experiment, pipeline_run)
        source = f"pipeline run {pipeline_run!r}"
    else:
        rows = rows_from_mlflow(uri, experiment, config_name=cfg.name if args.config else None)
        source = f"the finished runs of experiment {experiment!r}"
    table = build_table(rows)
    md = to_markdown(table, metric=args.metric)
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(folder / "table.csv", to_csv(table))
    atomic_write_text(folder / "table.md", md)
    plot_accuracy_vs_rate(rows, folder / "accuracy_vs_rate.png", metric=args.metric)
    print(md, end="")
    print(f"\n{len(rows)} runs from {source}; wrote " + ", ".join(str(folder / f) for f in TABLE_FILES))
    return 0

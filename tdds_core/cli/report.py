"""``tdds report``: the methods x rates table from MLflow, printed and written as CSV/Markdown/PNG."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..config import load_config
from ..errors import StorageError
from ..io import atomic_write_text
from ..report import build_table, plot_accuracy_vs_rate, to_csv, to_markdown
from ..storage import Workspace, is_remote
from ..tracking import default_experiment, rows_from_mlflow


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report", help="Methods x pruning-rates table (mean ± std over seeds) from the MLflow runs.",
        description="Read the finished coreset/evaluate/train-full runs of an MLflow experiment and write "
                    "results.csv, results.md and accuracy_vs_rate.png (test accuracy in percent).",
    )
    p.add_argument("--config", default=None, help="Config whose tracking.uri / tracking.experiment / output are the defaults.")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="Override a config field (repeatable).")
    p.add_argument("--tracking-uri", default=None,
                   help="MLflow tracking URI (default: tracking.uri, $MLFLOW_TRACKING_URI, or sqlite:///<output>/mlflow.db).")
    p.add_argument("--experiment", default=None, help="Experiment name (default: tracking.experiment or tdds-<dataset>).")
    p.add_argument("--out", default=None, help="Folder for results.csv / results.md / accuracy_vs_rate.png (default: <output>/report).")
    p.add_argument("--metric", default="final_acc", choices=["final_acc", "best_acc"], help="Accuracy shown (default final_acc).")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, args.overrides)
    ws = Workspace.of(cfg)
    uri = args.tracking_uri or ws.tracking_uri
    experiment = args.experiment or default_experiment(cfg)
    out = args.out or ("report" if ws.remote else str(Path(ws.output) / "report"))
    if is_remote(out):
        raise StorageError("--out must be a local folder; copy the report to S3 afterwards if you need it there")
    rows = rows_from_mlflow(uri, experiment)
    table = build_table(rows)
    md = to_markdown(table, metric=args.metric)
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(folder / "results.csv", to_csv(table))
    atomic_write_text(folder / "results.md", md)
    plot_accuracy_vs_rate(rows, folder / "accuracy_vs_rate.png", metric=args.metric)
    print(md, end="")
    print(f"\n{len(rows)} runs from experiment {experiment!r}; wrote {folder / 'results.csv'}, "
          f"{folder / 'results.md'}, {folder / 'accuracy_vs_rate.png'}")
    return 0

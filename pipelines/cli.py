"""``tdds run``, ``tdds compile``, ``tdds submit`` and ``tdds schedule``: the Kubeflow pipeline.

* ``tdds run --config CFG`` runs ``tdds-prune`` on this machine (kfp.local, no cluster, no server),
  prints the results table and where the artifacts, the KFP outputs and the MLflow runs are.
* ``tdds compile --config CFG --out FILE.yaml`` writes the KFP v2 YAML (``--pipeline reprune`` for
  ``tdds-reprune``).
* ``tdds submit --config CFG --host URL`` starts a run on a Kubeflow Pipelines cluster.
* ``tdds schedule --config CFG --host URL --cron EXPR`` makes a recurring run of ``tdds-reprune``.
"""
from __future__ import annotations

import argparse
import time

from tdds_core.cli import add_config_args
from tdds_core.config import load_config
from tdds_core.errors import ConfigError

from .run import cluster_env, compile_pipeline, normalize_cron, run_local, schedule, schedules, submit, unschedule


_PIPELINE_HELP = ("prune (default): train, score, select, train coresets, report; reprune: the same on the dataset's "
                  "newest version, plus how each coreset changed since the previous version (kept, dropped, new ids).")


def _add_env(p: argparse.ArgumentParser) -> None:
    p.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                   help="Non-secret environment variable for every cluster task (repeatable), e.g. "
                        "--env MLFLOW_TRACKING_URI=http://mlflow.mlflow.svc:5000. Secrets come from Kubernetes "
                        "secrets (docs/CLUSTER.md).")


def register(sub) -> None:
    r = sub.add_parser("run", help="Run the tdds-prune pipeline on this machine (kfp.local, local artifacts, MLflow SQLite).",
                       description="Run the Kubeflow pipeline tdds-prune on this machine through kfp.local's "
                                   "subprocess runner: the same pipeline that `tdds submit` sends to a cluster.")
    add_config_args(r)
    r.add_argument("--pipeline", choices=["prune", "reprune"], default="prune", help=_PIPELINE_HELP)
    r.add_argument("--out", help="Output root (local folder or s3://bucket/prefix); default: the config's output.")
    r.add_argument("--verbose", action="store_true",
                   help="Stream kfp.local's whole output (executor JSON, every task's log) instead of one line per task.")
    r.set_defaults(func=run_cmd)

    c = sub.add_parser("compile", help="Compile the pipeline for a config to KFP v2 YAML.",
                       description="Write the KFP v2 YAML of tdds-prune (or tdds-reprune) for a config, for a cluster: "
                                   "refuses what cannot work there (a local output or tracking URI, the placeholder "
                                   "image, unreachable dataset files) and bakes in the pipeline.* Kubernetes settings. "
                                   "Upload the file in the KFP UI, or let `tdds submit` compile and send it.")
    add_config_args(c)
    c.add_argument("--out", required=True, help="Output YAML file.")
    c.add_argument("--pipeline", choices=["prune", "reprune"], default="prune", help=_PIPELINE_HELP)
    _add_env(c)
    c.set_defaults(func=compile_cmd)

    s = sub.add_parser("submit", help="Submit tdds-prune (or --pipeline reprune) to a Kubeflow Pipelines cluster.",
                       description="Compile the pipeline for a config (as `tdds compile`) and start one run of it on "
                                   "the Kubeflow Pipelines API at --host (KFP 2.5 or newer), in the experiment "
                                   "tdds-<config name> unless --experiment; prints the run id.")
    add_config_args(s)
    s.add_argument("--host", required=True, help="KFP API endpoint, e.g. http://localhost:8080 (port-forwarded ml-pipeline-ui).")
    _access_args(s)
    s.add_argument("--experiment", help="KFP experiment name (default: tdds-<config name>).")
    s.add_argument("--pipeline", choices=["prune", "reprune"], default="prune", help=_PIPELINE_HELP)
    s.add_argument("--run-name", help="KFP run name (default: <config name>-<pipeline>).")
    _add_env(s)
    s.set_defaults(func=submit_cmd)

    h = sub.add_parser("schedule", help="Schedule a recurring tdds-reprune run on a Kubeflow Pipelines cluster.",
                       description="Create the recurring run --name (default <config name>-reprune) of tdds-reprune "
                                   "for a config on the KFP at --host, pointing at a registered pipeline version; a "
                                   "second call with the same name replaces the schedule instead of adding one. "
                                   "--list shows the namespace's recurring runs, --delete NAME removes one.")
    add_config_args(h, required=False)
    h.add_argument("--host", required=True, help="KFP API endpoint.")
    _access_args(h)
    h.add_argument("--cron", help="When to run: 5 cron fields ('0 3 * * *' = daily 03:00) or KFP's 6 (needed to create).")
    h.add_argument("--list", action="store_true", help="List the recurring runs of the namespace and exit.")
    h.add_argument("--delete", metavar="NAME", help="Delete the recurring run NAME and exit.")
    h.add_argument("--experiment", help="KFP experiment name (default: tdds-<config name>).")
    h.add_argument("--name", help="Recurring run name (default: <config name>-reprune).")
    _add_env(h)
    h.set_defaults(func=schedule_cmd)


def _cfg(args):
    cfg = load_config(args.config, args.overrides)
    if getattr(args, "out", None) and args.func is run_cmd:
        cfg.output = args.out
    return cfg


def _env(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--env {item!r}: expected KEY=VALUE")
        k, v = item.split("=", 1)
        out[k.strip()] = v
    return out


def run_cmd(args: argparse.Namespace) -> int:
    cfg = _cfg(args)
    t0 = time.time()
    print(f"tdds {args.pipeline} pipeline {cfg.name!r}: one line per task (--verbose streams every task's log)")
    res = run_local(cfg, kind=args.pipeline, verbose=getattr(args, "verbose", False))
    wall = time.time() - t0
    print()
    print(res.report_md or "(no report table was written)")
    tasks = (f"; tasks: {res.tasks['done']} ran, {res.tasks['cached']} from the cache" if res.tasks else "")
    print(f"tdds {args.pipeline} pipeline finished in {wall:.0f} s (run id {res.run_id}{tasks}).")
    if res.log_path:
        print(f"  task logs:   {res.log_path}")
    print(f"  artifacts:   {res.output} (report/: table.csv, table.md, accuracy_vs_rate.png)")
    print(f"  KFP outputs: {res.pipeline_root} (cache: {res.pipeline_root}/.kfp_cache; rerun to reuse finished stages)")
    if res.tracking_uri:
        print(f"  MLflow:      experiment {res.experiment!r}, parent run {res.parent_run_id} at {res.tracking_uri}")
        if res.tracking_uri.startswith("sqlite:"):
            print(f"               mlflow ui --backend-store-uri {res.tracking_uri}   (then open "
                  "http://127.0.0.1:5000/#/experiments?workflowType=machine_learning: the chart view has one "
                  "line per method)")
    return 0


def compile_cmd(args: argparse.Namespace) -> int:
    cfg = _cfg(args)
    path = compile_pipeline(cfg, args.out, kind=args.pipeline, env=cluster_env(cfg, _env(args.env)))
    print(f"wrote {path} (tdds-{args.pipeline}; images {cfg.pipeline.image}"
          f"{' / ' + cfg.pipeline.gpu_image if cfg.pipeline.gpu_image else ''})")
    return 0


def _access_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--namespace", help="Kubeflow profile namespace (multi-user KFP; default $KF_PIPELINES_NAMESPACE).")
    p.add_argument("--token", help="Bearer token (default $KF_PIPELINES_TOKEN or the file $KF_PIPELINES_SA_TOKEN_PATH; "
                   "--host in-cluster reads the pod's pipelines token).")


def submit_cmd(args: argparse.Namespace) -> int:
    cfg = _cfg(args)
    run_id = submit(cfg, args.host, experiment=args.experiment, kind=args.pipeline, env=_env(args.env),
                    namespace=args.namespace, token=args.token,
                    run_name=args.run_name)
    print(f"submitted tdds-{args.pipeline} to {args.host}: run id {run_id}")
    return 0


def schedule_cmd(args: argparse.Namespace) -> int:
    if args.list:
        rows = schedules(args.host, namespace=args.namespace, token=args.token)
        for r in rows:
            print(f"{r['name']}\t{r['cron'] or '-'}\t{r['status'] or '-'}\t{r['id']}")
        print(f"{len(rows)} recurring run(s) at {args.host}")
        return 0
    if args.delete:
        gone = unschedule(args.host, args.delete, namespace=args.namespace, token=args.token)
        print(f"deleted recurring run {args.delete!r} ({', '.join(gone)}) at {args.host}")
        return 0
    if not args.config or not args.cron:
        raise ConfigError("tdds schedule needs --config and --cron to create a schedule (or --list, or --delete NAME).")
    cfg = _cfg(args)
    job = schedule(cfg, args.host, args.cron, experiment=args.experiment, env=_env(args.env), name=args.name,
                   namespace=args.namespace, token=args.token)
    print(f"scheduled tdds-reprune on {args.host} ({normalize_cron(args.cron)}): recurring run id {job}")
    return 0

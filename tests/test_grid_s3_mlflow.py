"""Acceptance: the quickstart grid (tiny) with artifacts in S3 (moto_server) and tracking in a real
MLflow server; read everything back through the MLflow API and S3; a rerun uploads nothing new."""
from __future__ import annotations

import hashlib
import json
import uuid
from pathlib import Path

import numpy as np
import pytest

from fixtures_servers import MLFLOW_BUCKET, s3_client
from tdds_core.config import load_config
from tdds_core.grid import run_grid
from tdds_core.tracking import rows_from_mlflow
from tdds_core.tracking import (METRIC_FINAL_ACC, STAGE_CORESET, STAGE_PIPELINE, STAGE_SCORE, STAGE_TRAIN_FULL,
                                TAG_ARTIFACT_URI, TAG_KEY, TAG_METHOD, TAG_PARENT_RUN, TAG_PIPELINE_RUN, TAG_RATE,
                                TAG_SELECTION_SHA256, TAG_SELECTION_URI, TAG_STAGE)

ROOT = Path(__file__).resolve().parents[1]
BUCKET = "tdds-grid"
pytestmark = [pytest.mark.servers, pytest.mark.slow]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def snapshot(client, bucket: str, prefix: str = "") -> dict[str, tuple[str, str]]:
    out = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for o in page.get("Contents", []) or []:
            out[o["Key"]] = (o["ETag"], o["LastModified"].isoformat())
    return out


def test_quickstart_grid_in_s3_and_mlflow(s3_server, mlflow_server, tmp_path, monkeypatch):
    s3 = s3_client(s3_server)
    s3.create_bucket(Bucket=BUCKET)
    monkeypatch.setenv("TDDS_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    experiment = f"quickstart-{uuid.uuid4().hex[:6]}"
    output = f"s3://{BUCKET}/runs/quickstart"
    cfg = load_config(ROOT / "configs" / "quickstart.yaml", [
        f"output={output}", "data.train_subset=300", "data.test_subset=200", "train.epochs=3", "train.device=cpu",
        "methods=[{name: random}, {name: tdds, params: {T: 3, W: 2, decay: 0.9}}]", "selection.rates=[0.5]",
        "coreset.seeds=[42]", "evaluate.rates=[]", f"tracking.uri={mlflow_server}", f"tracking.experiment={experiment}",
    ])
    result = run_grid(cfg, pipeline_run_id="accept-1")
    assert sorted((r["method"], r["rate"] or 0.0) for r in result.rows) == [
        ("full", 0.0), ("random", 0.5), ("tdds[T=3,W=2,decay=0.9]", 0.5)]

    # ---- runs, params, metrics through the MLflow API
    from mlflow import MlflowClient

    c = MlflowClient(tracking_uri=mlflow_server)
    exp = c.get_experiment_by_name(experiment)
    runs = c.search_runs([exp.experiment_id], max_results=1000)
    by_stage: dict[str, list] = {}
    for r in runs:
        assert r.info.status == "FINISHED", (r.info.run_name, r.info.status)
        by_stage.setdefault(r.data.tags.get(TAG_STAGE), []).append(r)
    assert len(by_stage[STAGE_PIPELINE]) == 1 and len(by_stage[STAGE_TRAIN_FULL]) == 1
    assert len(by_stage[STAGE_SCORE]) == 2 and len(by_stage[STAGE_CORESET]) == 2
    parent = by_stage[STAGE_PIPELINE][0]
    for r in runs:
        if r is not parent:
            assert r.data.tags[TAG_PARENT_RUN] == parent.info.run_id
            assert TAG_KEY in r.data.tags
    assert parent.data.params["data.train_subset"] == "300"
    tdds_run = [r for r in by_stage[STAGE_CORESET] if r.data.tags[TAG_METHOD].startswith("tdds")][0]
    assert tdds_run.data.tags[TAG_RATE] == "0.5"        # issue #26: one rate spelling (rate_text) in tags, params, names
    assert tdds_run.info.run_name.startswith("tdds") and " p0.5 " in tdds_run.info.run_name
    assert tdds_run.data.params["rate"] == "0.5" and tdds_run.data.tags[TAG_SELECTION_URI].startswith(output)
    assert 0.0 <= tdds_run.data.metrics[METRIC_FINAL_ACC] <= 100.0
    grid_rows = {(r["method"], r["rate"]): r for r in result.rows}
    assert tdds_run.data.metrics[METRIC_FINAL_ACC] == pytest.approx(grid_rows[(tdds_run.data.tags["tdds.label"], 0.5)]["final_acc"])
    read_back = rows_from_mlflow(mlflow_server, experiment)
    assert len(read_back) == 3

    # ---- the selected ids of (tdds, 0.5): MLflow artifact == the selection artifact in S3
    rid = tdds_run.info.run_id
    dl = Path(c.download_artifacts(rid, "selection", str(tmp_path / "mlflow-dl")))
    sel_uri = tdds_run.data.tags[TAG_SELECTION_URI]
    sel_key = sel_uri[len(f"s3://{BUCKET}/"):]
    manifest = json.loads(s3.get_object(Bucket=BUCKET, Key=f"{sel_key}/manifest.json")["Body"].read())
    assert json.loads((dl / "manifest.json").read_text()) == manifest
    for name in ("indices.npy", "ids.txt", "selected.csv"):
        in_s3 = s3.get_object(Bucket=BUCKET, Key=f"{sel_key}/{name}")["Body"].read()
        from_mlflow = (dl / name).read_bytes()
        assert sha(from_mlflow) == sha(in_s3) == manifest["files"][name]["sha256"], name
    assert tdds_run.data.tags[TAG_SELECTION_SHA256] == manifest["files"]["indices.npy"]["sha256"]
    ids = (dl / "ids.txt").read_text().split()
    assert len(ids) == len(np.load(dl / "indices.npy")) == manifest["num_selected"] == 150
    assert tdds_run.data.tags[TAG_ARTIFACT_URI].startswith(output + "/coreset/")
    # the MLflow artifacts themselves are in the S3 bucket behind the MLflow server
    ml_keys = snapshot(s3, MLFLOW_BUCKET, "mlartifacts/")
    assert any(rid in k and k.endswith("selection/indices.npy") for k in ml_keys)

    # ---- a rerun uploads nothing new and creates no duplicate runs for finished work
    before_art = snapshot(s3, BUCKET)
    before_ml = snapshot(s3, MLFLOW_BUCKET)
    run_ids = {r.info.run_id for r in runs}
    result2 = run_grid(cfg, pipeline_run_id="accept-2")
    assert [(r["method"], r["rate"], r["final_acc"]) for r in result2.rows] == \
        [(r["method"], r["rate"], r["final_acc"]) for r in result.rows]
    after_art = snapshot(s3, BUCKET)
    after_ml = snapshot(s3, MLFLOW_BUCKET)
    # every artifact (train, scores, selections, coreset, report) is untouched: same keys, ETags, times
    assert after_art == before_art
    # no run is created again: the parent run is keyed by the config and reused, like every stage run
    runs2 = c.search_runs([exp.experiment_id], max_results=1000)
    assert {r.info.run_id for r in runs2} == run_ids
    assert {r.info.run_id: r.info.status for r in runs2} == {r.info.run_id: "FINISHED" for r in runs}
    assert after_ml == before_ml

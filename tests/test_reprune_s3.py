"""tdds-reprune end to end with everything on S3: a ``manifest`` dataset (manifest and images in a
bucket of a real moto_server) that grows between two runs, the output root on S3 and tracking on a
real MLflow server. The MLflow ``reprune`` records show the id-by-id difference of the two
selections; a third run on the unchanged manifest trains nothing."""
from __future__ import annotations

import math
import os
import re
import uuid
from collections import Counter
from pathlib import Path

import pytest
from mlflow import MlflowClient

from fixtures_servers import FAKE_SECRET_KEY, s3_client
from helpers import make_manifest, upload_tree
from tdds_core.cli import main
from tdds_core.data.datasets import _stable_bucket
from tdds_core.reprune import read_dataset_ids, read_selection_ids
from helpers import EXECUTED as _EXEC

REPO = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.slow, pytest.mark.servers]
STAGES = ("train", "scores", "selections", "coreset", "report")   # the store's stage prefixes


def _keys(s3, bucket: str, prefix: str) -> list[str]:
    out = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        out.extend(o["Key"] for o in page.get("Contents", []) or [])
    return out


def test_reprune_on_a_growing_s3_manifest_with_s3_output(s3_server, mlflow_server, tmp_path, capfd, monkeypatch):
    s3 = s3_client(s3_server)
    bucket = f"pets-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    src = tmp_path / "src"
    classes = ("cat", "dog", "fox")
    first_rows = make_manifest(src, classes=classes, per_class=12, size=16)
    upload_tree(s3, src, bucket, "pets")

    cache, work = tmp_path / "cache", tmp_path / "work"
    work.mkdir()
    monkeypatch.setenv("TDDS_CACHE", str(cache))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(work)                      # a relative local output would land here
    output = f"s3://{bucket}/runs/pets"
    manifest_uri = f"s3://{bucket}/pets/manifest.csv"
    experiment = f"pets-s3-{uuid.uuid4().hex[:6]}"
    args = ["run", "--pipeline", "reprune", "--config", str(REPO / "configs" / "quickstart.yaml")]
    for o in (f"output={output}", "name=pets", "data.name=manifest", f"data.root={manifest_uri}", "data.image_size=16",
              "data.train_subset=null", "data.test_subset=null", "train.epochs=2", "train.progress=false",
              "methods=[{name: tdds, params: {T: 2, W: 2}}]", "selection.rates=[0.5]", "pipeline.retries=0",
              f"tracking.uri={mlflow_server}", f"tracking.experiment={experiment}"):
        args += ["--set", o]

    def run() -> str:
        rc = main(args)
        cap = capfd.readouterr()
        log = cap.out + cap.err
        assert rc == 0, log[-4000:]
        assert FAKE_SECRET_KEY not in log
        return log

    log1 = run()
    assert {"open-run", "train-full", "score", "coreset", "reprune"} <= set(_EXEC.findall(log1))

    # the dataset grows: new rows appended to the same manifest, their images uploaded
    new_rows = make_manifest(src, classes=classes, per_class=6, start=12, size=16)
    for r in new_rows:
        s3.upload_file(str(src / r["path"]), bucket, f"pets/{r['path']}")
    s3.upload_file(str(src / "manifest.csv"), bucket, "pets/manifest.csv")
    log2 = run()
    assert Counter(_EXEC.findall(log2))["train-full"] == 1      # a new fingerprint misses the KFP cache

    # ---- the MLflow reprune records (on the real MLflow server)
    client = MlflowClient(mlflow_server)
    exp = client.get_experiment_by_name(experiment)
    flt = "tags.`tdds.stage` = 'reprune'"
    runs = client.search_runs([exp.experiment_id], flt, order_by=["attributes.start_time ASC"])
    assert len(runs) == 2
    first, second = runs
    assert first.data.tags["tdds.dataset"] == second.data.tags["tdds.dataset"]
    assert first.data.tags["tdds.dataset"].startswith(f"manifest:{manifest_uri}")
    assert second.data.tags["tdds.previous_fingerprint"] == first.data.tags["tdds.fingerprint"] != \
        second.data.tags["tdds.fingerprint"]
    assert second.data.tags["tdds.previous_selection_uri"] == first.data.tags["tdds.selection_uri"]
    for r in runs:
        assert r.info.status == "FINISHED"
        assert r.data.tags["tdds.selection_uri"].startswith(f"{output}/selections/")
        assert r.data.tags["tdds.train_uri"].startswith(f"{output}/train/")

    universe1 = read_dataset_ids(first.data.tags["tdds.train_uri"])
    universe2 = read_dataset_ids(second.data.tags["tdds.train_uri"])
    train_ids = lambda rows: {r["id"] for r in rows if _stable_bucket(r["id"]) >= 10}   # noqa: E731 (default test_percent)
    assert set(universe1) == train_ids(first_rows)
    assert set(universe2) - set(universe1) == train_ids(new_rows) and set(universe1) <= set(universe2)
    prev_ids = read_selection_ids(first.data.tags["tdds.selection_uri"])
    cur_ids = read_selection_ids(second.data.tags["tdds.selection_uri"])
    assert len(prev_ids) == round(len(universe1) / 2) and len(cur_ids) == round(len(universe2) / 2)
    prev_set, cur_set = set(prev_ids), set(cur_ids)
    m1, m = first.data.metrics, second.data.metrics
    assert m1["has_previous"] == 0 and m1["added"] == len(prev_set) == m1["num_current"]
    assert m["has_previous"] == 1
    assert m["kept"] == len(prev_set & cur_set)
    assert m["dropped"] == len(prev_set - cur_set)
    assert m["added"] == len(cur_set - prev_set)
    assert m["added_unseen"] == len((cur_set - prev_set) - set(universe1)) == len(cur_set & train_ids(new_rows))
    assert m["num_previous"] == len(prev_set) and m["num_current"] == len(cur_set)
    assert math.isclose(m["jaccard"], len(prev_set & cur_set) / len(prev_set | cur_set))
    added = Path(client.download_artifacts(second.info.run_id, "reprune/added.txt", str(tmp_path))).read_text().split()
    assert set(added) == cur_set - prev_set
    parents = client.search_runs([exp.experiment_id], "tags.`tdds.stage` = 'pipeline'",
                                 order_by=["attributes.start_time ASC"])
    assert [p.info.status for p in parents] == ["FINISHED", "FINISHED"]
    assert second.data.tags["mlflow.parentRunId"] == parents[1].info.run_id

    # ---- every stage artifact is an S3 object under the output prefix, each with its manifest
    keys = _keys(s3, bucket, "runs/pets/")
    for stage in STAGES:
        under = [k for k in keys if k.startswith(f"runs/pets/{stage}/")]
        assert under, f"no {stage}/ artifact under {output}"
        assert any(k.endswith("/manifest.json") for k in under), stage
    assert {"runs/pets/report/table.md", "runs/pets/report/manifest.json"} <= set(keys)
    assert len([k for k in keys if k.startswith("runs/pets/reprune/") and k.endswith(".json")]) == 2   # history
    assert len({k.split("/")[3] for k in keys if k.startswith("runs/pets/train/")}) == 2   # one per version
    # nothing local but the cache: no output folder, no MLflow files, KFP's root under $TDDS_CACHE
    assert sorted(os.listdir(work)) == []
    assert not (REPO / "runs" / "pets").exists()
    [kfp_root] = (cache / "kfp").glob("pets-*")      # named by the store and tracker it caches work for
    assert (kfp_root / ".kfp_cache").is_dir() and list((kfp_root / ".kfp_cache").glob("*.json"))
    assert f"KFP outputs: {kfp_root}" in log2
    images = list((cache / "manifest").rglob("*.png"))
    assert len(images) == len(first_rows) + len(new_rows)                  # each image downloaded into one place

    # ---- an unchanged manifest: only the per-run tasks execute (training and scoring are cached)
    log3 = run()
    assert sorted(_EXEC.findall(log3)) == ["close-run", "open-run", "report", "reprune"]
    runs3 = client.search_runs([exp.experiment_id], flt, order_by=["attributes.start_time ASC"])
    assert [r.info.run_id for r in runs3] == [first.info.run_id, second.info.run_id]   # same record, reused
    assert sorted(os.listdir(work)) == []

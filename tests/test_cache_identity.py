"""A cache never outlives its artifacts: `tdds run` into the same ``s3://bucket/x`` on two S3 endpoints
(two real moto servers) with two MLflow stores. The second run must recreate every artifact and
run in its own store and tracker, and its table must come from what it reads back there; after a
prefix of that store is deleted, a third run recreates it instead of trusting the cache."""
from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest
from mlflow import MlflowClient

from fixtures_config import synthetic_settings
from fixtures_servers import s3_client
from tdds_core.cli import main
from helpers import EXECUTED as _EXEC

REPO = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.slow, pytest.mark.servers]
STAGES = ("train", "scores", "selections", "coreset", "report")
CFG = synthetic_settings("cachecheck", "[{name: random}, {name: tdds, params: {T: 2, W: 2}}]")


def _keys(s3, bucket: str) -> list[str]:
    return [o["Key"] for p in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
            for o in p.get("Contents", []) or []]


def _stages(db: Path) -> Counter:
    """Runs per work stage (each `tdds run` adds its own pipeline and report runs besides)."""
    client = MlflowClient(f"sqlite:///{db}")
    exp = client.get_experiment_by_name("tdds-synthetic")
    runs = client.search_runs([exp.experiment_id], max_results=500)
    return Counter(t for r in runs if (t := r.data.tags.get("tdds.stage")) not in ("pipeline", "report", "summary"))


def _table_rows(md: str) -> list[str]:
    return sorted({line for line in md.splitlines() if line.startswith("|") and ("random" in line or "tdds" in line)})


def test_a_cached_run_is_not_trusted_against_another_store_or_tracker(s3_server, own_moto, local_tracking, tmp_path,
                                                                     monkeypatch, capfd):
    endpoints = {"a": s3_server, "b": own_moto.url}
    for ep in endpoints.values():
        s3_client(ep).create_bucket(Bucket="bucket")
    monkeypatch.setenv("TDDS_CACHE", str(tmp_path / "cache"))     # one machine, one cache for both

    def run(which: str) -> str:
        monkeypatch.setenv("AWS_ENDPOINT_URL", endpoints[which])
        args = ["run", "--config", str(REPO / "configs" / "quickstart.yaml"), "--out", "s3://bucket/x"]
        for o in CFG + [f"tracking.uri=sqlite:///{tmp_path / which}.db"]:
            args += ["--set", o]
        rc = main(args)
        cap = capfd.readouterr()
        assert rc == 0, cap.out + cap.err
        return cap.out + cap.err

    log_a = run("a")
    keys_a = _keys(s3_client(endpoints["a"]), "bucket")
    log_b = run("b")
    keys_b = _keys(s3_client(endpoints["b"]), "bucket")
    # every stage ran again against the empty endpoint and wrote the same artifacts there
    executed = set(_EXEC.findall(log_b))
    assert {"train-full", "score", "select", "coreset", "report"} <= executed, executed
    for stage in STAGES:
        assert any(k.startswith(f"x/{stage}/") and k.endswith("manifest.json") for k in keys_b), stage
    assert sorted(k for k in keys_b if not k.startswith("x/experiment")) == \
        sorted(k for k in keys_a if not k.startswith("x/experiment"))
    # and logged every run into the new MLflow store
    stages_a, stages_b = _stages(tmp_path / "a.db"), _stages(tmp_path / "b.db")
    assert stages_b == stages_a and stages_b["coreset"] == 2 and stages_b["train-full"] == 1
    # the table is the one read back from the second store (the same numbers: CPU training is deterministic)
    md_b = s3_client(endpoints["b"]).get_object(Bucket="bucket", Key="x/report/table.md")["Body"].read().decode()
    assert _table_rows(md_b) and _table_rows(md_b) == _table_rows(log_a) == _table_rows(log_b)

    # a prefix deleted (or expired) behind the cache's back: the next run recreates it
    s3b = s3_client(endpoints["b"])
    gone = [k for k in keys_b if k.startswith("x/coreset/")]
    s3b.delete_objects(Bucket="bucket", Delete={"Objects": [{"Key": k} for k in gone]})
    log_c = run("b")
    assert "coreset" in _EXEC.findall(log_c)
    assert sorted(k for k in _keys(s3b, "bucket") if k.startswith("x/coreset/")) == sorted(gone)
    assert _stages(tmp_path / "b.db") == stages_b        # the runs were there: none added

    # nothing missing: the rerun is served from the cache (no training task executes)
    log_d = run("b")
    assert not {"train-full", "coreset"} & set(_EXEC.findall(log_d))

"""Workspace: the one place that decides where a run's things go (output root, store, local work
folders, tracking URI), for a local and an S3 output."""
from __future__ import annotations

from pathlib import Path

import pytest

from tdds_core.config import parse_config
from tdds_core.errors import ArtifactError
from tdds_core.io import write_manifest
from tdds_core.storage import LocalStore, S3Store, Workspace

S3_OUT = "s3://bucket/runs/x"


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("TDDS_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return tmp_path


def cfg(output: str, uri: str | None = None):
    return parse_config({"data": {"name": "synthetic"}, "model": {"arch": "small_cnn"}, "output": output,
                         "tracking": {"uri": uri}})


def test_local_root(env, monkeypatch):
    monkeypatch.chdir(env)
    ws = Workspace.of(cfg("out"))
    assert not ws.remote and ws.root == str(env / "out") and ws.output == "out"
    assert isinstance(ws.store, LocalStore) and ws.store is ws.store
    assert ws.uri("scores/a") == str(Path("out") / "scores/a")
    assert ws.work_dir("scores/a") == Path("out") / "scores/a"
    assert ws.mirror_uri("train/a") is None
    assert ws.report_dir() == Path("out") / "report"
    assert ws.pipeline_root("demo", "ctx") == Path("out") / "kfp" / "ctx"


def test_s3_root(env):
    ws = Workspace.of(cfg(S3_OUT))
    assert ws.remote and ws.root == S3_OUT and isinstance(ws.store, S3Store)
    assert ws.uri("scores/a") == S3_OUT + "/scores/a"
    assert ws.mirror_uri("train/a") == S3_OUT + "/train/a"
    work = ws.work_dir("scores/a")
    assert work.is_relative_to(env / "cache" / "work") and work.name == "a"
    assert ws.report_dir().parent == env / "cache" / "reports"
    assert ws.pipeline_root("demo", "ctx") == env / "cache" / "kfp" / "demo-ctx"


def test_s3_endpoint_comes_from_the_given_environment(env, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    here = Workspace.of(cfg(S3_OUT))
    there = Workspace.of(cfg(S3_OUT), environ={"AWS_ENDPOINT_URL": "http://minio:9000"})
    assert "127.0.0.1:9" in here.identity and "minio:9000" in there.identity


def test_tracking_uri_order(env, monkeypatch):
    local = Workspace.of(cfg(str(env / "out")))
    assert local.tracking_is_default
    assert local.tracking_uri == "sqlite:///" + str(env / "out" / "mlflow.db")
    assert local.artifact_location == (env / "out" / "mlartifacts").as_uri()
    remote = Workspace.of(cfg(S3_OUT))
    assert remote.tracking_uri == "sqlite:///" + str(env / "cache" / "mlflow.db")
    assert remote.artifact_location == S3_OUT + "/mlartifacts"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow:5000")
    assert local.tracking_uri == "http://mlflow:5000" and local.artifact_location is None
    assert Workspace.of(cfg(S3_OUT), environ={}).tracking_uri.startswith("sqlite:///")
    named = Workspace.of(cfg(str(env / "out"), f"sqlite:///{env}/t/m.db"))
    assert named.tracking_uri == f"sqlite:///{env}/t/m.db" and not named.tracking_is_default
    assert named.artifact_location == (env / "t" / "mlartifacts").as_uri()


def test_local_publish_and_existing(env):
    ws = Workspace(str(env / "out"))
    assert ws.existing("scores/a") is None
    with pytest.raises(ArtifactError):
        ws.fetch("scores/a")
    work = env / "elsewhere"
    work.mkdir()
    (work / "x.txt").write_text("1")
    write_manifest(work)
    assert ws.publish(work, "scores/a") is True
    assert ws.existing("scores/a") == Path(ws.uri("scores/a"))
    assert ws.publish(Path(ws.uri("scores/a")), "scores/a") is False     # the folder itself: nothing to do

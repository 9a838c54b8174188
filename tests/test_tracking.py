"""Tracking: MLflow with the SQLite default (no server) and a real `mlflow server` whose artifacts
live in a moto S3 server; dedup of finished runs; clear errors; no credential anywhere."""
from __future__ import annotations

import io
import json
import logging
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from fixtures_servers import FAKE_ACCESS_KEY, FAKE_SECRET_KEY, MLFLOW_BUCKET, free_port, s3_client
from tdds_core.config import parse_config
from tdds_core.errors import TrackingError
from tdds_core.io import atomic_save_npy, write_manifest
from tdds_core.names import (METRIC_BEST_ACC, METRIC_FINAL_ACC, STAGE_CORESET, STAGE_PIPELINE, TAG_ARCH,
                             TAG_CODE_VERSION, TAG_FINGERPRINT, TAG_KEY, TAG_METHOD, TAG_PARENT_RUN, TAG_PIPELINE_RUN,
                             TAG_RATE, TAG_SEED, TAG_SELECTION_SHA256, TAG_STAGE, format_rate, model_name, rate_text, run_name)
from tdds_core.tracking import (MAX_PARAM_VALUE_LENGTH, MlflowTracker, NullTracker, RunRecord, Tracker, flatten_params,
                                log_score_run, log_selection, make_tracker, run_key, tracker_identity)

FP = "fp0123456789abcdef0123456789abcdef0123456789abcdef"  # longer than MLflow's 36-char digest


def client_for(uri):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri)


def make_selection(folder: Path, n: int = 40, keep: int = 12, method: str = "tdds", rate: float = 0.7) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    scores = rng.standard_normal(n)
    order = np.argsort(-scores)[:keep]
    atomic_save_npy(folder / "indices.npy", order.astype(np.int64))
    atomic_save_npy(folder / "scores.npy", scores[order])
    w = (scores[order] - scores[order].min()) / (np.ptp(scores[order]) + 1e-12)
    atomic_save_npy(folder / "weights.npy", w.astype(np.float32))
    (folder / "ids.txt").write_text("\n".join(str(i) for i in order) + "\n")
    (folder / "selected.csv").write_text("id,index,label,score,weight\n" + "".join(
        f"{i},{i},{i % 3},{scores[i]:.6f},{w[j]:.6f}\n" for j, i in enumerate(order)))
    write_manifest(folder, method=method, params={}, rate=rate, class_balanced=False, fingerprint=FP,
                   num_samples=n, num_selected=keep)
    return folder


@pytest.fixture(scope="module")
def sqlite_setup(tmp_path_factory):
    """make_tracker with no tracking URI anywhere: the SQLite file under the output root."""
    out = tmp_path_factory.mktemp("out")
    mp = pytest.MonkeyPatch()
    mp.delenv("MLFLOW_TRACKING_URI", raising=False)
    cfg = parse_config({"name": "unit", "output": str(out), "data": {"name": "synthetic"}})
    tracker = make_tracker(cfg, str(out), pipeline_run_id="pr-unit-1")
    mp.undo()
    return tracker, out


@pytest.fixture
def sqlite_tracker(sqlite_setup):
    return sqlite_setup[0]


@pytest.fixture(scope="module")
def server_tracker(mlflow_server):
    return MlflowTracker(mlflow_server, f"tdds-server-{uuid.uuid4().hex[:6]}", default_tags={TAG_PIPELINE_RUN: "pr-s"})


# ------------------------------------------------------------------------------------ names and helpers
def test_names_and_keys():
    # issue #26: run names lead with label and rate; the stage closes them (but coreset's, the most runs)
    assert run_name(STAGE_CORESET, method="tdds[T=6,W=3]", rate=0.5, seed=0) == "tdds[T=6,W=3] p0.5 s0"
    assert run_name(STAGE_CORESET, method="tdds", rate=0.7, arch="resnet18", seed=42) == "tdds p0.7 resnet18 s42"
    assert run_name("evaluate", method="tdds", rate=0.7, arch="vgg", seed=1) == "tdds p0.7 vgg s1 (evaluate)"
    assert run_name("score", method="tdds") == "tdds (score)"
    assert run_name("train-full", seed=1) == "full s1 (train-full)"
    assert run_name(STAGE_PIPELINE, method="quickstart") == "quickstart"
    # the rate: one spelling for params, tags and names (rate_text); keys keep format_rate
    assert [rate_text(r) for r in (0.5, 0.7, 0.125, 0.3, None)] == ["0.5", "0.7", "0.125", "0.3", ""]
    assert format_rate(0.7) == "0.70" and format_rate(0.125) == "0.125" and format_rate(None) == ""
    assert model_name(STAGE_CORESET, "tdds[T=6,W=3,decay=0.9]", 0.5, 0) == "coreset-tdds-T-6-W-3-decay-0-9-p50-s0"
    assert model_name(STAGE_CORESET, "random", 0.125, 1) == "coreset-random-p12_5-s1"
    k1 = run_key("score/tdds", FP, {"T": 30, "W": 10})
    assert k1 == run_key("score/tdds", FP, {"W": 10, "T": 30}) != run_key("score/tdds", FP, {"T": 30, "W": 5})
    assert k1.startswith("score/tdds|fp0123456789|")


def test_flatten_params_nests_and_truncates():
    flat = flatten_params({"train": {"lr": 0.1, "epochs": 3}, "methods": [{"name": "tdds"}], "none": None,
                           "long": "x" * 10000, "empty": {}})
    assert flat["train.lr"] == "0.1" and flat["train.epochs"] == "3" and flat["none"] == "None"
    assert json.loads(flat["methods"]) == [{"name": "tdds"}]
    assert len(flat["long"]) == MAX_PARAM_VALUE_LENGTH and flat["long"].endswith("...")
    assert flat["empty"] == "{}"


def test_null_tracker_is_a_tracker():
    cfg = parse_config({"tracking": {"enabled": False}})
    t = make_tracker(cfg, "/nonexistent")
    assert isinstance(t, NullTracker) and isinstance(t, Tracker) and not t.enabled
    with t.start_run("pipeline/x") as parent:
        with t.start_run("score/tdds", key="k") as child:
            assert child.parent_id == parent.id and not child.reused
            t.log_params({"a": 1}); t.log_metrics({"m": 1.0}); t.set_tags({"x": "y"})
            assert log_score_run(t, np.arange(5.0), method="tdds")["score_max"] == 4.0
    assert t.find_finished_run("k") is None and t.active_run is None


# ------------------------------------------------------------------------------------ SQLite default
def test_sqlite_default_runs_params_metrics_children_and_inputs(sqlite_setup):
    tracker, out = sqlite_setup
    assert isinstance(tracker, MlflowTracker)
    assert tracker.tracking_uri == f"sqlite:///{out / 'mlflow.db'}" and (out / "mlflow.db").is_file()
    assert tracker.experiment_name == "tdds-synthetic"
    with tracker.start_run("pipeline/unit", tags={TAG_STAGE: STAGE_PIPELINE}) as parent:
        name = run_name(STAGE_CORESET, method="tdds", rate=0.7, arch="resnet18", seed=42)
        with tracker.start_run(name, tags={TAG_STAGE: STAGE_CORESET, TAG_METHOD: "tdds", TAG_RATE: rate_text(0.7),
                                           TAG_ARCH: "resnet18", TAG_SEED: 42, TAG_FINGERPRINT: FP}) as child:
            tracker.log_params({"train": {"lr": 0.1, "epochs": 2}, "note": "y" * 7000})
            for step, acc in enumerate([50.0, 61.5, 60.25]):
                tracker.log_metrics({"test_acc": acc}, step=step)
            tracker.log_metrics({METRIC_FINAL_ACC: 60.25, METRIC_BEST_ACC: 61.5})
            tracker.log_input_dataset("synthetic", FP, str(out / "data"), context="train")
            tracker.log_dict({"a": [1, 2]}, "config/resolved.json")
            assert tracker.active_run.id == child.id
        assert tracker.active_run.id == parent.id
    assert tracker.active_run is None
    c = client_for(tracker.tracking_uri)
    p, r = c.get_run(parent.id), c.get_run(child.id)
    assert p.info.status == r.info.status == "FINISHED"
    assert r.info.run_name == "tdds p0.7 resnet18 s42"
    assert r.data.tags[TAG_PARENT_RUN] == parent.id and TAG_PARENT_RUN not in p.data.tags
    assert r.data.tags[TAG_PIPELINE_RUN] == p.data.tags[TAG_PIPELINE_RUN] == "pr-unit-1"
    assert r.data.tags[TAG_CODE_VERSION].startswith("0.")
    assert r.data.tags[TAG_SEED] == "42" and r.data.tags[TAG_RATE] == "0.7"
    assert r.data.params["train.lr"] == "0.1" and len(r.data.params["note"]) == MAX_PARAM_VALUE_LENGTH
    assert r.data.metrics[METRIC_FINAL_ACC] == 60.25
    hist = c.get_metric_history(child.id, "test_acc")
    assert [(m.step, m.value) for m in sorted(hist, key=lambda m: m.step)] == [(0, 50.0), (1, 61.5), (2, 60.25)]
    (inp,) = r.inputs.dataset_inputs
    assert inp.dataset.name == "synthetic" and inp.dataset.digest == FP[:36]
    tags = {t.key: t.value for t in inp.tags}
    assert tags["mlflow.data.context"] == "train" and tags["tdds.digest"] == FP
    # artifacts of the SQLite default live under the output root
    exp = c.get_experiment(tracker.experiment_id)
    assert exp.artifact_location == (out / "mlartifacts").as_uri()
    local = c.download_artifacts(child.id, "config/resolved.json", str(out / "dl"))
    assert json.loads(Path(local).read_text()) == {"a": [1, 2]}
    assert (out / "mlartifacts").is_dir()


def test_failed_run_is_marked_failed_and_not_reused(sqlite_tracker):
    t = sqlite_tracker
    key = run_key("coreset/x/p0.50/resnet18/s1", FP, {"u": uuid.uuid4().hex})
    with pytest.raises(RuntimeError):
        with t.start_run("coreset/x/p0.50/resnet18/s1", key=key) as failed:
            raise RuntimeError("boom")
    c = client_for(t.tracking_uri)
    assert c.get_run(failed.id).info.status == "FAILED"
    assert t.find_finished_run(key) is None
    with t.start_run("coreset/x/p0.50/resnet18/s1", key=key) as ok:
        assert not ok.reused and ok.id != failed.id
        t.log_metrics({METRIC_FINAL_ACC: 70.0})
    assert t.find_finished_run(key) == ok.id
    with t.start_run("coreset/x/p0.50/resnet18/s1", key=key) as again:
        assert again.reused and again.id == ok.id
        t.log_metrics({METRIC_FINAL_ACC: 1.0})   # read-only: ignored
        t.log_params({"late": 1})
    runs = c.search_runs([t.experiment_id], filter_string=f"tags.`{TAG_KEY}` = '{key}'")
    assert sorted(r.info.status for r in runs) == ["FAILED", "FINISHED"]
    fin = c.get_run(ok.id)
    assert fin.data.metrics[METRIC_FINAL_ACC] == 70.0 and "late" not in fin.data.params
    assert fin.data.tags[TAG_KEY] == key


def test_param_change_and_misuse_are_clear_errors(sqlite_tracker):
    t = sqlite_tracker
    with pytest.raises(TrackingError, match="no active run"):
        t.log_metrics({"a": 1.0})
    with t.start_run("score/params-check"):
        t.log_params({"a": 1, "b": "x"})
        t.log_params({"a": 1})  # same value again: fine
        with pytest.raises(TrackingError, match=r"param 'a' .* is already '1', cannot set '2'.*immutable"):
            t.log_params({"a": 2})
        with pytest.raises(TrackingError, match="not a number"):
            t.log_metrics({"acc": "high"})
    with pytest.raises(TrackingError, match="invalid run key"):
        with t.start_run("x", key="it's"):
            pass


def test_log_score_run_and_log_selection(sqlite_setup, tmp_path):
    t, out = sqlite_setup
    n = 40
    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, size=(n, 1, 8, 8), dtype=np.uint8)
    labels = rng.integers(0, 3, size=n)
    scores = rng.standard_normal(n)
    scores[7] = 99.0
    sel = make_selection(tmp_path / "sel", n=n)
    with t.start_run("score/tdds", tags={TAG_STAGE: "score"}) as run:
        summary = log_score_run(t, scores, method="tdds", labels=labels, images=images,
                                class_names=["cat", "dog", "emu"], k=6)
        info = log_selection(t, sel, FP, dataset_name="synthetic")
    assert summary["score_max"] == 99.0
    c = client_for(t.tracking_uri)
    names = {a.path for a in c.list_artifacts(run.id, "scores")}
    assert names == {"scores/histogram.png", "scores/extremes.png"}
    for name in names:
        data = Path(c.download_artifacts(run.id, name, str(tmp_path / "dl"))).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 2000
    assert {a.path for a in c.list_artifacts(run.id, "selection")} == {
        f"selection/{f}" for f in ("indices.npy", "ids.txt", "selected.csv", "weights.npy", "manifest.json")}
    got = np.load(c.download_artifacts(run.id, "selection/indices.npy", str(tmp_path / "dl2")))
    assert got.tolist() == np.load(sel / "indices.npy").tolist()
    r = c.get_run(run.id)
    assert r.data.metrics["score_max"] == 99.0
    assert r.data.tags[TAG_SELECTION_SHA256] == info["sha256"]
    digests = {i.dataset.name: i.dataset.digest for i in r.inputs.dataset_inputs}
    assert digests == {"synthetic": FP[:36], "selection:tdds@p0.7": info["sha256"][:36]}
    with t.start_run("score/bad"):
        with pytest.raises(TrackingError, match="same length"):
            log_score_run(t, scores, method="x", labels=labels[:5], images=images)


# ------------------------------------------------------------------------------------ server + S3
@pytest.mark.slow
def test_server_artifacts_land_in_s3(server_tracker, s3_server, tmp_path):
    t = server_tracker
    payload = np.random.default_rng(5).bytes(300_000)
    (tmp_path / "blob.bin").write_bytes(payload)
    with t.start_run("train-full/resnet18/s42", tags={TAG_STAGE: "train-full"}) as run:
        t.log_artifact(tmp_path / "blob.bin", "model")
        t.log_metrics({METRIC_FINAL_ACC: 90.0})
    c = client_for(t.tracking_uri)
    assert [a.path for a in c.list_artifacts(run.id, "model")] == ["model/blob.bin"]
    back = Path(c.download_artifacts(run.id, "model/blob.bin", str(tmp_path / "dl"))).read_bytes()
    assert back == payload
    s3 = s3_client(s3_server)
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=MLFLOW_BUCKET, Prefix="mlartifacts/").get("Contents", [])]
    (key,) = [k for k in keys if run.id in k and k.endswith("model/blob.bin")]
    assert s3.get_object(Bucket=MLFLOW_BUCKET, Key=key)["Body"].read() == payload
    assert c.get_experiment(t.experiment_id).artifact_location.startswith("mlflow-artifacts:")


@pytest.mark.slow
def test_server_rerun_creates_no_duplicate_runs(server_tracker):
    t = server_tracker
    c = client_for(t.tracking_uri)
    tag = uuid.uuid4().hex[:8]

    def grid():
        done = []
        with t.start_run(f"pipeline/{tag}", key=f"pipeline|{tag}", tags={TAG_STAGE: STAGE_PIPELINE, "test.batch": tag}):
            for method in ("random", "tdds"):
                for rate in (0.3, 0.7):
                    name = run_name(STAGE_CORESET, method=method, rate=rate, arch="resnet18", seed=0)
                    with t.start_run(name, key=run_key(name, FP, {"tag": tag}), tags={"test.batch": tag}) as run:
                        if run.reused:
                            continue
                        t.log_metrics({METRIC_FINAL_ACC: 50 + rate})
                        done.append(name)
        return done

    assert len(grid()) == 4
    n1 = len(c.search_runs([t.experiment_id], filter_string=f"tags.`test.batch` = '{tag}'"))
    assert n1 == 5
    assert grid() == []
    n2 = len(c.search_runs([t.experiment_id], filter_string=f"tags.`test.batch` = '{tag}'"))
    assert n2 == n1


def test_unreachable_tracking_server_fails_fast():
    port = free_port()
    t0 = time.monotonic()
    with pytest.raises(TrackingError) as e:
        MlflowTracker(f"http://alice:s3cretpw@127.0.0.1:{port}", "x")
    elapsed = time.monotonic() - t0
    msg = str(e.value)
    assert elapsed < 15, elapsed
    assert f"http://127.0.0.1:{port}" in msg and "after 3 attempts" in msg and "MLFLOW_TRACKING_URI" in msg
    assert "s3cretpw" not in msg and "alice" not in msg
    cfg = parse_config({"tracking": {"uri": f"http://127.0.0.1:{port}"}})
    with pytest.raises(TrackingError, match="cannot reach the MLflow tracking server"):
        make_tracker(cfg, "/tmp/unused")


@pytest.mark.slow
def test_no_credential_in_params_tags_artifacts_or_logs(mlflow_server, s3_server_process, mlflow_server_process,
                                                       tmp_path, caplog, capfd, monkeypatch):
    import os

    assert os.environ["AWS_SECRET_ACCESS_KEY"] == FAKE_SECRET_KEY  # the session's fake secret is in the env
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    cfg = parse_config({"name": "credcheck", "output": str(tmp_path / "out"), "data": {"name": "synthetic"},
                        "tracking": {"experiment": f"cred-{uuid.uuid4().hex[:6]}"}})
    caplog.set_level(logging.DEBUG)
    tracker = make_tracker(cfg, cfg.output, pipeline_run_id="pr-cred")
    assert tracker.tracking_uri == mlflow_server
    sel = make_selection(tmp_path / "sel")
    with tracker.start_run("pipeline/credcheck") as parent:
        tracker.log_params(cfg.flat())
        tracker.log_dict(json.loads(cfg.to_json()), "config.json")
        with tracker.start_run("coreset/tdds/p0.70/resnet18/s0", tags={TAG_STAGE: STAGE_CORESET}):
            log_selection(tracker, sel, FP, dataset_name="synthetic")
            log_score_run(tracker, np.arange(40.0), method="tdds")
    c = client_for(mlflow_server)
    texts = []
    for run in c.search_runs([tracker.experiment_id]):
        texts.append(json.dumps(run.data.params) + json.dumps(run.data.tags) + run.info.artifact_uri)
        for i in run.inputs.dataset_inputs:
            texts.append(i.dataset.source + json.dumps([(t.key, t.value) for t in i.tags]))
        dl = Path(c.download_artifacts(run.info.run_id, "", str(tmp_path / "dl" / run.info.run_id)))
        for f in dl.rglob("*"):
            if f.is_file():
                texts.append(f.read_bytes().decode("latin-1"))
    assert len(texts) > 5
    out, err = capfd.readouterr()
    logs = [caplog.text, out, err, s3_server_process.log_path.read_text(errors="replace"),
            mlflow_server_process.log_path.read_text(errors="replace")]
    for blob in texts:
        assert FAKE_SECRET_KEY not in blob and FAKE_ACCESS_KEY not in blob
    for blob in logs:
        assert FAKE_SECRET_KEY not in blob
    assert parent.id in "".join(texts)


# ------------------------------------------------------------------------------------ read back, cross-process runs
@pytest.fixture
def fresh_tracker(tmp_path):
    """A tracker on its own SQLite file and experiment."""
    return MlflowTracker(f"sqlite:///{tmp_path / 'mlflow.db'}", f"find-{uuid.uuid4().hex[:6]}",
                         default_tags={TAG_PIPELINE_RUN: "pr-find"})


def test_find_runs_filters_by_tags_and_status(fresh_tracker):
    t = fresh_tracker
    with t.start_run("pipeline/f", tags={TAG_STAGE: STAGE_PIPELINE}) as parent:
        for i, (method, rate) in enumerate((("tdds", "0.70"), ("tdds", "0.30"), ("random", "0.70"))):
            with t.start_run(f"coreset/{method}/p{rate}", tags={TAG_STAGE: STAGE_CORESET, TAG_METHOD: method,
                                                                TAG_RATE: rate, TAG_SEED: i}):
                t.log_params({"i": i})
                t.log_metrics({METRIC_FINAL_ACC: 50.0 + i})
                t.log_metrics({METRIC_FINAL_ACC: 60.0 + i})   # the latest value is the one read back
        with pytest.raises(RuntimeError):
            with t.start_run("coreset/tdds/p0.70",
                             tags={TAG_STAGE: STAGE_CORESET, TAG_METHOD: "tdds", TAG_RATE: "0.70"}):
                raise RuntimeError("crash")
    running = t.create_run("coreset/tdds/p0.70", tags={TAG_STAGE: STAGE_CORESET, TAG_METHOD: "tdds", TAG_RATE: "0.70"})

    (r,) = t.find_runs(tags={TAG_STAGE: STAGE_CORESET, TAG_METHOD: "tdds", TAG_RATE: "0.70"}, status="FINISHED")
    assert isinstance(r, RunRecord)
    assert (r.name, r.status, r.parent_id) == ("coreset/tdds/p0.70", "FINISHED", parent.id)
    assert r.tags[TAG_SEED] == "0" and r.tags[TAG_PIPELINE_RUN] == "pr-find" and r.params == {"i": "0"}
    assert r.metrics == {METRIC_FINAL_ACC: 60.0} and r.start_time > 1_600_000_000_000
    tdds_70 = t.find_runs(tags={TAG_METHOD: "tdds", TAG_RATE: "0.70"})
    assert [x.status for x in tdds_70] == ["RUNNING", "FAILED", "FINISHED"]          # newest first
    assert [x.status for x in t.find_runs(tags={TAG_METHOD: "tdds", TAG_RATE: "0.70"}, order="oldest")] == [
        "FINISHED", "FAILED", "RUNNING"]
    assert [x.id for x in t.find_runs(tags={TAG_METHOD: "tdds"}, status="RUNNING")] == [running]
    assert [x.id for x in t.find_runs(status="FAILED")] == [tdds_70[1].id]
    assert len(t.find_runs()) == 6 and len(t.find_runs(max_results=2)) == 2
    assert len(t.find_runs(tags={TAG_STAGE: STAGE_CORESET}, status="FINISHED")) == 3
    assert t.find_runs(tags={TAG_METHOD: "el2n"}) == []
    assert t.get_run(r.id) == r
    # values MLflow's filter handles as they are
    with t.start_run("odd", tags={"test.path": "C:\\data\\pets 2%_x"}):
        pass
    assert len(t.find_runs(tags={"test.path": "C:\\data\\pets 2%_x"})) == 1
    assert t.find_runs(tags={"test.path": "C:\\data\\pets 2__x"}) == []       # no LIKE wildcards


def test_find_runs_refuses_quotes_and_bad_arguments(fresh_tracker):
    t = fresh_tracker
    with pytest.raises(TrackingError, match=r"tdds\.dataset=\"imagefolder:/data/o'brien\".*quote.*without quotes"):
        t.find_runs(tags={TAG_STAGE: "reprune", "tdds.dataset": "imagefolder:/data/o'brien"})
    with pytest.raises(TrackingError, match="quote"):
        t.find_runs(tags={TAG_METHOD: 'say "hi"'})
    with pytest.raises(TrackingError, match="tag name"):
        t.find_runs(tags={"a`b": "x"})
    with pytest.raises(TrackingError, match="run status 'DONE' .*FINISHED"):
        t.find_runs(status="DONE")
    with pytest.raises(TrackingError, match="order='newest'"):
        t.find_runs(order="latest")
    with pytest.raises(TrackingError, match="KILLED"):
        t.terminate(t.create_run("x"), "RUNNING")
    with pytest.raises(TrackingError, match="not found.*run id"):
        t.get_run("0123456789abcdef0123456789abcdef")
    with pytest.raises(TrackingError, match="invalid MLflow run id"):
        t.get_run("' or 1=1")


def test_find_runs_pages_through_results(fresh_tracker):
    t = fresh_tracker
    ids = [t.create_run(f"r{i}", tags={"test.page": "yes"}) for i in range(7)]
    t._page_size = 2     # the real page size is 1000; small pages make the test quick
    assert [r.id for r in t.find_runs(tags={"test.page": "yes"}, order="oldest", max_results=100)] == ids
    assert [r.id for r in t.find_runs(tags={"test.page": "yes"}, max_results=5)] == ids[::-1][:5]
    assert len(t.find_runs(tags={"test.page": "yes"}, max_results=2)) == 2


def test_create_attach_terminate_across_two_trackers(tmp_path, monkeypatch):
    """One process creates the pipeline's parent run, another logs into it and a third ends it
    (three trackers on the same SQLite file, one through a relative path)."""
    monkeypatch.chdir(tmp_path)
    exp = f"x-{uuid.uuid4().hex[:6]}"
    opener = MlflowTracker(f"sqlite:///{tmp_path / 'mlflow.db'}", exp, default_tags={TAG_PIPELINE_RUN: "pr-x"})
    rid = opener.create_run("pipeline/x", tags={TAG_STAGE: STAGE_PIPELINE, "none": None})
    assert opener.active_run is None
    worker = MlflowTracker("sqlite:///mlflow.db", exp)
    rec = worker.get_run(rid)
    assert (rec.status, rec.name, rec.parent_id) == ("RUNNING", "pipeline/x", None)
    assert rec.tags[TAG_PIPELINE_RUN] == "pr-x" and rec.tags[TAG_STAGE] == STAGE_PIPELINE and "none" not in rec.tags
    with worker.attach(rid) as handle:
        assert handle.id == rid and worker.active_run.id == rid
        worker.log_params({"a": 1})
        worker.log_metrics({"m": 2.0})
        worker.log_dict({"k": "v"}, "config.json")
        with worker.start_run("score/tdds") as child:
            assert child.parent_id == rid
    assert worker.active_run is None
    with pytest.raises(RuntimeError):
        with worker.attach(rid):
            raise RuntimeError("a step failed")
    assert opener.get_run(rid).status == "RUNNING"          # attach never ends the run
    sub = opener.create_run("reprune/x", parent=rid)
    assert worker.get_run(sub).parent_id == rid and worker.get_run(child.id).parent_id == rid
    closer = MlflowTracker(f"sqlite:///{tmp_path / 'mlflow.db'}", exp)
    closer.terminate(rid, "FAILED")
    done = worker.get_run(rid)
    assert done.status == "FAILED" and done.params == {"a": "1"} and done.metrics == {"m": 2.0}
    assert [r.id for r in closer.find_runs(tags={TAG_STAGE: STAGE_PIPELINE}, status="FAILED")] == [rid]
    other = MlflowTracker(f"sqlite:///{tmp_path / 'mlflow.db'}", exp + "-other")
    with pytest.raises(TrackingError, match="belongs to experiment"):
        with other.attach(rid):
            pass
    with pytest.raises(TrackingError, match="not found"):
        with worker.attach("0123456789abcdef0123456789abcdef"):
            pass


def test_has_finished_run(fresh_tracker):
    t = fresh_tracker
    key = run_key("score/hf", FP, {"u": uuid.uuid4().hex})
    assert not t.has_finished_run(key)
    with t.start_run("score/hf", key=key):
        assert not t.has_finished_run(key)
    assert t.has_finished_run(key) and t.find_finished_run(key) is not None


@pytest.mark.slow
def test_identity_names_store_and_experiment(tmp_path, monkeypatch, server_tracker, mlflow_server):
    (tmp_path / "a").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "a")
    monkeypatch.chdir(tmp_path)
    absolute = MlflowTracker(f"sqlite:///{tmp_path / 'a' / 'mlflow.db'}", "exp1")
    relative = MlflowTracker("sqlite:///a/mlflow.db", "exp1")
    dotted = MlflowTracker("sqlite:///./link/../a/mlflow.db", "exp1")
    via_link = MlflowTracker("sqlite:///link/mlflow.db", "exp1")
    want = f"sqlite:{(tmp_path / 'a' / 'mlflow.db').resolve()}#exp1"
    assert absolute.identity == relative.identity == dotted.identity == via_link.identity == want
    assert MlflowTracker("sqlite:///a/mlflow.db", "exp2").identity == want[:-1] + "2"
    assert MlflowTracker("sqlite:///b/mlflow.db", "exp1").identity != want
    assert server_tracker.identity == f"{mlflow_server.rstrip('/')}#{server_tracker.experiment_name}"
    assert MlflowTracker(mlflow_server + "/", server_tracker.experiment_name).identity == server_tracker.identity
    assert NullTracker().identity == "none"
    # without connecting (cache keys of a pipeline that has not started yet)
    assert tracker_identity("sqlite:///a/mlflow.db", "exp1") == want
    assert tracker_identity(mlflow_server, server_tracker.experiment_name) == server_tracker.identity
    assert tracker_identity("https://alice:s3cretpw@mlflow.example.org:8443/", "e") == "https://mlflow.example.org:8443#e"


def test_null_tracker_read_back_api():
    t = NullTracker()
    assert t.find_runs(tags={TAG_STAGE: "x"}, status="FINISHED") == [] and not t.has_finished_run("k")
    rid = t.create_run("pipeline/n", tags={TAG_STAGE: STAGE_PIPELINE})
    assert rid.startswith("null-") and t.get_run(rid).status == "RUNNING"
    with t.attach(rid) as run:
        assert run.id == rid and t.active_run.id == rid
        t.log_params({"a": 1})
        with t.start_run("child") as child:
            assert child.parent_id == rid
    assert t.active_run is None
    t.terminate(rid, "FINISHED")
    assert t.get_run(rid).status == "FINISHED"
    with pytest.raises(TrackingError, match="tracking is off"):
        t.get_run("abc")
    with pytest.raises(TrackingError, match="run status"):
        t.find_runs(status="done")


def test_mlflow_tracker_satisfies_the_protocol(fresh_tracker):
    assert isinstance(fresh_tracker, Tracker)
    names = ("find_runs", "get_run", "create_run", "attach", "terminate", "identity", "has_finished_run")
    assert all(n in Tracker.__dict__ for n in names)


PACKAGE = Path(__file__).resolve().parents[1] / "tdds_core"


def test_tracking_imports_no_matplotlib_and_report_reprune_use_no_client():
    import ast
    import subprocess
    import sys

    for name in ("report.py", "reprune.py"):
        tree = ast.parse((PACKAGE / name).read_text())
        assert not [n.lineno for n in ast.walk(tree) if isinstance(n, ast.Attribute) and n.attr == "client"], name
    code = ("import sys, tdds_core.tracking, tdds_core.report, tdds_core.reprune; "
            "print(sorted(m for m in ('mlflow', 'matplotlib') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_artifacts_of_a_named_sqlite_file_land_beside_it(tmp_path, monkeypatch):
    """MLflow's own default would be ./mlruns of wherever the command runs."""
    from tdds_core.config import parse_config

    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    db = tmp_path / "track" / "named.db"
    cfg = parse_config({"output": str(tmp_path / "out"), "tracking": {"uri": f"sqlite:///{db}"}})
    tracker = make_tracker(cfg, cfg.output)
    with tracker.start_run("x"):
        tracker.log_dict({"a": 1}, "a.json")
    assert (tmp_path / "track" / "mlartifacts").is_dir()
    assert not (work / "mlruns").exists()


@pytest.mark.slow
def test_processes_opening_a_new_sqlite_store_at_once_all_succeed(tmp_path):
    # two `tdds grid --methods ...` processes on one output open its new mlflow.db together: without
    # the lock both create the tables and one fails with "table experiments already exists"
    import subprocess
    import sys

    go = tmp_path / "go"
    code = ("import os, sys, time, mlflow, mlflow.store.tracking.sqlalchemy_store\n"
            "from tdds_core.tracking import MlflowTracker\n"
            f"while not os.path.exists({str(go)!r}): time.sleep(0.005)\n"
            f"t = MlflowTracker('sqlite:///{tmp_path}/mlflow.db', 'tdds-race')\n"
            "print(t.experiment_id)\n")
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(3)]
    import time

    time.sleep(8)          # every process has imported mlflow and waits at the line
    go.write_text("")
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-800:] for o in outs]
    assert len({o[0].strip() for o in outs}) == 1, "the processes ended up in different experiments"


@pytest.mark.slow
def test_model_table_description_and_system_metrics_land_in_the_run(tmp_path, monkeypatch):
    """log_model (pickled torch model, registered on request), log_table, set_description and
    system metrics, each read back from the SQLite store; MLflow's global URI is left as it was."""
    import mlflow.pytorch
    import torch

    from tdds_core.tracking import MlflowTracker

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9/not-this-one")
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    t = MlflowTracker(uri, "models", artifact_location=(tmp_path / "art").as_uri(), connect_retries=1)
    t.system_metrics_interval_s = 0.2
    model = torch.nn.Linear(3, 2)
    with t.start_run("coreset/x", system_metrics=True) as run:
        model_uri = t.log_model(model, registered_name="tdds-full")
        t.log_table({"class": [0, 1], "acc": [90.0, 80.5]}, "per_class_acc.json")
        t.set_description("## hello\n" + "x" * 9000)
        with pytest.raises(TrackingError, match="different lengths"):
            t.log_table({"a": [1, 2], "b": [1]}, "bad.json")
        time.sleep(1.5)
    import os

    assert os.environ["MLFLOW_TRACKING_URI"] == "http://127.0.0.1:9/not-this-one"
    client = client_for(uri)
    got = client.get_run(run.id)
    assert any(k.startswith("system/") for k in got.data.metrics), sorted(got.data.metrics)
    note = got.data.tags["mlflow.note.content"]
    assert note.startswith("## hello") and len(note) <= 8000
    models = client.search_logged_models([t.experiment_id])
    assert [m.source_run_id for m in models] == [run.id]
    assert [int(v.version) for v in client.search_model_versions("name='tdds-full'")] == [1]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    loaded = mlflow.pytorch.load_model(model_uri)
    x = torch.randn(4, 3)
    assert torch.equal(loaded(x), model(x))
    table = json.loads(Path(client.download_artifacts(run.id, "per_class_acc.json", str(tmp_path))).read_text())
    assert table == {"columns": ["class", "acc"], "data": [[0, 90.0], [1, 80.5]]}

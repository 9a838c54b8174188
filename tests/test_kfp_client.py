"""The KFP client side (pipelines/client.py, `tdds schedule`) against a stand-in of the KFP v2beta1
API on 127.0.0.1, driven by the real kfp.Client: namespaced look-ups, a schedule replaced per name,
--list and --delete, a token file read again per request, a cancelled run ending the wait."""
from __future__ import annotations

import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from fixtures_http import read_request, send_json
from pipelines.run import schedule, schedules, unschedule, wait_for_run
from tdds_core.cli import main
from tdds_core.config import load_config
from tdds_core.errors import PipelineError

REPO = Path(__file__).resolve().parents[1]
CLUSTER = ["output=s3://tdds-bucket/runs/quickstart", "tracking.uri=http://mlflow.mlflow.svc:5000",
           "data.root=/datasets/fashion-mnist", "pipeline.data_volume={pvc_name: tdds-datasets, mount_path: /datasets}",
           "pipeline.image=registry.example.com/ml/tdds:9.9.9", "pipeline.gpu_image=registry.example.com/ml/tdds-cuda:9.9.9"]


def _cfg(*extra: str):
    return load_config(REPO / "configs" / "quickstart.yaml", [*CLUSTER, *extra])


class _Kfp(BaseHTTPRequestHandler):
    """The v2beta1 endpoints kfp.Client calls for tdds: healthz, pipelines (namespaced list, upload),
    versions, experiments, recurring runs (create, list, delete) and runs (get). ``state`` records
    every call with its Authorization header."""

    state: dict

    def _reply(self, body: dict, code: int = 200) -> None:
        send_json(self, code, body)

    def _handle(self):
        body, url, q = read_request(self)
        st, path = self.state, url.path
        st["calls"].append((self.command, path, q, self.headers.get("Authorization")))
        wanted = json.loads(q["filter"])["predicates"][0]["stringValue"] if q.get("filter") else None
        ns = q.get("namespace")
        if path == "/apis/v2beta1/healthz":
            return self._reply({"tag_name": "2.5.0", "multi_user": True})
        if path == "/apis/v2beta1/pipelines" and self.command == "GET":
            return self._reply({"pipelines": [p for p in st["pipelines"] if p["display_name"] == wanted
                                              and p.get("namespace") == ns]})
        if path == "/apis/v2beta1/pipelines/upload":
            if any(p["display_name"] == q["name"] and p.get("namespace") == ns for p in st["pipelines"]):
                return self._reply({"message": "pipeline name already exists"}, 409)
            p = {"pipeline_id": f"p{len(st['pipelines']) + 1}", "display_name": q["name"], "namespace": ns}
            st["pipelines"].append(p)
            st["versions"].append({"pipeline_id": p["pipeline_id"], "pipeline_version_id": f"v{len(st['versions']) + 1}",
                                   "display_name": q["name"]})
            return self._reply(p)
        if path.startswith("/apis/v2beta1/pipelines/") and path.endswith("/versions"):
            pid = path.split("/")[4]
            return self._reply({"pipeline_versions": [v for v in st["versions"] if v["pipeline_id"] == pid
                                                      and v["display_name"] == wanted]})
        if path == "/apis/v2beta1/pipelines/upload_version":
            v = {"pipeline_id": q["pipelineid"], "pipeline_version_id": f"v{len(st['versions']) + 1}", "display_name": q["name"]}
            st["versions"].append(v)
            return self._reply(v)
        if path == "/apis/v2beta1/experiments":
            if self.command == "GET":
                return self._reply({"experiments": [{"experiment_id": "e1", "display_name": wanted, "namespace": ns}]})
            return self._reply({"experiment_id": "e1", "display_name": json.loads(body)["display_name"]})
        if path == "/apis/v2beta1/recurringruns" and self.command == "POST":
            run = {**json.loads(body), "recurring_run_id": f"r{st['next']}", "status": "ENABLED"}
            st["next"] += 1
            st["recurring"].append(run)
            return self._reply(run)
        if path == "/apis/v2beta1/recurringruns" and self.command == "GET":
            found = [r for r in st["recurring"] if wanted is None or r["display_name"] == wanted]
            # the JSON name kfp_server_api's V2beta1ListRecurringRunsResponse reads (attribute_map)
            return self._reply({"recurringRuns": found, "total_size": len(found)})
        if path.startswith("/apis/v2beta1/recurringruns/") and self.command == "DELETE":
            rid = path.rsplit("/", 1)[1]
            st["recurring"] = [r for r in st["recurring"] if r["recurring_run_id"] != rid]
            return self._reply({})
        if path.startswith("/apis/v2beta1/runs/") and self.command == "GET":
            rid = path.rsplit("/", 1)[1]
            states = st["runs"][rid]
            return self._reply({"run_id": rid, "state": states.pop(0) if len(states) > 1 else states[0]})
        return self._reply({"message": f"unexpected {self.command} {path}"}, 404)

    do_GET = do_POST = do_DELETE = _handle

    def log_message(self, *args):
        pass


@pytest.fixture()
def kfp_api():
    state = {"calls": [], "pipelines": [], "versions": [], "recurring": [], "runs": {}, "next": 1}
    srv = ThreadingHTTPServer(("127.0.0.1", 0), type("K", (_Kfp,), {"state": state}))
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}", state
    srv.shutdown()
    srv.server_close()


@pytest.mark.slow
def test_schedule_is_idempotent_per_name_and_namespaced(kfp_api, monkeypatch):
    host, st = kfp_api
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    # another profile's pipeline of the same name must not be found (nor conflict on upload)
    st["pipelines"].append({"pipeline_id": "p-other", "display_name": "tdds-reprune-quickstart", "namespace": "team-b"})
    first = schedule(_cfg(), host, "0 3 * * *", namespace="team-a", token="t")
    second = schedule(_cfg(), host, "0 4 * * *", namespace="team-a", token="t")
    assert first != second
    assert [(r["recurring_run_id"], r["display_name"], r["trigger"]["cron_schedule"]["cron"]) for r in st["recurring"]] == [
        (second, "quickstart-reprune", "0 0 4 * * *")]                      # replaced, not added
    ours = [p for p in st["pipelines"] if p.get("namespace") == "team-a"]
    assert len(ours) == 1 and ours[0]["pipeline_id"] != "p-other"
    assert st["recurring"][0]["pipeline_version_reference"]["pipeline_id"] == ours[0]["pipeline_id"]
    lookups = [q for m, p, q, _ in st["calls"] if m == "GET" and p == "/apis/v2beta1/pipelines"]
    assert lookups and all(q.get("namespace") == "team-a" for q in lookups)
    uploads = [p for m, p, _, _ in st["calls"] if p == "/apis/v2beta1/pipelines/upload"]
    assert len(uploads) == 1                                                 # the second call found it
    # another name adds a schedule beside it
    schedule(_cfg(), host, "0 5 * * *", name="nightly", namespace="team-a", token="t")
    assert sorted(r["display_name"] for r in st["recurring"]) == ["nightly", "quickstart-reprune"]


@pytest.mark.slow
def test_schedule_list_and_delete_from_the_cli(kfp_api, capsys):
    host, st = kfp_api
    st["recurring"] += [{"recurring_run_id": "r7", "display_name": "nightly", "status": "ENABLED",
                         "trigger": {"cron_schedule": {"cron": "0 0 3 * * *"}}},
                        {"recurring_run_id": "r8", "display_name": "weekly", "status": "ENABLED"}]
    base = ["schedule", "--host", host, "--namespace", "team-a", "--token", "t"]
    assert main([*base, "--list"]) == 0
    out = capsys.readouterr().out
    assert "nightly\t0 0 3 * * *\tENABLED\tr7" in out and "weekly" in out and "2 recurring run(s)" in out
    assert main([*base, "--delete", "nightly"]) == 0
    assert "deleted recurring run 'nightly' (r7)" in capsys.readouterr().out
    assert [r["recurring_run_id"] for r in st["recurring"]] == ["r8"]
    assert ("DELETE", "/apis/v2beta1/recurringruns/r7") in [(m, p) for m, p, _, _ in st["calls"]]
    assert main([*base, "--delete", "nightly"]) == 2
    assert "no recurring run named 'nightly'" in capsys.readouterr().err
    assert [r["name"] for r in schedules(host, namespace="team-a", token="t")] == ["weekly"]
    assert unschedule(host, "weekly", namespace="team-a", token="t") == ["r8"]
    assert main(["schedule", "--host", host, "--namespace", "team-a"]) == 2     # nothing to create from
    assert "needs --config and --cron" in capsys.readouterr().err


def test_the_token_file_is_read_again_on_every_request(kfp_api, tmp_path, monkeypatch):
    host, st = kfp_api
    token = tmp_path / "token"
    token.write_text("first\n")
    monkeypatch.setenv("KF_PIPELINES_SA_TOKEN_PATH", str(token))
    monkeypatch.delenv("KF_PIPELINES_TOKEN", raising=False)
    st["runs"]["run1"] = ["RUNNING", "RUNNING", "SUCCEEDED"]
    original = _Kfp._handle

    def rotate(self):   # the kubelet renews the projected token while the wait goes on
        if self.path.startswith("/apis/v2beta1/runs/"):    # before the answer: the next request must see it
            (tmp_path / "token.new").write_text("second\n")   # as the kubelet does: a new file swapped in whole
            os.replace(tmp_path / "token.new", token)
        original(self)

    monkeypatch.setattr(_Kfp, "_handle", rotate)
    monkeypatch.setattr(_Kfp, "do_GET", rotate)
    assert wait_for_run(host, "run1", namespace="team-a", poll_s=0) == "SUCCEEDED"
    auths = [a for m, p, _, a in st["calls"] if p.startswith("/apis/v2beta1/runs/")]
    assert auths[0] == "Bearer first" and set(auths[1:]) == {"Bearer second"}


def test_a_cancelled_run_ends_the_wait(kfp_api):
    host, st = kfp_api
    st["runs"]["gone"] = ["RUNNING", "CANCELING"]
    with pytest.raises(PipelineError, match="KFP run gone at .* was cancelled \\(CANCELING\\)"):
        wait_for_run(host, "gone", namespace="team-a", token="t", poll_s=0, timeout_s=60)
    st["runs"]["stopped"] = ["CANCELED"]
    with pytest.raises(PipelineError, match="was cancelled \\(CANCELED\\)"):
        wait_for_run(host, "stopped", namespace="team-a", token="t", poll_s=0, timeout_s=60)
    st["runs"]["slow"] = ["RUNNING"]
    with pytest.raises(PipelineError, match="did not finish within 0 s \\(state RUNNING\\)"):
        wait_for_run(host, "slow", namespace="team-a", token="t", poll_s=0, timeout_s=0)

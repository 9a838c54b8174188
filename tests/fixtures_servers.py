"""Real servers on 127.0.0.1 for the storage/tracking tests (moto_server for S3, `mlflow server`), and
the MLflow stores.

Session-scoped fixtures (each server starts once per test session and stops at the end):

* ``s3_server`` -> endpoint URL of a moto_server; while it lives the environment holds fake AWS
  credentials (``FAKE_ACCESS_KEY`` / ``FAKE_SECRET_KEY``), ``AWS_DEFAULT_REGION=us-east-1`` and
  ``AWS_ENDPOINT_URL`` pointing at it, so boto3 clients (ours and the library's) talk to it.
* ``mlflow_server`` -> tracking URL of ``mlflow server --backend-store-uri sqlite:///...
  --serve-artifacts --artifacts-destination s3://MLFLOW_BUCKET/mlartifacts`` whose artifacts land in
  the moto server (``MLFLOW_S3_ENDPOINT_URL``).

Per-test fixtures:

* ``own_moto`` -> a moto_server of the test's own (a :class:`ServerProcess`; a test may stop it).
* ``auth_moto`` -> ``(server, key)``: an own moto_server with IAM authentication on, bucket
  ``secured`` and a user allowed ``s3:*`` whose access key is ``key`` (``AccessKeyId``,
  ``SecretAccessKey``); see :func:`start_moto_with_auth`.
* ``local_tracking`` -> :func:`sqlite_uri`, with ``MLFLOW_TRACKING_URI`` unset: runs track to the
  default store, the SQLite file ``mlflow.db`` under the output root.

Helpers for tests that need servers of their own: :func:`start_moto`, :func:`start_mlflow`,
:func:`free_port`, :func:`s3_client`, and :class:`TcpRelay` (a TCP forwarder that can cut the line
after N bytes, to make a server vanish mid-transfer while it keeps what it received).
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import pytest

BIN = Path(sys.executable).parent
FAKE_ACCESS_KEY = "AKIATDDSTESTFAKE0001"
# distinctive so a test can grep every log, param, tag and artifact for it
FAKE_SECRET_KEY = "tddsFAKEsecret-NeverLogMe-9f3c2a71"
MLFLOW_BUCKET = "tdds-mlflow"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class ServerProcess:
    name: str
    url: str
    proc: subprocess.Popen
    log_path: Path
    _log_file: object = field(default=None, repr=False)

    def log_tail(self, n: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server and its children (it runs in its own process group)."""
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(OSError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None


def _wait_http(server: ServerProcess, path: str, deadline_s: float) -> None:
    url = server.url.rstrip("/") + path
    end = time.monotonic() + deadline_s
    last = ""
    while time.monotonic() < end:
        if not server.alive():
            break
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status < 500:
                    return
        except urllib.error.HTTPError as e:
            if e.code < 500:
                return
            last = f"HTTP {e.code}"
        except (urllib.error.URLError, OSError) as e:
            last = str(e)
        time.sleep(0.25)
    rc = server.proc.poll()
    server.stop()
    raise RuntimeError(
        f"{server.name} at {server.url} did not answer {path} within {deadline_s:.0f}s "
        f"(exit code {rc}, last error {last!r}); its log:\n{server.log_tail()}"
    )


def _spawn(name: str, cmd: list[str], url: str, log_path: Path, env: dict, health: str, deadline_s: float) -> ServerProcess:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    logf = open(log_path, "wb")
    proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, env=env, start_new_session=True,
                            cwd=str(log_path.parent))
    server = ServerProcess(name, url, proc, log_path, logf)
    _wait_http(server, health, deadline_s)
    return server


def _aws_env(endpoint: Optional[str] = None) -> dict:
    env = dict(os.environ)
    for k in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3", "AWS_SHARED_CREDENTIALS_FILE"):
        env.pop(k, None)
    env.update(AWS_ACCESS_KEY_ID=FAKE_ACCESS_KEY, AWS_SECRET_ACCESS_KEY=FAKE_SECRET_KEY, AWS_DEFAULT_REGION="us-east-1",
               AWS_CONFIG_FILE=os.devnull, PYTHONUNBUFFERED="1")
    if endpoint:
        env["AWS_ENDPOINT_URL"] = endpoint
    return env


def start_moto(workdir: Path, *, port: Optional[int] = None, env: Optional[dict] = None,
               deadline_s: float = 30.0) -> ServerProcess:
    """Start ``moto_server -H 127.0.0.1 -p PORT`` (a free port by default); wait until it answers."""
    port = port or free_port()
    url = f"http://127.0.0.1:{port}"
    exe = BIN / "moto_server"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "moto.server"]
    cmd += ["-H", "127.0.0.1", "-p", str(port)]
    return _spawn("moto_server", cmd, url, Path(workdir) / f"moto-{port}.log", env or _aws_env(), "/moto-api/", deadline_s)


def s3_client(endpoint: str, *, access_key: str = FAKE_ACCESS_KEY, secret_key: str = FAKE_SECRET_KEY):
    import boto3
    from botocore.config import Config

    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id=access_key,
                        aws_secret_access_key=secret_key,
                        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 2}))


def start_mlflow(workdir: Path, s3_endpoint: str, *, bucket: str = MLFLOW_BUCKET, port: Optional[int] = None,
                 deadline_s: float = 180.0) -> ServerProcess:
    """Start a real ``mlflow server`` (SQLite backend, artifacts proxied to ``s3://bucket/mlartifacts``
    in the S3 server at ``s3_endpoint``)."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    url = f"http://127.0.0.1:{port}"
    exe = BIN / "mlflow"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "mlflow"]
    cmd += [
        "server", "--backend-store-uri", f"sqlite:///{workdir / 'mlflow-server.db'}",
        "--serve-artifacts", "--artifacts-destination", f"s3://{bucket}/mlartifacts",
        "--workers", "1", "--host", "127.0.0.1", "--port", str(port),
        "--allowed-hosts", f"127.0.0.1:{port},localhost:{port},127.0.0.1,localhost",
    ]
    env = _aws_env()
    env.pop("AWS_ENDPOINT_URL", None)
    env.update(MLFLOW_S3_ENDPOINT_URL=s3_endpoint, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
    env.pop("MLFLOW_TRACKING_URI", None)
    return _spawn("mlflow server", cmd, url, workdir / f"mlflow-{port}.log", env, "/health", deadline_s)


@pytest.fixture(scope="session")
def s3_server_process(tmp_path_factory):
    """The session-wide moto_server (a :class:`ServerProcess`); sets fake AWS credentials,
    ``AWS_DEFAULT_REGION`` and ``AWS_ENDPOINT_URL`` in the environment while it lives."""
    server = start_moto(tmp_path_factory.mktemp("moto"))
    mp = pytest.MonkeyPatch()
    for k in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3", "AWS_SHARED_CREDENTIALS_FILE"):
        mp.delenv(k, raising=False)
    for k, v in _aws_env(server.url).items():
        if k.startswith("AWS_"):
            mp.setenv(k, v)
    try:
        yield server
    finally:
        mp.undo()
        server.stop()


@pytest.fixture(scope="session")
def s3_server(s3_server_process) -> str:
    """Endpoint URL of the session-wide moto_server (see ``s3_server_process``)."""
    return s3_server_process.url


@pytest.fixture(scope="session")
def mlflow_server_process(s3_server, tmp_path_factory):
    """The session-wide ``mlflow server`` (a :class:`ServerProcess`), artifacts in the moto server."""
    client = s3_client(s3_server)
    try:
        client.create_bucket(Bucket=MLFLOW_BUCKET)
    except client.exceptions.BucketAlreadyOwnedByYou:
        pass
    server = start_mlflow(tmp_path_factory.mktemp("mlflow-server"), s3_server)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def mlflow_server(mlflow_server_process) -> str:
    """Tracking URL of the session-wide ``mlflow server``."""
    return mlflow_server_process.url


def start_moto_with_auth(workdir: Path) -> tuple[ServerProcess, dict]:
    """A moto_server with IAM authentication on (``/moto-api/reset-auth``, server-wide, hence its own
    server), bucket ``secured`` and a user ``tdds`` allowed ``s3:*``. Returns the server and the user's
    access key (``AccessKeyId``, ``SecretAccessKey``); the caller stops the server."""
    import boto3

    server = start_moto(workdir)
    try:
        iam = boto3.client("iam", endpoint_url=server.url, region_name="us-east-1",
                           aws_access_key_id="AKIASETUP", aws_secret_access_key="setup")
        s3_client(server.url).create_bucket(Bucket="secured")
        iam.create_user(UserName="tdds")
        iam.put_user_policy(UserName="tdds", PolicyName="s3", PolicyDocument=json.dumps({
            "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}))
        key = iam.create_access_key(UserName="tdds")["AccessKey"]
        req = urllib.request.Request(server.url + "/moto-api/reset-auth", data=b"0", method="POST",
                                     headers={"Content-Type": "text/plain"})
        assert json.loads(urllib.request.urlopen(req).read())["status"] == "ok"
    except BaseException:
        server.stop()
        raise
    return server, key


@pytest.fixture
def own_moto(tmp_path):
    """A moto_server of this test's own (a :class:`ServerProcess`), stopped at the end."""
    server = start_moto(tmp_path / "own-moto")
    yield server
    server.stop()


@pytest.fixture
def auth_moto(tmp_path):
    """``(server, key)`` from :func:`start_moto_with_auth`, stopped at the end."""
    server, key = start_moto_with_auth(tmp_path / "auth-moto")
    yield server, key
    server.stop()


def sqlite_uri(output: Path) -> str:
    """The default MLflow store of an output root: the SQLite file ``<output>/mlflow.db``."""
    return f"sqlite:///{Path(output) / 'mlflow.db'}"


@pytest.fixture
def local_tracking(monkeypatch):
    """``MLFLOW_TRACKING_URI`` unset, so runs track to their output root's SQLite file; returns
    :func:`sqlite_uri`."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return sqlite_uri


class TcpRelay:
    """Forward 127.0.0.1:<port> to 127.0.0.1:<target_port> in threads.

    ``cut_after_bytes``: once that many client->server bytes went through, every connection is closed
    and the listening socket too (new connections are refused): the server is gone for the client,
    but it keeps what it received. ``stop()`` does the same at any time.
    """

    def __init__(self, target_port: int, *, cut_after_bytes: Optional[int] = None):
        self.target_port = target_port
        self.cut_after_bytes = cut_after_bytes
        self.forwarded = 0
        self.cut = threading.Event()
        self._lock = threading.Lock()
        self._conns: list[socket.socket] = []
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self.port = self._listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self.cut.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns += [client, upstream]
            threading.Thread(target=self._pipe, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, False), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, upstream: bool) -> None:
        try:
            while not self.cut.is_set():
                data = src.recv(65536)
                if not data:
                    break
                if upstream and self.cut_after_bytes is not None:
                    with self._lock:
                        room = self.cut_after_bytes - self.forwarded
                        self.forwarded += len(data)
                    if room <= len(data):
                        if room > 0:
                            dst.sendall(data[:room])
                        self.stop()
                        return
                elif upstream:
                    with self._lock:
                        self.forwarded += len(data)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def stop(self) -> None:
        self.cut.set()
        try:
            self._listener.close()
        except OSError:
            pass
        with self._lock:
            conns, self._conns = self._conns, []
        for s in conns:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

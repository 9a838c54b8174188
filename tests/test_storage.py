"""Storage: local folder and S3 (a real moto_server over HTTP) behind one interface."""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import numpy as np
import pytest

from fixtures_servers import FAKE_SECRET_KEY, TcpRelay, s3_client, start_moto
from tdds_core.errors import ArtifactError, StorageError
from tdds_core.io import MANIFEST, read_manifest, sha256_file, write_manifest
from tdds_core.storage import (LocalStore, S3Store, artifact_key, is_complete, local_copy, open_store, parent_and_key, split_uri,
                               staged_output, validate_key)

BUCKET = "tdds-store-tests"


def make_artifact(folder: Path, *, big: int = 0, n_small: int = 2, manifest: bool = True, **meta) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n_small):
        (folder / f"small_{i}.bin").write_bytes(rng.bytes(1000 + i))
    (folder / "sub").mkdir(exist_ok=True)
    (folder / "sub" / "ids.txt").write_text("\n".join(f"id{i}" for i in range(50)) + "\n")
    np.save(folder / "scores.npy", rng.standard_normal(100))
    if big:
        (folder / "big.bin").write_bytes(rng.bytes(big))
    if manifest:
        write_manifest(folder, format="test/1", **meta)
    return folder


def same_tree(a: Path, b: Path) -> None:
    fa = sorted(p.relative_to(a).as_posix() for p in a.rglob("*") if p.is_file())
    fb = sorted(p.relative_to(b).as_posix() for p in b.rglob("*") if p.is_file())
    assert fa == fb
    for name in fa:
        assert sha256_file(a / name) == sha256_file(b / name), name


@pytest.fixture(scope="module")
def bucket(s3_server):
    c = s3_client(s3_server)
    try:
        c.create_bucket(Bucket=BUCKET)
    except c.exceptions.BucketAlreadyOwnedByYou:
        pass
    return BUCKET


@pytest.fixture
def cache(tmp_path, monkeypatch):
    d = tmp_path / "cache"
    monkeypatch.setenv("TDDS_CACHE", str(d))
    return d


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path):
    """A fresh store of each kind (S3: a new prefix in the moto bucket)."""
    if request.param == "local":
        return open_store(str(tmp_path / "store"))
    request.getfixturevalue("bucket")
    return open_store(f"s3://{BUCKET}/t-{uuid.uuid4().hex[:8]}")


# ------------------------------------------------------------------------------------ both backends
def test_import_does_not_load_boto3():
    code = "import sys, tdds_core.storage, tdds_core.tracking, tdds_core.report; " \
           "bad = [m for m in ('boto3', 'botocore', 'mlflow', 'matplotlib') if m in sys.modules]; print(bad); " \
           "sys.exit(1 if bad else 0)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_round_trip_files_and_bytes(store, tmp_path):
    src = tmp_path / "one.bin"
    src.write_bytes(b"\x00\x01hello" * 100)
    store.put_file(src, "a/b/one.bin")
    store.put_bytes("a/c.json", b'{"x": 1}')
    assert store.exists("a/b/one.bin") and store.exists("a/c.json")
    assert not store.exists("a/b/missing.bin")
    assert store.get_bytes("a/c.json") == b'{"x": 1}'
    out = store.get_file("a/b/one.bin", tmp_path / "dl" / "one.bin")
    assert out.read_bytes() == src.read_bytes()
    assert store.list("a") == ["a/b/one.bin", "a/c.json"]
    assert store.list("a/b") == ["a/b/one.bin"]
    assert store.list("a/") == ["a/b/one.bin", "a/c.json"]
    assert store.list("nothing") == []
    # "a" must not match keys of a sibling that merely starts with "a"
    store.put_bytes("ab/x", b"1")
    assert "ab/x" not in store.list("a")
    assert store.join("a", "b") == store.uri.rstrip("/") + "/a/b"
    with pytest.raises(ArtifactError):
        store.get_bytes("a/none.json")
    assert store.delete("a") == 2
    assert store.list("a") == []


def test_put_dir_get_dir_round_trip_and_reuse(store, tmp_path):
    src = make_artifact(tmp_path / "art", kind="dyn")
    assert store.put_dir(src, "stage/key1") is True
    assert store.is_complete("stage/key1")
    keys = store.list("stage/key1")
    assert "stage/key1/manifest.json" in keys and "stage/key1/sub/ids.txt" in keys
    manifest = store.get_dir("stage/key1", tmp_path / "copy")
    assert manifest["kind"] == "dyn"
    same_tree(src, tmp_path / "copy")
    # a finished artifact is reused: the second put uploads nothing
    before = store.stats.files_uploaded
    assert store.put_dir(src, "stage/key1") is False
    assert store.stats.files_uploaded == before and store.stats.dirs_skipped == 1
    # a second get into the same folder finds it intact and downloads nothing
    got = store.stats.files_downloaded
    store.get_dir("stage/key1", tmp_path / "copy")
    assert store.stats.files_downloaded == got
    # overwrite replaces it
    (src / "small_0.bin").write_bytes(b"changed")
    write_manifest(src, kind="dyn2")
    assert store.put_dir(src, "stage/key1", overwrite=True) is True
    assert store.read_manifest("stage/key1")["kind"] == "dyn2"
    assert store.get_dir("stage/key1", tmp_path / "copy")["kind"] == "dyn2"
    assert (tmp_path / "copy" / "small_0.bin").read_bytes() == b"changed"


def test_put_dir_writes_a_missing_manifest_first(store, tmp_path):
    src = make_artifact(tmp_path / "art", manifest=False)
    assert not (src / MANIFEST).exists()
    store.put_dir(src, "nomani")
    local = read_manifest(src)
    assert set(local["files"]) == {"small_0.bin", "small_1.bin", "sub/ids.txt", "scores.npy"}
    assert store.read_manifest("nomani") == local


def test_get_dir_refuses_incomplete_prefix(store, tmp_path):
    src = make_artifact(tmp_path / "art")
    for name in ("small_0.bin", "scores.npy"):
        store.put_file(src / name, f"partial/{name}")
    assert not store.is_complete("partial")
    with pytest.raises(ArtifactError, match="no manifest.json"):
        store.get_dir("partial", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_checksum_mismatch_is_detected_on_download(store, tmp_path):
    src = make_artifact(tmp_path / "art")
    store.put_dir(src, "corrupt")
    # corrupt one stored file behind the store's back (same size, different bytes)
    bad = tmp_path / "bad.bin"
    data = bytearray((src / "small_1.bin").read_bytes())
    data[10] ^= 0xFF
    bad.write_bytes(bytes(data))
    store.put_file(bad, "corrupt/small_1.bin")
    with pytest.raises(ArtifactError, match=r"small_1\.bin is corrupt"):
        store.get_dir("corrupt", tmp_path / "out")
    # nothing half-downloaded is left where the reader looks
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.")]


@pytest.mark.parametrize("key", ["", "/abs/key", "a//b", "a/../b", "..", "./a", "a/", "a\\b", "C:/x"])
def test_key_validation(key, tmp_path):
    with pytest.raises(StorageError):
        validate_key(key)
    st = open_store(str(tmp_path / "s"))
    with pytest.raises(StorageError):
        st.put_bytes(key, b"x")
    with pytest.raises(StorageError):
        st.get_dir(key or "..", tmp_path / "x")
    assert not (tmp_path / "s").exists() or not any((tmp_path / "s").rglob("*"))


def test_key_validation_accepts_nested_names():
    assert validate_key("score/abc-123/file.npy") == "score/abc-123/file.npy"
    assert validate_key("", allow_root=True) == ""


def test_artifact_key_is_content_and_config_derived():
    fp = "0123456789abcdef0123"
    k1 = artifact_key("score", fp, {"method": "tdds", "T": 30, "W": 10})
    k2 = artifact_key("score", fp, {"W": 10, "T": 30, "method": "tdds"})
    k3 = artifact_key("score", fp, {"method": "tdds", "T": 30, "W": 5})
    k4 = artifact_key("score", "ffff" + fp, {"method": "tdds", "T": 30, "W": 10})
    assert k1 == k2 and k1 != k3 and k1 != k4
    assert k1.startswith("score/0123456789ab-")
    with pytest.raises(StorageError):
        artifact_key("../x", fp, {})


def test_uri_parsing(tmp_path):
    assert split_uri("s3://b/p/q") == ("s3", "b/p/q")
    assert split_uri(f"file://{tmp_path}") == ("file", str(tmp_path))
    for bad in ("s3://", "gs://x/y", ""):
        with pytest.raises(StorageError):
            split_uri(bad)
    with pytest.raises(StorageError):
        open_store("s3://bucket/a/../b")
    assert isinstance(open_store(str(tmp_path)), LocalStore)
    st, key = parent_and_key("s3://b/runs/x")
    assert isinstance(st, S3Store) and st.uri == "s3://b" and key == "runs/x"
    st, key = parent_and_key(str(tmp_path / "a" / "x"))
    assert st.uri == str(tmp_path / "a") and key == "x"
    with pytest.raises(StorageError):
        parent_and_key("s3://bucket-only")


# ------------------------------------------------------------------------------------ local backend
def test_local_writes_are_atomic_and_leave_no_temp_files(tmp_path):
    st = open_store(str(tmp_path / "s"))
    st.put_bytes("x/y.bin", b"1" * 10)
    st.put_bytes("x/y.bin", b"2" * 10)
    assert (tmp_path / "s" / "x" / "y.bin").read_bytes() == b"2" * 10
    assert [p.name for p in (tmp_path / "s" / "x").iterdir()] == ["y.bin"]


def test_staged_output_local(tmp_path):
    final = tmp_path / "out" / "score" / "k1"
    with pytest.raises(RuntimeError):
        with staged_output(str(final)) as folder:
            (folder / "scores.npy").write_bytes(b"partial")
            raise RuntimeError("stage crashed")
    assert not final.exists()
    assert not list((tmp_path / "out" / "score").iterdir())  # the staging folder is gone too
    assert not is_complete(str(final))
    with staged_output(str(final)) as folder:
        assert folder != final and folder.parent == final.parent
        np.save(folder / "scores.npy", np.arange(5.0))
    assert is_complete(str(final))
    assert read_manifest(final)["files"]["scores.npy"]["sha256"] == sha256_file(final / "scores.npy")
    assert local_copy(str(final)) == final
    # a second writer keeps the finished artifact unless overwrite
    with staged_output(str(final)) as folder:
        np.save(folder / "scores.npy", np.arange(7.0))
    assert np.load(final / "scores.npy").shape == (5,)
    with staged_output(str(final), overwrite=True) as folder:
        np.save(folder / "scores.npy", np.arange(7.0))
    assert np.load(final / "scores.npy").shape == (7,)
    assert sorted(p.name for p in final.parent.iterdir()) == ["k1"]


# ------------------------------------------------------------------------------------ S3 backend
def test_s3_multipart_upload_with_small_threshold(bucket, s3_server, tmp_path):
    src = make_artifact(tmp_path / "art", big=12 * 1024 * 1024 + 123)
    st = open_store(f"s3://{bucket}/mp", multipart_threshold=5 * 1024 * 1024, multipart_chunksize=5 * 1024 * 1024)
    assert isinstance(st, S3Store) and st.endpoint_url == s3_server
    st.put_dir(src, "a1")
    c = s3_client(s3_server)
    big = c.head_object(Bucket=bucket, Key="mp/a1/big.bin")
    assert big["ETag"].strip('"').endswith("-3"), big["ETag"]  # 3 parts of <= 5 MiB
    assert big["Metadata"]["sha256"] == sha256_file(src / "big.bin")
    small = c.head_object(Bucket=bucket, Key="mp/a1/small_0.bin")
    assert "-" not in small["ETag"].strip('"')
    st.get_dir("a1", tmp_path / "copy")
    same_tree(src, tmp_path / "copy")
    # the default threshold (64 MiB) sends the same file in one piece
    st2 = open_store(f"s3://{bucket}/single")
    st2.put_file(src / "big.bin", "big.bin")
    assert "-" not in c.head_object(Bucket=bucket, Key="single/big.bin")["ETag"].strip('"')


def test_s3_manifest_is_uploaded_last(bucket, s3_server_process, tmp_path):
    """Order as the server saw it: moto_server logs each request when it completes."""
    src = make_artifact(tmp_path / "art", n_small=5)
    prefix = f"order-{uuid.uuid4().hex[:6]}"
    st = open_store(f"s3://{bucket}/{prefix}")
    st.put_dir(src, "x")
    time.sleep(0.2)
    puts = [line.split('"')[1].split()[1] for line in s3_server_process.log_path.read_text().splitlines()
            if f"PUT /{bucket}/{prefix}/x/" in line]
    names = [u.split(f"/{prefix}/x/", 1)[1].split("?")[0] for u in puts]
    assert sorted(set(names)) == sorted([f"small_{i}.bin" for i in range(5)] + ["scores.npy", "sub/ids.txt", MANIFEST])
    assert names[-1] == MANIFEST and names.count(MANIFEST) == 1
    listed = json.loads(s3_client(st.endpoint_url).get_object(Bucket=bucket, Key=f"{prefix}/x/manifest.json")["Body"].read())
    assert set(listed["files"]) == set(names) - {MANIFEST}


def test_s3_local_copy_and_staged_output(bucket, s3_server, tmp_path, cache, monkeypatch):
    uri = f"s3://{bucket}/stage-out/score/k1"
    with pytest.raises(ValueError):
        with staged_output(uri) as folder:
            (folder / "scores.npy").write_bytes(b"x")
            raise ValueError("crash")
    assert not is_complete(uri)
    assert open_store(f"s3://{bucket}/stage-out").list("score") == []
    with staged_output(uri) as folder:
        np.save(folder / "scores.npy", np.arange(10.0))
        write_manifest(folder, method="tdds")
    assert is_complete(uri)
    assert not any((cache / "staging").iterdir())
    # local_copy: cached (staged_output left its folder as the cache), verified, no download
    path = local_copy(uri)
    assert path.is_relative_to(cache)
    assert np.load(path / "scores.npy").tolist() == list(np.arange(10.0))
    # a fresh cache downloads and verifies every file
    monkeypatch.setenv("TDDS_CACHE", str(tmp_path / "cache2"))
    path2 = local_copy(uri)
    assert path2.is_relative_to(tmp_path / "cache2")
    same_tree(path, path2)
    # a corrupt cached copy is not trusted: it is downloaded again
    (path2 / "scores.npy").write_bytes(b"garbage")
    path3 = local_copy(uri)
    assert np.load(path3 / "scores.npy").tolist() == list(np.arange(10.0))
    # a single file (no manifest) is verified against the SHA-256 stored with it
    st = open_store(f"s3://{bucket}/stage-out")
    st.put_bytes("model.pt", b"weights" * 10)
    f = local_copy(f"s3://{bucket}/stage-out/model.pt")
    assert f.read_bytes() == b"weights" * 10
    with pytest.raises(ArtifactError, match="does not exist"):
        local_copy(f"s3://{bucket}/stage-out/nothing-here")


def test_s3_missing_bucket_is_a_clear_error(s3_server, tmp_path):
    st = open_store("s3://no-such-bucket-tdds/x")
    with pytest.raises(StorageError, match=r"bucket 'no-such-bucket-tdds' does not exist at endpoint .*create it"):
        st.put_bytes("k", b"1")
    assert not st.is_complete("anything")


def test_s3_endpoint_from_mlflow_variable(bucket, s3_server, monkeypatch):
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    monkeypatch.setenv("MLFLOW_S3_ENDPOINT_URL", s3_server)
    st = open_store(f"s3://{bucket}/via-mlflow-var")
    assert st.endpoint_url == s3_server
    st.put_bytes("k", b"v")
    assert st.get_bytes("k") == b"v"


def test_s3_unreachable_endpoint_fails_fast_with_clear_error(s3_server, monkeypatch, caplog):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    st = open_store("s3://bucket/x", retries=3, backoff_s=0.1)
    t0 = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="tdds_core.storage"):
        with pytest.raises(StorageError) as e:
            st.put_bytes("k", b"1")
    msg = str(e.value)
    assert "http://127.0.0.1:9" in msg and "after 3 attempts" in msg and "AWS_ENDPOINT_URL" in msg
    assert time.monotonic() - t0 < 30
    assert sum("retrying" in r.getMessage() for r in caplog.records) == 2
    assert FAKE_SECRET_KEY not in msg and FAKE_SECRET_KEY not in caplog.text


# ------------------------------------------------------------------------------------ own servers
@pytest.fixture
def own_moto(tmp_path):
    server = start_moto(tmp_path / "own-moto")
    yield server
    server.stop()


def test_s3_server_down_before_upload(own_moto, tmp_path, caplog):
    c = s3_client(own_moto.url)
    c.create_bucket(Bucket="down")
    src = make_artifact(tmp_path / "art")
    st = open_store("s3://down/p", endpoint_url=own_moto.url, retries=2, backoff_s=0.2)
    assert st.put_bytes("alive", b"1") is None
    own_moto.stop()
    t0 = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="tdds_core.storage"):
        with pytest.raises(StorageError, match=rf"cannot reach S3 endpoint {own_moto.url} .* after 2 attempts"):
            st.put_dir(src, "art")
    assert time.monotonic() - t0 < 30
    assert any("retrying" in r.getMessage() for r in caplog.records)


def test_s3_server_gone_mid_upload_leaves_no_manifest_and_resumes(own_moto, tmp_path):
    c = s3_client(own_moto.url)
    c.create_bucket(Bucket="midway")
    src = tmp_path / "art"
    src.mkdir()
    rng = np.random.default_rng(1)
    for i in range(3):
        (src / f"a_{i}.bin").write_bytes(rng.bytes(1 << 20))
    (src / "z_big.bin").write_bytes(rng.bytes(12 << 20))  # uploaded last (name order), multipart
    port = int(own_moto.url.rsplit(":", 1)[1])
    # the server vanishes for the client after ~5 MiB: the three small files made it, z_big.bin did not
    relay = TcpRelay(port, cut_after_bytes=5 << 20)
    opts = dict(multipart_threshold=5 << 20, multipart_chunksize=5 << 20)
    st = open_store("s3://midway/runs", endpoint_url=relay.url, retries=2, backoff_s=0.2, **opts)
    with pytest.raises(StorageError, match=rf"cannot reach S3 endpoint {relay.url} .*after 2 attempts"):
        st.put_dir(src, "dyn")
    assert relay.cut.is_set()
    # the server itself is still up and holds what it got: the artifact is not visible as complete
    direct = open_store("s3://midway/runs", endpoint_url=own_moto.url, **opts)
    assert set(direct.list("dyn")) == {f"dyn/a_{i}.bin" for i in range(3)}
    assert not direct.is_complete("dyn")
    with pytest.raises(ArtifactError, match="no manifest.json"):
        direct.get_dir("dyn", tmp_path / "out")
    assert not (tmp_path / "out").exists()
    # a rerun (server reachable again) finishes it; files already there with the same SHA-256 are skipped
    assert direct.put_dir(src, "dyn") is True
    assert direct.stats.files_uploaded == 2  # z_big.bin and the manifest
    direct.get_dir("dyn", tmp_path / "out")
    same_tree(src, tmp_path / "out")


def test_s3_wrong_credentials_are_a_clear_error(tmp_path, monkeypatch):
    """moto checks credentials once IAM authentication is switched on (``/moto-api/reset-auth``)."""
    import boto3

    server = start_moto(tmp_path / "auth-moto")
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
        monkeypatch.setenv("AWS_ENDPOINT_URL", server.url)
        # right credentials work
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", key["AccessKeyId"])
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", key["SecretAccessKey"])
        ok = open_store("s3://secured/p")
        ok.put_dir(make_artifact(tmp_path / "art"), "a")
        assert ok.is_complete("a")
        # an unknown key id
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAUNKNOWNKEY000001")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", FAKE_SECRET_KEY)
        with pytest.raises(StorageError) as e:
            open_store("s3://secured/p").put_bytes("k", b"1")
        msg = str(e.value)
        assert "refused" in msg and "InvalidAccessKeyId" in msg and "AWS_SECRET_ACCESS_KEY" in msg
        assert FAKE_SECRET_KEY not in msg and "AKIAUNKNOWNKEY000001" not in msg
        # the right key id with a wrong secret (a HEAD: the error has only a status code)
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", key["AccessKeyId"])
        with pytest.raises(StorageError, match=r"refused the request .*\(403\)"):
            open_store("s3://secured/p").is_complete("a")
        with pytest.raises(StorageError, match="SignatureDoesNotMatch"):
            open_store("s3://secured/p").get_bytes("a/manifest.json")
    finally:
        server.stop()

"""Storage: local folder and S3 (a real moto_server over HTTP) behind one interface."""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from fixtures_servers import FAKE_SECRET_KEY, TcpRelay, s3_client
from tdds_core.errors import ArtifactError, StorageError
from tdds_core.io import MANIFEST, read_manifest, sha256_bytes, sha256_file, write_manifest
from tdds_core.storage import (LocalStore, ObjectInfo, S3Store, is_complete, is_remote, join_uri, local_copy, open_store,
                               parent_and_key, split_uri, store_identity, validate_key)

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
    code = "import sys, tdds_core.storage, tdds_core.tracking, tdds_core.report, tdds_core.data.manifest; " \
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


def test_head_list_info_and_fetch(store, tmp_path):
    assert store.head("d/a.bin") is None
    assert store.list_info("d") == [] and store.list_info() == []
    store.put_bytes("d/a.bin", b"one")
    store.put_bytes("d/b.bin", b"bee" * 100)
    store.put_bytes("d/sub/c.bin", b"c")
    store.put_bytes("e.bin", b"e")
    a = store.head("d/a.bin")
    assert isinstance(a, ObjectInfo) and a.key == "d/a.bin" and a.size == 3 and a.etag
    assert '"' not in a.etag and a.last_modified > time.time() - 3600
    # S3 keeps the SHA-256 written with the object; a local file has no metadata (not hashed by head)
    assert a.sha256 == (sha256_bytes(b"one") if isinstance(store, S3Store) else None)
    assert store.head("d") is None and store.head("d/missing.bin") is None
    # a listing gives the same size and ETag as head (no SHA-256: listings carry no metadata)
    infos = store.list_info("d")
    assert [i.key for i in infos] == ["d/a.bin", "d/b.bin", "d/sub/c.bin"]
    assert (infos[0].size, infos[0].etag) == (a.size, a.etag) and infos[1].size == 300
    assert all(i.sha256 is None for i in infos)
    assert [i.key for i in store.list_info("d/", recursive=False)] == ["d/a.bin", "d/b.bin"]
    assert [i.key for i in store.list_info("", recursive=False)] == ["e.bin"]
    assert [i.key for i in store.list_info()] == ["d/a.bin", "d/b.bin", "d/sub/c.bin", "e.bin"]
    assert store.list_info("nothing") == [] and store.list_info("d/a") == []
    # rewritten with other content (same size): another ETag, in head, listing and fetch
    store.put_bytes("d/a.bin", b"two")
    a2 = store.head("d/a.bin")
    assert a2.etag != a.etag and a2.size == 3
    assert store.list_info("d")[0].etag == a2.etag
    got = store.fetch("d/a.bin", tmp_path / "cache" / "d" / "a.bin")
    assert (tmp_path / "cache" / "d" / "a.bin").read_bytes() == b"two"
    assert got is not None and (got.key, got.size, got.etag) == ("d/a.bin", 3, a2.etag)
    assert store.stats.files_downloaded == 1 and store.stats.bytes_downloaded == 3
    # a missing object: None and nothing written
    assert store.fetch("d/none.bin", tmp_path / "cache" / "none.bin") is None
    assert not (tmp_path / "cache" / "none.bin").exists()
    with pytest.raises(StorageError):
        store.head("../x")
    assert store.root_exists()


def test_local_store_info_details(tmp_path):
    st = open_store(str(tmp_path / "s"))
    assert not st.root_exists()
    st.put_bytes("x.bin", b"12345")
    assert st.root_exists()
    (tmp_path / "s" / ".x.bin.abc.tmp").write_bytes(b"half-written")   # an unfinished write: never listed
    (tmp_path / "s" / "sub").mkdir()
    assert [i.key for i in st.list_info()] == ["x.bin"]
    stat = (tmp_path / "s" / "x.bin").stat()
    assert st.head("x.bin") == ObjectInfo("x.bin", 5, f"{stat.st_mtime_ns}-{stat.st_ino}-5", None, stat.st_mtime)
    assert st.head("sub") is None
    # fetch onto itself is a no-op that still reports the object
    assert st.fetch("x.bin", tmp_path / "s" / "x.bin") == st.head("x.bin")


def test_is_remote_and_join_uri(tmp_path):
    assert is_remote("s3://b/p") and is_remote("s3://b")
    assert not is_remote(str(tmp_path)) and not is_remote("file:///x") and not is_remote("gs://b") and not is_remote(tmp_path)
    assert join_uri("s3://b/runs/", "score/k1") == "s3://b/runs/score/k1" == join_uri("s3://b/runs", "score/k1")
    assert join_uri(str(tmp_path), "score/k1") == str(tmp_path / "score" / "k1")


def test_local_identity(tmp_path, monkeypatch):
    (tmp_path / "a" / "x").mkdir(parents=True)
    (tmp_path / "b").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "a")
    monkeypatch.chdir(tmp_path)
    ident = open_store(str(tmp_path / "a")).identity
    assert ident == "file:" + str((tmp_path / "a").resolve())
    # the same folder however it is spelled: relative, with '..', file://, through a symlink
    for same in ("a", "a/x/..", f"file://{tmp_path / 'a'}", str(tmp_path / "link")):
        assert open_store(same).identity == ident, same
        assert store_identity(same) == ident, same
    assert store_identity(str(tmp_path / "b")) != ident and store_identity("a/x") != ident


def test_identity_needs_no_network(monkeypatch):
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")   # nothing listens there
    t0 = time.monotonic()
    st = open_store("s3://b/p")
    assert st.identity == "s3:http://127.0.0.1:9/b/p" == store_identity("s3://b/p/")
    assert st._client is None and time.monotonic() - t0 < 1
    for k in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "MLFLOW_S3_ENDPOINT_URL"):
        monkeypatch.delenv(k, raising=False)
    assert store_identity("s3://b/p") == "s3:aws/b/p" and store_identity("s3://b") == "s3:aws/b/"


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


def test_local_is_complete_and_local_copy(tmp_path):
    final = tmp_path / "out" / "score" / "k1"
    assert not is_complete(str(final))
    make_artifact(final, manifest=False)
    assert not is_complete(str(final))              # files without a manifest: not finished
    write_manifest(final)
    assert is_complete(str(final))
    assert local_copy(str(final)) == final          # a local artifact is used where it is


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


def test_s3_local_copy(bucket, s3_server, tmp_path, cache, monkeypatch):
    uri = f"s3://{bucket}/copy-src/score/k1"
    assert not is_complete(uri)
    with pytest.raises(ArtifactError, match="does not exist or is incomplete"):
        local_copy(uri)
    src = tmp_path / "art"
    src.mkdir()
    np.save(src / "scores.npy", np.arange(10.0))
    write_manifest(src, method="tdds")
    assert open_store(f"s3://{bucket}/copy-src").put_dir(src, "score/k1") is True
    assert is_complete(uri)
    # local_copy: downloaded into the cache and verified; a second call finds it intact and downloads nothing
    path = local_copy(uri)
    assert path.is_relative_to(cache)
    same_tree(src, path)
    mtime = (path / "scores.npy").stat().st_mtime_ns
    assert local_copy(uri) == path and (path / "scores.npy").stat().st_mtime_ns == mtime
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
    st = open_store(f"s3://{bucket}/copy-src")
    st.put_bytes("model.pt", b"weights" * 10)
    f = local_copy(f"s3://{bucket}/copy-src/model.pt")
    assert f.read_bytes() == b"weights" * 10
    with pytest.raises(ArtifactError, match="does not exist"):
        local_copy(f"s3://{bucket}/copy-src/nothing-here")


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
def test_s3_identity_names_endpoint_bucket_and_prefix(bucket, s3_server, own_moto):
    """Two servers holding the same bucket and key are two places: their identities and data differ."""
    s3_client(own_moto.url).create_bucket(Bucket=bucket)
    here = open_store(f"s3://{bucket}/ident")                       # AWS_ENDPOINT_URL = the session's server
    there = open_store(f"s3://{bucket}/ident", endpoint_url=own_moto.url)
    here.put_bytes("k.bin", b"here")
    there.put_bytes("k.bin", b"there!")
    assert here.head("k.bin").size == 4 and there.head("k.bin").size == 6
    assert here.head("k.bin").etag != there.head("k.bin").etag
    assert here.identity == f"s3:{s3_server}/{bucket}/ident"
    assert there.identity == f"s3:{own_moto.url}/{bucket}/ident"
    # the same place, however it is named
    for same in (open_store(f"s3://{bucket}/ident/"), S3Store(bucket, "ident"), S3Store(bucket, "/ident/"),
                 open_store(f"s3://{bucket}/ident", endpoint_url=s3_server + "/")):
        assert same.identity == here.identity
        assert same.head("k.bin").etag == here.head("k.bin").etag
    assert store_identity(f"s3://{bucket}/ident") == here.identity
    assert store_identity(f"s3://{bucket}/ident", endpoint_url=own_moto.url) == there.identity
    # credentials in the endpoint URL are left out: they do not change where the store is
    creds = s3_server.replace("http://", "http://user:pass-word@")
    assert store_identity(f"s3://{bucket}/ident", endpoint_url=creds) == here.identity
    assert "pass-word" not in store_identity(f"s3://{bucket}/ident", endpoint_url=creds)
    # another bucket, another prefix, the bucket root
    assert len({here.identity, there.identity, store_identity(f"s3://other-{bucket}/ident"),
                store_identity(f"s3://{bucket}/ident2"), store_identity(f"s3://{bucket}/ident/sub"),
                store_identity(f"s3://{bucket}")}) == 6
    assert here.identity != open_store(str(Path("ident").absolute())).identity


def test_s3_missing_bucket_head_and_root_exists(s3_server, bucket):
    st = open_store("s3://no-such-bucket-ident/p")
    assert st.head("k") is None                      # HEAD cannot tell a missing bucket ...
    assert not st.root_exists()                      # ... root_exists can
    assert open_store(f"s3://{bucket}/never-written").root_exists()
    with pytest.raises(StorageError, match=r"bucket 'no-such-bucket-ident' does not exist at endpoint .*create it"):
        st.list_info()


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


def test_s3_wrong_credentials_are_a_clear_error(tmp_path, monkeypatch, auth_moto):
    """moto checks credentials once IAM authentication is switched on (``/moto-api/reset-auth``)."""
    server, key = auth_moto
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

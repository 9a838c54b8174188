"""The ``manifest`` dataset: local CSV / JSONL manifests, manifests and images on S3 (a real
moto_server over HTTP), the newest manifest of a prefix, growth with an image cache that only
fetches new images, and a clear error (problem and fix) for every bad input."""
from __future__ import annotations

import json
import uuid
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fixtures_servers import FAKE_SECRET_KEY, free_port, s3_client
from helpers import make_manifest, upload_tree
from tdds_core.config import DataConfig
from tdds_core.data import create_dataset
from tdds_core.data.base import call_dataset_fn
from tdds_core.data.datasets import _stable_bucket
from tdds_core.data.manifest import manifest
from tdds_core.errors import ConfigError, DataError, StorageError


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TDDS_CACHE", str(tmp_path / "cache"))


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB")).transpose(2, 0, 1)


def by_id(splits) -> dict[str, tuple[str, np.ndarray]]:
    """id -> (class name, image) over both splits."""
    out = {}
    for split in (splits.train, splits.test):
        for i, sid in enumerate(split.ids):
            out[sid] = (splits.classes[int(split.labels[i])], split.images[i])
    return out


def bucket(s3, name: str = "mf") -> str:
    b = f"{name}-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=b)
    return b


# ------------------------------------------------------------------------------------------ local manifests
def test_local_csv_relative_and_absolute_paths(tmp_path):
    root = tmp_path / "pets"
    rows = make_manifest(root, classes=("dog", "cat"), per_class=6, size=8)
    other = tmp_path / "elsewhere" / "x.png"
    other.parent.mkdir()
    Image.fromarray(np.full((8, 8, 3), 7, np.uint8)).save(other)
    with open(root / "manifest.csv", "a") as f:
        f.write(f"extra/1,cat,{other}\n")

    s = manifest(str(root / "manifest.csv"), image_size=8, test_percent=0)
    assert s.name == "manifest" and s.classes == ["cat", "dog"]                  # sorted labels
    assert s.train.ids == [r["id"] for r in rows] + ["extra/1"]                  # manifest order
    assert len(s.test) == 0 and s.info["manifest"] == str(root / "manifest.csv")
    assert s.info["local"] == 13 and s.info["downloaded"] == s.info["cached"] == 0
    assert s.train.images.shape == (13, 3, 8, 8) and s.train.images.dtype == np.uint8
    got = by_id(s)
    for r in rows:
        assert got[r["id"]][0] == r["label"]
        assert np.array_equal(got[r["id"]][1], pixels(root / r["path"]))
    assert np.array_equal(got["extra/1"][1], np.full((3, 8, 8), 7, np.uint8))
    assert s.train.paths[-1] == str(other) and s.train.paths[0] == rows[0]["path"]
    assert s.mean == (0.5,) * 3 and s.std == (0.25,) * 3


def test_jsonl_explicit_split_hash_split_and_class_order(tmp_path):
    root = tmp_path / "ds"
    rows = make_manifest(root, classes=("cat", "dog"), per_class=10, size=8, name="m.jsonl")
    lines = [json.loads(x) for x in (root / "m.jsonl").read_text().splitlines()]
    lines[0]["split"], lines[1]["split"], lines[2]["split"] = "test", "TRAIN", ""
    (root / "m.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines) + "\n")   # a blank line is fine

    s = manifest(str(root / "m.jsonl"), image_size=6, channels=1, test_percent=50, classes=["dog", "fox", "cat"])
    assert s.classes == ["dog", "fox", "cat"] and s.channels == 1 and s.image_size == 6
    expect_test = {r["id"] for r in rows[2:] if _stable_bucket(r["id"]) < 50} | {rows[0]["id"]}
    assert set(s.test.ids) == expect_test
    assert rows[1]["id"] in s.train.ids and (rows[2]["id"] in s.test.ids) == (_stable_bucket(rows[2]["id"]) < 50)
    assert 0 < len(s.test) < 20 and len(s.train) + len(s.test) == 20
    label = dict(zip(s.train.ids, s.train.labels.tolist())) | dict(zip(s.test.ids, s.test.labels.tolist()))
    assert all(label[r["id"]] == (0 if r["label"] == "dog" else 2) for r in rows)


def test_path_defaults_to_the_id_and_create_dataset_passes_image_size(tmp_path):
    root = tmp_path / "ds"
    make_manifest(root, per_class=6, size=8)
    ids = [f"images/{c}/{i:03d}.png" for c in ("cat", "dog") for i in range(6)]
    (root / "ids.csv").write_text("id,label\n" + "".join(f"{i},{i.split('/')[1]}\n" for i in ids))
    cfg = DataConfig(name="manifest", root=str(root / "ids.csv"), image_size=4, options={"test_percent": 50})
    s = create_dataset(cfg)
    assert s.image_size == 4 and sorted(s.train.ids + s.test.ids) == ids and len(s.test) > 0
    assert s.train.paths == s.train.ids and s.test.paths == s.test.ids


def test_local_folder_picks_the_newest_manifest(tmp_path):
    root = tmp_path / "ds"
    make_manifest(root, per_class=2, size=8, name="v0001.csv")
    make_manifest(root, per_class=3, size=8, name="v0002.csv")
    (root / "zzz-notes.txt").write_text("not a manifest")
    (root / ".~lock.v0003.csv").write_text("editor lock file")
    for r in (str(root), str(root) + "/"):
        s = manifest(r, image_size=8, test_percent=0)
        assert s.info["manifest"] == str(root / "v0002.csv") and len(s.train) == 6


# ------------------------------------------------------------------------------------------ S3
def test_s3_manifest_and_images_decode_to_the_source_pixels(s3_server, tmp_path):
    s3 = s3_client(s3_server)
    b = bucket(s3)
    src = tmp_path / "src"
    rows = make_manifest(src, classes=("cat", "dog", "fox"), per_class=5, size=8)
    upload_tree(s3, src, b, "pets")

    s = manifest(f"s3://{b}/pets/manifest.csv", image_size=8, test_percent=20, workers=4)
    assert s.info["manifest"] == f"s3://{b}/pets/manifest.csv"
    assert s.info["downloaded"] == 15 and s.info["cached"] == 0 and s.info["local"] == 0
    assert s.classes == ["cat", "dog", "fox"] and s.train.root == f"s3://{b}/pets/"
    got = by_id(s)
    assert set(got) == {r["id"] for r in rows}
    for r in rows:
        assert got[r["id"]][0] == r["label"]
        assert np.array_equal(got[r["id"]][1], pixels(src / r["path"])), r["id"]
    assert set(s.test.ids) == {r["id"] for r in rows if _stable_bucket(r["id"]) < 20}
    cached = sorted(p for p in (tmp_path / "cache" / "manifest").rglob("*.png"))
    assert len(cached) == 15 and all("/pets/images/" in str(p) for p in cached)

    again = manifest(f"s3://{b}/pets/manifest.csv", image_size=8, test_percent=20)
    assert again.info["downloaded"] == 0 and again.info["cached"] == 15
    assert again.fingerprint == s.fingerprint and np.array_equal(again.train.images, s.train.images)


def test_s3_prefix_picks_the_newest_manifest(s3_server, tmp_path):
    s3 = s3_client(s3_server)
    b = bucket(s3)
    src = tmp_path / "src"
    make_manifest(src, per_class=2, size=8, name="2024-05-01.csv")
    make_manifest(src, per_class=4, size=8, name="2024-06-01.csv")
    make_manifest(src, per_class=3, size=8, name="2024-05-15.jsonl")
    upload_tree(s3, src, b, "pets")
    s3.put_object(Bucket=b, Key="pets/old/zzzz.csv", Body=b"id,label\nx,y\n")    # not directly in the prefix
    s3.put_object(Bucket=b, Key="pets/readme.txt", Body=b"hello")
    s = manifest(f"s3://{b}/pets/", image_size=8, test_percent=0)
    assert s.info["manifest"] == f"s3://{b}/pets/2024-06-01.csv" and len(s.train) == 8
    whole = bucket(s3)
    upload_tree(s3, src, whole, "x")
    s3.copy_object(Bucket=whole, Key="v1.csv", CopySource={"Bucket": b, "Key": "pets/2024-05-01.csv"})
    with pytest.raises(DataError, match="does not exist"):      # relative paths start at the bucket root
        manifest(f"s3://{whole}/", image_size=8)


def test_growth_keeps_old_rows_and_downloads_only_new_images(s3_server, tmp_path):
    s3 = s3_client(s3_server)
    b = bucket(s3)
    src = tmp_path / "src"
    old = make_manifest(src, classes=("cat", "dog"), per_class=8, size=8)
    upload_tree(s3, src, b, "pets")
    uri = f"s3://{b}/pets/manifest.csv"
    v1 = manifest(uri, image_size=8)
    assert (v1.info["downloaded"], v1.info["cached"]) == (16, 0)

    new = make_manifest(src, classes=("cat", "dog", "fox"), per_class=3, start=8, size=8)
    upload_tree(s3, src, b, "pets")                    # re-uploads the old images too: same bytes, same ETag
    v2 = manifest(uri, image_size=8)
    assert (v2.info["downloaded"], v2.info["cached"]) == (9, 16)
    assert v2.classes == ["cat", "dog", "fox"]
    a, z = by_id(v1), by_id(v2)
    assert set(z) == {r["id"] for r in old + new}
    for sid, (label, img) in a.items():                 # old rows: same labels, same pixels, same split
        assert z[sid][0] == label and np.array_equal(z[sid][1], img)
    assert set(v1.test.ids) <= set(v2.test.ids) and set(v1.train.ids) <= set(v2.train.ids)
    assert v2.train.ids[:len(v1.train.ids)] == v1.train.ids           # appended rows come after
    assert v2.fingerprint != v1.fingerprint

    # an image replaced in place (new ETag) is fetched again; nothing else is
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(src / old[0]["path"])
    s3.upload_file(str(src / old[0]["path"]), b, f"pets/{old[0]['path']}")
    v3 = manifest(uri, image_size=8)
    assert (v3.info["downloaded"], v3.info["cached"]) == (1, 24)
    assert not by_id(v3)[old[0]["id"]][1].any()


def test_absolute_s3_paths_from_a_local_manifest(s3_server, tmp_path):
    s3 = s3_client(s3_server)
    b = bucket(s3, "imgs")
    src = tmp_path / "src"
    rows = make_manifest(src, per_class=3, size=8)
    upload_tree(s3, src / "images", b, "raw")
    lines = ["id,label,path"] + [f"{r['id']},{r['label']},s3://{b}/raw/{r['path'][len('images/'):]}" for r in rows]
    (tmp_path / "m.csv").write_text("\n".join(lines) + "\n")
    s = manifest(str(tmp_path / "m.csv"), image_size=8, test_percent=0)
    assert s.info["downloaded"] == 6 and s.info["local"] == 0
    for r in rows:
        assert np.array_equal(by_id(s)[r["id"]][1], pixels(src / r["path"]))


def test_s3_errors_name_the_problem_and_the_fix(s3_server, tmp_path, monkeypatch):
    s3 = s3_client(s3_server)
    b = bucket(s3)
    src = tmp_path / "src"
    rows = make_manifest(src, per_class=2, size=8)
    upload_tree(s3, src, b, "pets")
    with pytest.raises(DataError, match=r"manifest s3://.*/pets/nope\.csv does not exist at endpoint .*upload it or fix data\.root"):
        manifest(f"s3://{b}/pets/nope.csv")
    with pytest.raises(DataError, match=r"S3 bucket 'no-such-bucket-x' .*does not exist at endpoint .*create it"):
        manifest("s3://no-such-bucket-x/pets/manifest.csv")
    with pytest.raises(DataError, match=r"S3 bucket 'no-such-bucket-x' .*does not exist"):
        manifest("s3://no-such-bucket-x/pets/")
    with pytest.raises(DataError, match=r"prefix holds no manifest .*upload one"):
        manifest(f"s3://{b}/pets/images/")
    with pytest.raises(ConfigError, match=r"end the URI with '/'"):
        manifest(f"s3://{b}/pets")
    s3.delete_object(Bucket=b, Key=f"pets/{rows[1]['path']}")
    with pytest.raises(DataError, match=rf"line 3: image s3://{b}/pets/{rows[1]['path']} of id '{rows[1]['id']}' does "
                                        r"not exist at endpoint .*upload it or fix the row's path"):
        manifest(f"s3://{b}/pets/manifest.csv")
    s3.put_object(Bucket=b, Key=f"pets/{rows[1]['path']}", Body=b"not an image")
    with pytest.raises(DataError, match=rf"line 3: image s3://{b}/pets/{rows[1]['path']} of id '{rows[1]['id']}' "
                                        r"cannot be decoded .*replace the image or remove the row"):
        manifest(f"s3://{b}/pets/manifest.csv")

    # an unreachable endpoint: one clear StorageError (endpoint, fix), no boto traceback, no secret
    dead = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("AWS_ENDPOINT_URL", dead)
    monkeypatch.setenv("TDDS_S3_RETRIES", "1")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    with pytest.raises(StorageError) as ei:
        manifest(f"s3://{b}/pets/manifest.csv")
    msg = str(ei.value)
    assert f"cannot reach S3 endpoint {dead}" in msg and "AWS_ENDPOINT_URL" in msg and "reading manifest" in msg
    assert FAKE_SECRET_KEY not in msg and ei.value.__cause__ is None


# ------------------------------------------------------------------------------------------ bad local input
def _write(tmp_path: Path, text: str, name: str = "m.csv") -> str:
    make_manifest(tmp_path, per_class=2, size=8, name="unused.csv")      # images/cat/000.png ... images/dog/001.png
    (tmp_path / name).write_text(text)
    return str(tmp_path / name)


GOOD = "images/cat/000.png,cat\nimages/dog/000.png,dog\n"


@pytest.mark.parametrize("text,name,kw,match", [
    ("", "m.csv", {}, r"m\.csv is empty; write columns id,label"),
    ("  \n\n", "m.jsonl", {}, r"is empty"),
    ("id,label,path\n", "m.csv", {}, r"holds a header but no rows; add one row per sample"),
    (GOOD, "m.csv", {}, r"the header line 'images/cat/000\.png,cat' has no 'id' and no 'label' column; the first line "
                        r"must be a header"),
    ("id,path\ncat/000,images/cat/000.png\n", "m.csv", {}, r"has no 'label' column"),
    ("id,label\n" + GOOD + "images/cat/000.png,dog\n", "m.csv", {},
     r"line 4: duplicate id 'images/cat/000\.png' \(first on line 2\); ids must be unique"),
    ("id,label\nimages/cat/000.png, \n", "m.csv", {}, r"line 2: empty label for id 'images/cat/000\.png'; give every row"),
    ("id,label\n,cat\n", "m.csv", {}, r"line 2: empty id"),
    ("id,label,split\nimages/cat/000.png,cat,val\n", "m.csv", {}, r"line 2: invalid split 'val' .*use 'train', 'test' or leave it empty"),
    ("id,label\n" + GOOD + "images/cat/001.png,fox\n", "m.csv", {"classes": ["cat", "dog"]},
     r"line 4: label 'fox' of id 'images/cat/001\.png' is not in data\.options\.classes \['cat', 'dog'\]; add it"),
    ("id,label\n" + GOOD + "cat/009,cat\n", "m.csv", {},
     r"line 4: image .*cat/009 of id 'cat/009' does not exist; add the file or fix the row's path .*no image extension"),
    ("id,label,path\na,cat,images/cat/000.png\nb,dog,images/dog/404.png\n", "m.csv", {},
     r"line 3: image .*images/dog/404\.png of id 'b' does not exist"),
    ("id,label\na,b,c\n", "m.csv", {}, r"line 2: more fields than the header"),
    ('{"id": "a", "label": "cat", "path": "images/cat/000.png"}\n{"id": "b", "label": "dog"\n', "m.jsonl", {},
     r"m\.jsonl line 2: not valid JSON"),
    ('{"id": "a", "path": "images/cat/000.png"}\n', "m.jsonl", {}, r"line 1: no 'label' key"),
    ('["a", "cat"]\n', "m.jsonl", {}, r"line 1: a JSON list, not an object"),
])
def test_bad_manifests(tmp_path, text, name, kw, match):
    uri = _write(tmp_path, text, name)
    with pytest.raises(DataError, match=match):
        manifest(uri, image_size=8, **kw)


def test_undecodable_local_image_names_the_id(tmp_path):
    uri = _write(tmp_path, "id,label,path\na,cat,images/cat/000.png\nb,dog,broken.png\n")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG but not really")
    with pytest.raises(DataError, match=r"line 3: image .*broken\.png of id 'b' cannot be decoded .*replace the image"):
        manifest(uri, image_size=8, test_percent=0)


def test_missing_manifest_folder_and_bad_roots(tmp_path):
    with pytest.raises(DataError, match=r"manifest .*nope\.csv does not exist; create it .*or fix data\.root"):
        manifest(str(tmp_path / "nope.csv"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"holds no manifest \(\*\.csv or \*\.jsonl\); add one"):
        manifest(str(tmp_path / "empty"))
    with pytest.raises(DataError, match=r"the folder does not exist"):
        manifest(str(tmp_path / "absent") + "/")
    with pytest.raises(ConfigError, match=r"must end in \.csv or \.jsonl"):
        manifest(str(tmp_path / "m.txt"))
    with pytest.raises(ConfigError, match=r"needs data\.root"):
        manifest(None)
    with pytest.raises(ConfigError, match=r"unsupported URI scheme"):
        manifest("gs://b/m.csv")


@pytest.mark.parametrize("opts,match", [
    ({"channels": 2}, r"channels: 2; use 3 \(RGB\) or 1"),
    ({"test_percent": 100}, r"test_percent: 100; use an integer in \[0, 100\)"),
    ({"classes": "cat"}, r"classes: 'cat'; give a non-empty list"),
    ({"classes": ["cat", "cat"]}, r"lists \['cat'\] more than once"),
    ({"workers": 0}, r"workers: 0; use a positive integer"),
    ({"image_size": 0}, r"image_size: 0 is not a positive integer"),
    ({"resize": 3}, r"data\.options\.resize: dataset 'manifest' has no option 'resize'; valid options: image_size"),
])
def test_bad_options_are_config_errors(tmp_path, opts, match):
    uri = _write(tmp_path, "id,label\n" + GOOD)
    with pytest.raises(ConfigError, match=match):
        call_dataset_fn("manifest", uri, False, opts)

"""Builders for small dataset files in the real on-disk formats (the machine has no internet), and
what tests read from ``tdds run``'s output."""
from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np

# `tdds run` prints one line per task that ran: "  <task>[ #<n>]  done|FAILED  <seconds> s"
from pipelines.console import TASK_LINE as EXECUTED  # noqa: F401 - re-exported for the tests


def write_idx(path: Path, array: np.ndarray, gz: bool) -> None:
    array = np.asarray(array, dtype=np.uint8)
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    if gz:
        with gzip.open(path.with_name(path.name + ".gz"), "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)


def make_idx_dataset(root: Path, n_train: int = 40, n_test: int = 20, gz: bool = True, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    write_idx(root / "train-images-idx3-ubyte", rng.integers(0, 256, (n_train, 28, 28)), gz)
    write_idx(root / "train-labels-idx1-ubyte", np.arange(n_train) % 10, gz)
    write_idx(root / "t10k-images-idx3-ubyte", rng.integers(0, 256, (n_test, 28, 28)), gz)
    write_idx(root / "t10k-labels-idx1-ubyte", np.arange(n_test) % 10, gz)


def make_cifar(root: Path, classes: int = 10, per_batch: int = 6, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    if classes == 10:
        base = root / "cifar-10-batches-py"
        base.mkdir(parents=True)
        for i in range(1, 6):
            d = {"data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8), "labels": list(rng.integers(0, 10, per_batch))}
            (base / f"data_batch_{i}").write_bytes(pickle.dumps(d))
        (base / "test_batch").write_bytes(pickle.dumps({"data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
                                                        "labels": list(rng.integers(0, 10, per_batch))}))
        (base / "batches.meta").write_bytes(pickle.dumps({"label_names": [f"c{i}" for i in range(10)]}))
    else:
        base = root / "cifar-100-python"
        base.mkdir(parents=True)
        for name, n in (("train", per_batch * 5), ("test", per_batch)):
            (base / name).write_bytes(pickle.dumps({"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                                                    "fine_labels": list(rng.integers(0, 100, n)),
                                                    "coarse_labels": list(rng.integers(0, 20, n))}))
        (base / "meta").write_bytes(pickle.dumps({"fine_label_names": [f"f{i}" for i in range(100)]}))


def make_imagefolder(root: Path, classes=("cat", "dog"), per_class: int = 4, split: bool = True, size: int = 20,
                     start: int = 0, seed: int = 0) -> list[str]:
    from PIL import Image

    rng = np.random.default_rng(seed + start)
    made = []
    for split_name, n in ((("train", per_class), ("test", max(1, per_class // 2))) if split else ((None, per_class),)):
        for c in classes:
            d = root / split_name / c if split_name else root / c
            d.mkdir(parents=True, exist_ok=True)
            for i in range(start, start + n):
                p = d / f"{i:03d}.png"
                Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(p)
                made.append(str(p.relative_to(root)))
    return made


def make_manifest(root: Path, classes=("cat", "dog"), per_class: int = 4, start: int = 0, size: int = 8,
                  name: str = "manifest.csv", split: str | None = None, seed: int = 0) -> list[dict]:
    """Write ``root/images/<class>/<n>.png`` and append one row per image to the manifest
    ``root/<name>`` (CSV with header ``id,label,path[,split]`` or JSONL objects; created when absent).
    Ids are ``<class>/<n>``; paths are relative to the manifest. Returns the new rows."""
    import csv
    import json

    from PIL import Image

    rng = np.random.default_rng(seed + start)
    rows = []
    for c in classes:
        d = root / "images" / c
        d.mkdir(parents=True, exist_ok=True)
        for i in range(start, start + per_class):
            rel = f"images/{c}/{i:03d}.png"
            Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(root / rel)
            rows.append({"id": f"{c}/{i:03d}", "label": c, "path": rel, **({"split": split} if split is not None else {})})
    path = root / name
    new = not path.exists()
    cols = ["id", "label", "path"] + (["split"] if split is not None else [])
    with open(path, "a", newline="") as f:
        if name.endswith(".jsonl"):
            f.writelines(json.dumps(r) + "\n" for r in rows)
        else:
            w = csv.DictWriter(f, fieldnames=cols)
            if new:
                w.writeheader()
            w.writerows(rows)
    return rows


def upload_tree(client, folder: Path, bucket: str, prefix: str) -> list[str]:
    """Upload every file under ``folder`` to ``s3://bucket/prefix/<relative path>``; returns the keys."""
    keys = []
    for p in sorted(Path(folder).rglob("*")):
        if p.is_file():
            key = f"{prefix.strip('/')}/{p.relative_to(folder).as_posix()}"
            client.upload_file(str(p), bucket, key)
            keys.append(key)
    return keys

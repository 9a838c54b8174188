"""Builders for small dataset files in the real on-disk formats (the machine has no internet)."""
from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np


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

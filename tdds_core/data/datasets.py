"""The registered datasets: one decorated function each, returning :class:`Splits`.

Sample ids: the index in the original split for fixed datasets (``"0"``, ``"1"``, ...), the path
relative to the dataset root for folder datasets (``"train/cat/001.png"``).
"""
from __future__ import annotations

import gzip
import os
import pickle
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from ..errors import DataError
from .base import ArrayDataset, Splits, register_dataset

FASHION_MNIST_DEFAULT = "/usr/share/datasets/fashion-mnist"
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}


# ----------------------------------------------------------------------------------- IDX (MNIST-style)
def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (optionally gzipped): uint8 images ``[N, H, W]`` or labels ``[N]``."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"{path} is corrupt or truncated ({e}); reinstall the dataset files.") from e
    if len(data) < 8:
        raise DataError(f"{path} is too short to be an IDX file; reinstall the dataset files.")
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code != 0x08:
        raise DataError(f"{path} is not a uint8 IDX file (magic {data[:4].hex()}); point data.root at the IDX files.")
    dims = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
    expected = int(np.prod(dims))
    payload = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if payload.size != expected:
        raise DataError(f"{path} holds {payload.size} bytes of data, its header promises {expected}: the file is truncated.")
    return payload.reshape(dims)


def _find_idx(root: Path, stem: str) -> Path | None:
    for folder in (root, root / "raw", root / "FashionMNIST" / "raw", root / "MNIST" / "raw"):
        for name in (stem, stem + ".gz"):
            if (folder / name).is_file():
                return folder / name
    return None


def _idx_splits(name: str, root: Path, classes: list[str], download: bool, tv_cls: str) -> Splits:
    stems = {"train_x": "train-images-idx3-ubyte", "train_y": "train-labels-idx1-ubyte",
             "test_x": "t10k-images-idx3-ubyte", "test_y": "t10k-labels-idx1-ubyte"}
    found = {k: _find_idx(root, s) for k, s in stems.items()}
    if any(v is None for v in found.values()) and download:
        import torchvision

        getattr(torchvision.datasets, tv_cls)(str(root), train=True, download=True)
        getattr(torchvision.datasets, tv_cls)(str(root), train=False, download=True)
        found = {k: _find_idx(root, s) for k, s in stems.items()}
    missing = [stems[k] for k, v in found.items() if v is None]
    if missing:
        hint = ("install Debian's package dataset-fashion-mnist (apt-get install dataset-fashion-mnist), "
                if name == "fashion-mnist" else "")
        raise DataError(
            f"dataset {name!r}: {root} is missing {', '.join(missing)} (.gz or not); {hint}"
            "set data.root to the folder holding the IDX files, or set data.download: true."
        )
    tx, ty, vx, vy = (read_idx(found[k]) for k in ("train_x", "train_y", "test_x", "test_y"))
    if len(tx) != len(ty) or len(vx) != len(vy):
        raise DataError(f"dataset {name!r}: image and label files in {root} disagree in length ({len(tx)} vs {len(ty)}, {len(vx)} vs {len(vy)}).")
    train = ArrayDataset(tx[:, None], ty.astype(np.int64), [str(i) for i in range(len(ty))], str(root))
    test = ArrayDataset(vx[:, None], vy.astype(np.int64), [str(i) for i in range(len(vy))], str(root))
    return Splits(name, train, test, classes, mean=(0.2860,) if name == "fashion-mnist" else (0.1307,),
                  std=(0.3530,) if name == "fashion-mnist" else (0.3081,), flip=name == "fashion-mnist", crop_padding=4)


def _default_root(*candidates: str) -> str:
    """First candidate folder that exists (Debian's package path first, then ./data/...)."""
    return next((c for c in candidates if Path(c).is_dir()), candidates[0])


@register_dataset("fashion-mnist")
def fashion_mnist(root: str | None = None, *, download: bool = False) -> Splits:
    """Fashion-MNIST (Xiao et al. 2017): 60k/10k 28x28 grayscale, 10 classes, IDX files (gz or not).
    Default folder: Debian's ``/usr/share/datasets/fashion-mnist``, else ``./data/fashion-mnist``."""
    root = root or _default_root(FASHION_MNIST_DEFAULT, "data/fashion-mnist")
    return _idx_splits("fashion-mnist", Path(root), FASHION_CLASSES, download, "FashionMNIST")


@register_dataset("mnist")
def mnist(root: str | None = None, *, download: bool = False) -> Splits:
    """MNIST (LeCun et al. 1998): 60k/10k 28x28 grayscale digits, IDX files (gz or not). No flips."""
    root = root or _default_root("/usr/share/datasets/mnist", "data/mnist")
    return _idx_splits("mnist", Path(root), [str(i) for i in range(10)], download, "MNIST")


# ----------------------------------------------------------------------------------- CIFAR (python pickle batches)
def _read_cifar(root: Path, folder: str, train_files: list[str], test_files: list[str], label_key: str,
                meta_file: str, names_key: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[str]]:
    base = root / folder

    def load(name: str) -> dict:
        p = base / name
        if not p.is_file():
            raise DataError(f"CIFAR batch {p} is missing; set data.root to the folder holding {folder}/ or data.download: true.")
        try:
            with open(p, "rb") as f:
                return pickle.load(f, encoding="latin1")
        except Exception as e:  # noqa: BLE001 - any unpickling failure means a corrupt file
            raise DataError(f"CIFAR batch {p} is corrupt ({e}); delete it and download again.") from e

    def stack(files: list[str]) -> tuple[np.ndarray, np.ndarray]:
        xs, ys = [], []
        for name in files:
            d = load(name)
            xs.append(np.asarray(d["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
            ys.append(np.asarray(d[label_key], dtype=np.int64))
        return np.concatenate(xs), np.concatenate(ys)

    tx, ty = stack(train_files)
    vx, vy = stack(test_files)
    classes = list(load(meta_file)[names_key])
    return tx, ty, vx, vy, classes


def _cifar(name: str, root: Path, download: bool, tv_cls: str, folder: str, train_files: list[str], test_files: list[str],
           label_key: str, meta_file: str, names_key: str, mean, std) -> Splits:
    if not (root / folder).is_dir() and download:
        import torchvision

        getattr(torchvision.datasets, tv_cls)(str(root), train=True, download=True)
        getattr(torchvision.datasets, tv_cls)(str(root), train=False, download=True)
    if not (root / folder).is_dir():
        raise DataError(f"dataset {name!r}: {root / folder} does not exist; set data.root to the folder that holds "
                        f"{folder}/ (torchvision's layout) or set data.download: true.")
    tx, ty, vx, vy, classes = _read_cifar(root, folder, train_files, test_files, label_key, meta_file, names_key)
    train = ArrayDataset(tx, ty, [str(i) for i in range(len(ty))], str(root))
    test = ArrayDataset(vx, vy, [str(i) for i in range(len(vy))], str(root))
    return Splits(name, train, test, [str(c) for c in classes], mean, std, flip=True, crop_padding=4)


@register_dataset("cifar10")
def cifar10(root: str = "data", *, download: bool = False) -> Splits:
    """CIFAR-10 (Krizhevsky 2009) from torchvision's python batches ``cifar-10-batches-py/``."""
    return _cifar("cifar10", Path(root), download, "CIFAR10", "cifar-10-batches-py",
                  [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"], "labels", "batches.meta", "label_names",
                  (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))


@register_dataset("cifar100")
def cifar100(root: str = "data", *, download: bool = False) -> Splits:
    """CIFAR-100 (Krizhevsky 2009) from torchvision's python files ``cifar-100-python/`` (fine labels)."""
    return _cifar("cifar100", Path(root), download, "CIFAR100", "cifar-100-python", ["train"], ["test"], "fine_labels",
                  "meta", "fine_label_names", (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762))


# ----------------------------------------------------------------------------------- image folders
def _stable_bucket(key: str) -> int:
    return zlib.crc32(key.encode()) % 100


def _scan_classes(folder: Path) -> dict[str, list[Path]]:
    out = {}
    for d in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = sorted(p for p in d.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTS)
        out[d.name] = files
    return out


def _decode(paths: list[Path], size: int, channels: int, *, describe=None,
            fix: str = "replace the image or remove the file") -> np.ndarray:
    """Decode and resize images to uint8 ``[len(paths), channels, size, size]``. A file that does not
    decode is a DataError naming it (``describe(i)``, when given, names sample ``i`` instead) and
    ``fix``."""
    out = np.empty((len(paths), channels, size, size), dtype=np.uint8)
    for i, p in enumerate(tqdm(paths, desc="decoding images", leave=False, disable=len(paths) < 2000)):
        try:
            with Image.open(p) as im:
                im = im.convert("L" if channels == 1 else "RGB").resize((size, size), Image.BILINEAR)
                a = np.asarray(im, dtype=np.uint8)
        except Exception as e:  # noqa: BLE001 - PIL raises many types for bad files
            what = describe(i) if describe else f"image {p}"
            raise DataError(f"{what} cannot be decoded ({str(e)[:200]}); {fix}.") from e
        out[i] = a[None] if channels == 1 else a.transpose(2, 0, 1)
    return out


@register_dataset("imagefolder", options=("image_size", "channels", "test_percent"))
def imagefolder(root: str, *, image_size: int = 32, channels: int = 3, test_percent: int = 10,
                download: bool = False) -> Splits:
    """ImageNet-style class folders: ``root/train/<class>/*`` and ``root/test|val/<class>/*``, or just
    ``root/<class>/*`` (then a stable ``test_percent`` of files, chosen by a hash of the id, is the
    test split, so a growing dataset keeps its split). Sample id = path relative to ``root``.
    Images are decoded once and resized to ``image_size`` (resident uint8)."""
    del download
    r = Path(root)
    if not r.is_dir():
        raise DataError(f"imagefolder root {r} does not exist; set data.root to a folder of class folders.")
    test_dir = next((r / n for n in ("test", "val") if (r / n).is_dir()), None)
    if (r / "train").is_dir():
        if test_dir is None:
            raise DataError(f"imagefolder {r} has train/ but no test/ or val/ folder; add one with the same class "
                            "folders, or put the class folders directly under data.root to split off a test set by hash.")
        train_map = _scan_classes(r / "train")
        test_map = _scan_classes(test_dir) if test_dir else {}
        classes = sorted(train_map)
        train_items = [(p, c) for c in classes for p in train_map[c]]
        test_items = [(p, c) for c in classes for p in test_map.get(c, [])]
        unknown = sorted(set(test_map) - set(classes))
        if unknown:
            raise DataError(f"imagefolder {r}: test classes {unknown} have no training folder; add them under train/.")
    else:
        cmap = _scan_classes(r)
        classes = sorted(cmap)
        items = [(p, c) for c in classes for p in cmap[c]]
        train_items = [(p, c) for p, c in items if _stable_bucket(str(p.relative_to(r))) >= test_percent]
        test_items = [(p, c) for p, c in items if _stable_bucket(str(p.relative_to(r))) < test_percent]
    if not classes or not train_items:
        raise DataError(f"imagefolder {r} holds no images in class folders (extensions {sorted(IMAGE_EXTS)}); "
                        "expected root/<class>/<image> or root/train/<class>/<image>.")
    cidx = {c: i for i, c in enumerate(classes)}

    def build(items):
        rel = [str(p.relative_to(r)) for p, _ in items]
        imgs = _decode([p for p, _ in items], image_size, channels) if items else np.zeros((0, channels, image_size, image_size), np.uint8)
        return ArrayDataset(imgs, np.array([cidx[c] for _, c in items], dtype=np.int64), rel, str(r), rel)

    mean = (0.5,) * channels
    std = (0.25,) * channels
    return Splits("imagefolder", build(train_items), build(test_items), classes, mean, std, flip=True,
                  crop_padding=max(1, image_size // 8))


# ----------------------------------------------------------------------------------- synthetic
@register_dataset("synthetic", files=False,
                  options=("num_train", "num_test", "num_classes", "image_size", "channels", "seed", "noise"))
def synthetic(*, num_train: int = 512, num_test: int = 256, num_classes: int = 4, image_size: int = 16,
              channels: int = 3, seed: int = 0, noise: float = 40.0) -> Splits:
    """Seeded, learnable images: a smooth random pattern per class plus Gaussian pixel noise. For tests."""
    rng = np.random.default_rng(seed)
    small = rng.normal(size=(num_classes, channels, 4, 4))
    reps = -(-image_size // 4)
    protos = np.kron(small, np.ones((1, 1, reps, reps)))[..., :image_size, :image_size]

    def make(n: int, offset: int):
        y = np.arange(n) % num_classes
        r = np.random.default_rng(seed + offset)
        r.shuffle(y)
        x = 128 + 50 * protos[y] + r.normal(scale=noise, size=(n, channels, image_size, image_size))
        return np.clip(x, 0, 255).astype(np.uint8), y.astype(np.int64)

    tx, ty = make(num_train, 1)
    vx, vy = make(num_test, 2)
    return Splits("synthetic", ArrayDataset(tx, ty, [str(i) for i in range(num_train)]),
                  ArrayDataset(vx, vy, [str(i) for i in range(num_test)]),
                  [f"class{i}" for i in range(num_classes)], (0.5,) * channels, (0.2,) * channels, flip=True,
                  crop_padding=2)

"""Dataset containers, the dataset registry, stable sample ids and the dataset fingerprint."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from ..errors import ConfigError, DataError
from ..registry import Registry


@dataclass(frozen=True)
class DatasetEntry:
    """A registered dataset: ``fn(**options) -> Splits`` and what it takes. ``options``: the names of
    its keyword options (``data.options``); ``files``: it reads files, so it takes ``root`` (the
    folder or manifest, ``data.root``) and ``download``."""

    fn: Callable[..., "Splits"]
    options: tuple[str, ...] = ()
    files: bool = True


DATASETS: Registry[DatasetEntry] = Registry("dataset", "set data.name (see `tdds list`)")


def register_dataset(name: str, *, options: tuple[str, ...] = (), files: bool = True):
    """Decorator: ``@register_dataset("cifar10") def cifar10(root, *, download=False) -> Splits``;
    ``options`` names the keyword options, ``files=False`` for a dataset that reads no files
    (then it takes neither ``root`` nor ``download``)."""

    def deco(fn):
        DATASETS.add(name, DatasetEntry(fn, tuple(options), files), fn.__module__)
        return fn

    return deco


def list_datasets() -> list[str]:
    return DATASETS.names()


def dataset_entry(name: str) -> DatasetEntry:
    """The registered dataset ``name``; ConfigError naming the known ones otherwise."""
    if name not in DATASETS:
        raise ConfigError(f"data.name: unknown dataset {name!r}; known datasets: {', '.join(list_datasets())}")
    return DATASETS.get(name)


def get_dataset_fn(name: str) -> Callable[..., "Splits"]:
    return dataset_entry(name).fn


def fingerprint(ids: Sequence[str], labels: np.ndarray) -> str:
    """SHA-256 over (id, label) pairs in order: identifies one version of a dataset."""
    h = hashlib.sha256()
    labels = np.asarray(labels, dtype=np.int64)
    for i, y in zip(ids, labels.tolist()):
        h.update(f"{i}\t{y}\n".encode())
    return h.hexdigest()


@dataclass
class ArrayDataset:
    """An in-memory split: ``images`` uint8 ``[N, C, H, W]``, ``labels`` int64 ``[N]``, ``ids`` N strings.
    ``paths`` is set for folder datasets (relative file paths under ``root``)."""

    images: np.ndarray
    labels: np.ndarray
    ids: list[str]
    root: str | None = None
    paths: list[str] | None = None

    def __post_init__(self) -> None:
        self.labels = np.asarray(self.labels, dtype=np.int64)
        if self.images.dtype != np.uint8 or self.images.ndim != 4:
            raise DataError(f"images must be uint8 [N, C, H, W], got {self.images.dtype} {self.images.shape}")
        if not (len(self.images) == len(self.labels) == len(self.ids)):
            raise DataError(f"images ({len(self.images)}), labels ({len(self.labels)}) and ids ({len(self.ids)}) differ in length")

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def nbytes(self) -> int:
        return int(self.images.nbytes)

    def subset(self, idx: np.ndarray) -> "ArrayDataset":
        idx = np.asarray(idx, dtype=np.int64)
        return ArrayDataset(self.images[idx], self.labels[idx], [self.ids[i] for i in idx.tolist()], self.root,
                            None if self.paths is None else [self.paths[i] for i in idx.tolist()])


@dataclass
class Splits:
    """Train and test splits plus what models and augmentation need to know."""

    name: str
    train: ArrayDataset
    test: ArrayDataset
    classes: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    flip: bool = True          # horizontal flip is a valid augmentation
    crop_padding: int = 4      # random-crop padding (0 = none)
    info: dict = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def channels(self) -> int:
        return int(self.train.images.shape[1])

    @property
    def image_size(self) -> int:
        return int(self.train.images.shape[-1])

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.train.ids, self.train.labels)

    def validate(self) -> None:
        c = self.num_classes
        for split_name, split in (("train", self.train), ("test", self.test)):
            if len(split) == 0:
                raise DataError(f"dataset {self.name!r}: the {split_name} split is empty; check data.root.")
            bad = (split.labels < 0) | (split.labels >= c)
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                raise DataError(
                    f"dataset {self.name!r}: {int(bad.sum())} {split_name} labels are outside [0, {c}) "
                    f"(first: sample {split.ids[i]!r} has label {int(split.labels[i])}); fix the labels or the class list."
                )
        if len(set(self.train.ids)) != len(self.train.ids):
            raise DataError(f"dataset {self.name!r}: training sample ids are not unique; ids must identify samples.")


def call_dataset_fn(name: str, root: str | None, download: bool, options: dict) -> Splits:
    """Load the registered dataset ``name`` with ``options``; an option it did not declare is a
    ConfigError naming the valid ones."""
    entry = dataset_entry(name)
    for k in options:
        if k not in entry.options:
            raise ConfigError(f"data.options.{k}: dataset {name!r} has no option {k!r}; valid options: "
                              f"{', '.join(entry.options) or 'none'}")
    kwargs = dict(options)
    if entry.files:
        if root is not None:
            kwargs["root"] = root
        kwargs["download"] = download
    return entry.fn(**kwargs)

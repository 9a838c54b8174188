"""Datasets: registry, stable ids, fingerprint, subsets, noise, and the batch loaders."""
from __future__ import annotations

import numpy as np

from ..config import DataConfig
from . import datasets as _datasets  # noqa: F401  (registers the datasets)
from . import manifest as _manifest  # noqa: F401  (registers the manifest dataset)
from .base import ArrayDataset, Splits, call_dataset_fn, fingerprint, list_datasets, register_dataset
from .noise import apply_noise
from ..errors import DataError

__all__ = ["ArrayDataset", "Splits", "create_dataset", "fingerprint", "list_datasets", "register_dataset",
           "stratified_subset", "split_validation", "apply_noise"]


def stratified_subset(labels: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Sorted positions of a seeded subset of size ``k`` with class proportions preserved."""
    n = len(labels)
    if k >= n:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n)
    y = labels[perm]
    rank = np.empty(n, dtype=np.float64)
    for c in np.unique(y):
        pos = np.flatnonzero(y == c)
        rank[pos] = (np.arange(len(pos)) + 0.5) / len(pos)
    order = np.lexsort((np.arange(n), rank))
    return np.sort(perm[order[:k]])


def split_validation(train: ArrayDataset, k: int, seed: int) -> tuple[ArrayDataset, ArrayDataset]:
    """``(rest, validation)``: a seeded, class-stratified hold-out of ``k`` samples and the rest, in
    their original order. DataError when ``k`` leaves too little to train on."""
    n = len(train)
    if k >= n:
        raise DataError(f"data.val_size: {k} held-out samples leave nothing to train on ({n} training samples); "
                        "use a val_size below the training set's size (about 10% of it is usual)")
    held = stratified_subset(train.labels, k, seed)
    rest = np.setdiff1d(np.arange(n), held)
    return train.subset(rest), train.subset(held)


def create_dataset(cfg: DataConfig) -> Splits:
    """Load the configured dataset, take subsets, inject noise, validate labels and ids.

    ``splits.info`` records ``noisy_mask`` (bool ``[N]``) and ``noise`` when noise was injected."""
    splits = call_dataset_fn(cfg.name, cfg.root, cfg.download, dict(cfg.options, **({"image_size": cfg.image_size} if cfg.image_size and cfg.name in ("imagefolder", "manifest") else {})))
    if cfg.train_subset:
        splits.train = splits.train.subset(stratified_subset(splits.train.labels, cfg.train_subset, cfg.subset_seed))
    if cfg.val_size:
        splits.train, val = split_validation(splits.train, cfg.val_size, cfg.subset_seed + 2)
        if cfg.evaluate_on == "validation":
            splits.test = val      # the test split is dropped unread: nothing downstream can see a test label
        splits.info["validation_ids"] = list(val.ids)
    if cfg.test_subset and cfg.evaluate_on == "test":
        splits.test = splits.test.subset(stratified_subset(splits.test.labels, cfg.test_subset, cfg.subset_seed + 1))
    splits.validate()
    if cfg.noise.active:
        splits.train, mask, record = apply_noise(splits.train, splits.num_classes, cfg.noise)
        splits.info["noisy_mask"] = mask
        splits.info["noise"] = record
    return splits

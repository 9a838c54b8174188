"""Datasets: registry, stable ids, fingerprint, subsets, noise, and the batch loaders."""
from __future__ import annotations

import numpy as np

from ..config import DataConfig
from . import datasets as _datasets  # noqa: F401  (registers the datasets)
from . import manifest as _manifest  # noqa: F401  (registers the manifest dataset)
from .base import ArrayDataset, Splits, call_dataset_fn, fingerprint, list_datasets, register_dataset
from .noise import apply_noise

__all__ = ["ArrayDataset", "Splits", "create_dataset", "fingerprint", "list_datasets", "register_dataset",
           "stratified_subset", "apply_noise"]


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


def create_dataset(cfg: DataConfig) -> Splits:
    """Load the configured dataset, take subsets, inject noise, validate labels and ids.

    ``splits.info`` records ``noisy_mask`` (bool ``[N]``) and ``noise`` when noise was injected."""
    splits = call_dataset_fn(cfg.name, cfg.root, cfg.download, dict(cfg.options, **({"image_size": cfg.image_size} if cfg.image_size and cfg.name in ("imagefolder", "manifest") else {})))
    if cfg.train_subset:
        splits.train = splits.train.subset(stratified_subset(splits.train.labels, cfg.train_subset, cfg.subset_seed))
    if cfg.test_subset:
        splits.test = splits.test.subset(stratified_subset(splits.test.labels, cfg.test_subset, cfg.subset_seed + 1))
    splits.validate()
    if cfg.noise.active:
        splits.train, mask, record = apply_noise(splits.train, splits.num_classes, cfg.noise)
        splits.info["noisy_mask"] = mask
        splits.info["noise"] = record
    return splits

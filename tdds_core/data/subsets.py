"""Seeded, class-stratified subsets and the validation hold-out."""
from __future__ import annotations

import numpy as np

from ..errors import DataError
from .base import ArrayDataset

__all__ = ["stratified_subset", "split_validation"]


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

"""Datasets: registry, stable ids, fingerprint, subsets, noise, and the batch loaders (``loader``,
torch; imported by the engine only). The datasets register on import (``datasets``, ``manifest``)."""
from . import datasets, manifest  # noqa: F401  (register the datasets)
from .base import (DATASETS, ArrayDataset, DatasetEntry, Splits, call_dataset_fn, dataset_entry, fingerprint,
                   get_dataset_fn, list_datasets, register_dataset)
from .factory import create_dataset
from .noise import apply_noise
from .subsets import split_validation, stratified_subset

__all__ = ["ArrayDataset", "Splits", "create_dataset", "fingerprint", "list_datasets", "register_dataset",
           "stratified_subset", "split_validation", "apply_noise", "DATASETS", "DatasetEntry", "dataset_entry",
           "get_dataset_fn", "call_dataset_fn"]

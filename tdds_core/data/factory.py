"""``create_dataset(cfg.data)``: the configured dataset, subsets, hold-out and noise applied."""
from __future__ import annotations

from ..config import DataConfig
from .base import Splits, call_dataset_fn
from .noise import apply_noise
from .subsets import split_validation, stratified_subset

__all__ = ["create_dataset"]


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

"""The small synthetic config most tests train on, in the two forms the tests pass it.

* :func:`synthetic_config` -> a config dict for ``parse_config`` or a YAML file: the ``synthetic``
  dataset (``num_train`` x ``num_test`` images of ``image_size`` pixels), ``small_cnn`` of ``width``,
  ``epochs`` of ``batch_size`` at lr 0.05 with the progress bar off; other sections as keywords.
* :func:`synthetic_settings` -> the same as ``--set section.key=value`` strings over
  ``configs/quickstart.yaml`` (its subsets switched off, task retries 0), for ``tdds run``.

Module-level constants of a test file are built from these (fixtures cannot be), so they are plain
functions; conftest.py imports them beside the fixtures.
"""
from __future__ import annotations

from typing import Any, Optional


def synthetic_config(num_train: int, num_test: int, image_size: int, *, width: int = 8, epochs: int = 3,
                     batch_size: int = 16, name: Optional[str] = None, **sections: Any) -> dict:
    """``{"name"?, "data", "model", "train", **sections}``; a section given here replaces the built one."""
    cfg: dict = {"name": name} if name is not None else {}
    cfg.update({
        "data": {"name": "synthetic", "options": {"num_train": num_train, "num_test": num_test, "image_size": image_size}},
        "model": {"arch": "small_cnn", "options": {"width": width}},
        "train": {"epochs": epochs, "batch_size": batch_size, "lr": 0.05, "progress": False},
    })
    cfg.update(sections)
    return cfg


def synthetic_settings(name: str, methods: str, *, num_train: int = 120, num_test: int = 60, image_size: int = 12,
                       width: int = 8, epochs: int = 2, batch_size: int = 32, coreset_batch_size: int = 16) -> list[str]:
    """``--set`` strings for a tiny ``tdds run``: ``methods`` is the YAML list, e.g. ``[{name: random}]``;
    one selection rate (0.5)."""
    return [f"name={name}", "data.name=synthetic",
            f"data.options={{num_train: {num_train}, num_test: {num_test}, image_size: {image_size}}}",
            "data.train_subset=null", "data.test_subset=null", "model.arch=small_cnn", f"model.options={{width: {width}}}",
            f"train.epochs={epochs}", f"train.batch_size={batch_size}", "train.progress=false",
            f"methods={methods}", "selection.rates=[0.5]", f"coreset.batch_size={coreset_batch_size}",
            "pipeline.retries=0"]

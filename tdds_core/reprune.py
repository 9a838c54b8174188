"""Re-pruning a dataset that grows: how the coreset of the newest version differs from the last one.

Sample ids are stable (the relative path for an imagefolder, the ``id`` column for a manifest, the
index for fixed datasets), so two
selections made on two versions of a dataset can be compared id by id::

    diff = compare_selections(previous_ids, current_ids, previous_universe=previous_dataset_ids)
    diff.kept      # ids in both coresets
    diff.dropped   # ids in the previous coreset, not in the current one
    diff.added     # ids in the current coreset, not in the previous one
    diff.added_unseen  # of ``added``: ids the previous dataset version did not have (new samples)
    diff.jaccard   # |kept| / |previous ∪ current|

:func:`find_previous_selection` finds the selection of the previous version: the newest FINISHED
``reprune`` record in MLflow for the same dataset, method label and pruning rate whose dataset
fingerprint differs from the current one (tracking on); or, with tracking off, the newest entry of
the store's ``reprune/`` history (one small JSON per recorded version). :func:`record_reprune`
compares one current selection with it and records the result: an MLflow run (child of the
pipeline's parent run) with the counts as metrics and the id lists as artifacts, plus the history
entry in the store.
"""
from __future__ import annotations

import json
import math
import re
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

from .artifacts import fetch
from .config import config_digest
from .errors import ArtifactError
from .io import verify_manifest
from .names import (STAGE_REPRUNE, TAG_DATASET, TAG_FINGERPRINT, TAG_LABEL, TAG_METHOD, TAG_METHOD_NAME,
                    TAG_PREVIOUS_FINGERPRINT, TAG_PREVIOUS_SELECTION_URI, TAG_RATE, TAG_SELECTION_URI, TAG_STAGE,
                    TAG_TRAIN_URI, format_rate, rate_text,
                    run_name)
from .storage import open_store
from .tracking import run_key, run_params

__all__ = [
    "SelectionDiff", "PreviousSelection", "compare_selections", "dataset_identity", "find_previous_selection",
    "record_reprune", "read_selection_ids", "read_dataset_ids", "STAGE_REPRUNE", "TAG_DATASET",
    "TAG_SELECTION_URI", "TAG_TRAIN_URI", "TAG_PREVIOUS_FINGERPRINT", "TAG_PREVIOUS_SELECTION_URI", "HISTORY_PREFIX",
]

HISTORY_PREFIX = "reprune"                           # store key prefix of the history entries


@dataclass(frozen=True)
class SelectionDiff:
    """How a coreset changed between two dataset versions (id lists keep the current/previous order)."""

    kept: list[str]
    dropped: list[str]
    added: list[str]
    added_unseen: Optional[list[str]] = None   # None when the previous dataset's ids are unknown
    num_previous: int = 0
    num_current: int = 0

    @property
    def jaccard(self) -> float:
        """|previous ∩ current| / |previous ∪ current| (1.0 for two empty selections)."""
        union = len(self.kept) + len(self.dropped) + len(self.added)
        return 1.0 if union == 0 else len(self.kept) / union

    def counts(self) -> dict[str, float]:
        out = {"kept": float(len(self.kept)), "dropped": float(len(self.dropped)), "added": float(len(self.added)),
               "jaccard": self.jaccard, "num_previous": float(self.num_previous), "num_current": float(self.num_current)}
        if self.added_unseen is not None:
            out["added_unseen"] = float(len(self.added_unseen))
        return out


def compare_selections(previous_ids: Sequence[str], current_ids: Sequence[str], *,
                       previous_universe: Optional[Sequence[str]] = None) -> SelectionDiff:
    """Compare the coreset of a previous dataset version with the current one, by stable sample id.

    Parameters
    ----------
    previous_ids, current_ids : sequences of str
        The selected ids of each version (any order; duplicates are an error).
    previous_universe : sequence of str, optional
        Every training id of the previous dataset version. When given, ``added_unseen`` lists the
        added ids that are new samples (not present in the previous version at all); the other
        added ids were present before but not selected.

    Returns
    -------
    SelectionDiff
        ``kept`` in current order, ``dropped`` in previous order, ``added`` in current order.
    """
    prev, cur = list(map(str, previous_ids)), list(map(str, current_ids))
    for name, ids in (("previous_ids", prev), ("current_ids", cur)):
        if len(set(ids)) != len(ids):
            raise ValueError(f"{name} holds duplicate ids; a selection names each sample once.")
    pset, cset = set(prev), set(cur)
    kept = [i for i in cur if i in pset]
    dropped = [i for i in prev if i not in cset]
    added = [i for i in cur if i not in pset]
    unseen = None
    if previous_universe is not None:
        universe = set(map(str, previous_universe))
        missing = pset - universe
        if missing:
            raise ValueError(f"{len(missing)} previous selected ids are not in previous_universe "
                             f"(e.g. {sorted(missing)[0]!r}); pass the ids of the dataset version the selection came from.")
        unseen = [i for i in added if i not in universe]
    return SelectionDiff(kept, dropped, added, unseen, num_previous=len(prev), num_current=len(cur))


def dataset_identity(data_cfg: Any) -> str:
    """A name for "this dataset, whatever its version": the registry name plus its root and
    options (not the subset sizes' results, not the fingerprint), e.g. ``imagefolder:/data/pets``."""
    root = data_cfg.root or "default"
    ident = f"{data_cfg.name}:{root}"
    extra = {k: v for k, v in (("options", data_cfg.options), ("train_subset", data_cfg.train_subset),
                               ("image_size", data_cfg.image_size)) if v}
    if extra:

        ident += f"#{config_digest(extra, 8)}"
    return ident


# ------------------------------------------------------------------------------------------ reading
def read_selection_ids(selection_uri: str) -> list[str]:
    """The ids of the selection at ``selection_uri`` (local folder or s3://), checksums verified."""

    folder = fetch(selection_uri)
    manifest = verify_manifest(folder)
    if "ids.txt" not in manifest.get("files", {}):
        raise ArtifactError(f"{selection_uri} is not a selection folder (no ids.txt); pass a select stage output.")
    return (folder / "ids.txt").read_text().splitlines()


def read_dataset_ids(train_uri: str) -> Optional[list[str]]:
    """Every training id of the dataset version a full-data run saw (its ``dynamics/ids.txt`` or ``stats/ids.txt``),
    or None when the run is gone."""

    try:
        folder = fetch(train_uri)
    except ArtifactError:
        return None
    for sub in ("dynamics", "stats"):       # a logits or a statistics recording
        p = folder / sub / "ids.txt"
        if p.is_file():
            return p.read_text().splitlines()
    return None


# ------------------------------------------------------------------------------------------ lookup
@dataclass(frozen=True)
class PreviousSelection:
    fingerprint: str
    selection_uri: str
    train_uri: str = ""
    source: str = ""              # "mlflow:<run id>" or "store:<key>"
    info: dict = field(default_factory=dict)


def _slug(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", s).strip("-") or "x"


def _history_prefix(dataset: str, label: str, rate: float) -> str:

    return f"{HISTORY_PREFIX}/{config_digest(dataset, 10)}/{_slug(label)}-p{format_rate(rate)}"


def find_previous_selection(tracker: Any, output: str, *, dataset: str, label: str, rate: float,
                            fingerprint: str) -> Optional[PreviousSelection]:
    """The selection of the newest other version of ``dataset`` for one method label and rate.

    With tracking on (:meth:`~tdds_core.tracking.Tracker.find_runs`): the newest FINISHED run tagged ``tdds.stage=reprune``, ``tdds.dataset``,
    ``tdds.label`` and ``tdds.rate`` as given (a record made before ``tdds.label`` is found through the store history) and a ``tdds.fingerprint`` other than
    ``fingerprint``. Otherwise (or when MLflow has none): the newest entry of the store history
    ``reprune/...`` under ``output`` with another fingerprint. None when there is no earlier version.
    """

    if getattr(tracker, "enabled", False):
        runs = tracker.find_runs(tags={TAG_STAGE: STAGE_REPRUNE, TAG_DATASET: dataset, TAG_LABEL: label,
                                       TAG_RATE: rate_text(rate)}, status="FINISHED", max_results=200)
        for run in runs:
            tags = run.tags
            if tags.get(TAG_FINGERPRINT) and tags.get(TAG_FINGERPRINT) != fingerprint and tags.get(TAG_SELECTION_URI):
                return PreviousSelection(tags[TAG_FINGERPRINT], tags[TAG_SELECTION_URI], tags.get(TAG_TRAIN_URI, ""),
                                         f"mlflow:{run.id}")

    store = open_store(output)
    prefix = _history_prefix(dataset, label, rate)
    best: Optional[tuple[float, str, dict]] = None
    for key in store.list(prefix):
        if not key.endswith(".json"):
            continue
        entry = json.loads(store.get_bytes(key))
        if entry.get("fingerprint") == fingerprint:
            continue
        if best is None or entry.get("created", 0) > best[0]:
            best = (entry.get("created", 0), key, entry)
    if best is None:
        return None
    e = best[2]
    return PreviousSelection(e["fingerprint"], e["selection_uri"], e.get("train_uri", ""), f"store:{best[1]}", e)


# ------------------------------------------------------------------------------------------ record
def record_reprune(cfg: Any, tracker: Any, *, selection_uri: str, train_uri: str, label: str, method: str,
                   rate: float, fingerprint: str, parent: Optional[str] = None) -> dict:
    """Compare the selection at ``selection_uri`` with the previous version's and record it.

    Records an MLflow run ``reprune/<label>/p<rate>`` (child of ``parent``) with metrics ``kept``,
    ``dropped``, ``added``, ``added_unseen`` (when known), ``jaccard``, ``num_previous``,
    ``num_current`` and ``has_previous`` (0 for the first version: everything counts as added), the
    id lists as artifacts ``reprune/{kept,dropped,added}.txt``, and a history entry in the store.
    Returns a row: the counts plus ``method``, ``rate``, ``fingerprint``, ``previous_fingerprint``.
    """
    dataset = dataset_identity(cfg.data)
    current = read_selection_ids(selection_uri)
    prev = find_previous_selection(tracker, cfg.output, dataset=dataset, label=label, rate=rate, fingerprint=fingerprint)
    if prev is not None:
        diff = compare_selections(read_selection_ids(prev.selection_uri), current,
                                  previous_universe=read_dataset_ids(prev.train_uri) if prev.train_uri else None)
    else:
        diff = compare_selections([], current, previous_universe=[])
    counts = diff.counts()
    counts["has_previous"] = 0.0 if prev is None else 1.0
    row = {"method": label, "rate": rate, "fingerprint": fingerprint,
           "previous_fingerprint": prev.fingerprint if prev else "", **counts}

    name = run_name(STAGE_REPRUNE, method=label, rate=rate)
    key = run_key(name, fingerprint, {"selection": selection_uri, "previous": prev.selection_uri if prev else ""})
    tags = {TAG_STAGE: STAGE_REPRUNE, TAG_DATASET: dataset, TAG_METHOD: method, TAG_LABEL: label,
            TAG_METHOD_NAME: method, TAG_RATE: rate_text(rate), TAG_FINGERPRINT: fingerprint, TAG_SELECTION_URI: selection_uri,
            TAG_TRAIN_URI: train_uri, TAG_PREVIOUS_FINGERPRINT: prev.fingerprint if prev else "",
            TAG_PREVIOUS_SELECTION_URI: prev.selection_uri if prev else ""}
    with tracker.start_run(name, key=key, tags=tags, parent=parent) as run:
        if not run.reused and getattr(tracker, "enabled", False):

            tracker.log_params(run_params(method=method, label=label, rate=rate))
            tracker.log_metrics(counts)
            with tempfile.TemporaryDirectory() as tmp:
                for what, ids in (("kept", diff.kept), ("dropped", diff.dropped), ("added", diff.added)):
                    p = Path(tmp) / f"{what}.txt"
                    p.write_text("".join(f"{i}\n" for i in ids))
                    tracker.log_artifact(p, "reprune")
    entry = {"dataset": dataset, "label": label, "method": method, "rate": rate, "fingerprint": fingerprint,
             "selection_uri": selection_uri, "train_uri": train_uri, "created": time.time(),
             "counts": {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in counts.items()}}
    store = open_store(cfg.output)
    hkey = f"{_history_prefix(dataset, label, rate)}/{fingerprint[:16]}.json"
    if not store.exists(hkey):
        store.put_bytes(hkey, json.dumps(entry, indent=2, sort_keys=True).encode())
    return row


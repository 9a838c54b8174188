"""What the stages log the same way, whichever stage logs it: the common params (:func:`run_params`),
the tags naming an artifact (:func:`artifact_tags`), a score stage's summary and figures
(:func:`log_score_run`; the figures are built by :mod:`tdds_core.report`) and a selection
(:func:`log_selection`)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from ..errors import ArtifactError, TrackingError
from ..io import verify_manifest
from ..names import TAG_ARTIFACT_KEY, TAG_ARTIFACT_URI, TAG_SELECTION_SHA256, TAG_SELECTION_URI, rate_text
from ..report import extremes_grid_figure, score_histogram_figure
from ..storage import is_remote, local_copy
from .base import Tracker

__all__ = ["run_params", "artifact_tags", "log_score_run", "log_selection", "SELECTION_FILES"]

SELECTION_FILES = ("indices.npy", "ids.txt", "selected.csv", "weights.npy", "manifest.json")


def run_params(*, method: Optional[str] = None, label: Optional[str] = None,
               method_params: Optional[Mapping[str, Any]] = None, rate: Optional[float] = None,
               **fields: Any) -> dict[str, Any]:
    """The params every stage logs the same way, so one filter finds a method's runs at every stage
    (``params.method = 'tdds'``): ``method`` (the registered name, = tag ``tdds.method``), ``label``
    (the table's row name, e.g. ``tdds[T=6,W=3]``, = tag ``tdds.label``), each method hyperparameter
    as ``method.<name>``, ``rate`` as :func:`~tdds_core.names.rate_text` (``0.5``, = tag ``tdds.rate``),
    and ``fields`` (seed, arch, epochs, lr, weighting, ...) as given; None values are left out."""
    out: dict[str, Any] = {}
    if method is not None:
        out["method"] = method
        out["label"] = label or method
    for k, v in (method_params or {}).items():
        out[f"method.{k}"] = v
    if rate is not None:
        out["rate"] = rate_text(rate)
    out.update({k: v for k, v in fields.items() if v is not None})
    return out


def artifact_tags(uri: str, key: str) -> dict[str, str]:
    """Tags naming a stage's artifact portably: its store URI (``s3://...``, or ``file://...`` for a
    local output) and its key under the output root."""
    return {TAG_ARTIFACT_URI: uri if is_remote(uri) or "://" in uri else Path(uri).absolute().as_uri(),
            TAG_ARTIFACT_KEY: key}


def log_score_run(tracker: Tracker, scores: Any, *, method: str, labels: Any = None, images: Any = None,
                  class_names: Optional[Sequence[str]] = None, k: int = 16, bins: int = 50) -> dict[str, float]:
    """Log a score stage into the active run: summary metrics (``score_mean``, ``score_std``,
    ``score_min``, ``score_max``), ``scores/histogram.png`` and, when ``images`` (uint8
    ``[N, C, H, W]``) and ``labels`` are given, ``scores/extremes.png`` with the ``k`` most and least
    important images titled with class name and score (figures from :mod:`tdds_core.report`). Returns
    the summary."""
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 1 or len(s) == 0:
        raise TrackingError(f"scores must be a non-empty 1-D array, got shape {s.shape}")
    finite = s[np.isfinite(s)]
    summary = {
        "score_mean": float(finite.mean()) if len(finite) else float("nan"),
        "score_std": float(finite.std()) if len(finite) else float("nan"),
        "score_min": float(finite.min()) if len(finite) else float("nan"),
        "score_max": float(finite.max()) if len(finite) else float("nan"),
    }
    if not tracker.enabled:
        return summary
    tracker.log_metrics(summary)
    tracker.log_figure(score_histogram_figure(s, method=method, bins=bins), "scores/histogram.png")
    if images is not None and labels is not None:
        if len(images) != len(s) or len(labels) != len(s):
            raise TrackingError(
                f"images ({len(images)}), labels ({len(labels)}) and scores ({len(s)}) must have the same length N"
            )
        tracker.log_figure(extremes_grid_figure(images, labels, s, class_names=class_names, k=k, method=method),
                           "scores/extremes.png")
    return summary


def log_selection(tracker: Tracker, selection_folder: str | os.PathLike, fingerprint: str, *,
                  dataset_name: str = "dataset", dataset_source: Optional[str] = None,
                  selection_uri: Optional[str] = None) -> dict[str, Any]:
    """Log a selection into the active run: ``selection/{indices.npy, ids.txt, selected.csv,
    weights.npy, manifest.json}`` as artifacts (the folder's checksums are verified first), the training
    dataset as an input (digest = ``fingerprint``, context ``train``) and the selection itself as an
    input (digest = SHA-256 of ``indices.npy``, context ``selection``), plus the tags
    ``tdds.selection_sha256`` and ``tdds.selection_uri``. ``selection_folder`` is a local folder or a
    URI (:func:`tdds_core.storage.local_copy`). Returns ``{"sha256", "num_selected", "manifest"}``."""
    uri = selection_uri or str(selection_folder)
    folder = local_copy(str(selection_folder))
    manifest = verify_manifest(folder)
    files = manifest.get("files", {})
    if "indices.npy" not in files:
        raise ArtifactError(f"{folder} is not a selection folder (no indices.npy in its manifest); pass the select stage's output")
    sha = files["indices.npy"]["sha256"]
    out = {"sha256": sha, "num_selected": manifest.get("num_selected"), "manifest": manifest}
    if not tracker.enabled:
        return out
    for name in SELECTION_FILES:
        if (folder / name).is_file():
            tracker.log_artifact(folder / name, "selection")
    tracker.log_input_dataset(dataset_name, fingerprint, dataset_source or f"tdds-dataset:{dataset_name}", context="train")
    label = f"selection:{manifest.get('method', '?')}@p{rate_text(manifest.get('rate'))}" \
        if manifest.get("rate") is not None else f"selection:{manifest.get('method', '?')}"
    tracker.log_input_dataset(label, sha, uri, context="selection", tags={TAG_SELECTION_SHA256: sha})
    tracker.set_tags({TAG_SELECTION_SHA256: sha, TAG_SELECTION_URI: uri})
    return out

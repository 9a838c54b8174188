"""The functions a notebook calls, in one place (``from tdds_core import api as tdds``).

Light ones (numpy only) are imported here; the training ones load torch when first called::

    cfg = tdds.load_config("configs/quickstart.yaml")
    full = tdds.train_full(cfg)                                  # records dynamics (reused when finished)
    rec = tdds.open_recorded(full.local)                         # its logits or per-sample statistics
    scores = tdds.score("tdds", rec, T=3, W=2)                   # float64 [N], higher = keep
    coreset = tdds.select(scores, 0.7, labels=rec.labels, ids=rec.ids)
    result = tdds.run_grid(cfg)                                  # the whole methods x rates grid, tracked
    tdds.table(tdds.results(cfg))                                # the table of the last report under the output

Every function is the library's own; this module only gathers them.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from .artifacts import fetch, open_recorded
from .config import Config, load_config
from .dynamics import open_dynamics
from .report import build_table
from .scoring import compute_scores, list_methods
from .selection import Selection, load_selection
from .selection import select as _select
from .statistics import open_statistics
from .storage import is_remote

__all__ = ["load_config", "open_dynamics", "open_statistics", "open_recorded", "list_methods", "score", "select",
           "load_selection", "train_full", "train_coreset", "run_grid", "results", "table"]


def score(method: str, recorded: Any, **params: Any) -> np.ndarray:
    """Scores of every sample (float64 ``[N]``, higher = keep) by a registered method, from a
    recording (:func:`open_recorded`, :func:`open_dynamics` or :func:`open_statistics`)."""
    return compute_scores(method, recorded, **params)


def select(scores: np.ndarray, rate: float, *, labels: Optional[np.ndarray] = None,
           ids: Optional[Sequence[str]] = None, **kw: Any) -> Selection:
    """The coreset at pruning ``rate``: the top ``round((1 - rate) N)`` samples, ids by importance
    (:func:`tdds_core.selection.select`)."""
    return _select(scores, rate, labels=labels, ids=ids, **kw)


def train_full(cfg: Config) -> Any:
    """The full-data run that records every sample's dynamics (reused when finished); a StageOutput
    whose ``uri`` is the run's folder (``open_recorded(fetch(out.uri))``)."""
    from .stages.train_full import train_full as _train_full   # torch: loaded when training

    return _train_full(cfg)


def train_coreset(cfg: Config, selection_uri: str, **kw: Any) -> Any:
    """A model trained on the selection at ``selection_uri`` (``arch``, ``seed``, ``weighting``
    optional); a StageOutput whose ``result`` holds the accuracies."""
    from .stages.coreset import train_coreset as _train_coreset   # torch: loaded when training

    return _train_coreset(cfg, selection_uri, **kw)


def run_grid(cfg: Config, **kw: Any) -> Any:
    """Every stage over the plan of ``cfg`` in this process (``tdds grid``); a GridResult with the
    rows, the Markdown table and each stage's outputs."""
    from .grid import run_grid as _run_grid   # torch: loaded when training

    return _run_grid(cfg, **kw)


def results(cfg_or_output: Config | str) -> list[dict]:
    """The result rows of the last report written under an output root (``report/rows.json``; for an
    S3 output its local cache copy, :func:`tdds_core.stages.report.report_dir`)."""
    if isinstance(cfg_or_output, Config):
        output = cfg_or_output.output
    else:
        output = cfg_or_output
    if is_remote(output):
        folder = fetch(output.rstrip("/") + "/report")
    else:
        folder = Path(output) / "report"
    return json.loads((folder / "rows.json").read_text())


def table(rows: list[dict]) -> list[dict]:
    """The methods x rates table (mean and spread over seeds) of result rows."""
    return build_table(rows)

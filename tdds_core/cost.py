"""The whole cost of a coreset, per result row: the share of the full-data run's dynamics its method
setting reads, and the wall seconds of scoring, selection and coreset training (issue #27).

:func:`with_costs` adds to each coreset (and cross-architecture) row, under the names of
:data:`tdds_core.names.COST_METRICS` (the metrics logged on the coreset run carry the same names):

* ``cost_dynamics_share`` = ``epochs_read(method, params, train.epochs) / train.epochs``, the leading
  epochs of the full-data run the setting's scores read (:func:`tdds_core.scoring.epochs_read`;
  Random and RS2 read none: 0);
* ``cost_dynamics_s`` = those epochs x the full-data run's seconds per epoch (its row's ``wall_s`` /
  the epochs it trained: the row's ``epochs`` when it has one, else ``train.epochs``), which is the
  share x the full-data run's wall time when that run trained every epoch;
* ``cost_scoring_s`` / ``cost_selection_s``: ``elapsed_s`` in the manifest of the row's score /
  selection artifact (None for artifacts stored before it was recorded);
* ``cost_train_s`` = the row's ``wall_s``;
* ``cost_total_s`` = the sum of the four seconds that are known (None when none is).

The full-data row gets ``cost_train_s`` = ``cost_total_s`` = its ``wall_s``. Rows are matched to their
artifacts through the plan of the config (by row name and rate) and the artifact URIs of the run
(``outputs``: stage -> plan item key -> URI, as :class:`tdds_core.grid.GridResult` and the report
stage's state hold them). Tables and the time-to-accuracy plot: :mod:`tdds_core.report_cost`.
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping, Optional

from . import plan as P
from .config import Config
from .names import (ELAPSED_S, METRIC_COST_DYNAMICS_S, METRIC_COST_DYNAMICS_SHARE, METRIC_COST_SCORING_S,
                    METRIC_COST_SELECTION_S, METRIC_COST_TOTAL_S, METRIC_COST_TRAIN_S, METRIC_WALL_S, STAGE_SCORE,
                    STAGE_SELECT, STAGE_TRAIN_FULL)
from .report import FULL_METHOD
from .scoring import epochs_read
from .storage import parent_and_key

__all__ = ["dynamics_share", "elapsed_of", "compose", "full_row", "with_costs", "outputs_of"]

def dynamics_share(method: str, params: Mapping[str, Any], epochs: int) -> float:
    """The share (0..1) of an ``epochs``-epoch full-data run (``epochs`` > 0, as ``train.epochs`` is) that
    ``method`` with ``params`` reads: ``epochs_read(method, params, epochs) / epochs`` (TDDS with T=3,
    start 0, of 10 epochs: 0.3; Random: 0)."""
    return epochs_read(method, dict(params), int(epochs)) / int(epochs)


def elapsed_of(uri: Optional[str]) -> Optional[float]:
    """``elapsed_s`` of the finished artifact at ``uri`` (its manifest only is read); None when the
    artifact predates it or ``uri`` is None. ArtifactError when the artifact is absent."""
    if uri is None:
        return None
    store, key = parent_and_key(uri)
    value = store.read_manifest(key).get(ELAPSED_S)
    return None if value is None else float(value)


def _float(v: Any) -> Optional[float]:
    try:
        return None if v is None or v == "" else float(v)
    except (TypeError, ValueError):
        return None


def compose(*, share: Optional[float], dynamics_s: Optional[float], scoring_s: Optional[float],
            selection_s: Optional[float], train_s: Optional[float]) -> dict[str, Optional[float]]:
    """The cost fields of one row from its parts (seconds; None = not known); the total sums the known ones."""
    parts = [x for x in (dynamics_s, scoring_s, selection_s, train_s) if x is not None]
    return {METRIC_COST_DYNAMICS_SHARE: share, METRIC_COST_DYNAMICS_S: dynamics_s, METRIC_COST_SCORING_S: scoring_s,
            METRIC_COST_SELECTION_S: selection_s, METRIC_COST_TRAIN_S: train_s,
            METRIC_COST_TOTAL_S: sum(parts) if parts else None}


def full_row(rows: Iterable[dict], arch: Optional[str] = None) -> Optional[dict]:
    """The full-data row (rate None; ``stage`` train-full or method ``full``) of ``arch`` (any when None)."""
    for r in rows:
        if r.get("rate") is None and (r.get("stage") == STAGE_TRAIN_FULL or r.get("method") == FULL_METHOD) \
                and (arch is None or (r.get("arch") or arch) == arch):
            return r
    return None


def outputs_of(refs: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, str]]:
    """``{stage: {item key: URI}}`` from a state's refs (``{stage: {item key: Ref}}``) or URIs as they are."""
    return {stage: {k: getattr(r, "uri", r) for k, r in items.items()} for stage, items in refs.items()}


def with_costs(cfg: Config, rows: Iterable[dict], outputs: Mapping[str, Mapping[str, str]]) -> list[dict]:
    """Copies of ``rows`` with the cost fields (module docstring). ``outputs``: stage -> plan item key ->
    artifact URI (``GridResult.outputs``, or :func:`outputs_of` a state's refs). A row of no plan pair
    (another config's) is returned unchanged; an artifact the outputs do not name counts as not recorded."""
    rows = [dict(r) for r in rows]
    epochs = int(cfg.train.epochs)
    full = full_row(rows, cfg.model.arch)
    full_wall = _float(full.get(METRIC_WALL_S)) if full is not None else None
    full_epochs = _float(full.get("epochs")) if full is not None else None
    epoch_s = None if full_wall is None else full_wall / (full_epochs or epochs)
    pairs = {(p.score.label, round(p.rate, 6)): p for p in P.Plan.from_config(cfg).pairs}
    scores, selections = outputs.get(STAGE_SCORE, {}), outputs.get(STAGE_SELECT, {})
    elapsed: dict[str, Optional[float]] = {}

    def seconds(uri: Optional[str]) -> Optional[float]:
        if uri is not None and uri not in elapsed:
            elapsed[uri] = elapsed_of(uri)
        return None if uri is None else elapsed[uri]

    for row in rows:
        wall = _float(row.get(METRIC_WALL_S))
        if row is full:
            row.update(compose(share=None, dynamics_s=None, scoring_s=None, selection_s=None, train_s=wall))
            continue
        rate = _float(row.get("rate"))
        pair = None if rate is None else pairs.get((str(row.get("method")), round(rate, 6)))
        if pair is None:
            continue
        share = dynamics_share(pair.score.method.name, pair.score.params, epochs)
        row.update(compose(share=share, dynamics_s=None if epoch_s is None else share * epochs * epoch_s,
                           scoring_s=seconds(scores.get(pair.score.key)),
                           selection_s=seconds(selections.get(pair.key)), train_s=wall))
    return rows

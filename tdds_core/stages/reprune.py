"""Stage reprune (the ``tdds-reprune`` pipeline only): how every selection of this dataset version
changed against the previous version's (kept, dropped, new ids, Jaccard), recorded in MLflow and
the store's history (:mod:`tdds_core.reprune`). A side stage: the chain goes on from the selections."""
from __future__ import annotations

from typing import Any

from ..names import STAGE_REPRUNE, STAGE_SELECT, STAGE_TRAIN_FULL
from ..reprune import record_reprune
from ..stage_registry import Context, Stage, State, register_stage


def run(ctx: Context, item: Any, state: State) -> State:
    train = state.ref(STAGE_TRAIN_FULL)
    rows = [record_reprune(ctx.cfg, ctx.tracker, selection_uri=ref.uri, train_uri=train.uri, label=ref.label,
                           method=ref.method, rate=float(ref.rate), fingerprint=state.fingerprint)
            for ref in state.refs.get(STAGE_SELECT, {}).values()]
    return state.part(STAGE_REPRUNE, {}, rows)


STAGE = register_stage(Stage(STAGE_REPRUNE, order=35, loop="once", run=run, cached=False, side=True,
                             pipelines=("reprune",)))

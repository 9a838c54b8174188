"""Stage select (subset materialization): per pruning rate, the selection of every method setting with
its selection strategy (:mod:`tdds_core.strategies`: the method entry's ``strategy`` at that rate, else
the method's own: top-k, CCS's stratified sampling, DUAL's Beta sampling), as a selection folder (ids by
importance, weights, manifest with ``strategy``, ``strategy_params`` and ``elapsed_s``). Key
``selections/<label>-p<rate>-<digest>``, the strategy in the digest only when it is not the method's
own (so selections made before strategies keep their keys); not tracked (the coreset runs log the
selection they trained on)."""
from __future__ import annotations

import time
from typing import Optional

from .. import plan as P
from ..config import Config
from ..artifacts import StageOutput, existing, fetch, load_scores, open_recorded, publish, uri_of, work_dir
from ..errors import ArtifactError
from ..names import ELAPSED_S, STAGE_SCORE, STAGE_SELECT, STAGE_TRAIN_FULL
from ..scoring import get_sampler, selection_strategy
from ..selection import select as select_samples
from ..selection import write_selection
from ..stage_registry import Context, Ref, Stage, State, register_stage

__all__ = ["select"]


def select(cfg: Config, train_uri: str, scores_uri: str, rate: float, *, label: Optional[str] = None,
           strategy: Optional[str] = None, strategy_params: Optional[dict] = None) -> StageOutput:
    """Materialize the selection of the scores at ``scores_uri`` at pruning rate ``rate`` with ``strategy``
    and its ``strategy_params`` (None: the scoring method's own strategy), reused when finished."""
    scores, info = load_scores(fetch(scores_uri))
    label = label or info.get("label") or info["method"]
    choice = selection_strategy(info["method"], info["params"], rate, strategy, strategy_params)
    key = P.selection_key(cfg, scores_uri, label, rate, strategy=choice.key())
    uri = uri_of(cfg, key)
    meta = {"label": label, "method": info["method"], "rate": rate, "strategy": choice.name}
    done = existing(uri)
    if done is not None:
        return StageOutput(uri, done, reused=True, info=meta, key=key)
    t0 = time.perf_counter()
    dyn = open_recorded(fetch(train_uri))
    if dyn.fingerprint != info["fingerprint"] or len(scores) != dyn.num_samples:
        raise ArtifactError(f"scores at {scores_uri} belong to another dataset version than the dynamics at {train_uri}; "
                            "rescore.")
    sampler = get_sampler(info["method"], info["params"], dynamics=dyn, rate=rate, choice=choice)
    sel = select_samples(scores, rate, labels=dyn.labels, ids=dyn.ids, class_balanced=cfg.selection.class_balanced,
                         sampler=sampler, seed=int(info["params"].get("seed", 0)))
    elapsed = time.perf_counter() - t0
    work = work_dir(uri)
    write_selection(work, sel, method=info["method"], params={**info["params"], "label": label},
                    fingerprint=dyn.fingerprint,
                    extra={"strategy": choice.name, "strategy_params": choice.params,
                           "sampler": getattr(sampler, "__name__", None), ELAPSED_S: round(elapsed, 6)})
    publish(work, uri)
    return StageOutput(uri, work, info=meta, key=key)


def run(ctx: Context, item: P.RateItem, state: State) -> State:
    train = state.ref(STAGE_TRAIN_FULL)
    refs = {}
    for pair in item.pairs:
        scores = state.ref(STAGE_SCORE, pair.score.key)
        spec = pair.score.method
        out = select(ctx.cfg, train.uri, scores.uri, pair.rate, label=pair.score.label,
                     strategy=spec.strategy_for(pair.rate), strategy_params=spec.strategy_params)
        refs[pair.key] = Ref(uri=out.uri, key=out.key,
                             label=pair.score.label, method=spec.name, rate=pair.rate)
    return state.part(STAGE_SELECT, refs)


STAGE = register_stage(Stage(STAGE_SELECT, order=30, loop="rates", run=run, reads=("selection.class_balanced",)))

"""Stage select (subset materialization): per pruning rate, the selection of every method setting:
the top ``round((1 - rate) N)`` samples, or the method's own sampler (CCS), as a selection folder
(ids by importance, weights, manifest). Key ``selections/<label>-p<rate>-<digest>``; not tracked
(the coreset runs log the selection they trained on)."""
from __future__ import annotations

from typing import Optional

from .. import plan as P
from ..config import Config
from ..artifacts import StageOutput, existing, fetch, load_scores, open_recorded, publish, uri_of, work_dir
from ..errors import ArtifactError
from ..names import STAGE_SCORE, STAGE_SELECT, STAGE_TRAIN_FULL
from ..scoring import get_sampler
from ..selection import select as select_samples
from ..selection import write_selection
from ..stage_registry import Context, Ref, Stage, State, register_stage

__all__ = ["select"]


def select(cfg: Config, train_uri: str, scores_uri: str, rate: float, *, label: Optional[str] = None) -> StageOutput:
    """Materialize the selection of the scores at ``scores_uri`` at pruning rate ``rate`` (reused when finished)."""
    scores, info = load_scores(fetch(scores_uri))
    label = label or info.get("label") or info["method"]
    key = P.selection_key(cfg, scores_uri, label, rate)
    uri = uri_of(cfg, key)
    meta = {"label": label, "method": info["method"], "rate": rate}
    done = existing(uri)
    if done is not None:
        return StageOutput(uri, done, reused=True, info=meta, key=key)
    dyn = open_recorded(fetch(train_uri))
    if dyn.fingerprint != info["fingerprint"] or len(scores) != dyn.num_samples:
        raise ArtifactError(f"scores at {scores_uri} belong to another dataset version than the dynamics at {train_uri}; "
                            "rescore.")
    sel = select_samples(scores, rate, labels=dyn.labels, ids=dyn.ids, class_balanced=cfg.selection.class_balanced,
                         sampler=get_sampler(info["method"], info["params"], dynamics=dyn), seed=int(info["params"].get("seed", 0)))
    work = work_dir(uri)
    write_selection(work, sel, method=info["method"], params={**info["params"], "label": label},
                    fingerprint=dyn.fingerprint)
    publish(work, uri)
    return StageOutput(uri, work, info=meta, key=key)


def run(ctx: Context, item: P.RateItem, state: State) -> State:
    train = state.ref(STAGE_TRAIN_FULL)
    refs = {}
    for pair in item.pairs:
        scores = state.ref(STAGE_SCORE, pair.score.key)
        out = select(ctx.cfg, train.uri, scores.uri, pair.rate, label=pair.score.label)
        refs[pair.key] = Ref(uri=out.uri, key=out.key,
                             label=pair.score.label, method=pair.score.method.name, rate=pair.rate)
    return state.part(STAGE_SELECT, refs)


STAGE = register_stage(Stage(STAGE_SELECT, order=30, loop="rates", run=run, reads=("selection.class_balanced",)))

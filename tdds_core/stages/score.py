"""Stage score: one method setting scores every sample from the full-data run's dynamics.
Writes ``scores.npy`` (float64 ``[N]``, sample order, higher = keep first) and ``score.json`` (method, params,
..., ``elapsed_s``: wall seconds of reading the dynamics and scoring; also in the manifest; absent in
scores stored before it was recorded).
Key ``scores/<method>-<digest of train key, method, params>``; MLflow run ``<label> (score)``."""
from __future__ import annotations

import time
from typing import Optional

import numpy as np

from .. import plan as P
from ..config import Config, MethodSpec
from ..artifacts import StageOutput, existing, fetch, load_scores, open_recorded, publish, uri_of, work_dir
from ..data import Splits
from ..dynamics import check_matches
from ..io import atomic_save_npy, atomic_write_json, read_json, write_manifest
from ..names import (ELAPSED_S, STAGE_SCORE, STAGE_TRAIN_FULL, TAG_ARCH, TAG_FINGERPRINT, TAG_LABEL, TAG_METHOD,
                     TAG_METHOD_NAME, TAG_SEED, TAG_STAGE, run_name)
from ..scoring import compute_scores
from ..stage_registry import Context, Ref, Stage, State, register_stage
from ..tracking import Tracker, artifact_tags, log_score_run, run_params

__all__ = ["score", "tracked_score"]


def score(cfg: Config, train_uri: str, method: MethodSpec | str, params: Optional[dict] = None, *,
          nan_policy: str = "raise", splits: Optional[Splits] = None) -> StageOutput:
    """Score every sample of the full-data run at ``train_uri`` with one method (reused when
    finished). With ``splits``, dynamics from another dataset version are refused."""
    m = method if isinstance(method, MethodSpec) else MethodSpec(name=method)
    params = dict(m.params if params is None else params)
    key = P.score_key(train_uri, m.name, params, nan_policy)
    uri = uri_of(cfg, key)
    done = existing(uri)
    if done is not None:
        return StageOutput(uri, done, reused=True, info=read_json(done / "score.json"), key=key)
    t0 = time.perf_counter()
    dyn = open_recorded(fetch(train_uri))
    if splits is not None:
        check_matches(dyn, num_samples=len(splits.train), num_classes=splits.num_classes, fingerprint=splits.fingerprint,
                      what=f"dataset {splits.name!r}")
    scores = compute_scores(m.name, dyn, nan_policy=nan_policy, **params)
    info = {"method": m.name, "label": m.display, "params": params, "fingerprint": dyn.fingerprint,
            "num_samples": dyn.num_samples, "train_uri": train_uri, "nan_policy": nan_policy,
            ELAPSED_S: round(time.perf_counter() - t0, 6)}
    work = work_dir(uri)
    work.mkdir(parents=True, exist_ok=True)
    atomic_save_npy(work / "scores.npy", np.asarray(scores, dtype=np.float64))
    atomic_write_json(work / "score.json", info)
    write_manifest(work, ["scores.npy", "score.json"], kind="scores",
                   **{k: info[k] for k in ("method", "fingerprint", ELAPSED_S)})
    publish(work, uri)
    return StageOutput(uri, work, info=info, key=key)


def tracked_score(cfg: Config, tracker: Tracker, splits: Splits, train_uri: str, item: P.ScoreItem) -> StageOutput:
    """Score one method setting of the plan inside its MLflow run."""
    m, params, label = item.method, item.params, item.label
    akey = P.score_key(train_uri, m.name, params)
    key = P.run_key_of(STAGE_SCORE, cfg.output, akey)
    tags = {TAG_STAGE: STAGE_SCORE, TAG_METHOD: m.name, TAG_LABEL: label, TAG_METHOD_NAME: m.name,
            TAG_ARCH: cfg.model.arch, TAG_SEED: cfg.train.seed, TAG_FINGERPRINT: splits.fingerprint}
    with tracker.start_run(run_name(STAGE_SCORE, method=label), key=key, tags=tags) as run:
        out = score(cfg, train_uri, m.model_copy(update={"label": label}), params, splits=splits)
        if not run.reused:
            # what applies to a score run: its method and the full-data run it scores (seed, arch, epochs,
            # lr) and the loss weighting its coresets train with; it has no rate
            t = cfg.train
            tracker.log_params(run_params(method=m.name, label=label, method_params=params, seed=t.seed,
                                          arch=cfg.model.arch, epochs=t.epochs, lr=t.lr,
                                          weighting=P.coreset_weighting(cfg, m)))
            tracker.set_tags(artifact_tags(out.uri, akey))
            scores, _ = load_scores(out.local)
            log_score_run(tracker, scores, method=label, labels=splits.train.labels, images=splits.train.images,
                          class_names=splits.classes)
            tracker.log_artifact(out.local / "scores.npy", "scores")
    return out


def run(ctx: Context, item: P.ScoreItem, state: State) -> State:
    train = state.ref(STAGE_TRAIN_FULL)
    out = tracked_score(ctx.cfg, ctx.tracker, ctx.splits, train.uri, item)
    ref = Ref(uri=out.uri, key=out.key, run_stage=STAGE_SCORE,
              label=item.label, method=item.method.name)
    return state.part(STAGE_SCORE, {item.key: ref})


STAGE = register_stage(Stage(STAGE_SCORE, order=20, loop="scores", run=run))

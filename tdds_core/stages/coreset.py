"""Stage coreset (train-coreset): train on the selection of one (method, rate) pair, once per seed
of ``coreset.seeds``; the test set is never pruned. Key ``coreset/<selection>/<arch>-s<seed>-<digest>``;
MLflow run ``<label> p<rate> s<seed>`` (e.g. ``tdds[T=6,W=3] p0.5 s0``).

An RS2 selection (:mod:`tdds_core.scoring.rs2`) trains on no fixed subset: every epoch a fresh
random subset of the selection's size over the whole training set, unweighted, with the static
coreset's epochs and iterations; its row says ``fixed_subset: False``."""
from __future__ import annotations

from typing import Any, Callable, Optional

import numpy as np

from .. import plan as P
from ..artifacts import StageOutput, existing, fetch, uri_of, work_dir
from ..concurrent import resolve_workers, run_seeds
from ..config import Config
from ..data import Splits, create_dataset
from ..engine import coreset_batch_size, coreset_spec, kept_weights, load_result
from ..errors import ConfigError
from ..names import (METRIC_NOISY_KEPT, STAGE_CORESET, STAGE_SELECT, TAG_ARCH, TAG_FINGERPRINT, TAG_LABEL, TAG_METHOD,
                     TAG_METHOD_NAME, TAG_RATE, TAG_SEED, TAG_STAGE, model_name, rate_text, run_name)
from ..scoring import method_per_epoch as is_per_epoch
from ..selection import load_selection
from ..stage_registry import Context, Ref, Stage, State, register_stage
from ..tracking import artifact_tags, log_selection, run_params
from ._training import epoch_logger, log_training_outputs, noisy_kept, result_metrics, result_row, train_into

__all__ = ["train_coreset", "tracked_coreset", "RS2_STRATEGY"]

#: The ``strategy`` param of an RS2 run (a static coreset's is ``coreset.strategy``, E or P).
RS2_STRATEGY = "RS2 per epoch"


def train_coreset(cfg: Config, selection_uri: str, *, arch: Optional[str] = None, seed: Optional[int] = None,
                  splits: Optional[Splits] = None, on_epoch: Optional[Callable[[dict], Any]] = None,
                  weighting: Optional[str] = None) -> StageOutput:
    """Train on the selection at ``selection_uri`` (reused when finished); any architecture. The
    loss ``weighting`` defaults to the selection's method's (:func:`tdds_core.plan.coreset_weighting`)."""
    splits = splits or create_dataset(cfg.data)
    sel = load_selection(fetch(selection_uri), expected_fingerprint=splits.fingerprint)
    method = sel.meta.get("method") or None
    rs2 = is_per_epoch(method)
    weighting = weighting or ("none" if rs2 else P.coreset_weighting(cfg, method))
    spec = coreset_spec(cfg, rate=sel.rate, positions=sel.indices, weights=sel.weights, num_full=len(splits.train),
                        arch=arch, seed=seed, weighting=weighting, per_epoch=rs2)
    key = P.coreset_key(cfg, selection_uri, spec.arch, spec.seed, weighting)
    uri = uri_of(cfg, key)
    done = existing(uri)
    if done is not None:
        return StageOutput(uri, done, load_result(done), reused=True, key=key)
    return StageOutput(uri, work_dir(uri), train_into(uri, splits, spec, on_epoch), key=key)


def tracked_coreset(ctx: Context, selection: Ref, pair: P.PairItem, *, seed: int, arch: Optional[str] = None,
                    stage: str = STAGE_CORESET) -> tuple[Ref, dict]:
    """:func:`train_coreset` on a pair's selection inside its MLflow run; returns (artifact, result row)."""
    cfg, tracker, splits = ctx.cfg, ctx.tracker, ctx.splits
    arch = arch or cfg.model.arch
    label, rate = pair.score.label, pair.rate
    name = pair.score.method.name
    rs2 = is_per_epoch(name)
    weighting = _weighting(cfg, pair)
    akey = P.coreset_key(cfg, selection.uri, arch, seed, weighting)
    tags = {TAG_STAGE: stage, TAG_METHOD: name, TAG_LABEL: label, TAG_METHOD_NAME: name, TAG_RATE: rate_text(rate),
            TAG_ARCH: arch, TAG_SEED: seed, TAG_FINGERPRINT: splits.fingerprint}
    shown_arch = None if stage == STAGE_CORESET else arch      # the run name names another architecture only
    sel = load_selection(fetch(selection.uri), expected_fingerprint=splits.fingerprint)
    kept_noisy = None if rs2 else noisy_kept(splits, sel.indices)     # RS2 keeps no samples for good
    # what scales the loss: the kept samples' mean weight as trained (1 when unweighted)
    mean_weight = 1.0 if weighting == "none" else float(np.mean(kept_weights(sel.weights, weighting)))
    with tracker.start_run(run_name(stage, method=label, rate=rate, arch=shown_arch, seed=seed),
                           key=P.run_key_of(stage, cfg.output, akey), tags=tags,
                           system_metrics=cfg.tracking.system_metrics) as run:
        out = train_coreset(cfg, selection.uri, arch=arch, seed=seed, splits=splits, weighting=weighting,
                            on_epoch=None if run.reused else epoch_logger(tracker))
        if not run.reused:
            tracker.log_params(run_params(method=pair.score.method.name, label=label, method_params=pair.score.params,
                                          rate=rate, arch=arch, seed=seed, epochs=out.result.epochs, lr=cfg.train.lr,
                                          schedule=cfg.train.schedule, weighting=weighting,
                                          strategy=RS2_STRATEGY if rs2 else cfg.coreset.strategy,
                                          fixed_subset=not rs2,
                                          batch_size=coreset_batch_size(cfg, rate)))
            metrics = result_metrics(out.result)
            metrics["mean_weight"] = mean_weight
            if kept_noisy is not None:
                metrics[METRIC_NOISY_KEPT] = kept_noisy
            tracker.log_metrics(metrics)
            tracker.set_tags(artifact_tags(out.uri, akey))
            log_training_outputs(cfg, tracker, out, splits.classes,
                                 model_name=model_name(stage, label, rate, seed, shown_arch))
            if not rs2:     # RS2's selection folder only fixes M: it is no subset anybody trained on
                log_selection(tracker, fetch(selection.uri), splits.fingerprint, dataset_name=cfg.data.name,
                              selection_uri=selection.uri)
    row = result_row(label, rate, seed, arch, out.result, out.uri, noisy_kept=kept_noisy, stage=stage,
                     weighting=weighting, mean_weight=mean_weight, fixed_subset=not rs2)
    return Ref(uri=out.uri, key=akey, run_stage=stage, label=label, method=pair.score.method.name, rate=rate), row


def _weighting(cfg: Config, pair: P.PairItem) -> str:
    """The loss weighting a pair's coreset trains with (:func:`tdds_core.plan.coreset_weighting`);
    RS2's is ``none`` (a ConfigError when its method entry asks for another)."""
    if not is_per_epoch(pair.score.method.name):
        return P.coreset_weighting(cfg, pair.score.method, pair.rate)
    asked = pair.score.method.weighting_for(pair.rate)
    if asked not in (None, "none"):
        raise ConfigError(f"methods entry {pair.score.label!r}: RS2 trains unweighted on a fresh subset every epoch; "
                          f"weighting {asked!r} has no samples to weight: remove it or set weighting: none")
    return "none"


def run(ctx: Context, item: P.PairItem, state: State) -> State:
    seeds = list(ctx.cfg.coreset.seeds)
    workers = resolve_workers(ctx.cfg)      # 1 in the grid's own workers, which run the items side by side
    if workers > 1 and len(seeds) > 1:      # a KFP task with a whole GPU: its seeds side by side
        return run_seeds(STAGE, ctx, item, state, seeds, workers)
    selection = state.ref(STAGE_SELECT, item.key)
    done = [tracked_coreset(ctx, selection, item, seed=s) for s in ctx.cfg.coreset.seeds]
    return state.part(STAGE_CORESET, {f"{item.key}/s{s}": ref for s, (ref, _) in zip(ctx.cfg.coreset.seeds, done)},
                      [row for _, row in done])


STAGE = register_stage(Stage(STAGE_CORESET, order=40, loop="pairs", run=run,
                             reads=("data", "model", "train", "coreset"), gpu=True))

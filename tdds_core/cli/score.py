"""``tdds score`` (dynamics -> per-sample scores) and ``tdds select`` (scores -> selection folders)."""
from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np
import yaml

from ..dynamics import open_dynamics
from ..dynamics_reference import open_any_dynamics
from ..errors import ArtifactError, ScoringError
from ..io import atomic_save_npy, atomic_write_json, load_npy, read_json, sha256_file
from ..names import ELAPSED_S
from ..scoring import (compute_scores, get_sampler, is_method, method_options, resolve_params, selection_options,
                       selection_strategy, strategy_context)
from ..selection import num_to_keep, select, write_selection
from ..strategies import resolve_strategy_params, strategy_sampler
from ..statistics import write_statistics

SCORES_FORMAT = "tdds-scores/1"


def register(sub) -> None:
    p = sub.add_parser(
        "score", help="Score every sample from recorded dynamics with one method.",
        description="Compute one importance score per sample (float64, sample order, higher = keep first) from a "
                    "dynamics folder (tdds layout, or the TDDS authors' {t}_Output.npy/{t}_Index.npy layout) and write "
                    "it atomically to FILE, with a JSON sidecar FILE.json (method, params, fingerprint, sha256).")
    p.add_argument("--dynamics", required=True, metavar="DIR", help="Dynamics folder written by `tdds train` (or the authors' layout).")
    p.add_argument("--method", required=True, metavar="NAME", help="Scoring method (see `tdds list`): tdds, random, entropy, ...")
    p.add_argument("--out", required=True, metavar="FILE", help="Output .npy of float64 scores.")
    p.add_argument("--T", type=int, default=None, help="TDDS trajectory length in epochs (default: every recorded "
                   "epoch from --start on).")
    p.add_argument("--W", type=int, default=None, help="TDDS window size in epochs (default 10, at most T).")
    p.add_argument("--decay", type=float, default=None, help="TDDS EMA coefficient beta in (0, 1] (default 0.9).")
    p.add_argument("--start", type=int, default=None, help="First epoch of the trajectory (default: first recorded).")
    p.add_argument("--param", dest="params", action="append", default=[], metavar="KEY=VALUE",
                   help="Any other method option, e.g. --param inner=loss --param width=5 (repeatable; YAML values).")
    p.add_argument("--format", choices=("auto", "tdds", "reference"), default="auto",
                   help="Dynamics layout (default: detected from the files).")
    p.add_argument("--labels", metavar="FILE", default=None, help="int64 [N] .npy of training labels (reference layout only).")
    p.add_argument("--nan-policy", choices=("raise", "skip"), default="raise",
                   help="NaN/Inf logits: raise (default) or give those samples the lowest score.")
    p.add_argument("--no-verify", action="store_true", help="Skip the SHA-256 check of the dynamics files.")
    p.set_defaults(func=run_score)

    s = sub.add_parser(
        "select", help="Turn scores into selection folders for one or more pruning rates.",
        description="Keep round((1 - rate) * N) samples with a selection strategy: the scoring method's own (top-k; "
                    "CCS's stratified sampling; DUAL's Beta sampling when beta_sampling is on) or --strategy (topk, "
                    "class_balanced, ccs, dual_beta, or a plugin's; `tdds list`). With one --rate the selection is "
                    "written to DIR; with several, to DIR/rate_<rate>/ each.")
    s.add_argument("--scores", required=True, metavar="FILE", help=".npy written by `tdds score` (its FILE.json sidecar is used when present).")
    s.add_argument("--rate", dest="rates", type=float, action="append", required=True, metavar="P",
                   help="Pruning rate in (0, 1), the fraction removed (repeatable).")
    s.add_argument("--out", required=True, metavar="DIR", help="Output folder.")
    s.add_argument("--class-balanced", action="store_true", help="Keep the same fraction of every class.")
    s.add_argument("--dynamics", metavar="DIR", default=None,
                   help="Dynamics folder for labels, ids and fingerprint (and dual_beta's mean target probabilities).")
    s.add_argument("--format", choices=("auto", "tdds", "reference"), default="auto", help="Layout of --dynamics.")
    s.add_argument("--labels", metavar="FILE", default=None, help="int64 [N] .npy of labels (without --dynamics, or for the reference layout).")
    s.add_argument("--seed", type=int, default=0, help="Seed of the strategy's draws (CCS, dual_beta) and of the "
                   "tie-break of equal scores.")
    s.add_argument("--param", dest="params", action="append", default=[], metavar="KEY=VALUE",
                   help="Override a selection option of the scoring method, e.g. --param beta=0.3 for CCS or "
                        "--param beta_sampling=true for DUAL.")
    s.add_argument("--strategy", metavar="NAME", default=None,
                   help="Selection strategy instead of the method's own: topk, class_balanced, ccs, dual_beta (needs "
                        "--dynamics), or a plugin's.")
    s.add_argument("--strategy-option", dest="strategy_options", action="append", default=[], metavar="KEY=VALUE",
                   help="An option of the strategy, e.g. --strategy-option beta=0.2 for ccs (repeatable; YAML values).")
    s.set_defaults(func=run_select)

    t = sub.add_parser(
        "stats", help="Convert a logits dynamics folder into per-sample statistics (a few numbers per sample and epoch).",
        description="Write the per-sample statistics of every recorded epoch (TDDS inner terms, loss, EL2N norm, target "
                    "probability, margins, correctness, entropy; tdds_core.statistics) into DIR. `tdds score --dynamics "
                    "DIR --method tdds` then scores any T, W, decay and start from them without the logits.")
    t.add_argument("--dynamics", required=True, metavar="DIR", help="A tdds dynamics folder (logits, `tdds train`).")
    t.add_argument("--out", required=True, metavar="DIR", help="Output folder for the statistics.")
    t.add_argument("--dtype", choices=["float64", "float32"], default="float64",
                   help="Storage dtype (computed in float64 either way): float32 halves them (36 bytes a sample and epoch).")
    t.set_defaults(func=run_stats)


def _parse_params(items: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ScoringError(f"--param {item!r}: expected KEY=VALUE, e.g. --param inner=loss")
        k, raw = item.split("=", 1)
        k = k.strip()
        if not k:
            raise ScoringError(f"--param {item!r}: the key is empty")
        try:
            out[k] = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as e:
            raise ScoringError(f"--param {item!r}: cannot parse the value ({e})") from e
    return out


def run_score(args: argparse.Namespace) -> int:
    params = _parse_params(args.params)
    for key in ("T", "W", "decay", "start"):
        v = getattr(args, key)
        if v is not None:
            if key in params:
                raise ScoringError(f"--{key} and --param {key}=... both given; use one")
            params[key] = v
    resolved = resolve_params(args.method, **params)  # unknown method/option: error before any reading
    dyn = open_any_dynamics(args.dynamics, format=args.format, labels=args.labels, verify=not args.no_verify)
    if args.method == "tdds" and "T" not in params:     # default T: what the dynamics hold
        recorded = sorted(int(t) for t in dyn.epochs)
        first = params.get("start", recorded[0] if recorded else 0)
        params["T"] = sum(1 for t in recorded if t >= first)
        params.setdefault("W", min(10, params["T"]))
        print(f"tdds: T={params['T']} (every recorded epoch from {first}), W={params['W']}")
        resolved = resolve_params(args.method, **params)
    t0 = time.perf_counter()
    scores = compute_scores(args.method, dyn, nan_policy=args.nan_policy, **params)
    seconds = time.perf_counter() - t0
    out = Path(args.out)
    atomic_save_npy(out, np.asarray(scores, dtype=np.float64))
    skipped = int(np.isneginf(scores).sum())
    info = {
        "format": SCORES_FORMAT, "method": args.method, "params": resolved, "given_params": params,
        "fingerprint": dyn.fingerprint, "num_samples": int(dyn.num_samples), "num_classes": int(dyn.num_classes),
        "dynamics": str(Path(args.dynamics).resolve()), "dynamics_format": getattr(dyn, "format", "tdds"),
        "nan_policy": args.nan_policy, "num_skipped": skipped, "sha256": sha256_file(out),
        "seconds": round(seconds, 3),
    }
    atomic_write_json(Path(str(out) + ".json"), info)
    print(f"{args.method}: scored {dyn.num_samples} samples in {seconds:.2f}s -> {out}"
          + (f" ({skipped} with NaN/Inf inputs ranked last)" if skipped else ""))
    return 0


def _read_sidecar(scores_path: Path) -> Optional[dict]:
    side = Path(str(scores_path) + ".json")
    if not side.is_file():
        return None
    info = read_json(side)
    digest = sha256_file(scores_path)
    if info.get("sha256") and info["sha256"] != digest:
        raise ArtifactError(f"{scores_path} does not match its sidecar {side} (SHA-256 {digest[:12]}... vs "
                            f"{info['sha256'][:12]}...); the scores were changed or partly written, rerun `tdds score`.")
    return info


def _turns_sampler_off(method: str, overrides: dict) -> bool:
    """Whether the overrides only switch the method's own sampler off (e.g. dual's beta_sampling=false)."""
    opts = method_options(method)
    return all(k in opts and isinstance(opts[k], bool) and v is False for k, v in overrides.items())


def _sampler(method: str, params: dict, rate: float, args: argparse.Namespace, dyn: Any,
             overrides: dict) -> tuple[Any, str, dict]:
    """``(sampler, strategy, its options)`` for one rate: --strategy or the method's own (its --param overrides)."""
    options = _parse_params(args.strategy_options)
    if not is_method(method):   # no sidecar: the strategy alone (its context lacks the method)
        if overrides:
            raise ScoringError("--param needs the scores' sidecar (FILE.json) to know the method; use --strategy-option")
        name = args.strategy or "topk"
        opts = resolve_strategy_params(name, options)
        return strategy_sampler(name, opts, strategy_context(dynamics=dyn, rate=rate)), name, opts
    if overrides and not selection_options(method) and not _turns_sampler_off(method, overrides):
        raise ScoringError(f"--param only sets options of the method's own selection, and method {method!r} has none "
                           "(it selects with topk); use --strategy NAME --strategy-option KEY=VALUE for another strategy")
    choice = selection_strategy(method, params, rate, args.strategy, options)
    return get_sampler(method, params, dynamics=dyn, rate=rate, choice=choice), choice.name, choice.params


def run_select(args: argparse.Namespace) -> int:
    scores_path = Path(args.scores)
    scores = load_npy(scores_path)
    if scores.ndim != 1:
        raise ScoringError(f"{scores_path} holds shape {scores.shape}; expected the [N] scores written by `tdds score`")
    info = _read_sidecar(scores_path) or {}
    method = info.get("method", "unknown")
    params = dict(info.get("params", {}))
    fingerprint = info.get("fingerprint")
    labels = ids = dyn = None
    if args.dynamics:
        dyn = open_any_dynamics(args.dynamics, format=args.format, labels=args.labels)
        if dyn.num_samples != len(scores):
            raise ArtifactError(f"{scores_path} holds {len(scores)} scores but {args.dynamics} has {dyn.num_samples} samples; "
                                "score these dynamics again")
        if fingerprint is not None and dyn.fingerprint != fingerprint:
            raise ArtifactError(f"{scores_path} was computed from data with fingerprint {fingerprint!r} but {args.dynamics} "
                                f"has {dyn.fingerprint!r}; rescore with `tdds score --dynamics {args.dynamics}`")
        fingerprint = dyn.fingerprint
        ids = dyn.ids
        if getattr(dyn, "has_labels", True):
            labels = dyn.labels
    elif args.labels:
        labels = load_npy(args.labels)
        if labels.shape != scores.shape:
            raise ScoringError(f"--labels holds shape {labels.shape} but there are {len(scores)} scores")
    overrides = _parse_params(args.params)
    if is_method(method):
        params.update(overrides)
    rates = list(dict.fromkeys(args.rates))
    for rate in rates:            # every rate checked before anything is written
        num_to_keep(rate, len(scores))
    samplers = {rate: _sampler(method, params, rate, args, dyn, overrides) for rate in rates}  # every check first
    out = Path(args.out)
    for rate in rates:
        sampler, strategy, options = samplers[rate]
        t0 = time.perf_counter()
        sel = select(scores, rate, labels=labels, ids=ids, class_balanced=args.class_balanced, sampler=sampler,
                     seed=args.seed)
        elapsed = time.perf_counter() - t0
        folder = out if len(rates) == 1 else out / f"rate_{rate:g}"
        write_selection(folder, sel, method=method, params=params, fingerprint=fingerprint,
                        extra={"scores_sha256": info.get("sha256"), "seed": args.seed,
                               "sampler": getattr(sampler, "__name__", None), "strategy": strategy,
                               "strategy_params": options, ELAPSED_S: round(elapsed, 6)})
        print(f"rate {rate:g}: kept {sel.num_selected} of {sel.num_samples} ({strategy}) -> {folder}")
    return 0


def run_stats(args) -> int:
    stats = write_statistics(open_dynamics(args.dynamics), args.out, dtype=args.dtype)
    size = sum(p.stat().st_size for p in stats.folder.glob("epoch_*.npy"))
    print(f"tdds: statistics of {stats.num_samples} samples x {len(stats.epochs)} epochs ({len(stats.columns)} columns, "
          f"{size / max(1, stats.num_samples * len(stats.epochs)):.0f} bytes per sample and epoch) -> {args.out}")
    return 0

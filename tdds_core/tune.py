"""Settings chosen on a validation split, never on the test set (``tdds tune``).

The paper picks TDDS's (T, W) per pruning rate by a grid search scored on the test set. Here the
search runs on a hold-out of the training set (``data.val_size``): :func:`tune` trains one
full-data run on the rest with every accuracy measured on the validation split
(``data.evaluate_on: validation``, so the test split is dropped before anything reads it), scores
every candidate of ``cfg.tune.grid`` from that one run, trains a coreset per (candidate, rate,
seed) and keeps, per rate, the candidate with the best mean validation accuracy (ties: the first
in grid order). A ``weighting`` key in the grid is chosen per rate with the rest. The chosen
settings go into the method's ``per_rate`` of a copy of the config,
which ``tdds grid`` then runs as is; with ``tune.rule`` the fixed fallback (:func:`paper_rule`)
is written beside it as the row ``<label>-rule``.

Everything runs through :func:`tdds_core.grid.run_grid` into ``<output>/tune`` (its own store
folder, MLflow experiment ``<experiment>-tune``), so an interrupted tune resumes and a rerun is
served from the caches.
"""
from __future__ import annotations

import datetime
import itertools
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml

from .config import Config, MethodSpec
from .errors import ConfigError, TddsError
from .grid import run_grid
from .io import atomic_write_text
from .names import format_rate
from .report import _mean_std
from .scoring import resolve_params
from .storage import join_uri

__all__ = ["PAPER_RULE", "paper_rule", "tune_config", "tune", "tuned_config", "TuneResult", "RECOMMENDED"]

#: the row label of the coreset `tdds tune` recommends per rate (tune.choose)
RECOMMENDED = "recommended"

# the paper's CIFAR-100 (T, W) per pruning rate, in epochs of a 200-epoch run (tdds-facts.md)
PAPER_RULE: dict[float, tuple[int, int]] = {0.3: (90, 10), 0.5: (70, 10), 0.7: (60, 20), 0.8: (20, 10), 0.9: (10, 5)}
PAPER_EPOCHS = 200


def paper_rule(rate: float, epochs: int, min_window: int = 3) -> dict[str, int]:
    """``{"T", "W"}`` for ``rate`` on a run of ``epochs`` epochs: the paper's CIFAR-100 settings of
    the nearest tabulated rate as fractions of its 200 epochs, rounded half up, with windows of at
    least ``min_window`` epochs (W = 2 leaves one KL term per window, whose deviation is always 0)
    and T between W and ``epochs``."""
    near = min(PAPER_RULE, key=lambda r: (abs(r - rate), r))
    t_frac, w_frac = (v / PAPER_EPOCHS for v in PAPER_RULE[near])
    w = min(max(min_window, math.floor(w_frac * epochs + 0.5)), epochs)
    t = min(max(w, math.floor(t_frac * epochs + 0.5)), epochs)
    return {"T": t, "W": w}


@dataclass
class TuneResult:
    """What :func:`tune` chose: per-rate options (with ``weighting`` when the grid tunes it), the
    validation table (one dict per candidate and rate: ``label, rate, mean, std, n, chosen``),
    and the tuned config (also written to ``path``)."""

    chosen: dict[float, dict[str, Any]]
    table: list[dict]
    config: Config
    path: Optional[Path] = None
    report: str = ""
    rows: list[dict] = field(default_factory=list)
    recommended: dict[float, dict] = field(default_factory=dict)   # tune.choose: per rate the chosen candidate


def _entry(cfg: Config) -> tuple[int, MethodSpec]:
    want = cfg.tune.method
    hits = [(i, m) for i, m in enumerate(cfg.methods) if want in (m.label, m.name, m.display)]
    if len(hits) != 1:
        known = ", ".join(m.display for m in cfg.methods)
        raise ConfigError(f"tune.method: {want!r} names {len(hits)} method entries ({known}); name exactly one, by its label")
    return hits[0]


def _candidates(cfg: Config, entry: MethodSpec) -> list[tuple[str, dict, Optional[str]]]:
    """(label, params, weighting) per valid combination of ``cfg.tune.grid``, in grid order."""
    grid = dict(cfg.tune.grid)
    if "strategy" in grid:
        raise ConfigError("tune.grid: 'strategy' is chosen with the coreset (set tune.choose, e.g. [tdds] or [all])")
    if not grid or any(not v for v in grid.values()):
        raise ConfigError("tune.grid: give at least one value per option, e.g. {T: [3, 5, 10], W: [3, 5]}")
    return [(c.label, c.params, c.weighting if "weighting" in grid else None)
            for c in grid_candidates(entry, grid, where="tune.grid", name_fixed=False)]


def tune_config(cfg: Config, methods: Optional[list[MethodSpec]] = None, seeds: Optional[list[int]] = None) -> tuple[Config, list[tuple[str, dict, Optional[str]]]]:
    """The grid config :func:`tune` runs: accuracies on the validation split, the candidates (plus
    the baseline entry) as methods at the tuned rates, the tune seeds and epochs, under ``<output>/tune``.
    ``methods`` replaces the candidate entries (:func:`tune` with ``tune.choose``); ``seeds`` the tune seeds."""
    if not cfg.data.val_size:
        raise ConfigError("tdds tune needs a validation split to choose on: set data.val_size (e.g. 10% of the "
                          "training samples); the test set is never used to choose settings")
    rates = list(cfg.tune.rates or cfg.selection.rates)
    if methods is None:
        _, entry = _entry(cfg)
        cands = _candidates(cfg, entry)
        methods = [MethodSpec(name=entry.name, label=label, params=params, rates=rates, weighting=w or entry.weighting)
                   for label, params, w in cands]
        if cfg.tune.baseline:
            methods.append(_baseline(cfg).model_copy(update={"rates": rates, "per_rate": {}}))
    else:
        cands = []
    experiment = cfg.tracking.experiment or f"tdds-{cfg.data.name}"
    d = cfg.model_dump(mode="json")
    d.update(name=f"{cfg.name}-tune", output=join_uri(cfg.output, "tune"),
             methods=[m.model_dump(mode="json") for m in methods])
    d["data"]["evaluate_on"] = "validation"
    d["coreset"]["seeds"] = list(cfg.tune.seeds if seeds is None else seeds)
    d["coreset"]["epochs"] = cfg.tune.epochs or cfg.coreset.epochs
    d["evaluate"]["rates"] = []
    d["tracking"]["experiment"] = f"{experiment}-tune"
    return Config.model_validate(d), cands


def _baseline(cfg: Config) -> MethodSpec:
    base = [m for m in cfg.methods if cfg.tune.baseline in (m.label, m.name, m.display)]
    if not base:
        raise ConfigError(f"tune.baseline: {cfg.tune.baseline!r} is not one of the config's methods; "
                          "name one of them or set tune.baseline: null")
    return base[0]


def _accuracies(rows: list[dict]) -> dict[tuple[str, float], list[float]]:
    """Validation accuracies by (row label, rate)."""
    acc: dict[tuple[str, float], list[float]] = {}
    for r in rows:
        if r.get("rate") is not None and r.get("final_acc") is not None:
            acc.setdefault((str(r["method"]), round(float(r["rate"]), 6)), []).append(float(r["final_acc"]))
    return acc


def tune(cfg: Config, write: Optional[str | Path] = None) -> TuneResult:
    """Choose ``cfg.tune.method``'s settings per rate on the validation split (and, with
    ``tune.choose``, the coreset to take per rate); write the tuned config to ``write``."""
    if cfg.tune.choose:
        return choose(cfg, write)
    idx, entry = _entry(cfg)
    tcfg, cands = tune_config(cfg)
    rows = run_grid(tcfg).rows
    rates = sorted({float(r) for r in (cfg.tune.rates or cfg.selection.rates)})
    stats = {k: _mean_std(v) + (len(v),) for k, v in _accuracies(rows).items()}

    def score(label: str, rate: float) -> float:
        s = stats.get((label, round(rate, 6)))
        if s is None:
            raise TddsError(f"tune: no validation accuracy for {label} at p={format_rate(rate)}; rerun `tdds tune`")
        return s[0]

    chosen: dict[float, dict[str, Any]] = {}
    pick: dict[float, str] = {}
    for r in rates:
        label, params, w = max(cands, key=lambda c: score(c[0], r))    # first of equals, in grid order
        chosen[r] = _chosen_options(cfg, params, w)
        pick[r] = label
    table = [{"label": label, "rate": r, "mean": stats[(label, round(r, 6))][0], "std": stats[(label, round(r, 6))][1],
              "n": stats[(label, round(r, 6))][2], "chosen": pick.get(r) == label}
             for label in [c[0] for c in cands] + [m.display for m in tcfg.methods[len(cands):]]
             for r in rates if (label, round(r, 6)) in stats]
    tuned = tuned_config(cfg, idx, entry, chosen, rates, tcfg.coreset.epochs or cfg.train.epochs)
    return finish(cfg, tuned, chosen, table, rows, write, tune_markdown(table, cfg))


def _chosen_options(cfg: Config, params: dict, weighting: Optional[str]) -> dict[str, Any]:
    tuned_keys = [k for k in cfg.tune.grid if k != "weighting"]
    return {**{k: params[k] for k in tuned_keys}, **({"weighting": weighting} if weighting else {})}


def tuned_config(cfg: Config, idx: int, entry: MethodSpec, chosen: dict[float, dict[str, Any]], rates: list[float],
                 epochs: int, extra: Optional[list[MethodSpec]] = None) -> Config:
    """``cfg`` with the tuned method's ``per_rate`` set to ``chosen``, the rule row beside it (``tune.rule``)
    and ``extra`` entries appended (the recommended rows)."""
    methods = list(cfg.methods)
    label = entry.label or entry.name
    per_rate = {**entry.per_rate, **{r: dict(v) for r, v in chosen.items()}}
    methods[idx] = entry.model_copy(update={"label": label, "per_rate": per_rate})
    if cfg.tune.rule:
        rule = {r: paper_rule(r, epochs) for r in rates}
        methods.insert(idx + 1, entry.model_copy(update={"label": f"{label}-rule", "per_rate": rule}))
    methods += list(extra or [])
    return Config.model_validate({**cfg.model_dump(mode="json"), "methods": [m.model_dump(mode="json") for m in methods]})


def finish(cfg: Config, tuned: Config, chosen: dict, table: list[dict], rows: list[dict], write: Optional[str | Path],
           report: str, recommended: Optional[dict] = None) -> TuneResult:
    """The :class:`TuneResult`, with the tuned config and its report written beside ``write``."""
    res = TuneResult(chosen, table, tuned, report=report, rows=rows, recommended=dict(recommended or {}))
    if write:
        res.path = Path(write)
        what = "the coreset to take and " if recommended else ""
        header = (f"# written by `tdds tune` on {datetime.date.today().isoformat()}: {what}{cfg.tune.method}'s settings "
                  f"per pruning rate, chosen on a {cfg.data.val_size}-sample validation split\n# (validation accuracies: "
                  f"{res.path.with_suffix('.md').name}); no test label was read.\n")
        atomic_write_text(res.path, header + yaml.safe_dump(tuned.model_dump(mode="json", exclude_defaults=True),
                                                             sort_keys=False))
        atomic_write_text(res.path.with_suffix(".md"), report)
        atomic_write_text(res.path.with_suffix(".json"), json.dumps(
            {"chosen": {str(r): v for r, v in chosen.items()}, "recommended": {str(r): v for r, v in res.recommended.items()},
             "table": table}, indent=1))
    return res


def tune_markdown(table: list[dict], cfg: Config) -> str:
    """Candidates as rows, rates as columns: validation accuracy mean ± std (n), the choice in bold."""
    rates = sorted({t["rate"] for t in table})
    labels = list(dict.fromkeys(t["label"] for t in table))
    cell = {(t["label"], t["rate"]): t for t in table}
    lines = [f"Validation accuracy (%, final epoch) of {cfg.tune.method}'s candidates on {cfg.data.val_size} held-out "
             "training samples; bold: chosen per rate. The test set was not read.", "",
             "| candidate | " + " | ".join(f"p={format_rate(r)}" for r in rates) + " |", "|---|" + "---|" * len(rates)]
    for lb in labels:
        cells = []
        for r in rates:
            t = cell.get((lb, r))
            s = "–" if t is None else (f"{t['mean']:.2f}" + (f" ± {t['std']:.2f}" if t["n"] > 1 else "") + f" (n={t['n']})")
            cells.append(f"**{s}**" if t and t["chosen"] else s)
        lines.append(f"| {lb} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------- the coreset to take
def _entries(cfg: Config) -> list[MethodSpec]:
    """The method entries ``tune.choose`` names (``all``: every configured entry), in config order."""
    want = list(cfg.tune.choose or [])
    if want == ["all"]:
        return list(cfg.methods)
    out = []
    for w in want:
        hits = [m for m in cfg.methods if w in (m.label, m.name, m.display)]
        if len(hits) != 1:
            known = ", ".join(m.display for m in cfg.methods)
            raise ConfigError(f"tune.choose: {w!r} names {len(hits)} method entries ({known}); name each by its label, "
                              "or use [all]")
        out.append(hits[0])
    return out


def grid_candidates(entry: MethodSpec, grid: dict[str, list[Any]], *, where: str = "",
                    name_fixed: bool = True) -> list[MethodSpec]:
    """One method entry per valid combination of ``grid`` (scorer options, ``weighting``, ``strategy``),
    labelled ``<label or name>[k=v,...]`` (with ``name_fixed``, an unlabelled entry's other options
    too), in grid order; an empty grid gives the entry itself. ``where`` names the grid in errors."""
    where = where or f"tune.grids[{entry.display!r}]"
    if not grid:
        return [entry.model_copy(update={"label": entry.label or entry.display})]
    base = entry.label or entry.name
    grid = dict(grid)
    extra = {k: grid.pop(k) for k in ("weighting", "strategy") if k in grid}
    if any(not v for v in list(grid.values()) + list(extra.values())):
        raise ConfigError(f"{where}: give at least one value per option")
    keys = list(grid)
    out = []
    for combo in itertools.product(*(grid[k] for k in keys)):
        params = {**entry.params, **dict(zip(keys, combo))}
        try:
            resolve_params(entry.name, **params)
        except TddsError:
            continue                                   # e.g. W > T: not a setting of the method
        for w in extra.get("weighting", [None]):
            for st in extra.get("strategy", [None]):
                fixed = [] if entry.label or not name_fixed else [
                    f"{k}={v}" for k, v in sorted(entry.params.items()) if k not in keys]
                parts = [f"{k}={v}" for k, v in zip(keys, combo)] + fixed + ([f"weighting={w}"] if w else []) \
                    + ([f"strategy={st}"] if st else [])
                # the grid's keys replace the entry's per-rate values of the same keys
                per_rate = {r: {k: v for k, v in o.items() if k not in keys and not (k == "weighting" and w)
                                and not (k == "strategy" and st)} for r, o in entry.per_rate.items()}
                out.append(entry.model_copy(update={
                    "label": f"{base}[{','.join(parts)}]", "params": params, "per_rate": {r: o for r, o in per_rate.items() if o},
                    "weighting": w or entry.weighting, "strategy": st or entry.strategy}))
    if not out:
        raise ConfigError(f"{where}: no combination of {grid} is a valid setting of {entry.name!r}; "
                          "check the option names and ranges (e.g. W <= T)")
    return out


def choose_candidates(cfg: Config) -> list[MethodSpec]:
    """Every candidate of ``tune.choose``: each named entry over its grid (``tune.grids[label or name]``;
    ``tune.method``'s entry over ``tune.grid`` unless ``grids`` names it)."""
    out: list[MethodSpec] = []
    for entry in _entries(cfg):
        keys = [k for k in (entry.label, entry.name, entry.display) if k]
        grid = next((cfg.tune.grids[k] for k in keys if k in cfg.tune.grids), None)
        if grid is None and cfg.tune.method in keys:
            grid = cfg.tune.grid
        out += grid_candidates(entry, grid or {})
    labels = [c.label for c in out]
    dup = sorted({lb for lb in labels if labels.count(lb) > 1})
    if dup:
        raise ConfigError(f"tune.choose: candidates share the labels {dup}; give the entries distinct labels")
    return out


def _survivors(alive: list[str], acc: dict, rate: float) -> list[str]:
    """The better half (at least 2) of ``alive`` by mean validation accuracy so far; ties in grid order."""
    keep = min(len(alive), max(2, math.ceil(len(alive) / 2)))
    ranked = sorted(alive, key=lambda lb: -_mean_std(acc[(lb, round(rate, 6))])[0])
    return [lb for lb in alive if lb in ranked[:keep]]


def choose(cfg: Config, write: Optional[str | Path] = None) -> TuneResult:
    """Choose the coreset to take per rate on the validation split (``tune.choose``).

    Candidates: :func:`choose_candidates`. Successive halving over ``tune.seeds``: every candidate
    trains at every rate on the first seed; with ``tune.budget`` only the better half (at least 2)
    of a rate's candidates trains on the next seed, and so on (without a budget every candidate
    trains on every seed). Per rate the candidate with the best mean over the most seeds is
    chosen (ties: the first in candidate order). The tuned config gets one ``recommended`` entry per
    rate (that candidate at that rate) and ``tune.method``'s tuned settings as :func:`tune` writes them."""
    seeds = list(cfg.tune.seeds)
    if len(seeds) < 2:
        raise ConfigError(f"tune.choose needs at least 2 tune.seeds to choose on a mean (got {seeds}); e.g. tune.seeds: [0, 1]")
    cands = choose_candidates(cfg)
    rates = sorted({float(r) for r in (cfg.tune.rates or cfg.selection.rates)})
    if cfg.tune.budget is not None and len(cands) > cfg.tune.budget:
        raise ConfigError(f"tune.choose: {len(cands)} candidates exceed tune.budget {cfg.tune.budget} (trainings per rate "
                          "on the first seed); shrink tune.grids or raise tune.budget")
    baseline = _baseline(cfg) if cfg.tune.baseline else None
    by_label = {c.label: c for c in cands}
    alive = {r: [c.label for c in cands] for r in rates}
    rows: list[dict] = []
    acc: dict[tuple[str, float], list[float]] = {}
    for k, seed in enumerate(seeds):
        if k and cfg.tune.budget is not None:
            alive = {r: _survivors(alive[r], acc, r) for r in rates}
        methods = [c.model_copy(update={"rates": [r for r in rates if c.label in alive[r]]}) for c in cands]
        methods = [m for m in methods if m.rates]
        if baseline is not None and (baseline.label or baseline.display) not in by_label:
            methods.append(baseline.model_copy(update={"rates": rates, "per_rate": {}}))
        tcfg, _ = tune_config(cfg, methods, [seed])
        got = run_grid(tcfg).rows
        rows += got
        for key, v in _accuracies(got).items():
            acc.setdefault(key, []).extend(v)
    stats = {key: _mean_std(v) + (len(v),) for key, v in acc.items()}

    def best(labels: list[str], rate: float) -> str:
        have = [lb for lb in labels if (lb, round(rate, 6)) in stats]
        if not have:
            raise TddsError(f"tune: no validation accuracy at p={format_rate(rate)}; rerun `tdds tune`")
        return max(have, key=lambda lb: (stats[(lb, round(rate, 6))][2], stats[(lb, round(rate, 6))][0]))

    pick = {r: best([c.label for c in cands], r) for r in rates}
    recommended = {r: {"label": pick[r], "mean": stats[(pick[r], round(r, 6))][0],
                       "std": stats[(pick[r], round(r, 6))][1], "n": stats[(pick[r], round(r, 6))][2]} for r in rates}
    extra = []
    for r in rates:
        c = by_label[pick[r]]
        over = c.per_rate_for(r)
        extra.append(MethodSpec(name=c.name, label=RECOMMENDED, params=c.params_for(r), rates=[r],
                                weighting=over.get("weighting") or c.weighting, strategy=c.strategy_for(r),
                                strategy_params=dict(c.strategy_params)))
    # tune.method's own settings per rate, as `tdds tune` without choose writes them (best of its candidates)
    chosen: dict[float, dict[str, Any]] = {}
    hits = [(i, m) for i, m in enumerate(cfg.methods) if cfg.tune.method in (m.label, m.name, m.display)]
    own = [c for c in cands if len(hits) == 1 and c.name == hits[0][1].name and c.label.startswith(
        (hits[0][1].label or hits[0][1].name) + "[")]
    if own:
        idx, entry = hits[0]
        for r in rates:
            c = by_label[best([o.label for o in own], r)]
            chosen[r] = {**{k: c.params[k] for k in cfg.tune.grid if k not in ("weighting", "strategy")},
                         **({"weighting": c.weighting} if "weighting" in cfg.tune.grid and c.weighting else {}),
                         **({"strategy": c.strategy} if "strategy" in cfg.tune.grid and c.strategy else {})}
        tuned = tuned_config(cfg, idx, entry, chosen, rates, cfg.tune.epochs or cfg.coreset.epochs or cfg.train.epochs,
                             extra)
    else:
        tuned = Config.model_validate({**cfg.model_dump(mode="json"),
                                       "methods": [m.model_dump(mode="json") for m in list(cfg.methods) + extra]})
    pick_of = {(pick[r], r) for r in rates}
    labels = [c.label for c in cands] + ([baseline.label or baseline.display] if baseline is not None
                                         and (baseline.label or baseline.display) not in by_label else [])
    table = [{"label": lb, "rate": r, "mean": stats[(lb, round(r, 6))][0], "std": stats[(lb, round(r, 6))][1],
              "n": stats[(lb, round(r, 6))][2], "chosen": (lb, r) in pick_of}
             for lb in labels for r in rates if (lb, round(r, 6)) in stats]
    report = choose_markdown(table, cfg, recommended)
    return finish(cfg, tuned, chosen, table, rows, write, report, recommended)


def choose_markdown(table: list[dict], cfg: Config, recommended: dict[float, dict]) -> str:
    """The candidates' validation table (bold: the recommended coreset per rate) and one line per rate."""
    body = tune_markdown(table, cfg).replace(f"of {cfg.tune.method}'s candidates", "of the candidate coresets")
    lines = [body, "Recommended per rate (validation accuracy %, mean ± std over tune seeds, n): " + "; ".join(
        f"p={format_rate(r)}: {v['label']} ({v['mean']:.2f} ± {v['std'] or 0:.2f}, n={v['n']})"
        for r, v in sorted(recommended.items())) + ".", ""]
    return "\n".join(lines)

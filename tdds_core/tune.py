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

__all__ = ["PAPER_RULE", "paper_rule", "tune_config", "tune", "TuneResult"]

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
    if not grid or any(not v for v in grid.values()):
        raise ConfigError("tune.grid: give at least one value per option, e.g. {T: [3, 5, 10], W: [3, 5]}")
    weightings = grid.pop("weighting", None)
    keys = list(grid)
    out = []
    base = entry.label or entry.name
    for combo in itertools.product(*(grid[k] for k in keys)):
        params = {**entry.params, **dict(zip(keys, combo))}
        try:
            resolve_params(entry.name, **params)
        except TddsError:
            continue                                  # e.g. W > T: not a setting of the method
        for w in (weightings or [None]):
            parts = [f"{k}={v}" for k, v in zip(keys, combo)] + ([f"weighting={w}"] if w else [])
            out.append((f"{base}[{','.join(parts)}]", params, w))
    if not out:
        raise ConfigError(f"tune.grid: no combination of {cfg.tune.grid} is a valid setting of {entry.name!r}; "
                          "check the option names and ranges (e.g. W <= T)")
    return out


def tune_config(cfg: Config) -> tuple[Config, list[tuple[str, dict, Optional[str]]]]:
    """The grid config :func:`tune` runs: accuracies on the validation split, the candidates (plus
    the baseline entry) as methods at the tuned rates, the tune seeds and epochs, under ``<output>/tune``."""
    if not cfg.data.val_size:
        raise ConfigError("tdds tune needs a validation split to choose on: set data.val_size (e.g. 10% of the "
                          "training samples); the test set is never used to choose settings")
    _, entry = _entry(cfg)
    cands = _candidates(cfg, entry)
    rates = list(cfg.tune.rates or cfg.selection.rates)
    methods = [MethodSpec(name=entry.name, label=label, params=params, rates=rates, weighting=w or entry.weighting)
               for label, params, w in cands]
    if cfg.tune.baseline:
        base = [m for m in cfg.methods if cfg.tune.baseline in (m.label, m.name, m.display)]
        if not base:
            raise ConfigError(f"tune.baseline: {cfg.tune.baseline!r} is not one of the config's methods; "
                              "name one of them or set tune.baseline: null")
        methods.append(base[0].model_copy(update={"rates": rates, "per_rate": {}}))
    experiment = cfg.tracking.experiment or f"tdds-{cfg.data.name}"
    d = cfg.model_dump(mode="json")
    d.update(name=f"{cfg.name}-tune", output=join_uri(cfg.output, "tune"),
             methods=[m.model_dump(mode="json") for m in methods])
    d["data"]["evaluate_on"] = "validation"
    d["coreset"]["seeds"] = list(cfg.tune.seeds)
    d["coreset"]["epochs"] = cfg.tune.epochs or cfg.coreset.epochs
    d["evaluate"]["rates"] = []
    d["tracking"]["experiment"] = f"{experiment}-tune"
    return Config.model_validate(d), cands


def tune(cfg: Config, write: Optional[str | Path] = None) -> TuneResult:
    """Choose ``cfg.tune.method``'s settings per rate on the validation split; write the tuned config to ``write``."""
    idx, entry = _entry(cfg)
    tcfg, cands = tune_config(cfg)
    rows = run_grid(tcfg).rows
    rates = sorted({float(r) for r in (cfg.tune.rates or cfg.selection.rates)})
    acc: dict[tuple[str, float], list[float]] = {}
    for r in rows:
        if r.get("rate") is not None and r.get("final_acc") is not None:
            acc.setdefault((str(r["method"]), round(float(r["rate"]), 6)), []).append(float(r["final_acc"]))
    stats = {k: _mean_std(v) + (len(v),) for k, v in acc.items()}

    def score(label: str, rate: float) -> float:
        s = stats.get((label, round(rate, 6)))
        if s is None:
            raise TddsError(f"tune: no validation accuracy for {label} at p={format_rate(rate)}; rerun `tdds tune`")
        return s[0]

    tuned_keys = [k for k in cfg.tune.grid if k != "weighting"]
    chosen: dict[float, dict[str, Any]] = {}
    pick: dict[float, str] = {}
    for r in rates:
        label, params, w = max(cands, key=lambda c: score(c[0], r))    # first of equals, in grid order
        chosen[r] = {**{k: params[k] for k in tuned_keys}, **({"weighting": w} if w else {})}
        pick[r] = label
    table = [{"label": label, "rate": r, "mean": stats[(label, round(r, 6))][0], "std": stats[(label, round(r, 6))][1],
              "n": stats[(label, round(r, 6))][2], "chosen": pick.get(r) == label}
             for label in [c[0] for c in cands] + [m.display for m in tcfg.methods[len(cands):]]
             for r in rates if (label, round(r, 6)) in stats]

    methods = list(cfg.methods)
    label = entry.label or entry.name
    per_rate = {**entry.per_rate, **{r: dict(v) for r, v in chosen.items()}}
    methods[idx] = entry.model_copy(update={"label": label, "per_rate": per_rate})
    if cfg.tune.rule:
        rule = {r: paper_rule(r, tcfg.coreset.epochs or cfg.train.epochs) for r in rates}
        methods.insert(idx + 1, entry.model_copy(update={"label": f"{label}-rule", "per_rate": rule}))
    tuned = Config.model_validate({**cfg.model_dump(mode="json"), "methods": [m.model_dump(mode="json") for m in methods]})
    report = tune_markdown(table, cfg)
    res = TuneResult(chosen, table, tuned, report=report, rows=rows)
    if write:
        res.path = Path(write)
        header = (f"# written by `tdds tune` on {datetime.date.today().isoformat()}: {label}'s settings per pruning rate, "
                  f"chosen on a {cfg.data.val_size}-sample validation split\n# (validation accuracies: "
                  f"{res.path.with_suffix('.md').name}); no test label was read.\n")
        atomic_write_text(res.path, header + yaml.safe_dump(tuned.model_dump(mode="json", exclude_defaults=True),
                                                             sort_keys=False))
        atomic_write_text(res.path.with_suffix(".md"), report)
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

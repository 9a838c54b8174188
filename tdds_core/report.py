"""Results tables and plots: methods x pruning rates, mean ± std over seeds.

A *result row* is one trained model::

    {"method": "tdds",          # method label (MethodSpec.display); "full" for full-data training
     "rate": 0.7,               # pruning rate p in (0, 1); None for full data
     "seed": 42, "arch": "resnet18",
     "final_acc": 93.1,         # test accuracy after the last epoch, PERCENT (0..100)
     "best_acc": 93.4,          # best test accuracy over epochs, PERCENT (0..100)
     "noisy_kept": 0.05,        # optional: fraction (0..1) of the kept samples that were corrupted
     "num_train": 15000, "iterations": 30000, "wall_s": 812.0}

:func:`build_table` aggregates rows over seeds per (method, rate, arch); :func:`to_csv`,
:func:`to_markdown` and :func:`plot_accuracy_vs_rate` render it; :func:`rows_from_runs` turns
tracked runs (:class:`tdds_core.tracking.RunRecord`, read back by
:func:`tdds_core.tracking.rows_from_mlflow`) into rows (tag and metric names: the ``TAG_*`` /
``METRIC_*`` constants of :mod:`tdds_core.names`). This module does not import the tracking.

This module owns the plots (matplotlib, loaded lazily, Agg canvas, no pyplot): the accuracy-vs-rate
plot and the score-stage figures :func:`score_histogram_figure` / :func:`extremes_grid_figure`
that :func:`tdds_core.tracking.log_score_run` logs; other modules draw on :func:`new_figure`
(the time-to-accuracy plot of :mod:`tdds_core.report_cost`).

Standard deviations are sample standard deviations over seeds (``ddof=1``); 0 for a single seed.
"""
from __future__ import annotations

import csv
import io
import math
import os
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

import numpy as np

from .names import (COST_METRICS, METRIC_BEST_ACC, METRIC_FINAL_ACC, METRIC_ITERATIONS, METRIC_NOISY_KEPT, METRIC_NUM_TRAIN,
                    METRIC_WALL_S, STAGE_TRAIN_FULL, TAG_ARCH, TAG_LABEL, TAG_METHOD, TAG_RATE, TAG_SEED, TAG_STAGE,
                    format_rate)

__all__ = ["build_table", "to_csv", "to_markdown", "plot_accuracy_vs_rate", "rows_from_runs", "full_accuracy",
           "paired_differences", "paired_markdown", "scale_note",
           "score_histogram_figure", "extremes_grid_figure", "new_figure", "FULL_METHOD", "TABLE_COLUMNS"]

FULL_METHOD = "full"
_STATS = ("final_acc", "best_acc", "noisy_kept", "num_train", "iterations", "wall_s")
TABLE_COLUMNS = (
    "method", "rate", "arch", "n", "seeds",
    "final_acc_mean", "final_acc_std", "best_acc_mean", "best_acc_std",
    "noisy_kept_mean", "noisy_kept_std", "num_train", "iterations", "wall_s_mean", "weighting",
)


def _num(v: Any) -> Optional[float]:
    if v is None or v == "":
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) else f


def _mean_std(xs: Sequence[float]) -> tuple[Optional[float], Optional[float]]:
    if not xs:
        return None, None
    m = sum(xs) / len(xs)
    if len(xs) < 2:
        return m, 0.0
    var = sum((x - m) ** 2 for x in xs) / (len(xs) - 1)
    return m, math.sqrt(var)


def _rate_key(rate: Optional[float]) -> float:
    return -1.0 if rate is None else float(rate)


def build_table(rows: Iterable[dict]) -> list[dict]:
    """Aggregate result rows over seeds per (method, rate, arch).

    Returns one dict per group with the keys of :data:`TABLE_COLUMNS`: ``n`` (rows), ``seeds``
    (sorted list), ``<metric>_mean`` / ``<metric>_std`` for ``final_acc``, ``best_acc`` and
    ``noisy_kept`` (None when no row has it), ``num_train`` / ``iterations`` (mean, rounded) and
    ``wall_s_mean``. Sorted by arch, method, rate (full data first).
    """
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        if "method" not in r:
            raise ValueError(f"result row without 'method': {r!r}")
        rate = _num(r.get("rate"))
        key = (str(r["method"]), None if rate is None else round(rate, 6), str(r.get("arch") or ""))
        groups.setdefault(key, []).append(r)
    table = []
    for (method, rate, arch), rs in groups.items():
        out: dict[str, Any] = {"method": method, "rate": rate, "arch": arch, "n": len(rs),
                               "seeds": sorted({int(x["seed"]) for x in rs if _num(x.get("seed")) is not None})}
        for m in ("final_acc", "best_acc", "noisy_kept"):
            mean, std = _mean_std([v for v in (_num(x.get(m)) for x in rs) if v is not None])
            out[f"{m}_mean"], out[f"{m}_std"] = mean, std
        for m in ("num_train", "iterations"):
            mean, _ = _mean_std([v for v in (_num(x.get(m)) for x in rs) if v is not None])
            out[m] = None if mean is None else int(round(mean))
        out["wall_s_mean"] = _mean_std([v for v in (_num(x.get("wall_s")) for x in rs) if v is not None])[0]
        stopped = [int(x["stopped_epoch"]) for x in rs if _num(x.get("stopped_epoch")) is not None]
        if stopped:
            out["stopped_epoch"] = max(stopped)
        weightings = sorted({str(x["weighting"]) for x in rs if x.get("weighting")})
        out["weighting"] = "/".join(weightings) or None
        table.append(out)
    table.sort(key=lambda t: (t["arch"], t["method"] != FULL_METHOD, t["method"], _rate_key(t["rate"])))
    return table


def to_csv(table: Sequence[dict]) -> str:
    """The aggregated table as CSV (columns :data:`TABLE_COLUMNS`; seeds joined by ``;``)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(TABLE_COLUMNS)
    for t in table:
        row = []
        for c in TABLE_COLUMNS:
            v = t.get(c)
            if c == "seeds":
                v = ";".join(str(s) for s in (v or []))
            elif c == "rate":
                v = format_rate(v)
            elif isinstance(v, float):
                v = f"{v:.6g}"
            row.append("" if v is None else v)
        w.writerow(row)
    return buf.getvalue()


def _fmt(mean: Optional[float], std: Optional[float], n: int = 2) -> str:
    """``mean ± std``; the mean alone for one seed (``n == 1``), where no spread was measured."""
    if mean is None:
        return "–"
    return f"{mean:.2f}" if n <= 1 else f"{mean:.2f} ± {(std or 0.0):.2f}"


def full_accuracy(table: Sequence[dict], arch: Optional[str] = None, metric: str = "final_acc") -> Optional[tuple[float, float, int]]:
    """(mean, std, n) of the full-data rows (rate None) of ``arch`` (any arch when None), else None."""
    for t in table:
        if t["rate"] is None and (arch is None or t["arch"] == arch) and t.get(f"{metric}_mean") is not None:
            return t[f"{metric}_mean"], t[f"{metric}_std"] or 0.0, t["n"]
    return None


def _full_tuple(full_acc: Any) -> Optional[tuple[float, float, int]]:
    if full_acc is None:
        return None
    if isinstance(full_acc, (tuple, list)):
        return (float(full_acc[0]), float(full_acc[1]), 2) if len(full_acc) > 1 else (float(full_acc[0]), 0.0, 1)
    return float(full_acc), 0.0, 1


def to_markdown(table: Sequence[dict], full_acc: Any = None, random_method: str = "random",
                metric: str = "final_acc") -> str:
    """Methods as rows, pruning rates as columns, cells ``mean ± std`` of ``metric`` (percent).

    Above each table: the full-data accuracy (``full_acc`` as a number or (mean, std); default the
    table's full-data rows) and the random baseline; the random row comes first and is marked
    "(baseline)"; the best method in each column is bold. One table per architecture.
    """
    archs = sorted({t["arch"] for t in table})
    lines: list[str] = []
    for arch in archs:
        sub = [t for t in table if t["arch"] == arch]
        rates = sorted({t["rate"] for t in sub if t["rate"] is not None})
        methods = sorted({t["method"] for t in sub if t["rate"] is not None},
                         key=lambda m: (m != random_method, m))
        cell = {(t["method"], t["rate"]): t for t in sub}
        if len(archs) > 1 or arch:
            lines.append(f"### {arch or 'default architecture'}")
            lines.append("")
        full = _full_tuple(full_acc) or full_accuracy(sub, metric=metric)
        stop = next((t["stopped_epoch"] for t in sub if t["rate"] is None and t.get("stopped_epoch")), None)
        absent = f"not measured (the dynamics run stopped after epoch {stop}: dynamics.stop_training)" if stop else "not run"
        lines.append(f"Full data (no pruning): {_fmt(*full) if full else absent} (test accuracy, %, {metric})")
        rand = [cell.get((random_method, r)) for r in rates]
        if any(x is not None for x in rand):
            parts = [f"p={format_rate(r)}: {_fmt(x.get(f'{metric}_mean'), x.get(f'{metric}_std'), x['n'])}"
                     for r, x in zip(rates, rand) if x is not None]
            lines.append(f"Random baseline ({random_method}): " + ", ".join(parts))
        else:
            lines.append(f"Random baseline ({random_method}): not run")
        lines.append("")
        best: dict[float, float] = {}
        for r in rates:
            vals = [cell[(m, r)].get(f"{metric}_mean") for m in methods if (m, r) in cell]
            vals = [v for v in vals if v is not None]
            if vals:
                best[r] = max(vals)
        lines.append("| method | " + " | ".join(f"p={format_rate(r)}" for r in rates) + " |")
        lines.append("|---|" + "---|" * len(rates))
        for m in methods:
            cells = []
            for r in rates:
                t = cell.get((m, r))
                if t is None:
                    cells.append("–")
                    continue
                mean, std = t.get(f"{metric}_mean"), t.get(f"{metric}_std")
                s = _fmt(mean, std, t["n"])
                if mean is not None and len(methods) > 1 and abs(mean - best.get(r, float("nan"))) < 1e-9:
                    s = f"**{s}**"
                cells.append(s)
            name = f"{m} (baseline)" if m == random_method else m
            per_rate = {r: t.get("weighting") for r in rates if (t := cell.get((m, r)))}
            weighted = {r: w for r, w in per_rate.items() if w not in (None, "none")}
            if weighted and len(weighted) == len(per_rate) and len(set(weighted.values())) == 1:
                name += f" [loss weighting: {next(iter(weighted.values()))}]"
            elif weighted:   # chosen per rate (tdds tune): name the rates that are weighted
                name += " [loss weighting: " + ", ".join(f"{w} at p={format_rate(r)}" for r, w in weighted.items()) + "]"
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        n = sorted({t["n"] for t in sub if t["rate"] is not None})
        lines.append("")
        if n == [1]:
            lines.append("one seed per cell (n = 1): no spread measured, so differences of a point or two may be "
                         "seed noise; higher is better.")
        else:
            lines.append(f"mean ± std over seeds (n = {', '.join(map(str, n)) or '0'}); higher is better.")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


#: below these a grid shows the pipeline working, not a ranking of the methods
TOY_SAMPLES, TOY_EPOCHS = 10_000, 10


def scale_note(num_train: Optional[int], epochs: int, seeds: int) -> str:
    """One paragraph for a table made at toy scale (fewer than :data:`TOY_SAMPLES` training samples,
    :data:`TOY_EPOCHS` epochs or 2 seeds) saying what it can and cannot show; "" otherwise."""
    small = [f"{num_train:,} training samples" if num_train is not None and num_train < TOY_SAMPLES else "",
             f"{epochs} epochs" if epochs < TOY_EPOCHS else "", "one seed" if seeds < 2 else ""]
    small = [x for x in small if x]
    if not small:
        return ""
    return (f"Toy scale ({', '.join(small)}): this table shows the pipeline working end to end, not which method "
            "is best. With little data, few epochs and one seed the dynamics are short and noisy, differences of a few "
            "points are within seed noise, and Random is hard to beat. The measured comparison (20,000 samples, "
            "3 seeds, settings chosen on a validation split, paired differences to Random) is docs/RESULTS.md.\n")


def paired_differences(rows: Iterable[dict], reference: str = "random", metric: str = "final_acc") -> list[dict]:
    """Per (method, rate, arch): the difference to ``reference`` paired by seed (same rate, arch and
    coreset seed), in points. Returns dicts ``method, rate, arch, n`` (paired seeds), ``mean``,
    ``std`` (ddof=1; 0 for one pair), ``wins`` (pairs above the reference), ``ties``; methods
    without a paired reference row are left out."""
    val: dict[tuple, float] = {}
    for r in rows:
        v, rate = _num(r.get(metric)), _num(r.get("rate"))
        if v is not None and rate is not None and _num(r.get("seed")) is not None:
            val[(str(r["method"]), round(rate, 6), str(r.get("arch") or ""), int(r["seed"]))] = v
    diffs: dict[tuple, list[float]] = {}
    for (m, rate, arch, seed), v in val.items():
        ref = val.get((reference, rate, arch, seed))
        if m != reference and ref is not None:
            diffs.setdefault((m, rate, arch), []).append(v - ref)
    out = []
    for (m, rate, arch), ds in sorted(diffs.items()):
        mean, std = _mean_std(ds)
        out.append({"method": m, "rate": rate, "arch": arch, "n": len(ds), "mean": mean, "std": std,
                    "wins": sum(d > 0 for d in ds), "ties": sum(d == 0 for d in ds)})
    return out


def paired_markdown(diffs: Sequence[dict], reference: str = "random") -> str:
    """Methods as rows, rates as columns: ``+mean ± std (wins/n)`` points against ``reference``,
    then one line naming every cell whose mean is below it."""
    rates = sorted({d["rate"] for d in diffs})
    methods = sorted({d["method"] for d in diffs})
    cell = {(d["method"], d["rate"]): d for d in diffs}
    lines = ["| method | " + " | ".join(f"p={format_rate(r)}" for r in rates) + " |", "|---|" + "---|" * len(rates)]
    for m in methods:
        cells = []
        for r in rates:
            d = cell.get((m, r))
            cells.append("–" if d is None else f"{d['mean']:+.2f}" + (f" ± {d['std']:.2f}" if d["n"] > 1 else "")
                         + f" ({d['wins']}/{d['n']})")
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    losers = [f"{d['method']} at p={format_rate(d['rate'])} ({d['mean']:+.2f})" for d in diffs if d["mean"] < 0]
    lines += ["", f"Difference to {reference} in accuracy points, paired by coreset seed: mean ± std (seeds above {reference} / seeds).",
              f"Below {reference} on average: " + ("; ".join(losers) if losers else "none") + "."]
    return "\n".join(lines) + "\n"


def plot_accuracy_vs_rate(rows: Iterable[dict], path: str | os.PathLike, full_acc: Any = None,
                          metric: str = "final_acc", title: Optional[str] = None) -> Path:
    """Accuracy (percent) vs pruning rate, one line per method (and arch when several) with std error
    bars, full-data accuracy as a dashed line. Written as PNG with matplotlib's Agg canvas (no pyplot,
    no display needed). Returns the path."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    table = build_table(rows)
    archs = sorted({t["arch"] for t in table})
    fig = Figure(figsize=(7, 4.5), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    series: dict[tuple[str, str], list[dict]] = {}
    for t in table:
        if t["rate"] is not None and t.get(f"{metric}_mean") is not None:
            series.setdefault((t["method"], t["arch"]), []).append(t)
    from matplotlib import colormaps

    palette = colormaps["tab10" if len(series) <= 10 else "tab20"]
    for i, ((method, arch), ts) in enumerate(sorted(series.items())):
        ts.sort(key=lambda t: t["rate"])
        label = method if len(archs) == 1 else f"{method} ({arch})"
        ax.errorbar([t["rate"] for t in ts], [t[f"{metric}_mean"] for t in ts],
                    yerr=[t[f"{metric}_std"] or 0.0 for t in ts], marker="os^vD"[i % 5], capsize=3, label=label,
                    color={"tdds": "black", "random": "dimgray"}.get(method, palette(i % palette.N)), linestyle="--" if method == "random" else "-",
                    linewidth=2.5 if method.startswith(("tdds", "random")) else 1.2)
    full = _full_tuple(full_acc) or full_accuracy(table, metric=metric)
    if full is not None:
        ax.axhline(full[0], color="black", linestyle="--", linewidth=1, label=f"full data ({full[0]:.2f})")
    ax.set_xlabel("pruning rate p")
    ax.set_ylabel(f"test accuracy (%) [{metric}]")
    ax.set_title(title or "Accuracy vs pruning rate")
    ax.grid(True, alpha=0.3)
    if series or full is not None:
        ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path


def rows_from_runs(runs: Iterable[Any]) -> list[dict]:
    """Result rows from tracked runs (:class:`tdds_core.tracking.RunRecord`: ``tags``, ``metrics``,
    ``params``, ``id``, ``start_time``), one per run that logged ``final_acc``.

    Per run: ``stage`` = tag ``tdds.stage``; ``method`` = the label, tag ``tdds.label`` (``tdds.method``
    on runs logged before it; ``"full"`` for train-full runs), ``rate`` = tag ``tdds.rate`` (None when absent), ``arch`` = tag ``tdds.arch``,
    ``seed`` = tag ``tdds.seed``; metrics ``final_acc``, ``best_acc`` (percent), ``noisy_kept``,
    ``num_train``, ``iterations``, ``wall_s`` and the ``cost_*`` metrics where logged
    (:data:`~tdds_core.names.COST_METRICS`); param ``weighting``; plus ``run_id``. For the same
    (stage, method, rate, arch, seed) the newest run wins (the first seen on a tie); rows in order of
    start time.
    """
    newest: dict[tuple, tuple[int, dict]] = {}
    for run in runs:
        tags, metrics = run.tags, run.metrics
        if METRIC_FINAL_ACC not in metrics:
            continue
        stage = tags.get(TAG_STAGE)
        seed = tags.get(TAG_SEED)
        row = {
            "method": tags.get(TAG_LABEL) or tags.get(TAG_METHOD) or (FULL_METHOD if stage == STAGE_TRAIN_FULL else "?"),
            "rate": _num(tags.get(TAG_RATE)),
            "seed": int(seed) if seed not in (None, "") else None,
            "arch": tags.get(TAG_ARCH, ""),
            "final_acc": metrics.get(METRIC_FINAL_ACC),
            "best_acc": metrics.get(METRIC_BEST_ACC),
            "noisy_kept": metrics.get(METRIC_NOISY_KEPT),
            "num_train": metrics.get(METRIC_NUM_TRAIN),
            "iterations": metrics.get(METRIC_ITERATIONS),
            "wall_s": metrics.get(METRIC_WALL_S),
            "weighting": run.params.get("weighting"),
            "stage": stage,
            "run_id": run.id,
        }
        row.update({m: metrics[m] for m in COST_METRICS if m in metrics})    # logged by the report stage
        if stage == STAGE_TRAIN_FULL:
            row["method"], row["rate"] = FULL_METHOD, None
        key = (stage, row["method"], row["rate"], row["arch"], row["seed"])
        if key not in newest or run.start_time > newest[key][0]:
            newest[key] = (run.start_time, row)
    return [row for _, row in sorted(newest.values(), key=lambda x: x[0])]


# ------------------------------------------------------------------------------ score-stage figures
def new_figure(width: float, height: float, dpi: int = 100) -> Any:
    """A bare matplotlib Figure on the Agg canvas (no pyplot, no display needed; ``fig.savefig(path,
    format="png")`` writes it): the canvas of the plots other modules draw (this module owns matplotlib)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=dpi)
    FigureCanvasAgg(fig)
    return fig


def _figure(width: float, height: float) -> Any:
    """A bare matplotlib Figure (no pyplot, no display needed)."""
    return new_figure(width, height)


def _image_for_display(img: Any) -> tuple[Any, Optional[str]]:
    """One image ``[C, H, W]`` (or ``[H, W]`` / ``[H, W, C]``) -> an array imshow takes, and a cmap."""
    a = np.asarray(img)
    if a.ndim == 3 and a.shape[0] in (1, 3, 4):
        a = np.transpose(a, (1, 2, 0))
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.dtype != np.uint8:
        lo, hi = float(np.min(a)), float(np.max(a))
        a = ((a - lo) / (hi - lo + 1e-12) * 255).astype(np.uint8)
    return a, ("gray" if a.ndim == 2 else None)


def score_histogram_figure(scores: Any, *, method: str = "", bins: int = 50) -> Any:
    """A matplotlib Figure: histogram of the finite ``scores`` (higher = keep first)."""
    s = np.asarray(scores, dtype=np.float64)
    fig = _figure(6, 4)
    ax = fig.add_subplot(1, 1, 1)
    finite = s[np.isfinite(s)]
    ax.hist(finite, bins=bins, color="#3b6ea8")
    ax.set_xlabel("score (higher = keep first)")
    ax.set_ylabel("samples")
    ax.set_title(f"{method} scores (N={len(s)})" if method else f"scores (N={len(s)})")
    fig.tight_layout()
    return fig


def extremes_grid_figure(images: Any, labels: Any, scores: Any, *, class_names: Optional[Sequence[str]] = None,
                         k: int = 16, method: str = "") -> Any:
    """A figure with the ``k`` most important (highest score) images on top and the ``k`` least
    important below, each titled with its label and score. ``images``: uint8 ``[N, C, H, W]``."""
    s = np.asarray(scores, dtype=np.float64)
    n = len(s)
    k = max(1, min(int(k), n))
    order = np.argsort(-s, kind="stable")
    groups = [("most important", order[:k]), ("least important", order[::-1][:k])]
    cols = min(k, 8)
    rows_per = int(math.ceil(k / cols))
    fig = _figure(1.6 * cols, 1.9 * rows_per * 2 + 0.6)
    for g, (title, idx) in enumerate(groups):
        for j, i in enumerate(idx):
            ax = fig.add_subplot(rows_per * 2, cols, g * rows_per * cols + j + 1)
            img, cmap = _image_for_display(images[int(i)])
            if cmap:
                ax.imshow(img, cmap=cmap, vmin=0, vmax=255)
            else:
                ax.imshow(img)
            lab = int(np.asarray(labels)[int(i)]) if labels is not None else None
            name = class_names[lab] if (class_names is not None and lab is not None and 0 <= lab < len(class_names)) else lab
            ax.set_title(f"{name}\n{s[int(i)]:.3g}", fontsize=7)
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0:
                ax.set_ylabel(title, fontsize=7)
    fig.suptitle(f"{method}: top = most important, bottom = least important" if method
                 else "top = most important, bottom = least important", fontsize=9)
    fig.tight_layout()
    return fig

"""The cost of each coreset beside its accuracy: the cost table (Markdown) and the time-to-accuracy
plot, from result rows carrying the cost fields of :func:`tdds_core.cost.with_costs` (row fields
named :data:`tdds_core.names.COST_METRICS`; rows without them show ``–``).

:func:`cost_cells` aggregates the rows over seeds per (method, rate, arch), :func:`cost_markdown`
renders methods x rates (per rate: dynamics share, scoring + selection seconds, coreset training
seconds, total seconds) and :func:`plot_time_to_accuracy` draws test accuracy against the total cost.
Means over seeds; standard deviations ``ddof=1`` (0 for one seed). Draws on
:func:`tdds_core.report.new_figure` (matplotlib stays in :mod:`tdds_core.report`).
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

from .names import (METRIC_COST_DYNAMICS_S, METRIC_COST_DYNAMICS_SHARE, METRIC_COST_SCORING_S, METRIC_COST_SELECTION_S,
                    METRIC_COST_TOTAL_S, METRIC_COST_TRAIN_S, METRIC_FINAL_ACC, METRIC_WALL_S, format_rate, rate_text)
from .report import FULL_METHOD, new_figure

__all__ = ["cost_cells", "cost_markdown", "plot_time_to_accuracy", "cost_columns", "COST_CAPTION", "COST_CELL_COLUMNS"]

#: how the x axis of the time-to-accuracy plot (and the total column) is composed
COST_CAPTION = ("total cost (s) = dynamics share × wall time of the full-data run (the epochs its scores read) "
                "+ scoring + selection + coreset training; mean ± std over seeds; a part not recorded counts 0")
#: the per-cell cost columns of :func:`cost_cells` (the report's ``results_table.json`` carries them)
COST_CELL_COLUMNS = (METRIC_COST_DYNAMICS_SHARE, METRIC_COST_DYNAMICS_S, METRIC_COST_SCORING_S,
                     METRIC_COST_SELECTION_S, METRIC_COST_TRAIN_S, METRIC_COST_TOTAL_S, "cost_total_s_std")


def _num(v: Any) -> Optional[float]:
    try:
        f = None if v is None or v == "" else float(v)
    except (TypeError, ValueError):
        return None
    return None if f is None or math.isnan(f) else f


def _mean_std(xs: Sequence[float]) -> tuple[Optional[float], Optional[float]]:
    if not xs:
        return None, None
    m = sum(xs) / len(xs)
    return m, (math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else 0.0)


def cost_cells(rows: Iterable[dict], metric: str = METRIC_FINAL_ACC) -> list[dict]:
    """Per (method, rate, arch), sorted by arch, method (full data first), rate: ``method``, ``rate``
    (None for full data), ``arch``, ``n`` (rows), ``acc_mean`` / ``acc_std`` (``metric``, percent), the
    mean over seeds of each cost field (:data:`COST_CELL_COLUMNS`; None where no row has it) and
    ``cost_total_s_std``. A full-data row's total is its ``wall_s`` when it carries no cost fields."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        rate = _num(r.get("rate"))
        key = (str(r["method"]), None if rate is None else round(rate, 6), str(r.get("arch") or ""))
        groups.setdefault(key, []).append(r)
    out = []
    for (method, rate, arch), rs in groups.items():
        cell: dict[str, Any] = {"method": method, "rate": rate, "arch": arch, "n": len(rs)}
        cell["acc_mean"], cell["acc_std"] = _mean_std([v for v in (_num(x.get(metric)) for x in rs) if v is not None])
        for c in COST_CELL_COLUMNS[:-1]:
            vals = [v for v in (_num(x.get(c)) for x in rs) if v is not None]
            if not vals and rate is None and c in (METRIC_COST_TRAIN_S, METRIC_COST_TOTAL_S):
                vals = [v for v in (_num(x.get(METRIC_WALL_S)) for x in rs) if v is not None]
            mean, std = _mean_std(vals)
            cell[c] = mean
            if c == METRIC_COST_TOTAL_S:
                cell["cost_total_s_std"] = std
        out.append(cell)
    out.sort(key=lambda t: (t["arch"], t["method"] != FULL_METHOD, t["method"], -1.0 if t["rate"] is None else t["rate"]))
    return out


def cost_columns(rows: Iterable[dict], table: Sequence[dict]) -> dict[str, list]:
    """The cost columns (:data:`COST_CELL_COLUMNS`) aligned with ``table``'s cells (:func:`tdds_core.report.build_table`,
    same keys), for the report's ``results_table.json``; None where a cell has no cost."""
    cells = {(c["method"], c["rate"], c["arch"]): c for c in cost_cells(rows)}
    return {c: [cells.get((t["method"], t["rate"], t["arch"]), {}).get(c) for t in table] for c in COST_CELL_COLUMNS}


def _secs(v: Optional[float]) -> str:
    if v is None:
        return "–"
    if 0 < v < 0.005:
        return "<0.01"
    return f"{v:.2f}" if v < 10 else f"{v:.1f}" if v < 100 else f"{v:,.0f}"


def _sum_text(a: Optional[float], b: Optional[float]) -> str:
    """``a + b`` in seconds; a part not recorded is written ``–`` (both: ``–``)."""
    if a is None and b is None:
        return "–"
    if a is None or b is None:
        return f"{_secs(a)} + {_secs(b)}"
    return _secs(a + b)


def cost_markdown(rows: Iterable[dict], random_method: str = "random") -> str:
    """Methods as rows; per pruning rate four columns: dynamics share, scoring + selection (s),
    coreset training (s) and total (s), means over seeds. Above each table the full-data run's wall
    time; below it how the total is composed. One table per architecture."""
    cells = cost_cells(rows)
    archs = sorted({c["arch"] for c in cells})
    lines: list[str] = []
    for arch in archs:
        sub = [c for c in cells if c["arch"] == arch]
        rates = sorted({c["rate"] for c in sub if c["rate"] is not None})
        methods = sorted({c["method"] for c in sub if c["rate"] is not None}, key=lambda m: (m != random_method, m))
        by = {(c["method"], c["rate"]): c for c in sub}
        if len(archs) > 1 or arch:
            lines += [f"### Cost, {arch or 'default architecture'}", ""]
        full = next((c for c in sub if c["rate"] is None), None)
        lines.append(f"Full-data run: {_secs(full[METRIC_COST_TOTAL_S]) if full else '–'} s "
                     "(each coreset is charged the share of it its scores read)")
        lines.append("")
        head = [f"p={format_rate(r)} {what}" for r in rates for what in ("dynamics", "score+select s", "train s", "total s")]
        lines.append("| method | " + " | ".join(head) + " |")
        lines.append("|---|" + "---|" * len(head))
        for m in methods:
            out = []
            for r in rates:
                c = by.get((m, r))
                if c is None:
                    out += ["–"] * 4
                    continue
                share = c[METRIC_COST_DYNAMICS_SHARE]
                out += ["–" if share is None else f"{share:.2f}",
                        _sum_text(c[METRIC_COST_SCORING_S], c[METRIC_COST_SELECTION_S]),
                        _secs(c[METRIC_COST_TRAIN_S]), _secs(c[METRIC_COST_TOTAL_S])]
            lines.append(f"| {m + ' (baseline)' if m == random_method else m} | " + " | ".join(out) + " |")
        lines += ["", "dynamics: share of the full-data run's epochs the setting's scores read (latest epoch read / "
                  f"train.epochs); {COST_CAPTION}; – : not recorded (scores or selections stored before their time "
                  "was recorded).", ""]
    return "\n".join(lines).rstrip() + "\n"


def plot_time_to_accuracy(rows: Iterable[dict], path: str | os.PathLike, metric: str = METRIC_FINAL_ACC,
                          title: Optional[str] = None, random_method: str = "random") -> Path:
    """Test accuracy (percent, ``metric``) against the total cost in seconds (:data:`COST_CAPTION`), one
    point per (method, rate) with mean ± std over seeds on both axes, the points of a method joined in
    rate order and labelled ``p=<rate>``; Random dashed grey, the full-data run a black star. PNG;
    returns the path."""
    cells = [c for c in cost_cells(rows, metric) if c["acc_mean"] is not None and c[METRIC_COST_TOTAL_S] is not None]
    archs = sorted({c["arch"] for c in cells})
    fig = new_figure(7, 5, dpi=120)
    ax = fig.add_subplot(1, 1, 1)
    series: dict[tuple[str, str], list[dict]] = {}
    for c in cells:
        if c["rate"] is not None:
            series.setdefault((c["method"], c["arch"]), []).append(c)
    for i, ((method, arch), cs) in enumerate(sorted(series.items())):
        cs.sort(key=lambda c: c["rate"])
        x, y = [c[METRIC_COST_TOTAL_S] for c in cs], [c["acc_mean"] for c in cs]
        ours = {"tdds": "black", random_method: "dimgray"}.get(method)     # as in the accuracy-vs-rate plot
        ax.errorbar(x, y, xerr=[c["cost_total_s_std"] or 0.0 for c in cs], yerr=[c["acc_std"] or 0.0 for c in cs],
                    marker="os^vD"[i % 5], capsize=3, color=ours or f"C{i % 10}",
                    linestyle="--" if method == random_method else "-", linewidth=1.2,
                    label=method if len(archs) == 1 else f"{method} ({arch})")
        for c in cs:
            ax.annotate(f"p={rate_text(c['rate'])}", (c[METRIC_COST_TOTAL_S], c["acc_mean"]), fontsize=6,
                        xytext=(3, 3), textcoords="offset points")
    for c in (c for c in cells if c["rate"] is None):
        ax.errorbar([c[METRIC_COST_TOTAL_S]], [c["acc_mean"]], xerr=[c["cost_total_s_std"] or 0.0],
                    yerr=[c["acc_std"] or 0.0], marker="*", markersize=14, color="black", linestyle="none", capsize=3,
                    label=f"full data ({c['acc_mean']:.2f}%, {_secs(c[METRIC_COST_TOTAL_S])} s)"
                    + ("" if len(archs) == 1 else f" ({c['arch']})"))
    ax.set_xlabel("total cost (s)")
    ax.set_ylabel(f"test accuracy (%) [{metric}]")
    ax.set_title(title or "Accuracy vs total cost")
    ax.grid(True, alpha=0.3)
    if cells:
        ax.legend(fontsize=8)
    fig.text(0.01, 0.01, COST_CAPTION.replace("; ", ";\n", 1), fontsize=6.5, va="bottom")
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path

"""Write the figures a GPU-suite run printed into docs/RESULTS.md and docs/BENCHMARKS.md.

    python benchmarks/publish.py SUITE_DIR [--docs docs]

Reads ``SUITE_DIR/{env.json, throughput.json, scoring.md, grid_time.json, grid/report/table.md,
grid/report/accuracy_vs_rate.png}`` (whatever exists) and replaces the block between
``<!-- gpu-suite:begin -->`` and ``<!-- gpu-suite:end -->`` in each document (appending it the
first time). Nothing is typed by hand: every number comes from the suite's own files.
"""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

BEGIN, END = "<!-- gpu-suite:begin -->", "<!-- gpu-suite:end -->"


def _load(p: Path):
    return json.loads(p.read_text()) if p.is_file() else None


def replace_block(doc: Path, title: str, body: str, begin: str = BEGIN, end: str = END) -> None:
    """Put ``body`` between the ``begin`` and ``end`` markers of ``doc`` (appended the first time;
    a new ``doc`` starts with ``# title``). Every benchmark that publishes into docs/ goes through here."""
    text = doc.read_text() if doc.is_file() else f"# {title}\n\n"
    block = f"{begin}\n{body.rstrip()}\n{end}"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        text = head + block + rest.split(end, 1)[1]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(text)


def _fmt(v) -> str:
    return f"{v:,.1f}" if isinstance(v, float) else str(v)


def benchmarks_body(env: dict, thr: dict | None, sc: str | None) -> str:
    lines = [f"## GPU suite ({env.get('mode', 'full')} mode)", "",
             f"- card: {env.get('card')}; torch {env.get('torch')}; date {env.get('date')}",
             f"- command: `{env.get('command')}`", ""]
    if thr:
        lines += ["### Training throughput (CIFAR-shaped input)", "", "| variant | img/s |", "|---|---|"]
        for k in ("reference_img_s", "engine_capture_img_s", "engine_nocapture_img_s"):
            if k in thr:
                lines.append(f"| {k.replace('_img_s', '').replace('_', ' ')} | {_fmt(thr[k])} |")
        if "speedup_vs_reference" in thr:
            lines.append(f"\nspeed-up vs reference-style loop: **{thr['speedup_vs_reference']:.2f}x** (target >= 5x); "
                         f"capture overhead: **{thr['capture_overhead_pct']:.1f}%** (target <= 3%); arch {thr.get('arch')}, "
                         f"N={thr.get('n')}, {thr.get('epochs')} epochs.")
        lines.append("")
    if sc:
        lines += ["### Scoring (benchmarks/scoring.py, as printed)", "", sc.strip(), ""]
    return "\n".join(lines)


def results_body(env: dict, grid: dict | None, table: str | None, plot: str | None) -> str:
    lines = [f"## Fashion-MNIST grid ({env.get('mode', 'full')} mode)", "",
             f"- card: {env.get('card')}; torch {env.get('torch')}; date {env.get('date')}",
             f"- command: `{grid.get('command') if grid else env.get('command')}`"]
    if grid:
        lines.append(f"- wall time of the whole grid: {grid['wall_s']:.0f} s")
    lines.append("")
    if table:
        lines += [table.strip(), ""]
    if plot:
        lines += [f"![accuracy vs pruning rate]({plot})", ""]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("suite_dir")
    ap.add_argument("--docs", default="docs")
    args = ap.parse_args()
    d, docs = Path(args.suite_dir), Path(args.docs)
    env = _load(d / "env.json") or {}
    thr, grid = _load(d / "throughput.json"), _load(d / "grid_time.json")
    sc = (d / "scoring.md").read_text() if (d / "scoring.md").is_file() else None
    table_p = d / "grid" / "report" / "table.md"
    plot_rel = None
    if (d / "grid" / "report" / "accuracy_vs_rate.png").is_file():
        name = f"results_{env.get('mode', 'full')}_accuracy_vs_rate.png"
        docs.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(d / "grid" / "report" / "accuracy_vs_rate.png", docs / name)
        plot_rel = name
    replace_block(docs / "BENCHMARKS.md", "Benchmarks", benchmarks_body(env, thr, sc))
    replace_block(docs / "RESULTS.md", "Results", results_body(env, grid, table_p.read_text() if table_p.is_file() else None, plot_rel))
    print(f"published into {docs / 'BENCHMARKS.md'} and {docs / 'RESULTS.md'}")


if __name__ == "__main__":
    main()

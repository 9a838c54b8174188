"""What per-sample statistics (``dynamics.record: stats``) cost and save, against per-epoch logits.

    python benchmarks/recording.py [--quick] [--docs docs] [--workdir DIR]

Three parts, every figure from this run's own measurements:

1. **Bytes per sample and epoch** for C = 10, 100, 1000: the size on disk of one recorded epoch
   (N = 20,000 synthetic samples) as float16 logits, float32 logits and statistics, divided by N.
2. **Capture overhead** as whole ``tdds train`` processes: the full-data run of
   ``configs/fashion-mnist-cpu.yaml`` (C = 10) and of a 100-class synthetic dataset of the same
   size, recording nothing, logits, statistics or both; whole-epoch seconds (the engine's
   ``epoch_s``: training, capture, writing, evaluation) and the process wall time.
3. **Scoring at ImageNet size** (N = 1,281,167), as whole ``tdds score`` processes: statistics of
   E = 90 epochs (synthetic), TDDS over all of them (T = 90, W = 10) and DUAL/AUM; side by side, the
   same TDDS over a short trajectory (T = 4, W = 3) from float16 logits with C = 1000 and from the
   statistics, and the logits figure projected to T = 90 (time per epoch x 90; the logits of 90
   epochs, 230 GB, do not fit this disk).

2b. **The recorder's own cost** (``--parts recorder``), in process: milliseconds per batch of 128
   of the statistics recorder's update and of logits capture, beside a CPU training step, for a
   figure the whole-process timings of part 2 are too noisy to show on a small machine.

``--quick`` shrinks everything (seconds; checks the script). Parts 1-3 go between
``<!-- statistics:begin -->`` and ``<!-- statistics:end -->`` of docs/BENCHMARKS.md (when all three
ran), part 2b between ``<!-- statistics-recorder:begin -->`` and ``<!-- statistics-recorder:end -->``.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent
for p in (str(ROOT), str(HERE)):
    if p not in sys.path:
        sys.path.insert(0, p)

from publish import replace_block  # noqa: E402
from scoring import IMAGENET_N, load, machine, make_tdds_folder, tdds_command, whole_process  # noqa: E402

BEGIN, END = "<!-- statistics:begin -->", "<!-- statistics:end -->"
RECORDER_BEGIN, RECORDER_END = "<!-- statistics-recorder:begin -->", "<!-- statistics-recorder:end -->"


# -- 1. bytes ------------------------------------------------------------------------------------
def bytes_rows(work: Path, n: int) -> list[str]:
    from tdds_core.dynamics import DynamicsWriter
    from tdds_core.statistics import StatsWriter, epoch_statistics

    rows = ["| C | float16 logits (B) | float32 logits (B) | statistics (B) | statistics vs float16 logits |",
            "|---|---|---|---|---|"]
    rng = np.random.default_rng(0)
    for c in (10, 100, 1000):
        z = rng.standard_normal((n, c)).astype(np.float32)
        y = rng.integers(0, c, n)
        size = {}
        for dtype in ("float16", "float32"):
            w = DynamicsWriter(work / f"b{c}-{dtype}", ids=[str(i) for i in range(n)], labels=y, num_classes=c,
                               fingerprint="bytes", dtype=dtype)
            w.write_epoch(0, z)
            size[dtype] = (work / f"b{c}-{dtype}" / "epoch_0000.npy").stat().st_size / n
        sw = StatsWriter(work / f"b{c}-stats", ids=[str(i) for i in range(n)], labels=y, num_classes=c,
                         fingerprint="bytes")
        sw.put_epoch(0, epoch_statistics(z, y)[0])
        size["stats"] = (work / f"b{c}-stats" / "epoch_0000.npy").stat().st_size / n
        ratio = size["float16"] / size["stats"]
        rows.append(f"| {c} | {size['float16']:.1f} | {size['float32']:.1f} | {size['stats']:.1f} | "
                    f"{'%.1fx smaller' % ratio if ratio >= 1 else '%.1fx larger' % (1 / ratio)} |")
    return rows


# -- 2. capture overhead -------------------------------------------------------------------------
def train_process(out: Path, record: str, sets: list[str], config: str) -> dict:
    shutil.rmtree(out, ignore_errors=True)     # a finished run in the folder would be returned, not trained
    cmd = [*tdds_command(), "train", "--config", config, "--out", str(out), "--set", f"dynamics.record={record}",
           "--set", "train.progress=false", "--set", "tracking.enabled=false"] + [a for s in sets for a in ("--set", s)]
    t0 = time.perf_counter()
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{p.stderr[-3000:]}")
    hist = json.loads(next(out.glob("train/*/history.json")).read_text())
    later = hist[1:] or hist          # the first epoch warms up
    return {"wall_s": wall, "epoch_s": sum(h["epoch_s"] for h in later) / len(later),
            "disk_mb": sum(f.stat().st_size for f in out.rglob("*") if f.is_file()) / 2 ** 20}


def overhead_rows(work: Path, quick: bool) -> list[str]:
    epochs = 2 if quick else 3
    cases = [("Fashion-MNIST (C = 10)", str(ROOT / "configs/fashion-mnist-cpu.yaml"),
              [f"train.epochs={epochs}", f"train.eval_every={epochs}"] + (["data.train_subset=2200"] if quick else []))]
    syn = work / "syn100.yaml"
    n = 2000 if quick else 20000
    syn.write_text(f"name: syn100\noutput: {work / 'syn100-out'}\ndata:\n  name: synthetic\n  options: "
                   f"{{num_train: {n}, num_test: 2000, num_classes: 100, image_size: 28, channels: 1}}\n"
                   "model:\n  arch: small_cnn_fc\ntrain:\n  batch_size: 100\n  lr: 0.05\n  augment: false\n"
                   "dynamics:\n  dtype: float16\n")
    cases.append((f"synthetic, {n:,} samples (C = 100)", str(syn), [f"train.epochs={epochs}", f"train.eval_every={epochs}"]))
    repeats = 1 if quick else 2
    rows = [f"| data | record | whole epoch (s), best of {repeats} | vs nothing | process wall (s) | run folder (MB) |",
            "|---|---|---|---|---|---|"]
    records = ("false", "true", "stats", "both")
    for i, (label, config, sets) in enumerate(cases):
        best: dict[str, dict] = {}
        for rep in range(repeats):          # interleaved, so a busy spell of the machine hits every variant
            for record in records:
                r = train_process(work / f"ov{i}-{record}-{rep}", record, sets, config)
                if record not in best or r["epoch_s"] < best[record]["epoch_s"]:
                    best[record] = r
        for record in records:
            r, base = best[record], best["false"]["epoch_s"]
            name = {"false": "nothing", "true": "logits (float16)", "stats": "statistics", "both": "both"}[record]
            rows.append(f"| {label} | {name} | {r['epoch_s']:.2f} | {100 * (r['epoch_s'] / base - 1):+.1f}% | "
                        f"{r['wall_s']:.1f} | {r['disk_mb']:.1f} |")
    return rows


# -- 2b. the recorder's own cost, in process ----------------------------------------------------
def _median_s(fn, repeat: int) -> float:
    import statistics as _st

    fn()      # warm-up
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return _st.median(times)


def recorder_rows(quick: bool) -> list[str]:
    """Per batch of 128 on this CPU: the statistics recorder's update (from the step's logits, with
    the previous epoch's logits table), logits capture into the float16 buffer, and a training step
    (forward, backward, SGD) of the CPU protocol's CNN (1x28x28) and of ResNet-18 (3x32x32), C = 10."""
    import torch

    from tdds_core.models import create_model
    from tdds_core.recorder import StatsRecorder

    torch.manual_seed(0)
    n, b, repeat = 50_000, 128, (20 if quick else 200)
    rows = ["| C | statistics recorder (ms/batch) | logits capture (ms/batch) |", "|---|---|---|"]
    for c in (10, 100, 1000):
        labels = np.random.default_rng(0).integers(0, c, n)
        with tempfile.TemporaryDirectory() as tmp:
            rec = StatsRecorder(tmp, ids=[str(i) for i in range(n)], labels=labels, num_classes=c, fingerprint="bench",
                                device="cpu", main=False)
            rec.begin_epoch(1)
            rec.prev_epoch, rec.prev = 0, torch.randn(n, c)        # the kl terms against a previous epoch
            buf = torch.zeros(n, c, dtype=torch.float16)
            idx = torch.randperm(n)[:b]
            logits = torch.randn(b, c)
            t_rec = _median_s(lambda: rec.update(idx, logits), repeat)
            t_cap = _median_s(lambda: buf.__setitem__(idx, logits.to(torch.float16)), repeat)
        rows.append(f"| {c} | {1e3 * t_rec:.3f} | {1e3 * t_cap:.3f} |")
    rows += ["", "| model (C = 10, batch 128) | training step (ms) |", "|---|---|"]
    for arch, shape in (("small_cnn_fc", (1, 28, 28)), ("resnet18", (3, 32, 32))):
        model = create_model(arch, num_classes=10, in_channels=shape[0], image_size=shape[1]).train()
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        x, y = torch.randn(b, *shape), torch.randint(0, 10, (b,))

        def step() -> None:
            opt.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
        rows.append(f"| {arch} | {1e3 * _median_s(step, 5 if quick else 20):.1f} |")
    return rows


# -- 3. scoring at ImageNet size -----------------------------------------------------------------
def make_stats_folder(folder: Path, n: int, epochs: int, seed: int = 0) -> Path:
    """Synthetic statistics of ``epochs`` epochs: a per-sample difficulty drives every column
    (shapes and value ranges as a real run's: kl >= 0, probabilities in [0, 1], correct in {0, 1})."""
    if (folder / "manifest.json").is_file():
        return folder
    code = f"""
import numpy as np
from tdds_core.statistics import COLUMNS, StatsWriter
n, E, rng = {n}, {epochs}, np.random.default_rng({seed})
y = rng.integers(0, 1000, n)
hard = rng.random(n)
w = StatsWriter({str(folder)!r}, ids=[str(i) for i in range(n)], labels=y, num_classes=1000, fingerprint="synthetic-imagenet")
col = {{c: i for i, c in enumerate(COLUMNS)}}
out = np.empty((n, len(COLUMNS)))
for t in range(E):
    r = np.random.default_rng(({seed}, t))
    p = np.clip((t + 1) / E * (1 - hard) + 0.1 * r.standard_normal(n), 1e-6, 1 - 1e-6)
    out[:, col["kl"]] = np.abs(r.standard_normal(n)) * hard / (t + 1) if t else np.nan
    out[:, col["kl_signed"]] = out[:, col["kl"]] * np.sign(r.standard_normal(n))
    out[:, col["ce"]] = -np.log(p)
    out[:, col["el2n"]] = (1 - p) * np.sqrt(2)
    out[:, col["p_target"]] = p
    out[:, col["margin_p"]] = 2 * p - 1
    out[:, col["margin_logit"]] = np.log(p / (1 - p))
    out[:, col["correct"]] = (p > 0.5).astype(np.float64)
    out[:, col["entropy"]] = -(p * np.log(p) + (1 - p) * np.log(1 - p))
    w.put_epoch(t, out)
w.finalize()
"""
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit(f"writing the synthetic statistics failed:\n{p.stderr[-3000:]}")
    return folder


def score_row(label: str, folder: Path, method: str, args: list[str], work: Path, repeat: int) -> tuple[str, dict]:
    r = whole_process([*tdds_command(), "score", "--dynamics", str(folder), "--method", method, *args,
                       "--out", str(work / f"s-{method}.npy")], repeat)
    command = " ".join(["tdds score --method", method, *args])
    return f"| {label} | `{command}` | {r['wall_s']:.1f} | {r['cpu_s']:.1f} | {r['peak_rss_mb']:.0f} |", r


def imagenet_rows(work: Path, quick: bool) -> list[str]:
    n = 20000 if quick else IMAGENET_N
    E, short = (12, 4) if quick else (90, 4)
    stats = make_stats_folder(work / "inet-stats", n, E)
    logits = make_tdds_folder(work / "inet-logits", n, 1000, short)
    gb = lambda f: sum(x.stat().st_size for x in f.rglob("*") if x.is_file()) / 1e9  # noqa: E731
    rows = [f"N = {n:,}; statistics of {E} epochs on disk: {gb(stats):.2f} GB; float16 logits of {short} epochs "
            f"(C = 1000): {gb(logits):.2f} GB ({gb(logits) / short * E:.1f} GB for {E} epochs).", "",
            "| input | process | wall (s) | CPU (s) | peak RSS (MB) |", "|---|---|---|---|---|"]
    W = 10 if E >= 10 else 3
    for label, method, args in ((f"statistics, {E} epochs", "tdds", ["--T", str(E), "--W", str(W)]),
                                (f"statistics, {E} epochs", "dual", []),
                                (f"statistics, {E} epochs", "aum", [])):
        rows.append(score_row(label, stats, method, args, work, 1)[0])
    line_s, rs = score_row(f"statistics, first {short} epochs", stats, "tdds", ["--T", str(short), "--W", "3"], work, 1)
    line_l, rl = score_row(f"float16 logits (C = 1000), {short} epochs", logits, "tdds", ["--T", str(short), "--W", "3"],
                           work, 1)
    rows += [line_s, line_l, "",
             f"TDDS over {short} epochs: {rl['wall_s'] / rs['wall_s']:.0f}x faster from statistics than from the logits. "
             f"Projected to T = {E} from the logits (time per epoch x {E}, the logits of {E} epochs not written): "
             f"{rl['wall_s'] / short * E:.0f} s, against the measured {E}-epoch TDDS from statistics above."]
    shutil.rmtree(logits, ignore_errors=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="Small sizes (seconds); nothing is published.")
    ap.add_argument("--docs", default=str(ROOT / "docs"))
    ap.add_argument("--workdir", default=None, help="Where the synthetic folders go (default: a temporary folder).")
    ap.add_argument("--parts", default="bytes,overhead,recorder,imagenet", help="Comma-separated parts to run.")
    args = ap.parse_args(argv)
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="tdds-stats-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    parts = set(args.parts.split(","))
    t0 = time.time()
    command = " ".join(["python benchmarks/recording.py", *(argv if argv is not None else sys.argv[1:])])
    lines = [f"Measured {_dt.date.today().isoformat()} on {machine()}; load average at start {load()}.",
             f"Command: `{command}`.", ""]
    try:
        if "bytes" in parts:
            lines += ["**Bytes per sample and epoch** (one recorded epoch on disk / N):", "",
                      *bytes_rows(work, 2000 if args.quick else 20000), ""]
            print("\n".join(lines), flush=True)
        if "overhead" in parts:
            rows = overhead_rows(work, args.quick)
            lines += ["**Capture overhead**, whole `tdds train` processes (mean whole epoch after the first):", "", *rows, ""]
            print("\n".join(rows), flush=True)
        if "recorder" in parts:
            rows = recorder_rows(args.quick)
            print("\n".join(rows), flush=True)
            if not args.quick:
                replace_block(Path(args.docs) / "BENCHMARKS.md", "Benchmarks",
                              "### The statistics recorder's own cost (issue 17)\n\n" + "\n".join(
                                  [lines[0], lines[1], "", "In process, per batch of 128 (median of 200; training steps: "
                                   "median of 20):", "", *rows]), RECORDER_BEGIN, RECORDER_END)
        if "imagenet" in parts:
            rows = imagenet_rows(work, args.quick)
            lines += ["**Scoring at ImageNet size**, whole `tdds score` processes:", "", *rows, ""]
            print("\n".join(rows), flush=True)
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    lines.append(f"Whole benchmark: {(time.time() - t0) / 60:.1f} min.")
    if not args.quick and {"bytes", "overhead", "imagenet"} <= parts:
        replace_block(Path(args.docs) / "BENCHMARKS.md", "Benchmarks",
                      "## Per-sample statistics against logits (issue 17)\n\n" + "\n".join(lines), BEGIN, END)
    print(lines[-1])
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    raise SystemExit(main())

"""Scoring benchmark: time and peak memory of TDDS on synthetic dynamics folders.

Every case runs in its own subprocess, which reports wall time, CPU time (user + sys) and peak RSS
(``resource.getrusage(RUSAGE_SELF).ru_maxrss``) of that process, plus its RSS after imports and
before scoring. Cases:

* tdds on a ``tdds-dynamics/1`` folder (float16 logits, checksums verified) for several N, C, T;
* the authors' procedure (restated here: all T epochs held at once, every window soft-maxed again
  and re-indexed with ``index_add``) on the same trajectory in the authors' ``{t}_Output.npy``
  layout, as the same-machine baseline;
* tdds on that authors'-layout folder through ``ReferenceDynamics``;
* whole processes as a user runs them, start to exit: ``tdds score`` against the authors' procedure
  as a script (``benchmarks/authors_tdds.py``, which imports torch as theirs does) on that folder,
  each started by a small wrapper that reads its rusage (``--whole`` runs only these);
* a projection to ImageNet-1K size (N = 1,281,167, C = 1000) from the measured C = 1000 run, and
  with ``--imagenet`` a real run at that size with a short trajectory (T = 4).

    python benchmarks/scoring.py --quick        # seconds; what CI runs
    python benchmarks/scoring.py                # a few minutes; the figures in docs/BENCHMARKS.md
    python benchmarks/scoring.py --imagenet     # adds the ImageNet-sized run (about 11 GB of disk)
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

IMAGENET_N, IMAGENET_C = 1_281_167, 1000


# -- synthetic dynamics (written by a child process, so this process stays small: a forked child
#    inherits its parent's peak RSS in ru_maxrss) ----------------------------------------------
def _chunk_logits(seed: int, t: int, a: int, b: int, c: int) -> np.ndarray:
    """Logits of rows a:b at epoch t that sharpen over training: ``base * (1 + t/10) + N(0, 1)``;
    the base of a chunk is regenerated from its seed, so no [N, C] base is ever held."""
    base = np.random.default_rng((seed, a)).standard_normal((b - a, c), dtype=np.float32)
    x = np.random.default_rng((seed, t, a)).standard_normal((b - a, c), dtype=np.float32)
    x += base * np.float32(1.0 + t / 10.0)
    return x


def _make_tdds(folder: Path, n: int, c: int, epochs: int, seed: int, dtype: str) -> None:
    from tdds_core.dynamics import DynamicsWriter

    labels = np.random.default_rng(seed).integers(0, c, n)
    w = DynamicsWriter(folder, ids=[str(i) for i in range(n)], labels=labels, num_classes=c,
                       fingerprint=f"bench-{n}-{c}-{epochs}-{seed}", dtype=dtype)
    step = max(1, (1 << 22) // c)
    out = np.empty((n, c), dtype=np.dtype(dtype))
    for t in range(epochs):
        for a in range(0, n, step):
            b = min(n, a + step)
            out[a:b] = _chunk_logits(seed, t, a, b, c)
        w.write_epoch(t, out)
    w.finalize()


def _make_reference(src: Path, folder: Path, epochs: int, seed: int) -> None:
    from tdds_core.dynamics import open_dynamics

    folder.mkdir(parents=True, exist_ok=True)
    dyn = open_dynamics(src)
    rng = np.random.default_rng(seed)
    for t in range(epochs):
        order = rng.permutation(dyn.num_samples)
        np.save(folder / f"{t}_Output.npy", dyn.epoch(t)[order].astype(np.float32))
        np.save(folder / f"{t}_Index.npy", order.astype(np.int64))
        np.save(folder / f"{t}_Loss.npy", np.zeros(dyn.num_samples, dtype=np.float32))


def make_tdds_folder(folder: Path, n: int, c: int, epochs: int, seed: int = 0, dtype: str = "float16") -> Path:
    if not (folder / "manifest.json").is_file():
        run_child({"kind": "make_tdds", "folder": str(folder), "n": n, "c": c, "epochs": epochs, "seed": seed,
                   "dtype": dtype})
    return folder


def make_reference_folder(src: Path, folder: Path, epochs: int, seed: int = 1) -> Path:
    """The same trajectory in the authors' layout: float32 logits in a random visit order."""
    if not (folder / f"{epochs - 1}_Index.npy").is_file():
        run_child({"kind": "make_reference", "src": str(src), "folder": str(folder), "epochs": epochs, "seed": seed})
    return folder


# -- the cases, run in a child process -----------------------------------------------------------
def _rss_now_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _vm_hwm_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def child(spec: dict) -> dict:
    if spec["kind"] == "make_tdds":
        _make_tdds(Path(spec["folder"]), spec["n"], spec["c"], spec["epochs"], spec["seed"], spec["dtype"])
        return {}
    if spec["kind"] == "make_reference":
        _make_reference(Path(spec["src"]), Path(spec["folder"]), spec["epochs"], spec["seed"])
        return {}
    if spec["kind"] == "authors":
        import torch  # noqa: F401  (the authors' script imports it; counted in its import baseline)

    from tdds_core.dynamics_reference import ReferenceDynamics
    from tdds_core.dynamics import open_dynamics
    from tdds_core.scoring import compute_scores

    rss_before = _rss_now_mb()
    t0, c0 = time.perf_counter(), _cpu()
    params = dict(T=spec["T"], W=spec["W"], decay=0.9)
    if spec.get("workers") is not None:
        params["workers"] = spec["workers"]
    if spec["kind"] == "tdds":
        scores = compute_scores("tdds", open_dynamics(spec["folder"], verify=spec.get("verify", True)), **params)
    elif spec["kind"] == "reference":
        scores = compute_scores("tdds", ReferenceDynamics(spec["folder"]), **params)
    elif spec["kind"] == "authors":
        from authors_tdds import authors_procedure

        scores = authors_procedure(Path(spec["folder"]), spec["T"], spec["W"], 0.9)
    else:  # pragma: no cover
        raise ValueError(spec["kind"])
    wall, cpu = time.perf_counter() - t0, _cpu() - c0
    out = {"wall_s": wall, "cpu_s": cpu, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
           "vm_hwm_mb": _vm_hwm_mb(), "rss_before_mb": rss_before, "n": int(len(scores)), "checksum": float(np.sum(scores, dtype=np.float64))}
    if spec.get("save"):
        np.save(spec["save"], scores)
    return out


def run_child(spec: dict) -> dict:
    env = dict(os.environ)
    env.setdefault("PYTHONHASHSEED", "0")
    p = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True, text=True, env=env)
    if p.returncode != 0:
        raise RuntimeError(f"case {spec} failed:\n{p.stderr[-3000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


# -- whole processes, as a user runs them -------------------------------------------------------
_WRAP = ("import json, resource, subprocess, sys, time\n"
         "t = time.perf_counter(); p = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
         "w = time.perf_counter() - t; r = resource.getrusage(resource.RUSAGE_CHILDREN)\n"
         "print(json.dumps({'rc': p.returncode, 'err': p.stderr[-2000:], 'wall_s': w, 'cpu_s': r.ru_utime + r.ru_stime,"
         " 'peak_rss_mb': r.ru_maxrss / 1024}))\n")


def whole_process(cmd: list[str], repeat: int) -> dict:
    """Wall time (start to exit, imports included), CPU time and peak RSS of ``cmd`` run as its own
    process: a small wrapper starts it and reads its rusage, so nothing of this process counts.
    Best of ``repeat`` runs (wall), with the median; the largest peak RSS."""
    runs = []
    for _ in range(repeat):
        p = subprocess.run([sys.executable, "-c", _WRAP, *cmd], capture_output=True, text=True)
        r = json.loads(p.stdout.strip().splitlines()[-1])
        if r["rc"] != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{r['err']}")
        runs.append(r)
    walls = sorted(r["wall_s"] for r in runs)
    best = min(runs, key=lambda r: r["wall_s"])
    return {**best, "wall_median_s": walls[len(walls) // 2], "peak_rss_mb": max(r["peak_rss_mb"] for r in runs)}


def tdds_command() -> list[str]:
    """The ``tdds`` console script of this interpreter's environment (``python -m tdds_core`` without one)."""
    exe = Path(sys.executable).parent / "tdds"
    return [str(exe)] if exe.is_file() else [sys.executable, "-m", "tdds_core"]


def whole_rows(ref: Path, T: int, W: int, work: Path, repeat: int, baseline: bool) -> list[str]:
    """``tdds score`` against the authors' script on the same authors'-layout folder, whole processes."""
    ours = whole_process([*tdds_command(), "score", "--dynamics", str(ref), "--method", "tdds", "--T", str(T),
                          "--W", str(W), "--out", str(work / "whole-ours.npy")], repeat)
    lines = ["| process | wall best (s) | wall median (s) | CPU (s) | peak RSS (MB) |", "|---|---|---|---|---|",
             f"| `tdds score --method tdds --T {T} --W {W}` | {ours['wall_s']:.2f} | {ours['wall_median_s']:.2f} | "
             f"{ours['cpu_s']:.2f} | {ours['peak_rss_mb']:.0f} |"]
    if baseline:
        theirs = whole_process([sys.executable, str(Path(__file__).resolve().parent / "authors_tdds.py"), str(ref),
                                "--T", str(T), "--W", str(W), "--out", str(work / "whole-authors.npy")], repeat)
        lines.append(f"| the authors' procedure (`benchmarks/authors_tdds.py`) | {theirs['wall_s']:.2f} | "
                     f"{theirs['wall_median_s']:.2f} | {theirs['cpu_s']:.2f} | {theirs['peak_rss_mb']:.0f} |")
        a, b = np.load(work / "whole-ours.npy"), np.load(work / "whole-authors.npy")
        lines += ["", f"whole process: {theirs['wall_s'] / ours['wall_s']:.1f}x faster (best runs), "
                      f"{theirs['peak_rss_mb'] / ours['peak_rss_mb']:.1f}x less peak memory; same scores to "
                      f"{np.abs(a - b).max() / np.abs(b).max():.1e} of the largest (float64 here, float32 there)"]
    return lines


# -- driver --------------------------------------------------------------------------------------
def machine() -> str:
    cpu = platform.processor() or "cpu"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = ""
    try:
        with open("/proc/meminfo") as f:
            kb = int(f.readline().split()[1])
            mem = f"{kb / 1024 ** 2:.0f} GiB RAM"
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    from importlib.metadata import version

    return (f"{cpu}, {cores} cores, {mem}, no GPU used; Python {platform.python_version()}, "
            f"numpy {np.__version__}, torch {version('torch')}")


def load() -> str:
    try:
        return " ".join(open("/proc/loadavg").read().split()[:3])
    except OSError:
        return "n/a"


def measure(spec: dict, repeat: int) -> dict:
    runs = [run_child(spec) for _ in range(repeat)]
    walls = sorted(r["wall_s"] for r in runs)
    best = min(runs, key=lambda r: r["wall_s"])
    return {**best, "wall_median_s": walls[len(walls) // 2], "runs": repeat,
            "peak_rss_mb": max(r["peak_rss_mb"] for r in runs), "vm_hwm_mb": max(r["vm_hwm_mb"] for r in runs)}


def row(label: str, n: int, c: int, T: int, W: int, r: dict) -> str:
    return (f"| {label} | {n:,} | {c} | {T} | {W} | {r['wall_s']:.2f} | {r['wall_median_s']:.2f} | {r['cpu_s']:.2f} | "
            f"{r['peak_rss_mb']:.0f} | {r['vm_hwm_mb']:.0f} | {r['rss_before_mb']:.0f} |")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="Tiny sizes (seconds), for CI.")
    ap.add_argument("--imagenet", action="store_true", help="Also run N=1,281,167, C=1000, T=4 for real (about 11 GB of disk).")
    ap.add_argument("--no-baseline", action="store_true", help="Skip the authors'-procedure baseline.")
    ap.add_argument("--whole", action="store_true", help="Only the whole-process comparison (N=50,000, C=100, T=30, W=10).")
    ap.add_argument("--repeat", type=int, default=None, help="Runs per case (best and median reported).")
    ap.add_argument("--workdir", default=None, help="Where the synthetic folders go (default: a temporary folder, removed).")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return 0

    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="tdds-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    repeat = args.repeat or (1 if args.quick else 3)
    header = ("| case | N | C | T | W | wall best (s) | wall median (s) | CPU (s) | peak RSS (MB) | VmHWM (MB) | RSS after imports (MB) |\n"
              "|---|---|---|---|---|---|---|---|---|---|---|")
    print(f"# tdds scoring benchmark, {_dt.datetime.now().strftime('%Y-%m-%d %H:%M')}")
    print(f"machine: {machine()}")
    print(f"load average at start: {load()}")
    print(f"command: python benchmarks/scoring.py {' '.join(argv if argv is not None else sys.argv[1:])}".rstrip())
    print()
    try:
        if args.quick:
            n, c, T, W = 2000, 10, 6, 3
            d = make_tdds_folder(work / "q", n, c, T)
            ref = make_reference_folder(d, work / "q-ref", T)
            print(header)
            ours = measure({"kind": "tdds", "folder": str(d), "T": T, "W": W, "save": str(work / "q.npy")}, repeat)
            print(row("tdds (tdds folder, float16)", n, c, T, W, ours))
            r = measure({"kind": "reference", "folder": str(ref), "T": T, "W": W, "save": str(work / "qr.npy")}, repeat)
            print(row("tdds (authors' layout)", n, c, T, W, r))
            if not args.no_baseline:
                b = measure({"kind": "authors", "folder": str(ref), "T": T, "W": W, "save": str(work / "qa.npy")}, repeat)
                print(row("authors' procedure", n, c, T, W, b))
                diff = np.abs(np.load(work / "qr.npy") - np.load(work / "qa.npy")).max()
                print(f"\nmax |tdds(authors' layout) - authors' procedure| = {diff:.2e} (float64 vs the authors' float32)")
            return 0

        n, c = 50_000, 100
        d100 = make_tdds_folder(work / "n50k-c100", n, c, 60)
        if args.whole:
            ref = make_reference_folder(d100, work / "n50k-c100-ref", 30)
            print(f"whole processes, N={n:,}, C={c}, T=30, W=10, the authors' layout (float32, shuffled visits), "
                  f"{repeat} runs each\n")
            print("\n".join(whole_rows(ref, 30, 10, work, repeat, not args.no_baseline)))
            return 0
        print(header)
        main_case = measure({"kind": "tdds", "folder": str(d100), "T": 30, "W": 10, "save": str(work / "main.npy")}, repeat)
        print(row("tdds, tdds folder (float16), default workers", n, c, 30, 10, main_case), flush=True)
        one = measure({"kind": "tdds", "folder": str(d100), "T": 30, "W": 10, "workers": 1}, repeat)
        print(row("tdds, tdds folder (float16), 1 worker", n, c, 30, 10, one), flush=True)
        for T in (10, 60):
            r = measure({"kind": "tdds", "folder": str(d100), "T": T, "W": 10}, repeat)
            print(row("tdds, tdds folder (float16)", n, c, T, 10, r), flush=True)
        ref = make_reference_folder(d100, work / "n50k-c100-ref", 30)
        rr = measure({"kind": "reference", "folder": str(ref), "T": 30, "W": 10, "save": str(work / "ref.npy")}, repeat)
        print(row("tdds, authors' layout (float32, shuffled visits)", n, c, 30, 10, rr), flush=True)
        base = None
        if not args.no_baseline:
            base = measure({"kind": "authors", "folder": str(ref), "T": 30, "W": 10, "save": str(work / "authors.npy")}, 1)
            print(row("authors' procedure (baseline), authors' layout", n, c, 30, 10, base), flush=True)
        print("\nwhole processes on the same authors'-layout folder (imports, reading and writing included):\n")
        print("\n".join(whole_rows(ref, 30, 10, work, repeat, not args.no_baseline)), flush=True)
        print()
        shutil.rmtree(ref, ignore_errors=True)

        d1000 = make_tdds_folder(work / "n50k-c1000", n, 1000, 30)
        big = measure({"kind": "tdds", "folder": str(d1000), "T": 30, "W": 10}, max(1, repeat - 1))
        print(row("tdds, tdds folder (float16)", n, 1000, 30, 10, big), flush=True)
        shutil.rmtree(d1000, ignore_errors=True)

        inet = None
        if args.imagenet:
            dI = make_tdds_folder(work / "imagenet", IMAGENET_N, IMAGENET_C, 4)
            inet = measure({"kind": "tdds", "folder": str(dI), "T": 4, "W": 3}, 1)
            print(row("tdds, ImageNet-1K size, short trajectory", IMAGENET_N, IMAGENET_C, 4, 3, inet), flush=True)
            shutil.rmtree(dI, ignore_errors=True)

        print()
        if base is not None:
            diff = np.abs(np.load(work / "ref.npy") - np.load(work / "authors.npy"))
            rel = diff.max() / np.abs(np.load(work / "authors.npy")).max()
            print(f"speed-up over the authors' procedure (same data, same machine, best runs): "
                  f"{base['wall_s'] / main_case['wall_s']:.1f}x from the tdds folder, "
                  f"{base['wall_s'] / rr['wall_s']:.1f}x from the authors' layout; peak RSS "
                  f"{base['peak_rss_mb']:.0f} MB vs {main_case['peak_rss_mb']:.0f} MB")
            print(f"agreement with the authors' procedure: max abs difference {diff.max():.2e} "
                  f"({rel:.1e} of the largest score; float64 here vs float32 there)")
        # projection: time scales with N*C*T (same per-element kernel); memory is the per-block
        # buffers (independent of N) plus per-sample vectors (scores 8 B, NaN mask 1 B, labels 8 B)
        per_el = big["wall_s"] / (n * 1000 * 30)
        per_el_cpu = big["cpu_s"] / (n * 1000 * 30)
        for T in (30, 90):
            t_proj = per_el * IMAGENET_N * IMAGENET_C * T
            print(f"projection, ImageNet-1K (N={IMAGENET_N:,}, C={IMAGENET_C}, T={T}) from the C=1000 run: "
                  f"{t_proj / 60:.0f} min wall ({per_el * 1e9:.2f} ns per value per epoch; "
                  f"{per_el_cpu * IMAGENET_N * IMAGENET_C * T / 60:.0f} CPU-min), peak RSS about "
                  f"{big['peak_rss_mb'] + 17 * (IMAGENET_N - n) / 2 ** 20:.0f} MB (measured {big['peak_rss_mb']:.0f} MB "
                  f"+ 17 B per extra sample); the authors' script would hold T x 5.1 GB of float32 logits "
                  f"({T * IMAGENET_N * IMAGENET_C * 4 / 2 ** 30:.0f} GiB)")
        if inet is not None:
            print(f"measured at ImageNet-1K size (T=4, W=3): {inet['wall_s']:.0f} s wall, peak RSS {inet['peak_rss_mb']:.0f} MB")
        print(f"load average at end: {load()}")
        print(f"this driver's own peak RSS (inherited by the forked cases' ru_maxrss): "
              f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Independent trainings of one stage side by side: the coreset and cross-architecture items of a
grid as several processes on one device (one coreset run leaves most of a large GPU idle).

``run_items(stage, ctx, items, state, workers)`` runs ``stage.run`` for each item, ``workers`` at a
time, each in a fresh process that rebuilds the stage's context from the config, the
dataset version and the parent MLflow run (``python -m tdds_core.concurrent``); the parts come
back in item order. ``workers == 1``
runs them here, one after another. Every training is seeded by its item, so the results do not
depend on how many run at once (a CPU worker gets ``threads // workers`` torch threads, and the
caller's own thread count when it runs alone).

:func:`default_workers` derives the count from free device memory when ``coreset.concurrent_runs``
is unset.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Sequence

from .config import parse_config
from .io import atomic_write_text
from .plan import parse_item
from .stage_registry import Context, State, get_stage
from .tracking import ParentedTracker, make_tracker

__all__ = ["run_items", "default_workers", "resolve_workers", "GPU_BYTES_PER_RUN", "MAX_AUTO_WORKERS"]

GPU_BYTES_PER_RUN = 6 << 30   # what one coreset training is budgeted on a GPU (ResNet-18 at batch 128 with headroom)
MAX_AUTO_WORKERS = 4          # at most this many side by side when the count is derived


def default_workers(device: str = "auto") -> int:
    """Concurrent trainings when not configured: on a CUDA device, free memory // 6 GiB (1..4);
    on a CPU, 1 (the trainings would only share the same cores)."""
    try:
        import torch

        if device in ("auto", "cuda") or device.startswith("cuda"):
            if torch.cuda.is_available():
                free, _ = torch.cuda.mem_get_info()
                return max(1, min(MAX_AUTO_WORKERS, int(free // GPU_BYTES_PER_RUN)))
    except Exception:  # noqa: BLE001 - no device information: one at a time
        pass
    return 1


WORKER_ENV = "TDDS_CONCURRENT_WORKER"   # set in a worker process: it runs its trainings itself, one at a time


def resolve_workers(cfg: Any) -> int:
    """``coreset.concurrent_runs``, or :func:`default_workers` of ``train.device`` when unset; 1
    inside a worker process (no workers of workers)."""
    if os.environ.get(WORKER_ENV):
        return 1
    n = cfg.coreset.concurrent_runs
    return int(n) if n else default_workers(cfg.train.device)


def _run_job(job: dict) -> str:
    """One item, as the worker process runs it: rebuild the context, run the stage, return the part as JSON."""
    import torch

    torch.set_num_threads(max(1, int(job["threads"])))
    cfg = parse_config(json.loads(job["config_json"]))
    stage = get_stage(job["stage"])
    tracker = make_tracker(cfg, cfg.output, default_tags=job.get("default_tags"))
    if job.get("parent_run_id") and tracker.enabled:
        tracker = ParentedTracker(tracker, job["parent_run_id"])
    ctx = Context(cfg, job["fingerprint"], tracker, parent_run_id=job.get("parent_run_id"))
    part = stage.run(ctx, parse_item(stage.loop, job["item_json"]), State.model_validate_json(job["state_json"]))
    return part.model_dump_json()


def _spawn(job: dict) -> str:
    """Run ``job`` in a fresh ``python -m tdds_core.concurrent`` process (a whole process: no
    ``__main__`` guard needed in the caller's script); its part as JSON, or a RuntimeError with the
    end of its output."""
    env = {**os.environ, "OMP_NUM_THREADS": str(job["threads"]), WORKER_ENV: "1"}
    with tempfile.TemporaryDirectory(prefix="tdds-run-") as tmp:
        out = os.path.join(tmp, "part.json")
        proc = subprocess.run([sys.executable, "-m", "tdds_core.concurrent", out], input=json.dumps(job), text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
        if proc.returncode != 0 or not os.path.isfile(out):
            tail = "\n".join(proc.stdout.rstrip().splitlines()[-30:])
            raise RuntimeError(f"the {job['stage']} training of item {job['item_json'][:160]} failed in its worker "
                               f"process (exit {proc.returncode}):\n{tail}")
        with open(out, encoding="utf-8") as f:
            return f.read()


def run_seeds(stage: Any, ctx: Any, item: Any, state: Any, seeds: Sequence[int], workers: int) -> Any:
    """One item of a training stage whose work is one training per coreset seed (a KFP coreset task
    that has a whole GPU): each seed in its own worker process, ``workers`` at a time; returns the
    item's part, the seeds' parts merged in seed order."""
    import torch

    cfg = ctx.cfg
    base = {**_context_job(ctx), "stage": stage.name, "state_json": state.model_dump_json(),
            "item_json": item.model_dump_json(),
            "threads": max(1, torch.get_num_threads() // max(1, min(workers, len(seeds))))}
    jobs = [{**base, "config_json": cfg.model_copy(update={"coreset": cfg.coreset.model_copy(update={"seeds": [s]})}).to_json()}
            for s in seeds]
    parts = _map(jobs, workers)
    first = State.model_validate_json(parts[0])
    return first.merge(State.model_validate_json(p) for p in parts[1:])


def _context_job(ctx: Any) -> dict:
    """What a worker needs to rebuild ``ctx``: the dataset version, the parent MLflow run (given, or
    the one a KFP task found) and the tracker's default tags (the pipeline run id)."""
    return {"fingerprint": ctx.fingerprint, "parent_run_id": ctx.parent_run_id or getattr(ctx.tracker, "parent_id", None),
            "default_tags": dict(getattr(ctx.tracker, "default_tags", {}) or {})}


def _map(jobs: list[dict], workers: int) -> list[str]:
    """:func:`_spawn` of every job, ``workers`` at a time; the results in job order."""
    with ThreadPoolExecutor(max(1, min(workers, len(jobs)))) as pool:
        futures = [pool.submit(_spawn, job) for job in jobs]
        return [f.result() for f in futures]


def run_items(stage: Any, ctx: Any, items: Sequence[Any], state: Any, workers: int) -> list[Any]:
    """``stage.run(ctx, item, state)`` for every item, ``workers`` processes at a time (1: here, in
    order). Returns the parts in item order; the first failing item's error is raised (the others
    finish first, so no work is lost)."""
    if workers <= 1 or len(items) <= 1:
        return [stage.run(ctx, item, state) for item in items]
    import torch

    workers = min(workers, len(items))
    base = {**_context_job(ctx), "stage": stage.name, "config_json": ctx.cfg.to_json(),
            "state_json": state.model_dump_json(),
            "threads": max(1, torch.get_num_threads() // workers)}
    return [State.model_validate_json(p) for p in _map([{**base, "item_json": item.model_dump_json()} for item in items],
                                                       workers)]


if __name__ == "__main__":   # the worker: a job (JSON) on stdin, its part (JSON) into the file argv[1]
    atomic_write_text(Path(sys.argv[1]), _run_job(json.load(sys.stdin)))

"""The authors' TDDS scoring procedure (``importance_evaluation.py``), restated as the same-machine
baseline of benchmarks/scoring.py, both as a function and as a whole process like theirs.

What it does (shared/reference/tdds-facts.md): load all T epochs of ``{t}_Output.npy`` (float32
logits ``[N, C]`` in the epoch's visit order) and ``{t}_Index.npy`` at once; for every window
``k = 0 .. T-W`` soft-max its W epochs again (scipy, float32), add the rows into an ``[N, C]``
matrix by sample index with torch's ``index_add``, take the KL-like terms of consecutive epochs, the
L2 norm of their deviation from the mean and the EMA weight ``decay (1 - decay)^(T-W-k)``.

    python benchmarks/authors_tdds.py FOLDER --T 30 --W 10 --out scores.npy
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch


def authors_procedure(folder: Path, T: int, W: int, decay: float) -> np.ndarray:
    """float64 ``(N,)`` TDDS scores of the authors' layout folder ``folder`` (all T epochs in memory)."""
    try:
        from scipy.special import softmax
    except ImportError:  # pragma: no cover - scipy ships with the environment
        def softmax(x, axis):
            e = np.exp(x - x.max(axis=axis, keepdims=True))
            return e / e.sum(axis=axis, keepdims=True)

    folder = Path(folder)
    outputs = np.array([np.load(folder / f"{t}_Output.npy") for t in range(T)])
    indexes = np.array([np.load(folder / f"{t}_Index.npy") for t in range(T)])
    total = None
    for k in range(T - W + 1):
        window = softmax(outputs[k:k + W], axis=2)
        mats = []
        for i in range(W):
            m = torch.zeros_like(torch.tensor(window[0]))
            mats.append(m.index_add(0, torch.tensor(indexes[k + i], dtype=torch.long), torch.tensor(window[i])))
        kd = np.array([torch.abs(mats[j + 1] * (torch.log(mats[j + 1] + 1e-8) - torch.log(mats[j] + 1e-8))).sum(dim=1).numpy()
                       for j in range(W - 1)])
        dev = kd - kd.sum(axis=0) / (W - 1)
        s = np.linalg.norm(dev, axis=0) * decay * (1 - decay) ** (T - W - k)
        total = s if total is None else total + s
    return np.asarray(total, dtype=np.float64)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder", type=Path, help="The authors' layout: {t}_Output.npy and {t}_Index.npy per epoch.")
    ap.add_argument("--T", type=int, default=30)
    ap.add_argument("--W", type=int, default=10)
    ap.add_argument("--decay", type=float, default=0.9)
    ap.add_argument("--out", type=Path, required=True, help="Where the scores go (.npy).")
    args = ap.parse_args(argv)
    np.save(args.out, authors_procedure(args.folder, args.T, args.W, args.decay))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

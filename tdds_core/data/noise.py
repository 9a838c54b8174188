"""Training-set noise for the robustness settings (paper appendix F): label noise and image corruption.

Applied before everything else, seeded; the returned mask marks the samples that were changed so
the grid can report which fraction of them each coreset kept.
"""
from __future__ import annotations

import numpy as np

from ..config import NoiseConfig
from .base import ArrayDataset


def _gaussian(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return x + rng.normal(scale=0.35 * 255, size=x.shape)


def _occlusion(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    _, h, w = x.shape
    s = max(1, int(round(0.4 * min(h, w))))
    i, j = rng.integers(0, h - s + 1), rng.integers(0, w - s + 1)
    x = x.copy()
    x[:, i:i + s, j:j + s] = 0
    return x


def _resolution(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    _, h, w = x.shape
    f = 4
    small = x[:, ::f, ::f]
    return np.repeat(np.repeat(small, f, axis=1), f, axis=2)[:, :h, :w]


def _fog(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    _, h, w = x.shape
    coarse = rng.uniform(size=(1, 4, 4))
    haze = np.kron(coarse, np.ones((1, -(-h // 4), -(-w // 4))))[:, :h, :w]
    return 0.45 * x + 0.55 * (160 + 80 * haze)


def _motion_blur(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    k = 7
    pad = np.pad(x, ((0, 0), (0, 0), (k // 2, k // 2)), mode="edge")
    return np.mean([pad[:, :, i:i + x.shape[2]] for i in range(k)], axis=0)


CORRUPTIONS = {"gaussian": _gaussian, "occlusion": _occlusion, "resolution": _resolution, "fog": _fog,
               "motion_blur": _motion_blur}


def apply_noise(train: ArrayDataset, num_classes: int, cfg: NoiseConfig) -> tuple[ArrayDataset, np.ndarray, dict]:
    """Return (noisy copy of ``train``, bool mask ``[N]`` of changed samples, record of what was done)."""
    n = len(train)
    rng = np.random.default_rng(cfg.seed)
    labels = train.labels.copy()
    images = train.images
    mask = np.zeros(n, dtype=bool)
    record: dict = {"label_noise": cfg.label_noise, "corruption": cfg.corruption, "seed": cfg.seed}
    if cfg.label_noise > 0:
        k = int(round(cfg.label_noise * n))
        idx = np.sort(rng.choice(n, size=k, replace=False))
        shift = rng.integers(1, num_classes, size=k)  # never the same class
        labels[idx] = (labels[idx] + shift) % num_classes
        mask[idx] = True
        record["label_noise_count"] = int(k)
    if cfg.corruption > 0:
        k = int(round(cfg.corruption * n))
        idx = np.sort(rng.choice(n, size=k, replace=False))
        kinds = rng.integers(0, len(cfg.corruption_types), size=k)
        images = images.copy()
        for i, kind in zip(idx.tolist(), kinds.tolist()):
            fn = CORRUPTIONS[cfg.corruption_types[kind]]
            images[i] = np.clip(fn(images[i].astype(np.float64), rng), 0, 255).astype(np.uint8)
        mask[idx] = True
        record["corruption_count"] = int(k)
        record["corruption_kinds"] = {t: int((kinds == j).sum()) for j, t in enumerate(cfg.corruption_types)}
    record["noisy_count"] = int(mask.sum())
    return ArrayDataset(images, labels, list(train.ids), train.root, train.paths), mask, record

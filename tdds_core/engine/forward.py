"""The model passes of a run: the (importance-weighted) loss, the learning-rate schedule, the test
evaluation, and the clean eval-mode pass whose logits and features are stored.

Stored logits are computed with the classifier head in float32: under bf16 autocast (CUDA) the
forward passes whose logits are stored (the training pass of a recorded epoch, the clean passes)
run the feature extractor under autocast and then ``head(features.float())`` with autocast off
(:func:`capture_forward`), since bf16 rounding of the logits moved TDDS scores by up to 1%. Without
autocast (CPU) this is the same computation as ``model(x)``, bit for bit."""
from __future__ import annotations

import logging
import math
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..data.loader import ResidentLoader
from ..errors import ConfigError

__all__ = ["FP32_HEAD", "weighted_loss", "lr_lambda", "evaluate", "split_head", "Fp32HeadForward", "capture_forward",
           "predict"]

log = logging.getLogger("tdds.engine")

#: Run the classifier head in float32 outside autocast in the forward passes whose logits are
#: stored (tests set it to False to compare with the plain ``model(x)`` path).
FP32_HEAD = True


def weighted_loss(logits: torch.Tensor, y: torch.Tensor, w: torch.Tensor | None, mode: str) -> torch.Tensor:
    """Importance-aware loss (paper Eq. 13).

    ``none``: mean cross-entropy. ``batch`` (the authors' code): mean cross-entropy times the mean
    importance of the batch. ``sample``: mean over the batch of importance_i x cross-entropy_i."""
    if mode == "none" or w is None:
        return F.cross_entropy(logits, y)
    if mode == "batch":
        return F.cross_entropy(logits, y) * w.mean()
    if mode == "sample":
        return (F.cross_entropy(logits, y, reduction="none") * w).mean()
    raise ConfigError(f"coreset.weighting: unknown mode {mode!r}; use batch, sample, mean1 or none")


def lr_lambda(schedule: str, total: int) -> Callable[[int], float]:
    """The learning-rate factor at iteration ``it`` of ``total``: ``constant`` or cosine to 0."""
    if schedule == "constant":
        return lambda it: 1.0
    return lambda it: 0.5 * (1.0 + math.cos(math.pi * min(it, total) / max(1, total)))


@torch.no_grad()
def evaluate(model: torch.nn.Module, loader: ResidentLoader, num_classes: int, autocast) -> tuple[float, float, np.ndarray]:
    """(accuracy %, mean loss, per-class accuracy % ``[C]``) on a loader, eval mode, no augmentation."""
    model.eval()
    correct = torch.zeros(num_classes, dtype=torch.float64, device=loader.device)
    total = torch.zeros(num_classes, dtype=torch.float64, device=loader.device)
    loss_sum = 0.0
    for x, y, _ in loader.epoch(shuffle=False):
        with autocast():
            out = model(x)
        loss_sum += float(F.cross_entropy(out.float(), y, reduction="sum"))
        pred = out.argmax(1)
        total.index_add_(0, y, torch.ones_like(y, dtype=torch.float64))
        correct.index_add_(0, y, (pred == y).double())
    n = float(total.sum())
    per_class = (100.0 * correct / total.clamp(min=1)).cpu().numpy()
    return 100.0 * float(correct.sum()) / max(n, 1.0), loss_sum / max(n, 1.0), per_class


def split_head(model: nn.Module) -> tuple[nn.Module, nn.Linear] | None:
    """``(feature extractor, classifier head)`` of a model, or None when it has no such split.

    Every registered architecture is a :class:`~tdds_core.models.Classifier` whose ``features``
    gives the penultimate features and whose ``head`` is the last ``nn.Linear`` (a compiled
    model is looked through). Other models get None: their logits come from the whole model."""
    m = getattr(model, "_orig_mod", model)
    feats, head = getattr(m, "features", None), getattr(m, "head", None)
    if isinstance(feats, nn.Module) and isinstance(head, nn.Linear):
        return feats, head
    return None


class Fp32HeadForward(nn.Module):
    """``features(x)`` under the caller's autocast, then ``head(features.float())`` in float32 with
    autocast disabled. Shares the modules (and parameters) of the model it was split from.

    Without autocast this is exactly ``model(x)``: ``.float()`` of float32 features is the same
    tensor and the head runs the same float32 ``linear``."""

    def __init__(self, features: nn.Module, head: nn.Linear):
        super().__init__()
        self.features, self.head = features, head

    def forward(self, x: torch.Tensor, return_features: bool = False):
        f = self.features(x)
        with torch.autocast(x.device.type, enabled=False):
            out = self.head(f.float())
        return (out, f) if return_features else out


def capture_forward(model: nn.Module, *, what: str = "the stored logits") -> nn.Module:
    """The forward used where logits are stored: :class:`Fp32HeadForward` over :func:`split_head`,
    or ``model`` itself (under autocast, as before) with a logged note when no head is found or
    :data:`FP32_HEAD` is off."""
    if not FP32_HEAD:
        return model
    parts = split_head(model)
    if parts is None:
        log.info("%s has no features/head split (a Classifier with an nn.Linear head); %s come from the whole "
                 "model under autocast (bf16 on CUDA)", type(model).__name__, what)
        return model
    return Fp32HeadForward(*parts)


@torch.no_grad()
def predict(model, loader: ResidentLoader, n: int, num_classes: int, autocast, features: bool):
    """Eval-mode pass over ``loader`` (no augmentation): float32 logits ``[N, C]`` and, with
    ``features``, float32 penultimate features ``[N, D]``, rows by sample position. ``model`` is
    a Classifier or its :func:`capture_forward` (float32 head)."""
    model.eval()
    logits = torch.zeros(n, num_classes, dtype=torch.float32, device=loader.device)
    feats = None
    for x, _, idx in loader.epoch(shuffle=False):
        with autocast():
            out, f = model(x, return_features=True)
        logits[idx] = out.float()
        if features:
            if feats is None:
                feats = torch.zeros(n, f.shape[1], dtype=torch.float32, device=loader.device)
            feats[idx] = f.float()
    return logits, feats

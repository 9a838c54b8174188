"""Architecture registry (timm-style): ``@register_model`` functions, ``create_model(name, ...)``.

Every model is a :class:`Classifier`: ``features(x) -> [B, D]`` (penultimate features) and
``head(feat) -> [B, num_classes]``; ``forward(x)`` returns logits and
``forward(x, return_features=True)`` returns ``(logits, features)``.
"""
from __future__ import annotations

import inspect
from typing import Callable

import torch
from torch import nn

from ..errors import ConfigError

_MODELS: dict[str, Callable[..., "Classifier"]] = {}


class Classifier(nn.Module):
    """A feature extractor followed by a linear head."""

    def __init__(self, features: nn.Module, head: nn.Linear):
        super().__init__()
        self.features = features
        self.head = head

    @property
    def feature_dim(self) -> int:
        return self.head.in_features

    def forward(self, x: torch.Tensor, return_features: bool = False):
        f = self.features(x)
        out = self.head(f)
        return (out, f) if return_features else out


def register_model(fn: Callable[..., Classifier]) -> Callable[..., Classifier]:
    """Register ``fn`` under its own name. Signature: ``fn(num_classes, in_channels, image_size, **kw)``."""
    _MODELS[fn.__name__] = fn
    return fn


def list_models() -> list[str]:
    return sorted(_MODELS)


def is_model(name: str) -> bool:
    return name in _MODELS


def create_model(name: str, *, num_classes: int, in_channels: int = 3, image_size: int = 32, **kwargs) -> Classifier:
    """Build a registered architecture; ``None`` kwargs are dropped so config defaults apply."""
    if name not in _MODELS:
        raise ConfigError(f"unknown architecture {name!r}; known architectures: {', '.join(list_models())}")
    fn = _MODELS[name]
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    params = inspect.signature(fn).parameters
    for k in kwargs:
        if k not in params:
            valid = [p for p in params if p not in ("num_classes", "in_channels", "image_size")]
            raise ConfigError(f"model.options.{k}: architecture {name!r} has no option {k!r}; valid: {', '.join(valid) or 'none'}")
    return fn(num_classes=num_classes, in_channels=in_channels, image_size=image_size, **kwargs)


from . import cifar_resnet, small, tv  # noqa: E402,F401  (register on import)

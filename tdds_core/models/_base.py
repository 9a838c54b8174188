"""The architecture registry and :class:`Classifier`, apart from the architecture modules that
register into it (they import this module, never the package).

Every model is a :class:`Classifier`: ``features(x) -> [B, D]`` (penultimate features) and
``head(feat) -> [B, num_classes]``; ``forward(x)`` returns logits and
``forward(x, return_features=True)`` returns ``(logits, features)``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch
from torch import nn

from ..errors import ConfigError
from ..registry import Registry

__all__ = ["Classifier", "ModelEntry", "MODELS", "register_model", "list_models", "is_model", "create_model"]


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


@dataclass(frozen=True)
class ModelEntry:
    """A registered architecture: ``fn(num_classes, in_channels, image_size, **options)`` and the
    names of the keyword options it takes (``model.options``)."""

    fn: Callable[..., Classifier]
    options: tuple[str, ...] = ()


MODELS: Registry[ModelEntry] = Registry("architecture", "set model.arch (see `tdds list`)")


def register_model(fn: Optional[Callable[..., Classifier]] = None, *, options: tuple[str, ...] = ()):
    """Register ``fn`` under its own name; ``@register_model`` or ``@register_model(options=("width",))``.
    Signature: ``fn(num_classes, in_channels, image_size, **options)``."""
    def deco(f: Callable[..., Classifier]) -> Callable[..., Classifier]:
        MODELS.add(f.__name__, ModelEntry(f, tuple(options)), f.__module__)
        return f

    return deco if fn is None else deco(fn)


def list_models() -> list[str]:
    return MODELS.names()


def is_model(name: str) -> bool:
    return name in MODELS


def create_model(name: str, *, num_classes: int, in_channels: int = 3, image_size: int = 32, **kwargs) -> Classifier:
    """Build a registered architecture; ``None`` kwargs are dropped so config defaults apply, and an
    option the architecture did not declare is a ConfigError naming the valid ones."""
    if name not in MODELS:
        raise ConfigError(f"unknown architecture {name!r}; known architectures: {', '.join(list_models())}")
    entry = MODELS.get(name)
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    for k in kwargs:
        if k not in entry.options:
            raise ConfigError(f"model.options.{k}: architecture {name!r} has no option {k!r}; "
                              f"valid: {', '.join(entry.options) or 'none'}")
    return entry.fn(num_classes=num_classes, in_channels=in_channels, image_size=image_size, **kwargs)

"""Architecture registry (timm-style): ``@register_model`` functions, ``create_model(name, ...)``;
the architectures register on import (``cifar_resnet``, ``small``, ``tv``)."""
from . import cifar_resnet, small, tv  # noqa: F401  (register on import)
from ._base import MODELS, Classifier, ModelEntry, create_model, is_model, list_models, register_model

__all__ = ["Classifier", "ModelEntry", "MODELS", "register_model", "list_models", "is_model", "create_model"]

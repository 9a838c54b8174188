"""Plugins: modules named in ``$TDDS_PLUGINS`` (comma-separated), imported once before a registry
(stages, scoring methods) is used, so they can register their own. The variable reaches every
pipeline task, so a plugin runs in ``tdds grid`` and in the KFP pipeline alike."""
from __future__ import annotations

import importlib
import os

from .errors import ConfigError

__all__ = ["PLUGINS_ENV", "load_plugins"]

PLUGINS_ENV = "TDDS_PLUGINS"
_LOADED: set[str] = set()


def load_plugins() -> None:
    """Import every module named in ``$TDDS_PLUGINS`` that is not imported yet."""
    for name in filter(None, (x.strip() for x in os.environ.get(PLUGINS_ENV, "").split(","))):
        if name in _LOADED:
            continue
        _LOADED.add(name)
        try:
            importlib.import_module(name)
        except ImportError as e:
            _LOADED.discard(name)
            raise ConfigError(f"${PLUGINS_ENV} names {name!r}, which cannot be imported ({e}); put it on PYTHONPATH "
                              "or remove it from the variable.") from None

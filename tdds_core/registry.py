"""One small registry type for every kind of pluggable thing (scoring methods, selection
strategies, stages, architectures, datasets), after timm's ``_registry``: it stores an entry under
its name and its module, answers look-ups, and raises a :class:`~tdds_core.errors.ConfigError`
naming the known entries for an unknown name. It does not rewrite any namespace or read any
signature. Modules named in ``$TDDS_PLUGINS`` are imported before the first look-up, so a plugin
registers its own entries (:mod:`tdds_core.plugins`).

A registry may name a package whose modules register its built-in entries (``discover=``): they
load like plugins, on demand, the entry ``foo-bar`` from the module ``<package>.foo_bar`` and all of
them when the whole list is asked for. That is how a KFP task imports only its own stage (the score
task stays free of torch). These by-name imports and the plugins' are the only imports of modules
named at run time (tests/test_layering.py holds them to these two places)."""
from __future__ import annotations

import importlib
import pkgutil
from typing import Callable, Generic, Iterator, Optional, TypeVar

from .errors import ConfigError
from .plugins import load_plugins

__all__ = ["Registry"]

T = TypeVar("T")


class Registry(Generic[T]):
    """``name -> entry`` for one kind of thing (``kind`` is used in messages: "scoring method")."""

    def __init__(self, kind: str, hint: str = "", discover: str = ""):
        self.kind = kind
        self.hint = hint                      # appended to the unknown-name error ("set methods[].name")
        self.discover = discover              # package whose modules register the built-in entries
        self._entries: dict[str, T] = {}
        self._modules: dict[str, str] = {}
        self._discovered = False

    def _load(self, name: Optional[str] = None) -> None:
        """Plugins, then the built-in module of ``name`` (every built-in module when None)."""
        load_plugins()
        if not self.discover or self._discovered or (name is not None and name in self._entries):
            return
        package = importlib.import_module(self.discover)
        modules = sorted(m.name for m in pkgutil.iter_modules(package.__path__) if not m.name.startswith("_"))
        if name is not None:
            wanted = name.replace("-", "_")
            modules = [m for m in modules if m == wanted]
        for m in modules:
            importlib.import_module(f"{self.discover}.{m}")
        self._discovered = name is None

    def add(self, name: str, entry: T, module: str = "") -> T:
        """Register ``entry`` under ``name``; a name registered by another module is an error."""
        prev = self._modules.get(name)
        if name in self._entries and prev != module:
            raise ValueError(f"{self.kind} {name!r} is already registered by {prev or 'another module'}")
        self._entries[name] = entry
        self._modules[name] = module
        return entry

    def register(self, name: Optional[str] = None) -> Callable[[T], T]:
        """Decorator form of :meth:`add` (the name defaults to the function's ``__name__``)."""
        def deco(entry: T) -> T:
            return self.add(name or entry.__name__, entry, getattr(entry, "__module__", ""))
        return deco

    def remove(self, name: str) -> T:
        """Unregister ``name`` (tests, plugins); KeyError when unknown."""
        self._modules.pop(name, None)
        return self._entries.pop(name)

    def get(self, name: str) -> T:
        """The entry under ``name``; ConfigError naming the known ones otherwise."""
        self._load(name)
        if name not in self._entries:
            self._load()
            known = ", ".join(sorted(self._entries)) or "none"
            raise ConfigError(f"unknown {self.kind} {name!r}; the known ones are: {known}"
                              + (f"; {self.hint}" if self.hint else ""))
        return self._entries[name]

    def module_of(self, name: str) -> str:
        """The module that registered ``name`` ("" when unknown)."""
        return self._modules.get(name, "")

    def names(self) -> list[str]:
        """Every registered name, sorted."""
        self._load()
        return sorted(self._entries)

    def items(self) -> list[tuple[str, T]]:
        self._load()
        return sorted(self._entries.items())

    def __contains__(self, name: object) -> bool:
        if isinstance(name, str):
            self._load(name)
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)

"""The scoring-method registry: one :class:`~tdds_core.registry.Registry` of :class:`MethodInfo`
records (timm style: one decorated function per method, in its own module).

A method reads the per-sample column view (:class:`~tdds_core.scoring._view.ColumnView`, the same
for a logits recording and a statistics recording) and returns float64 ``(N,)`` scores where a
HIGHER score means KEEP FIRST::

    @register_method("el2n", options={"k": Option(10, int, min=1, doc="epochs averaged")})
    def el2n(view, *, k, start): ...

Its options are declared at registration (:class:`Option`: default, type, range or choices) and
checked here, in :func:`resolve_params`, before any work; ``check`` adds the checks that span
options (``W <= T``). A plain function ``fn(dynamics, *, opt=default, nan_policy="raise")``
registered without ``options`` is a method over the stored logits (``logits=True``): it gets the
dynamics object itself and its keyword-only defaults are its options (the short form of a plugin).
"""
from __future__ import annotations

import fnmatch
import inspect
import math
import sys
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Optional, Sequence, Union

import numpy as np

from ..errors import ConfigError, ScoringError
from ..registry import Registry
from ._view import ColumnView, open_view

__all__ = [
    "MethodInfo", "Option", "METHODS", "register_method", "unregister_method", "registered", "export", "get_method",
    "list_methods", "list_modules", "is_method", "method_options", "method_weighting", "resolve_params", "check_option",
    "get_sampler", "compute_scores", "score_view", "check_recorded_inputs", "method_reads_statistics", "NAN_POLICIES",
]

#: The package whose namespace :func:`export` adds a plugin's public functions to.
PACKAGE = __name__.rpartition(".")[0]
NAN_POLICIES = ("raise", "skip")
WEIGHTINGS = ("batch", "sample", "mean1", "none")

Patterns = Union[str, Sequence[str]]
Sampler = Callable[..., np.ndarray]
#: ``factory(params, dynamics=None) -> sampler or None`` (None: plain top-k with these options);
#: ``dynamics`` is what the scores came from, when the caller has it (DUAL's beta sampling reads it)
SamplerFactory = Callable[..., Optional[Sampler]]


@dataclass(frozen=True)
class Option:
    """One option of a method: its default and what a value must be (checked by :func:`check_option`).

    ``type``: int, float (any real number), bool, str, dict or None (anything); ``min``/``max``
    bound a number (exclusive with ``min_open``/``max_open``); ``choices`` lists the allowed values;
    a None default makes None allowed. ``doc`` and ``hint`` go into the error message."""

    default: Any
    type: Optional[type] = None
    min: Optional[float] = None
    max: Optional[float] = None
    min_open: bool = False
    max_open: bool = False
    choices: tuple = ()
    doc: str = ""
    hint: str = ""

    def requirement(self) -> str:
        """What a value must be, in words (``an integer >= 2``, ``in (0, 1]``, ``one of a, b``)."""
        if self.choices:
            return "one of " + ", ".join(map(str, self.choices))
        if self.type is bool:
            return "true or false"
        what = {int: "an integer", float: "a number", str: "a string", dict: "a mapping"}.get(self.type, "a value")
        if self.min is not None and self.max is not None:
            return f"in {'(' if self.min_open else '['}{self.min:g}, {self.max:g}{')' if self.max_open else ']'}"
        if self.min == 0 and self.min_open:
            return f"a positive {what.split()[-1]}"
        if self.min is not None:
            return f"{what} {'>' if self.min_open else '>='} {self.min:g}"
        return what

    def accepts(self, v: Any) -> bool:
        if v is None and self.default is None:
            return True
        if self.choices:
            return any(v == c and type(v) is type(c) for c in self.choices)
        if self.type is bool:
            return isinstance(v, (bool, np.bool_))
        if self.type is int and (isinstance(v, bool) or not isinstance(v, (int, np.integer))):
            return False
        if self.type is float and (isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating))
                                   or not math.isfinite(float(v))):
            return False
        if self.type in (str, dict) and not isinstance(v, self.type):
            return False
        lo_ok = self.min is None or (v > self.min if self.min_open else v >= self.min)
        hi_ok = self.max is None or (v < self.max if self.max_open else v <= self.max)
        return bool(lo_ok and hi_ok)


@dataclass(frozen=True)
class MethodInfo:
    """What the registry knows about one method."""

    name: str
    fn: Callable[..., np.ndarray]
    options: dict[str, Option] = field(default_factory=dict)
    sampler_factory: Optional[SamplerFactory] = None  # builds the method's own selection sampler
    module: str = ""
    weighting: str = "none"  # the coreset loss weighting its source trains with (tdds_core.plan.coreset_weighting)
    check: Optional[Callable[[dict], None]] = None  # raises ScoringError on options that cannot go together
    logits: bool = False  # True: fn takes the dynamics object and reads the logits (no statistics recording)

    @property
    def stats(self) -> Optional[Callable[..., np.ndarray]]:
        """The function that scores a statistics recording (None for a method over the logits)."""
        return None if self.logits else self.fn


METHODS: Registry[MethodInfo] = Registry("scoring method")
_EXPORTS: dict[str, str] = {}  # name a plugin exported -> its module


def _short(module: str) -> str:
    """``"tdds_core.scoring.tdds"`` -> ``"tdds"`` (timm's module key)."""
    return module.rpartition(".")[2]


def _signature_options(name: str, fn: Callable) -> dict[str, Option]:
    """The options of a method over the logits: its keyword-only parameters with their defaults
    (besides ``nan_policy``); TypeError when ``fn`` does not have the form ``fn(dynamics, *, ...)``."""
    params = list(inspect.signature(fn).parameters.values())
    if not params or params[0].kind not in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD):
        raise TypeError(f"scoring method {name!r}: the first parameter must be the positional dynamics object")
    options: dict[str, Option] = {}
    for p in params[1:]:
        if p.kind in (inspect.Parameter.VAR_KEYWORD, inspect.Parameter.VAR_POSITIONAL):
            raise TypeError(f"scoring method {name!r} may not take *args/**kwargs; list its options explicitly")
        if p.kind is not inspect.Parameter.KEYWORD_ONLY:
            raise TypeError(f"scoring method {name!r}: option {p.name!r} must be keyword-only")
        if p.default is inspect.Parameter.empty:
            raise TypeError(f"scoring method {name!r}: option {p.name!r} needs a default")
        if p.name != "nan_policy":
            options[p.name] = Option(p.default)
    if not any(p.name == "nan_policy" for p in params):
        raise TypeError(f"scoring method {name!r} must accept the keyword-only option nan_policy")
    return options


def register_method(name: str, *, options: Optional[dict[str, Any]] = None, weighting: str = "none",
                    sampler: Optional[SamplerFactory] = None, check: Optional[Callable[[dict], None]] = None,
                    logits: Optional[bool] = None) -> Callable:
    """Decorator: register ``fn`` as scoring method ``name`` (its module is recorded for
    ``list_methods(module=...)``).

    ``options``: option name -> :class:`Option` (a bare value is an Option with that default and no
    type). Given, ``fn(view, **options)`` reads the column view; left out, ``fn(dynamics, *,
    nan_policy, **options)`` reads the logits (``logits=True``) and its keyword-only defaults are
    the options. ``weighting``: the coreset loss weighting its source trains with. ``sampler``: a
    factory ``sampler(params, dynamics=None)`` of the method's own selection rule (CCS's stratified
    sampling), or None for the plain top-k. ``check(options)``: raises ScoringError on resolved
    options that cannot go together (``W > T``).
    """
    if weighting not in WEIGHTINGS:
        raise ValueError(f"scoring method {name!r}: unknown weighting {weighting!r}; use {', '.join(WEIGHTINGS)}")

    def deco(fn: Callable[..., np.ndarray]) -> Callable[..., np.ndarray]:
        on_logits = options is None if logits is None else bool(logits)
        opts = (_signature_options(name, fn) if options is None else
                {k: v if isinstance(v, Option) else Option(v) for k, v in options.items()})
        METHODS.add(name, MethodInfo(name=name, fn=fn, options=opts, sampler_factory=sampler, module=fn.__module__,
                                     weighting=weighting, check=check, logits=on_logits), fn.__module__)
        return fn

    return deco


def export(obj: Any) -> Any:
    """Decorator for a plugin module: publish its public array-level function ``obj`` as
    ``tdds_core.scoring.<name>`` (and in ``__all__``) until its module's last method is unregistered.
    A name the package already has is a ValueError (the built-in modules' names are listed in
    ``tdds_core/scoring/__init__.py``)."""
    name, module = getattr(obj, "__name__", ""), getattr(obj, "__module__", "") or ""
    if not name or name.startswith("_"):
        raise ValueError(f"export needs a public named function or class, got {obj!r}")
    pkg = sys.modules[PACKAGE]
    if _EXPORTS.get(name, module) != module:
        raise ValueError(f"{PACKAGE}.{name} is already exported by {_EXPORTS[name]}")
    if name not in _EXPORTS and (hasattr(pkg, name) or name in pkg.__all__):
        raise ValueError(f"export {module}.{name} would shadow {PACKAGE}.{name}")
    _EXPORTS[name] = module
    setattr(pkg, name, obj)
    if name not in pkg.__all__:
        pkg.__all__.append(name)
    return obj


def unregister_method(name: str) -> MethodInfo:
    """Remove method ``name`` (tests, plugins; KeyError when unknown). When it was the last method of
    its module, the names that module exported leave the package namespace too."""
    info = METHODS.remove(name)
    if not any(other.module == info.module for _, other in METHODS.items()):
        pkg = sys.modules[PACKAGE]
        for exported in [n for n, mod in _EXPORTS.items() if mod == info.module]:
            del _EXPORTS[exported]
            pkg.__dict__.pop(exported, None)
            if exported in pkg.__all__:
                pkg.__all__.remove(exported)
    return info


@contextmanager
def registered(name: str, fn: Callable[..., np.ndarray], **kw: Any) -> Iterator[Callable[..., np.ndarray]]:
    """``with registered("toy", toy_fn): ...``: method ``name`` exists only inside the block
    (``kw``: :func:`register_method`'s keywords)."""
    if name in METHODS:
        raise ValueError(f"scoring method {name!r} is already registered by {METHODS.module_of(name)}")
    register_method(name, **kw)(fn)
    try:
        yield fn
    finally:
        if name in METHODS:
            unregister_method(name)


def _info(name: str) -> MethodInfo:
    if name not in METHODS:     # (loads $TDDS_PLUGINS first: a plugin may register it)
        raise ScoringError(f"unknown scoring method {name!r}; known methods: {', '.join(list_methods())}")
    return METHODS.get(name)


def is_method(name: str) -> bool:
    """Whether ``name`` is a registered method."""
    return name in METHODS


def _patterns(p: Patterns) -> list[str]:
    return [x for x in ([p] if isinstance(p, str) else list(p)) if x]


def list_methods(filter: Patterns = "", module: Patterns = "", exclude_filters: Patterns = "") -> list[str]:
    """Sorted registered method names (timm's ``list_models``): ``filter`` shell pattern(s) a name must
    match one of, ``module`` method module(s), short (``"tdds"``) or dotted, ``exclude_filters``
    pattern(s) whose matches are dropped."""
    names = METHODS.names()
    modules = _patterns(module)
    if modules:
        names = [n for n in names if METHODS.module_of(n) in modules or _short(METHODS.module_of(n)) in modules]
    include, exclude = _patterns(filter), _patterns(exclude_filters)
    if include:
        names = [n for n in names if any(fnmatch.fnmatch(n, f) for f in include)]
    return [n for n in names if not any(fnmatch.fnmatch(n, f) for f in exclude)]


def list_modules() -> list[str]:
    """Sorted short names of the modules that register at least one method (timm's ``list_modules``)."""
    return sorted({_short(info.module) for _, info in METHODS.items()})


def get_method(name: str) -> Callable[..., np.ndarray]:
    """The registered function of method ``name`` (ScoringError listing the known ones if unknown)."""
    return _info(name).fn


def method_weighting(name: str) -> str:
    """The coreset loss weighting method ``name``'s source trains with (``none`` unless registered)."""
    return _info(name).weighting


def method_options(name: str) -> dict[str, Any]:
    """Option name -> default value of method ``name``."""
    return {k: o.default for k, o in _info(name).options.items()}


def method_reads_statistics(name: str) -> bool:
    """Whether registered method ``name`` scores from per-sample statistics (False when unknown)."""
    return name in METHODS and not METHODS.get(name).logits


def check_option(method: str, name: str, value: Any) -> Any:
    """``value`` when it is a valid value of option ``name`` of ``method``; ScoringError otherwise."""
    opt = _info(method).options[name]
    if not opt.accepts(value):
        doc = f" ({opt.doc})" if opt.doc else ""
        raise ScoringError(f"{method}: {name}{doc} must be {opt.requirement()}, got {value!r}"
                           + (f"; {opt.hint}" if opt.hint else ""))
    return value


def resolve_params(name: str, **params: Any) -> dict[str, Any]:
    """Check ``params`` against method ``name``'s options and return the defaults updated with them
    (options given as None fall back to their defaults): unknown names, types, ranges and the
    method's ``check`` of the whole set."""
    info = _info(name)
    given = {k: v for k, v in params.items() if v is not None}
    unknown = sorted(set(given) - set(info.options))
    if unknown:
        valid = ", ".join(sorted(info.options)) or "(none)"
        raise ScoringError(f"unknown option{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))} for "
                           f"scoring method {name!r}; valid options: {valid}")
    out = {k: o.default for k, o in info.options.items()}
    out.update(given)
    for k, v in out.items():
        check_option(name, k, v)
    if info.check is not None:
        info.check(out)
    return out


def check_recorded_inputs(methods: Iterable[str], record: Any) -> None:
    """Refuse, before any training, methods that need logits when the run records statistics only
    (``dynamics.record: stats``): ConfigError naming them and the fix."""
    if record != "stats":
        return
    need_logits = sorted({m for m in methods if _info(m).logits})
    if need_logits:
        with_stats = ", ".join(n for n in list_methods() if method_reads_statistics(n))
        raise ConfigError(f"dynamics.record: stats keeps no logits, and {', '.join(need_logits)} score from logits; set "
                          f"dynamics.record: both (or true), or use only methods that read statistics ({with_stats}).")


def get_sampler(name: str, params: Optional[dict] = None, *, dynamics: Any = None) -> Optional[Sampler]:
    """The selection sampler of method ``name`` built from its resolved options, or None when the
    method uses the plain top-k. ``dynamics``: what the scores came from (None when the caller has
    none), handed to the factory as ``factory(params, dynamics=dynamics)``."""
    factory = _info(name).sampler_factory
    if factory is None:
        return None
    return factory(resolve_params(name, **(params or {})), dynamics=dynamics)


def score_view(name: str, view: ColumnView, **params: Any) -> np.ndarray:
    """Method ``name``'s scores over ``view`` with ``params`` (checked), NaN/Inf rows not yet
    settled (:meth:`ColumnView.finish`): what :func:`compute_scores` and a method built on another
    one (CCS over its base) call."""
    info = _info(name)
    resolved = resolve_params(name, **params)
    if not info.logits:
        return info.fn(view, **resolved)
    if view.is_statistics:
        with_stats = ", ".join(n for n in list_methods() if method_reads_statistics(n)) or "none"
        raise ScoringError(f"method {name!r} scores from logits, and {view.source.folder} holds per-sample statistics "
                           f"only; score it from a run that recorded logits, or use a method that reads statistics "
                           f"({with_stats}).")
    return info.fn(view.source, nan_policy=view.nan_policy, **resolved)


def compute_scores(name: str, dynamics: Any, *, nan_policy: str = "raise", **params: Any) -> np.ndarray:
    """Score every sample of ``dynamics`` with method ``name``.

    Parameters
    ----------
    name : str
        A registered method (see :func:`list_methods`).
    dynamics : Dynamics-like
        ``tdds_core.dynamics.Dynamics``, ``tdds_core.dynamics_reference.ReferenceDynamics`` or
        ``tdds_core.statistics.Statistics``.
    nan_policy : {"raise", "skip"}
        "raise": NaN/Inf inputs are a :class:`ScoringError` naming the epoch and the count;
        "skip": those samples get score ``-inf`` (the lowest) and a warning reports the count.
    **params
        Options of the method; unknown names are a :class:`ScoringError` listing the valid ones.

    Returns
    -------
    np.ndarray
        float64 ``(N,)``, row i = sample i; higher = keep first.
    """
    if nan_policy not in NAN_POLICIES:
        raise ScoringError(f"nan_policy must be one of {', '.join(NAN_POLICIES)}, not {nan_policy!r}")
    resolve_params(name, **params)          # an unknown method or option: an error before any reading
    view = open_view(dynamics, nan_policy=nan_policy, method=name)
    scores = np.asarray(score_view(name, view, **params))
    n = int(dynamics.num_samples)
    if scores.shape != (n,):
        raise ScoringError(f"scoring method {name!r} returned shape {scores.shape}, expected ({n},)")
    scores = view.finish(scores.astype(np.float64, copy=False))
    if np.isnan(scores).any():
        raise ScoringError(f"scoring method {name!r} produced NaN scores with options {resolve_params(name, **params)}")
    return scores


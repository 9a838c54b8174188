"""The scoring-method registry (timm style): one decorated function per method.

A method is a function ``fn(dynamics, *, nan_policy="raise", **options) -> np.ndarray`` that
returns float64 ``(N,)`` scores where a HIGHER score means KEEP FIRST. Its keyword-only
parameters (other than ``nan_policy``) are its options; :func:`compute_scores` checks option names
against them, so a misspelt option is an error instead of being swallowed.

Registering is exporting: ``tdds_core.scoring`` imports every non-underscore module of its folder,
so a module's ``@register_method`` makes the method known, and ``@export`` puts a public
array-level function (or class) into the package namespace and its ``__all__``. Adding a method is
one new file, with no edit elsewhere.
"""
from __future__ import annotations

import fnmatch
import inspect
import pkgutil
import sys
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Optional, Sequence, TypeVar, Union

import numpy as np

from ..errors import ScoringError

__all__ = [
    "MethodInfo", "register_method", "unregister_method", "registered", "export", "get_method", "list_methods",
    "list_modules", "is_method", "method_options", "method_weighting", "resolve_params", "get_sampler", "compute_scores",
    "check_recorded_inputs", "method_reads_statistics", "NAN_POLICIES",
]

#: The package whose namespace :func:`export` fills (``tdds_core.scoring``).
PACKAGE = __name__.rpartition(".")[0]

T = TypeVar("T")
Patterns = Union[str, Sequence[str]]

NAN_POLICIES = ("raise", "skip")

Sampler = Callable[..., np.ndarray]
#: ``factory(params) -> sampler or None``, or ``factory(params, *, dynamics=None)`` when the sampler
#: needs more than the scores (DUAL's beta sampling reads the dynamics); None means plain top-k
SamplerFactory = Callable[..., Optional[Sampler]]


@dataclass(frozen=True)
class MethodInfo:
    """What the registry knows about one method."""

    name: str
    fn: Callable[..., np.ndarray]
    options: dict[str, Any] = field(default_factory=dict)  # option name -> default
    sampler_factory: Optional[SamplerFactory] = None  # builds the method's own selection sampler
    module: str = ""
    weighting: str = "none"  # the coreset loss weighting its source trains with (tdds_core.plan.coreset_weighting)
    check: Optional[Callable[..., None]] = None  # raises ScoringError on options that cannot go together
    stats: Optional[Callable[..., np.ndarray]] = None  # scores from per-sample statistics (tdds_core.statistics)


_METHODS: dict[str, MethodInfo] = {}
_EXPORTS: dict[str, tuple[str, Any]] = {}  # exported name -> (defining module, object)


def _short(module: str) -> str:
    """``"tdds_core.scoring.tdds"`` -> ``"tdds"`` (timm's module key)."""
    return module.rpartition(".")[2]


def _package() -> Any:
    """The ``tdds_core.scoring`` module object (present in ``sys.modules`` from the moment its
    ``__init__`` starts, so exports made while it discovers its modules land there)."""
    return sys.modules.get(PACKAGE)


def export(obj: T) -> T:
    """Decorator: publish ``obj`` (a public array-level function or class of a method module) as
    ``tdds_core.scoring.<obj.__name__>`` and add the name to the package's ``__all__``.

    The same name exported by two different modules is a ``ValueError``; so is a name that shadows
    a registry function or a method module of the package. Re-exporting from the same module
    (a reload) replaces the object.
    """
    name = getattr(obj, "__name__", None)
    module = getattr(obj, "__module__", None) or ""
    if not name or name.startswith("_"):
        raise ValueError(f"export needs a public named function or class, got {obj!r}")
    prev = _EXPORTS.get(name)
    if prev is not None and prev[0] != module:
        raise ValueError(f"{PACKAGE}.{name} is already exported by {prev[0]}")
    pkg = _package()
    submodules = {m.name for m in pkgutil.iter_modules(getattr(pkg, "__path__", []))}
    if name in __all__ or name in submodules:
        raise ValueError(f"export {module}.{name} would shadow {PACKAGE}.{name}")
    _EXPORTS[name] = (module, obj)
    if pkg is not None:
        setattr(pkg, name, obj)
        names = pkg.__dict__.setdefault("__all__", [])
        if name not in names:
            names.append(name)
    return obj


def _unexport(name: str) -> None:
    """Undo :func:`export` of ``name`` (package attribute and ``__all__`` entry)."""
    module, obj = _EXPORTS.pop(name)
    pkg = _package()
    if pkg is not None:
        if getattr(pkg, name, None) is obj:
            delattr(pkg, name)
        names = getattr(pkg, "__all__", None)
        if isinstance(names, list) and name in names:
            names.remove(name)


def register_method(name: str, *, sampler: Optional[SamplerFactory] = None, weighting: str = "none",
                    check: Optional[Callable[..., None]] = None,
                    stats: Optional[Callable[..., np.ndarray]] = None) -> Callable:
    """Decorator: register ``fn`` as scoring method ``name`` (its module is recorded for
    ``list_methods(module=...)``).

    ``sampler`` (optional) is a factory ``sampler(params) -> callable`` that builds the method's own
    selection rule from the method's resolved options (CCS's stratified sampling); selection uses
    it instead of the plain top-k. A factory that also accepts a ``dynamics`` keyword is given the
    dynamics object by :func:`get_sampler` (None when the caller has none), and a factory may
    return None for "plain top-k with these options" (DUAL without beta sampling).

    ``check`` (optional) validates resolved options before any work (``W <= T``); it is called with
    the options its signature names and raises :class:`~tdds_core.errors.ScoringError`.

    ``stats`` (optional) scores from a per-sample statistics folder (:mod:`tdds_core.statistics`)
    with the same options: :func:`compute_scores` calls it when it is given statistics instead of
    logits (the input is a property of the folder, not a flag).
    """

    def deco(fn: Callable[..., np.ndarray]) -> Callable[..., np.ndarray]:
        sig = inspect.signature(fn)
        params = list(sig.parameters.values())
        if not params or params[0].kind not in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD):
            raise TypeError(f"scoring method {name!r}: the first parameter must be the positional dynamics object")
        options: dict[str, Any] = {}
        has_nan_policy = False
        for p in params[1:]:
            if p.kind is inspect.Parameter.VAR_KEYWORD or p.kind is inspect.Parameter.VAR_POSITIONAL:
                raise TypeError(f"scoring method {name!r} may not take *args/**kwargs; list its options explicitly")
            if p.kind is not inspect.Parameter.KEYWORD_ONLY:
                raise TypeError(f"scoring method {name!r}: option {p.name!r} must be keyword-only")
            if p.name == "nan_policy":
                has_nan_policy = True
                continue
            if p.default is inspect.Parameter.empty:
                raise TypeError(f"scoring method {name!r}: option {p.name!r} needs a default")
            options[p.name] = p.default
        if not has_nan_policy:
            raise TypeError(f"scoring method {name!r} must accept the keyword-only option nan_policy")
        if name in _METHODS and _METHODS[name].module != fn.__module__:
            raise ValueError(f"scoring method {name!r} is already registered by {_METHODS[name].module}")
        if weighting not in ("batch", "sample", "mean1", "none"):
            raise ValueError(f"scoring method {name!r}: unknown weighting {weighting!r}; use batch, sample, mean1 or none")
        _METHODS[name] = MethodInfo(name=name, fn=fn, options=options, sampler_factory=sampler, module=fn.__module__,
                                    weighting=weighting, check=check, stats=stats)
        return fn

    return deco


def check_recorded_inputs(methods: Iterable[str], record: Any) -> None:
    """Refuse, before any training, methods that need logits when the run records statistics only
    (``dynamics.record: stats``): ConfigError naming them and the fix."""
    from ..errors import ConfigError

    if record != "stats":
        return
    need_logits = sorted({m for m in methods if _info(m).stats is None})
    if need_logits:
        with_stats = ", ".join(sorted(n for n, m in _METHODS.items() if m.stats is not None))
        raise ConfigError(f"dynamics.record: stats keeps no logits, and {', '.join(need_logits)} score from logits; set "
                          f"dynamics.record: both (or true), or use only methods that read statistics ({with_stats}).")


def method_reads_statistics(name: str) -> bool:
    """Whether registered method ``name`` scores from per-sample statistics (False when unknown)."""
    info = _METHODS.get(name)
    return info is not None and info.stats is not None


def _is_statistics(dynamics: Any) -> bool:
    from ..statistics import is_statistics

    return is_statistics(dynamics)


def unregister_method(name: str) -> MethodInfo:
    """Remove method ``name`` (for tests). When it was the last method of its module, the names
    that module exported with :func:`export` leave the package namespace too. Returns its info."""
    info = _METHODS.pop(name, None)
    if info is None:
        raise KeyError(f"scoring method {name!r} is not registered")
    if not any(other.module == info.module for other in _METHODS.values()):
        for exported in [n for n, (mod, _) in _EXPORTS.items() if mod == info.module]:
            _unexport(exported)
    return info


@contextmanager
def registered(name: str, fn: Callable[..., np.ndarray], *,
               sampler: Optional[SamplerFactory] = None) -> Iterator[Callable[..., np.ndarray]]:
    """``with registered("toy", toy_fn): ...``: method ``name`` exists only inside the block."""
    if name in _METHODS:
        raise ValueError(f"scoring method {name!r} is already registered by {_METHODS[name].module}")
    register_method(name, sampler=sampler)(fn)
    try:
        yield fn
    finally:
        if name in _METHODS:
            unregister_method(name)


def _info(name: str) -> MethodInfo:
    info = _METHODS.get(name)
    if info is None:
        from ..plugins import load_plugins

        load_plugins()   # a plugin may register it (tdds_core.plugins)
        info = _METHODS.get(name)
    if info is None:
        raise ScoringError(f"unknown scoring method {name!r}; known methods: {', '.join(list_methods())}")
    return info


def is_method(name: str) -> bool:
    """Whether ``name`` is a registered method."""
    return name in _METHODS


def _patterns(p: Patterns) -> list[str]:
    return [p] if isinstance(p, str) else list(p)


def list_methods(filter: Patterns = "", module: Patterns = "", exclude_filters: Patterns = "") -> list[str]:
    """Sorted registered method names (timm's ``list_models``).

    ``filter``: shell-style pattern(s) (``"d*"`` or ``["a*", "e*"]``), a name matching any is kept;
    ``module``: method module(s), short (``"tdds"``) or dotted (``"tdds_core.scoring.tdds"``);
    ``exclude_filters``: pattern(s) whose matches are dropped.
    """
    names = sorted(_METHODS)
    modules = [m for m in _patterns(module) if m]
    if modules:
        names = [n for n in names if _METHODS[n].module in modules or _short(_METHODS[n].module) in modules]
    include = [f for f in _patterns(filter) if f]
    if include:
        names = [n for n in names if any(fnmatch.fnmatch(n, f) for f in include)]
    exclude = [f for f in _patterns(exclude_filters) if f]
    if exclude:
        names = [n for n in names if not any(fnmatch.fnmatch(n, f) for f in exclude)]
    return names


def list_modules() -> list[str]:
    """Sorted short names of the modules that register at least one method (timm's ``list_modules``)."""
    return sorted({_short(info.module) for info in _METHODS.values()})


def get_method(name: str) -> Callable[..., np.ndarray]:
    """The registered function of method ``name`` (``ScoringError`` listing the known ones if unknown)."""
    return _info(name).fn


def method_weighting(name: str) -> str:
    """The coreset loss weighting method ``name``'s source trains with (``none`` unless registered)."""
    return _info(name).weighting


def method_options(name: str) -> dict[str, Any]:
    """Option name -> default value of method ``name``."""
    return dict(_info(name).options)


def resolve_params(name: str, **params: Any) -> dict[str, Any]:
    """Check ``params`` against method ``name``'s options and return the defaults updated with them.
    Options given as ``None`` fall back to their defaults."""
    info = _info(name)
    given = {k: v for k, v in params.items() if v is not None}
    unknown = sorted(set(given) - set(info.options))
    if unknown:
        valid = ", ".join(sorted(info.options)) or "(none)"
        raise ScoringError(
            f"unknown option{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))} for scoring method "
            f"{name!r}; valid options: {valid}"
        )
    out = dict(info.options)
    out.update(given)
    if info.check is not None:
        names = inspect.signature(info.check).parameters
        info.check(**{k: v for k, v in out.items() if k in names})
    return out


def _takes_dynamics(factory: Callable[..., Any]) -> bool:
    """Whether a sampler factory accepts a ``dynamics`` keyword (named, or through ``**kwargs``)."""
    try:
        params = list(inspect.signature(factory).parameters.values())[1:]  # the first takes the options
    except (TypeError, ValueError):  # a callable without a readable signature: the plain contract
        return False
    return any(p.kind is inspect.Parameter.VAR_KEYWORD
               or (p.name == "dynamics" and p.kind in (inspect.Parameter.KEYWORD_ONLY,
                                                      inspect.Parameter.POSITIONAL_OR_KEYWORD))
               for p in params)


def get_sampler(name: str, params: Optional[dict] = None, *, dynamics: Any = None) -> Optional[Sampler]:
    """The selection sampler of method ``name`` built from its (resolved) options, or None when the
    method uses the plain top-k selection (no factory, or the factory returned None for these
    options).

    ``dynamics``: the dynamics object the scores came from, handed to factories that accept a
    ``dynamics`` keyword (``factory(params, dynamics=dynamics)``, also when it is None, so the
    factory can say it needs one); other factories are called ``factory(params)`` as before."""
    info = _info(name)
    factory = info.sampler_factory
    if factory is None:
        return None
    resolved = resolve_params(name, **(params or {}))
    if _takes_dynamics(factory):
        return factory(resolved, dynamics=dynamics)
    return factory(resolved)


def compute_scores(name: str, dynamics: Any, *, nan_policy: str = "raise", **params: Any) -> np.ndarray:
    """Score every sample of ``dynamics`` with method ``name``.

    Parameters
    ----------
    name : str
        A registered method (see :func:`list_methods`).
    dynamics : Dynamics-like
        ``tdds_core.dynamics.Dynamics`` or ``tdds_core.dynamics_reference.ReferenceDynamics``.
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
    info = _info(name)
    resolved = resolve_params(name, **params)
    given = {k: v for k, v in params.items() if v is not None}
    if _is_statistics(dynamics):
        if info.stats is None:
            with_stats = ", ".join(sorted(n for n, m in _METHODS.items() if m.stats is not None)) or "none"
            raise ScoringError(f"method {name!r} scores from logits, and {dynamics.folder} holds per-sample statistics "
                               f"only; score it from a run that recorded logits, or use a method that reads statistics "
                               f"({with_stats}).")
        scores = info.stats(dynamics, nan_policy=nan_policy, **given)
    else:
        scores = info.fn(dynamics, nan_policy=nan_policy, **given)
    scores = np.asarray(scores)
    n = int(dynamics.num_samples)
    if scores.shape != (n,):
        raise ScoringError(f"scoring method {name!r} returned shape {scores.shape}, expected ({n},)")
    if scores.dtype != np.float64:
        scores = scores.astype(np.float64)
    if np.isnan(scores).any():
        raise ScoringError(f"scoring method {name!r} produced NaN scores with options {resolved}")
    return scores

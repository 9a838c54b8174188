"""The scoring-method registry (timm style): one decorated function per method.

A method is a function ``fn(dynamics, *, nan_policy="raise", **options) -> np.ndarray`` that
returns float64 ``(N,)`` scores where a HIGHER score means KEEP FIRST. Its keyword-only
parameters (other than ``nan_policy``) are its options; :func:`compute_scores` checks option names
against them, so a misspelt option is an error instead of being swallowed.
"""
from __future__ import annotations

import fnmatch
import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import numpy as np

from ..errors import ScoringError

__all__ = [
    "MethodInfo", "register_method", "get_method", "list_methods", "is_method", "method_options",
    "resolve_params", "get_sampler", "compute_scores", "NAN_POLICIES",
]

NAN_POLICIES = ("raise", "skip")

Sampler = Callable[..., np.ndarray]
SamplerFactory = Callable[[dict], Sampler]


@dataclass(frozen=True)
class MethodInfo:
    """What the registry knows about one method."""

    name: str
    fn: Callable[..., np.ndarray]
    options: dict[str, Any] = field(default_factory=dict)  # option name -> default
    sampler_factory: Optional[SamplerFactory] = None  # builds the method's own selection sampler
    module: str = ""


_METHODS: dict[str, MethodInfo] = {}


def register_method(name: str, *, sampler: Optional[SamplerFactory] = None) -> Callable:
    """Decorator: register ``fn`` as scoring method ``name``.

    ``sampler`` (optional) is a factory ``sampler(params) -> callable`` that builds the method's own
    selection rule from the method's resolved options (CCS's stratified sampling); selection uses
    it instead of the plain top-k.
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
        _METHODS[name] = MethodInfo(name=name, fn=fn, options=options, sampler_factory=sampler, module=fn.__module__)
        return fn

    return deco


def _info(name: str) -> MethodInfo:
    info = _METHODS.get(name)
    if info is None:
        raise ScoringError(f"unknown scoring method {name!r}; known methods: {', '.join(list_methods())}")
    return info


def is_method(name: str) -> bool:
    return name in _METHODS


def list_methods(filter: str = "") -> list[str]:
    """Sorted registered method names, optionally filtered by a shell-style pattern (``"d*"``)."""
    names = sorted(_METHODS)
    if filter:
        names = [n for n in names if fnmatch.fnmatch(n, filter)]
    return names


def get_method(name: str) -> Callable[..., np.ndarray]:
    """The registered function of method ``name`` (``ScoringError`` listing the known ones if unknown)."""
    return _info(name).fn


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
    return out


def get_sampler(name: str, params: Optional[dict] = None) -> Optional[Sampler]:
    """The selection sampler of method ``name`` built from its (resolved) options, or None when the
    method uses the plain top-k selection."""
    info = _info(name)
    if info.sampler_factory is None:
        return None
    return info.sampler_factory(resolve_params(name, **(params or {})))


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

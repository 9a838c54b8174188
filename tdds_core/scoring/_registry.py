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

A method also declares how its source selects (``strategy=``: a :mod:`tdds_core.strategies` name, or
``fn(options, rate) -> (name, strategy options)``; default ``topk``) and how many leading epochs of
the full-data run its setting reads (``epochs_read=``: a number, or ``fn(options, epochs) -> int``;
default all of them). :func:`selection_strategy` resolves a configured strategy against that default.
"""
from __future__ import annotations

import fnmatch
import inspect
import sys
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Optional, Sequence, Union

import numpy as np

from ..errors import ConfigError, ScoringError
from ..registry import Registry
from ..strategies import Option, StrategyContext, get_strategy, resolve_strategy_params, strategy_sampler
from ._view import ColumnView, mean_target_probability, open_view

__all__ = [
    "MethodInfo", "Option", "METHODS", "register_method", "unregister_method", "registered", "export", "get_method",
    "list_methods", "list_modules", "is_method", "method_options", "method_weighting", "resolve_params", "check_option",
    "get_sampler", "compute_scores", "score_view", "check_recorded_inputs", "method_reads_statistics", "NAN_POLICIES",
    "StrategyChoice", "default_strategy", "selection_strategy", "selection_options", "strategy_context", "epochs_read",
    "method_per_epoch",
]

#: The package whose namespace :func:`export` adds a plugin's public functions to.
PACKAGE = __name__.rpartition(".")[0]
NAN_POLICIES = ("raise", "skip")
WEIGHTINGS = ("batch", "sample", "mean1", "none")

Patterns = Union[str, Sequence[str]]
Sampler = Callable[..., np.ndarray]
#: ``factory(params, dynamics=None) -> sampler or None`` (None: plain top-k with these options): a method's
#: own sampler, the form before selection strategies (kept for plugins; a built-in method names a strategy)
SamplerFactory = Callable[..., Optional[Sampler]]
#: a method's default selection: a strategy name, or ``fn(resolved options, rate or None) -> (name, options)``
StrategyRule = Union[str, Callable[[dict, Optional[float]], tuple]]
#: leading epochs a setting reads: a number, or ``fn(resolved options, epochs) -> int``
EpochsRule = Union[int, Callable[[dict, int], int]]


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
    strategy: Optional[StrategyRule] = None  # its source's selection (None: topk)
    epochs_read: Optional[EpochsRule] = None  # leading epochs of the full-data run it reads (None: all)
    per_epoch: bool = False  # True: its coreset trains on a fresh subset of the kept size every epoch (RS2)

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
                    logits: Optional[bool] = None, strategy: Optional[StrategyRule] = None,
                    epochs_read: Optional[EpochsRule] = None, per_epoch: bool = False) -> Callable:
    """Decorator: register ``fn`` as scoring method ``name`` (its module is recorded for
    ``list_methods(module=...)``).

    ``options``: option name -> :class:`Option` (a bare value is an Option with that default and no
    type). Given, ``fn(view, **options)`` reads the column view; left out, ``fn(dynamics, *,
    nan_policy, **options)`` reads the logits (``logits=True``) and its keyword-only defaults are
    the options. ``weighting``: the coreset loss weighting its source trains with. ``strategy``: its
    source's selection, a strategy name or ``fn(options, rate) -> (name, strategy options)`` (None:
    ``topk``). ``epochs_read``: leading epochs of an ``epochs``-epoch full-data run it reads, a
    number or ``fn(options, epochs)`` (None: all). ``per_epoch``: its selection fixes only the kept size;
    the coreset trains on a fresh random subset of that size every epoch (RS2). ``sampler``: the older form of ``strategy``, a
    factory ``sampler(params, dynamics=None)`` (kept for plugins). ``check(options)``: raises
    ScoringError on resolved options that cannot go together (``W > T``).
    """
    if weighting not in WEIGHTINGS:
        raise ValueError(f"scoring method {name!r}: unknown weighting {weighting!r}; use {', '.join(WEIGHTINGS)}")

    def deco(fn: Callable[..., np.ndarray]) -> Callable[..., np.ndarray]:
        on_logits = options is None if logits is None else bool(logits)
        opts = (_signature_options(name, fn) if options is None else
                {k: v if isinstance(v, Option) else Option(v) for k, v in options.items()})
        METHODS.add(name, MethodInfo(name=name, fn=fn, options=opts, sampler_factory=sampler, module=fn.__module__,
                                     weighting=weighting, check=check, logits=on_logits, strategy=strategy,
                                     epochs_read=epochs_read, per_epoch=per_epoch), fn.__module__)
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
    return _info(method).options[name].check(method, name, value)


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


@dataclass(frozen=True)
class StrategyChoice:
    """The selection strategy of one (method setting, rate): its name, its resolved options and whether
    it is the method's own (``default``: then the selection's store key leaves it out)."""

    name: str
    params: dict
    default: bool

    def key(self) -> Optional[dict]:
        """What enters the selection key: None for the method's default, else name and options."""
        return None if self.default else {"name": self.name, "params": self.params}


def default_strategy(name: str, params: Optional[dict] = None, rate: Optional[float] = None) -> tuple[str, dict]:
    """The strategy method ``name``'s source selects with at pruning ``rate`` and its resolved options
    (``topk`` unless the method registered ``strategy=``)."""
    info = _info(name)
    rule = info.strategy
    if rule is None:
        sname, sparams = "topk", {}
    elif isinstance(rule, str):
        sname, sparams = rule, {}
    else:
        sname, sparams = rule(resolve_params(name, **(params or {})), rate)
    return sname, resolve_strategy_params(sname, sparams)


def selection_options(name: str) -> bool:
    """Whether method ``name`` has options that set its own selection (a ``strategy`` rule or an older
    ``sampler`` factory: CCS's beta, DUAL's beta_sampling), which ``tdds select --param`` may change."""
    info = _info(name)
    return callable(info.strategy) or info.sampler_factory is not None


def selection_strategy(method: str, params: Optional[dict] = None, rate: Optional[float] = None,
                       strategy: Optional[str] = None, strategy_params: Optional[dict] = None) -> StrategyChoice:
    """The strategy a (method setting, rate) selects with: ``strategy`` (a config's ``methods[].strategy``,
    ``tdds select --strategy``) or, when None, the method's default. ``strategy_params`` update the
    options of the method's default when the strategy is that one, else they are the options.
    ConfigError names an unknown strategy or option (and lists the known ones); ScoringError a bad value."""
    dname, dparams = default_strategy(method, params, rate)
    name = strategy or dname
    given = {**dparams, **(strategy_params or {})} if name == dname else dict(strategy_params or {})
    where = f"method {method!r} at pruning rate {rate}"
    try:
        get_strategy(name)
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None
    try:
        resolved = resolve_strategy_params(name, given)
    except ConfigError as e:
        whose = "the configured one" if strategy else "the method's own at this rate"
        raise ConfigError(f"{where}: {e} (strategy_params are options of the strategy in effect, {name}: {whose})") from None
    return StrategyChoice(name, resolved, default=(name == dname and resolved == dparams))


def strategy_context(method: Optional[str] = None, params: Optional[dict] = None, *, dynamics: Any = None,
                     rate: Optional[float] = None) -> StrategyContext:
    """What a strategy reads besides the scores: ``rate``, the scoring method and its resolved options,
    and, from ``dynamics`` (what the scores came from; None: not given), ``pred_mean(epochs, start)``,
    the mean target-class probability over the first ``epochs`` recorded epochs (computed once each)."""
    resolved = resolve_params(method, **(params or {})) if method is not None and is_method(method) else dict(params or {})
    pred_mean = None
    if dynamics is not None:
        cache: dict[tuple, np.ndarray] = {}

        def pred_mean(epochs: int, start: Optional[int] = None) -> np.ndarray:
            key = (int(epochs), start)
            if key not in cache:
                cache[key] = mean_target_probability(dynamics, int(epochs), start)
            return cache[key]
    return StrategyContext(rate=None if rate is None else float(rate), method=method, method_params=resolved,
                           dynamics=dynamics, pred_mean=pred_mean)


def get_sampler(name: str, params: Optional[dict] = None, *, dynamics: Any = None, rate: Optional[float] = None,
                choice: Optional[StrategyChoice] = None) -> Optional[Sampler]:
    """The selection sampler for scores of method ``name`` with ``params`` at pruning ``rate``: the
    strategy ``choice`` (:func:`selection_strategy`; None: the method's own) built by
    :func:`tdds_core.strategies.strategy_sampler`, or None for the plain top-k. ``dynamics``: what the
    scores came from (None when the caller has none; DUAL's Beta sampling needs it). A method registered
    with an older ``sampler=`` factory gets ``factory(params, dynamics=...)`` for its own selection."""
    info = _info(name)
    if choice is None or choice.default:
        if info.sampler_factory is not None:
            return info.sampler_factory(resolve_params(name, **(params or {})), dynamics=dynamics)
        choice = choice or selection_strategy(name, params, rate)
    return strategy_sampler(choice.name, choice.params, strategy_context(name, params, dynamics=dynamics, rate=rate))


def method_per_epoch(name: Optional[str]) -> bool:
    """Whether a selection of method ``name`` trains on a fresh subset every epoch (RS2) instead of on
    its own samples (False for an unknown or missing name)."""
    return bool(name) and is_method(str(name)) and _info(str(name)).per_epoch


def epochs_read(name: str, params: Optional[dict], epochs: int) -> int:
    """How many leading epochs of an ``epochs``-epoch full-data run method ``name`` with ``params``
    reads (0 .. ``epochs``; an unset ``start`` is the run's first epoch, 0): TDDS ``start + T``, EL2N
    ``start + k``, DUAL ``start + epochs``; AUM, Forgetting, Dyn-Unc up to ``stop`` (all by default);
    CCS its base's; Entropy and Moderate all (the final model's clean pass), unless they read a given
    epoch or feature file; Random none. A method that registers no ``epochs_read`` reads all."""
    info = _info(name)
    total = int(epochs)
    rule = info.epochs_read
    if rule is None:
        return total
    n = rule if isinstance(rule, int) else rule(resolve_params(name, **(params or {})), total)
    return max(0, min(total, int(n)))


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


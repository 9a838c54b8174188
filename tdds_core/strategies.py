"""Selection strategies: how ``n_keep`` samples are chosen from the scores of ANY method (issue #27).

A strategy is one registered function over a score vector::

    strategy(scores, n_keep, *, labels, seed, context, **options) -> positions

``scores`` float64 ``[N]`` (higher = keep first, ``-inf`` = skipped at scoring), ``labels`` int64
``[N]`` or None, ``seed`` the selection's seed, ``context`` a :class:`StrategyContext` (rate, scoring
method, the recording); it returns ``n_keep`` distinct int64 positions. Its options are declared at
registration (:class:`Option`) and checked by :func:`resolve_strategy_params`. Built in:

* ``topk``: the highest scores, ties by the seeded permutation (every method's default but two);
* ``class_balanced``: the same fraction of every class, the highest scores inside each;
* ``ccs``: CCS's hard cutoff and stratified sampling (Zheng et al., ICLR 2023);
* ``dual_beta``: DUAL's Beta sampling (Cho et al., ICML 2025).

A scoring method names its own default (``register_method(..., strategy=...)`` in
:mod:`tdds_core.scoring`: CCS -> ``ccs``, DUAL -> ``dual_beta`` or ``topk`` by its option
``beta_sampling``, the others ``topk``); ``methods[].strategy`` or ``tdds select --strategy``
overrides it. :func:`strategy_sampler` turns a strategy, its options and a context into the
``sampler(scores, n_keep, *, labels, seed)`` that :func:`tdds_core.selection.select` applies (None
for ``topk``: select's own top-k, the same positions). A plugin adds a strategy with
:func:`register_strategy` (one decorated function).
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import numpy as np

from .errors import ConfigError, ScoringError
from .registry import Registry
from .selection import class_quotas, num_to_keep, tie_break_keys

__all__ = [
    "Option", "StrategyInfo", "StrategyContext", "STRATEGIES", "register_strategy", "get_strategy", "list_strategies",
    "strategy_options", "resolve_strategy_params", "strategy_sampler", "topk", "class_balanced", "ccs", "dual_beta",
    "ccs_sample", "ccs_beta", "hard_end_of", "dual_beta_pdf", "dual_beta_weights", "dual_beta_sample", "HARD_END",
    "DEFAULT_BETA", "CCS_BETA_CIFAR10", "STRATA", "ANCHOR_TOP",
]


@dataclass(frozen=True)
class Option:
    """One declared option of a registered function (a scoring method or a selection strategy): its
    default and what a value must be (:meth:`check`).

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

    def check(self, owner: str, name: str, value: Any) -> Any:
        """``value`` when this option accepts it; ScoringError ``"<owner>: <name> must be ..."`` otherwise."""
        if not self.accepts(value):
            doc = f" ({self.doc})" if self.doc else ""
            raise ScoringError(f"{owner}: {name}{doc} must be {self.requirement()}, got {value!r}"
                               + (f"; {self.hint}" if self.hint else ""))
        return value


@dataclass(frozen=True)
class StrategyContext:
    """What a strategy may read besides the scores (every field may be absent)."""

    rate: Optional[float] = None            # the pruning rate asked for (None: 1 - n_keep / N)
    method: Optional[str] = None            # the scoring method the scores are of
    method_params: dict = field(default_factory=dict)   # its resolved options
    dynamics: Any = None                    # the recording the scores came from (None: not given)
    #: ``pred_mean(epochs, start) -> float64 [N]``: each sample's mean target-class probability over the
    #: first ``epochs`` recorded epochs from ``start`` (NaN where its inputs are not finite); None without dynamics
    pred_mean: Optional[Callable[[int, Optional[int]], np.ndarray]] = None


@dataclass(frozen=True)
class StrategyInfo:
    """What the registry knows about one strategy."""

    name: str
    fn: Callable[..., np.ndarray]
    options: dict[str, Option] = field(default_factory=dict)
    check: Optional[Callable[[dict], None]] = None      # raises ScoringError on options that cannot go together
    needs_dynamics: bool = False                         # refuses a context without pred_mean when built
    module: str = ""


STRATEGIES: Registry[StrategyInfo] = Registry(
    "selection strategy", hint="set methods[].strategy (or tdds select --strategy) to one of them")


def register_strategy(name: str, *, options: Optional[dict[str, Option]] = None, check: Optional[Callable] = None,
                      needs_dynamics: bool = False) -> Callable:
    """Decorator: register ``fn(scores, n_keep, *, labels, seed, context, **options)`` as strategy ``name``."""
    def deco(fn: Callable[..., np.ndarray]) -> Callable[..., np.ndarray]:
        STRATEGIES.add(name, StrategyInfo(name, fn, dict(options or {}), check, needs_dynamics, fn.__module__),
                       fn.__module__)
        return fn
    return deco


def get_strategy(name: str) -> StrategyInfo:
    """The registered strategy ``name``; ConfigError naming the known ones otherwise."""
    return STRATEGIES.get(name)


def list_strategies() -> list[str]:
    """Sorted registered strategy names."""
    return STRATEGIES.names()


def strategy_options(name: str) -> dict[str, Any]:
    """Option name -> default value of strategy ``name``."""
    return {k: o.default for k, o in get_strategy(name).options.items()}


def resolve_strategy_params(name: str, params: Optional[Mapping] = None) -> dict[str, Any]:
    """The defaults of strategy ``name`` updated with ``params`` (None values fall back to the default),
    checked (float options as floats): ConfigError for an unknown strategy or option, ScoringError for a
    bad value."""
    info = get_strategy(name)
    given = {k: v for k, v in dict(params or {}).items() if v is not None}
    unknown = sorted(set(given) - set(info.options))
    if unknown:
        raise ConfigError(f"unknown option{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))} for "
                          f"selection strategy {name!r}; valid options: {', '.join(info.options) or '(none)'}")
    out = {k: o.default for k, o in info.options.items()}
    out.update(given)
    for k, v in out.items():
        opt = info.options[k]
        opt.check(name, k, v)
        if opt.type is float and v is not None:
            out[k] = float(v)       # 3 and 3.0 are one setting (and one selection key)
    if info.check is not None:
        info.check(out)
    return out


def _show(v: Any) -> str:
    return str(dict(v) if isinstance(v, Mapping) else v)


def strategy_sampler(name: str, params: Optional[Mapping] = None,
                     context: Optional[StrategyContext] = None) -> Optional[Callable[..., np.ndarray]]:
    """``sampler(scores, n_keep, *, labels=None, seed=0) -> positions`` applying strategy ``name`` with
    ``params`` (checked now) and ``context``, for :func:`tdds_core.selection.select`; None for ``topk``
    (select's own top-k: the same positions, and the same per-class ties when class-balanced)."""
    opts = resolve_strategy_params(name, params)
    ctx = context or StrategyContext()
    info = get_strategy(name)
    if info.needs_dynamics and ctx.pred_mean is None:
        raise ScoringError(
            f"selection strategy {name} needs the training dynamics at selection time (each sample's mean target-class "
            "probability over the early epochs); pass the dynamics (CLI: tdds select --dynamics DIR; API: "
            "get_sampler(..., dynamics=...) or strategy_context(dynamics=...))")
    if name == "topk":
        return None

    def sampler(scores: np.ndarray, n_keep: int, *, labels: Optional[np.ndarray] = None, seed: int = 0) -> np.ndarray:
        return info.fn(scores, n_keep, labels=labels, seed=seed, context=ctx, **opts)

    sampler.__name__ = f"{name}_sampler(" + ", ".join(f"{k}={_show(v)}" for k, v in opts.items()) + ")"
    return sampler


# ------------------------------------------------------------------------------------------ topk, class_balanced
@register_strategy("topk")
def topk(scores: np.ndarray, n_keep: int, *, labels: Optional[np.ndarray], seed: Optional[int],
         context: StrategyContext) -> np.ndarray:
    """The ``n_keep`` highest scores; equal scores by :func:`tdds_core.selection.tie_break_keys` (a
    permutation seeded with ``seed``). The selection of TDDS (Zhang et al., CVPR 2024) and of every
    baseline whose source keeps the top of its ranking."""
    s = np.asarray(scores, dtype=np.float64)
    return np.lexsort((tie_break_keys(len(s), seed), -s))[: int(n_keep)].astype(np.int64)


@register_strategy("class_balanced")
def class_balanced(scores: np.ndarray, n_keep: int, *, labels: Optional[np.ndarray], seed: Optional[int],
                   context: StrategyContext) -> np.ndarray:
    """The same fraction of every class (largest-remainder quotas of ``(1 - rate) n_c`` summing to
    ``n_keep``, :func:`tdds_core.selection.class_quotas`; ``n_keep / N`` when the context has no rate),
    the highest scores inside each class, ties by the seeded permutation: ``selection.class_balanced``
    as a strategy (the per-class budget of DeepCore's ``balance=True``, Guo et al., DEXA 2022)."""
    if labels is None:
        raise ScoringError("selection strategy class_balanced needs labels; pass the dynamics (--dynamics) or --labels")
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64)
    if y.shape != s.shape:
        raise ScoringError(f"class_balanced: {len(y)} labels for {len(s)} scores")
    rate = context.rate if context.rate is not None and num_to_keep(context.rate, len(s)) == n_keep else None
    tie = tie_break_keys(len(s), seed)
    parts = [np.zeros(0, dtype=np.int64)]
    for c, q in class_quotas(y, rate, n_keep=int(n_keep)).items():
        members = np.flatnonzero(y == c)
        parts.append(members[np.lexsort((tie[members], -s[members]))][:q])
    return np.concatenate(parts).astype(np.int64)


# ------------------------------------------------------------------------------------------ ccs
#: which end of a method's score (in tdds's higher-keeps direction) holds the hardest samples
HARD_END = {"aum": "low", "moderate": "low"}
#: the CCS paper's hard cutoff ratio beta per pruning rate for CIFAR-10 (see tdds_core.scoring.ccs)
CCS_BETA_CIFAR10: dict[float, float] = {0.3: 0.0, 0.5: 0.0, 0.7: 0.1, 0.8: 0.1, 0.9: 0.3}
#: the table ``beta="auto"`` reads (interpolated linearly in the rate, flat outside its range)
DEFAULT_BETA: dict[float, float] = CCS_BETA_CIFAR10
#: the authors' number of strata (``stratas = 50`` in ``stratified_sampling``)
STRATA = 50
WARN_RATE = 0.7     # pruning rates from which beta = 0 (no hard cutoff) draws a warning
_RATE_TOL = 1e-9


def hard_end_of(method: Optional[str], params: Optional[Mapping] = None) -> str:
    """The hardest end of ``method``'s score: "low" for AUM and Moderate (and CCS over them), else "high"."""
    if method == "ccs":
        method = (params or {}).get("base", "aum")
    return HARD_END.get(method or "", "high")


def _beta_number(v: Any, what: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
        raise ScoringError(f"ccs: {what} must be a number in [0, 1), got {v!r}")
    f = float(v)
    if not (0.0 <= f < 1.0):
        raise ScoringError(f"ccs: {what} must be in [0, 1), got {v!r}")
    return f


def _beta_table(beta: Any) -> Optional[list[tuple[float, float]]]:
    """Validate ``beta``; the sorted ``(rate, beta)`` table for "auto" or a mapping, None for a number."""
    if isinstance(beta, str):
        if beta != "auto":
            raise ScoringError(f"ccs: beta must be 'auto', a number in [0, 1) or a mapping rate -> beta, got {beta!r}")
        return sorted(DEFAULT_BETA.items())
    if isinstance(beta, Mapping):
        if not beta:
            raise ScoringError("ccs: a beta mapping (pruning rate -> beta) needs at least one entry")
        table = {}
        for k, v in beta.items():
            try:
                r = float(k)
            except (TypeError, ValueError):
                raise ScoringError(f"ccs: beta mapping keys are pruning rates in (0, 1), got {k!r}") from None
            if isinstance(k, bool) or not (0.0 < r < 1.0) or math.isnan(r):
                raise ScoringError(f"ccs: beta mapping keys are pruning rates in (0, 1), got {k!r}")
            b = _beta_number(v, f"beta at rate {k!r}")
            if b > r + _RATE_TOL:
                raise ScoringError(f"ccs: beta {b} at rate {r} would cut more samples than the rate prunes; "
                                   "beta must not exceed the pruning rate")
            table[r] = b
        return sorted(table.items())
    _beta_number(beta, "beta (hard cutoff ratio)")
    return None


def ccs_beta(rate: float, beta: Any = "auto") -> float:
    """The hard cutoff ratio CCS uses at pruning ``rate`` for the option ``beta`` ("auto": the
    CIFAR-10 table :data:`DEFAULT_BETA`; a number; or a mapping rate -> beta), interpolated linearly
    between the table's rates and flat outside them."""
    table = _beta_table(beta)
    if table is None:
        return float(beta)
    r = float(rate)
    for tr, tb in table:
        if abs(tr - r) <= _RATE_TOL:
            return tb
    return float(np.interp(r, [tr for tr, _ in table], [tb for _, tb in table]))


def _strata_of(v: np.ndarray, k: int) -> np.ndarray:
    """Stratum ``0 .. k-1`` of each value: ``[lo + i*step, lo + (i+1)*step)``, ``step = (top - lo) / k``,
    ``top = hi * 1.0001`` as the authors (``hi <= 0`` and all-equal values: see tdds_core.scoring.ccs)."""
    lo, hi = float(v.min()), float(v.max())
    if hi == lo:
        return np.zeros(len(v), dtype=np.int64)
    top = hi * 1.0001 if hi > 0 else hi + 1e-4 * max(abs(hi), hi - lo)
    edges = lo + np.arange(k + 1, dtype=np.float64) * ((top - lo) / k)  # lo + i * step, the authors' bin_range(i)
    return np.clip(np.searchsorted(edges, v, side="right") - 1, 0, k - 1).astype(np.int64)


def _budgets(sizes: np.ndarray, total: int) -> np.ndarray:
    """The authors' ``bin_allocate``: strata from the smallest up (ties by index), each
    ``min(size, rest // strata left)``."""
    k = len(sizes)
    out = np.zeros(k, dtype=np.int64)
    rest = int(total)
    for j, i in enumerate(np.argsort(sizes, kind="stable")):
        out[i] = min(int(sizes[i]), rest // (k - j))
        rest -= out[i]
    return out


def ccs_sample(scores: np.ndarray, n_keep: int, *, beta: Any = "auto", strata: int = STRATA, hard_end: str = "low",
               seed: int = 0) -> np.ndarray:
    """CCS's coverage-centric stratified sample of ``n_keep`` positions (Zheng et al., ICLR 2023; the
    authors' ``core/data/Coreset.py``: ``mislabel_mask``, ``stratified_sampling``, ``bin_allocate``;
    the steps, sources and deviations are in :mod:`tdds_core.scoring.ccs`).

    ``scores`` ``(N,)`` (non-finite entries are never chosen); ``beta``: hard cutoff ratio ("auto": the
    CCS paper's CIFAR-10 value at the rate ``1 - n_keep / N``, a number in ``[0, 1)`` or a mapping rate
    -> beta; a UserWarning when it is 0 at a rate >= 0.7); ``strata``: equal-width score ranges (50);
    ``hard_end``: which end of ``scores`` is hardest; ``seed``: ``numpy.random.default_rng`` of the
    draws. Returns int64 ``(n_keep,)`` positions, ascending."""
    _beta_table(beta)
    get_strategy("ccs").options["strata"].check("ccs", "strata", strata)
    if hard_end not in ("low", "high"):
        raise ScoringError(f"ccs: hard_end must be one of low, high, got {hard_end!r}")
    s = np.asarray(scores, dtype=np.float64)
    n_keep, N = int(n_keep), len(s)
    rate = 1.0 - n_keep / N if N else 0.0
    b = ccs_beta(rate, beta)
    if b == 0.0 and rate >= WARN_RATE - _RATE_TOL:
        warnings.warn(
            f"ccs: beta is 0 at pruning rate {rate:.4g} (beta={beta!r}): CCS then has no hard cutoff and is plain "
            "stratified sampling over the base score; the CCS paper cuts the hardest samples at high rates "
            "(e.g. beta=0.3 at 90% on CIFAR-10)", UserWarning, stacklevel=2)
    pos = np.flatnonzero(np.isfinite(s))
    # hardest first, ties by position: the authors' cutoff sort, whose order the strata keep
    remaining = pos[np.lexsort((pos, s[pos] if hard_end == "low" else -s[pos]))][int(np.floor(b * len(pos))):]
    if n_keep > len(remaining):
        raise ScoringError(f"ccs: keeping {n_keep} samples needs that many after the hard cutoff, but beta={b:g} leaves "
                           f"{len(remaining)} of {N}; lower beta")
    if n_keep <= 0:
        return np.zeros(0, dtype=np.int64)
    k = int(strata)
    bins = _strata_of(s[remaining], k)
    by_bin = np.argsort(bins, kind="stable")  # members of each stratum, in hard order
    sizes = np.bincount(bins, minlength=k)
    budgets = _budgets(sizes, n_keep)
    starts = np.concatenate([[0], np.cumsum(sizes)])
    rng = np.random.default_rng(int(seed))
    chosen = []
    for i in range(k):
        pool = remaining[by_bin[starts[i]:starts[i + 1]]]
        chosen.append(pool[rng.permutation(len(pool))[:budgets[i]]])
    return np.sort(np.concatenate(chosen)).astype(np.int64)


@register_strategy("ccs", options={
    "beta": Option("auto", doc="hard cutoff ratio: 'auto' (the CCS paper's CIFAR-10 row by rate), a number in "
                   "[0, 1) or a mapping rate -> beta"),
    "strata": Option(STRATA, int, min=1, doc="equal-width score ranges"),
    "hard_end": Option(None, choices=(None, "low", "high"), doc="the hardest end of the score; None: low for AUM "
                       "and Moderate scores, high (higher = harder) for any other"),
}, check=lambda opts: _beta_table(opts["beta"]))
def ccs(scores: np.ndarray, n_keep: int, *, labels: Optional[np.ndarray], seed: int, context: StrategyContext,
        beta: Any, strata: int, hard_end: Optional[str]) -> np.ndarray:
    """CCS (Zheng et al., "Coverage-centric Coreset Selection for High Pruning Rates", ICLR 2023,
    ``haizhongzheng/Coverage-centric-coreset-selection`` ``core/data/Coreset.py``): drop the
    ``floor(beta * N)`` hardest samples, then sample ``n_keep`` across 50 equal-width score strata
    (:func:`ccs_sample`). For a score other than AUM the hard end must be known: ``hard_end`` None reads
    it from the context's method (:func:`hard_end_of`: "high", higher score = harder, for any method
    but AUM and Moderate)."""
    end = hard_end or hard_end_of(context.method, context.method_params)
    return ccs_sample(scores, n_keep, beta=beta, strata=strata, hard_end=end, seed=seed)


# ------------------------------------------------------------------------------------------ dual_beta
ANCHOR_TOP = 10     # how many of the highest-scored samples set DUAL's Beta anchor


def _log_beta_pdf(x: np.ndarray, a: float, b: float) -> np.ndarray:
    """log of the Beta(a, b) density at ``x`` in ``[0, 1]`` (``0 * log 0 = 0``)."""
    x = np.asarray(x, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        lo = np.where(a == 1.0, 0.0, (a - 1.0) * np.log(x))
        hi = np.where(b == 1.0, 0.0, (b - 1.0) * np.log1p(-x))
    return lo + hi - (math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b))


def dual_beta_pdf(x: Any, a: float, b: float) -> np.ndarray:
    """The Beta(a, b) density at ``x`` in ``[0, 1]`` (float64, via ``math.lgamma``; ``a, b > 0``)."""
    if not (a > 0 and b > 0):
        raise ScoringError(f"Beta density needs a > 0 and b > 0, got a={a}, b={b}")
    return np.exp(_log_beta_pdf(x, float(a), float(b)))


def _beta_log_weights(scores: np.ndarray, pred_mean: np.ndarray, n_keep: int, c_d: float) -> np.ndarray:
    """``log(BetaPDF(pred_mean; a, b) * score)`` per sample (``-inf`` = never drawn)."""
    s = np.asarray(scores, dtype=np.float64)
    m = np.asarray(pred_mean, dtype=np.float64)
    n = len(s)
    if m.shape != s.shape:
        raise ScoringError(f"dual beta sampling: {len(m)} pred_mean values for {n} scores")
    if np.isnan(s).any():
        raise ScoringError("dual beta sampling: the scores hold NaN")
    if not (1 <= n_keep <= n):
        raise ScoringError(f"dual beta sampling: n_keep must be in 1..{n}, got {n_keep}")
    ok = np.isfinite(s) & np.isfinite(m)
    pos = np.flatnonzero(ok)
    if len(pos) == 0:
        raise ScoringError("dual beta sampling: no sample has a finite score and pred_mean")
    top = pos[np.lexsort((pos, -s[pos]))][:ANCHOR_TOP]  # highest scores, ties by position
    anchor = float(m[top].mean())
    r = 1.0 - n_keep / n
    b = 15.0 * (1.0 - anchor) * (1.0 - r ** float(c_d))
    a = 16.0 - b
    if not (b > 0.0 and a > 0.0):
        raise ScoringError(
            f"dual beta sampling is degenerate here: anchor={anchor:.6g} (mean pred_mean of the {len(top)} highest-scored "
            f"samples) and r={r:.6g} give Beta(a={a:.6g}, b={b:.6g}); the top samples' target probability is 1, so the "
            "scores carry no signal. Turn beta_sampling off (or use another strategy).")
    x = np.clip(m, np.nextafter(0.0, 1.0), np.nextafter(1.0, 0.0))
    logw = np.full(n, -np.inf)
    live = ok & (s > 0)
    with np.errstate(divide="ignore"):
        logw[live] = _log_beta_pdf(x[live], a, b) + np.log(s[live])
    return logw


def dual_beta_weights(scores: np.ndarray, pred_mean: np.ndarray, n_keep: int, *, c_d: float = 4.0) -> np.ndarray:
    """The first-draw probabilities of Beta sampling: ``BetaPDF(pred_mean; a, b) * score`` normalised
    to sum 1 (0 for samples never drawn); ``a, b`` as in :func:`dual_beta_sample`."""
    logw = _beta_log_weights(scores, pred_mean, int(n_keep), float(c_d))
    if not np.isfinite(logw).any():
        return np.zeros(len(logw))
    w = np.exp(logw - logw.max())
    return w / w.sum()


def dual_beta_sample(scores: np.ndarray, pred_mean: np.ndarray, n_keep: int, *, c_d: float = 4.0,
                     seed: int = 0) -> np.ndarray:
    """DUAL's Beta sampling (Cho et al., ICML 2025; ``behaapyy/dual-pruning``
    ``exp_cifar/data_subset.py`` ``beta_sampling``): ``anchor`` = mean ``pred_mean`` of the
    :data:`ANCHOR_TOP` highest scores, ``r = 1 - n_keep / N``, ``b = 15 (1 - anchor) (1 - r ** c_d)``,
    ``a = 16 - b``; ``n_keep`` distinct positions drawn without replacement with probability
    proportional to ``BetaPDF(pred_mean; a, b) * score`` (sequential draws in the Gumbel-top-k form,
    ``numpy.random.default_rng(seed)``). ``-inf`` scores, score 0 and NaN ``pred_mean`` are never drawn.
    Returns int64 ``(n_keep,)`` in draw order (deviations: :mod:`tdds_core.scoring.dual`)."""
    n_keep = int(n_keep)
    logw = _beta_log_weights(scores, pred_mean, n_keep, float(c_d))
    live = int(np.isfinite(logw).sum())
    if live < n_keep:
        raise ScoringError(
            f"dual beta sampling: only {live} of {len(logw)} samples have a positive weight (score > 0, finite inputs) "
            f"but {n_keep} are to be kept; lower the pruning rate or turn beta_sampling off")
    keys = logw + np.random.default_rng(int(seed)).gumbel(size=len(logw))
    return np.argsort(-keys, kind="stable")[:n_keep].astype(np.int64)


@register_strategy("dual_beta", options={
    "c_d": Option(4.0, float, min=0, min_open=True, doc="Beta sampling exponent c_D", hint="the DUAL authors use 4"),
    "epochs": Option(30, int, min=1, doc="early epochs of pred_mean", hint="the DUAL authors use 30 (CIFAR)"),
    "start": Option(None, int, min=0, doc="first epoch of pred_mean (None: the first recorded)"),
}, needs_dynamics=True)
def dual_beta(scores: np.ndarray, n_keep: int, *, labels: Optional[np.ndarray], seed: int, context: StrategyContext,
              c_d: float, epochs: int, start: Optional[int]) -> np.ndarray:
    """DUAL's Beta sampling (Cho et al., "Lightweight Dataset Pruning without Full Training via Example
    Difficulty and Prediction Uncertainty", ICML 2025) over any score: :func:`dual_beta_sample` with
    ``pred_mean`` = the mean target-class probability over the first ``epochs`` epochs of the full-data
    run, read from the recorded dynamics (``context.pred_mean``). It draws over the whole dataset, as
    the authors do, so a class-balanced selection is refused."""
    m = context.pred_mean(int(epochs), start)
    if len(m) != len(scores):
        raise ScoringError(
            f"dual_beta draws over the whole dataset ({len(m)} samples, as the DUAL authors do) but got {len(scores)} "
            "scores; class-balanced selection is not supported with beta_sampling (strategy dual_beta), drop one of "
            "the two")
    return dual_beta_sample(scores, m, n_keep, c_d=float(c_d), seed=seed)

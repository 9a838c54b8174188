"""The scoring registry itself: a method added at test time by one new module is listed, exported,
run by compute_scores, checked for option typos, and removed again so no other test sees it."""
from __future__ import annotations

import importlib
import sys
import textwrap
from types import SimpleNamespace

import numpy as np
import pytest

import tdds_core.scoring as scoring
from tdds_core.errors import ScoringError
from tdds_core.scoring import (compute_scores, export, get_method, get_sampler, is_method, list_methods, list_modules,
                               method_options, register_method, registered, unregister_method)

TOY_SOURCE = '''
"""A toy scoring method living in its own module (what a new method file looks like)."""
from typing import Any

import numpy as np

from tdds_core.scoring import export, register_method


@export
def toy_ramp(n: int, *, scale: float = 1.0) -> np.ndarray:
    """float64 ``(n,)``: ``scale * [0, 1, ..., n-1]``; higher = later sample = keep first."""
    return scale * np.arange(n, dtype=np.float64)


@register_method("toy_ramp_method")
def toy(dynamics: Any, *, scale: float = 1.0, nan_policy: str = "raise") -> np.ndarray:
    """Toy: a ramp over the samples."""
    return toy_ramp(int(dynamics.num_samples), scale=scale)
'''


@pytest.fixture
def toy_module(tmp_path, monkeypatch):
    """Write ``toy_scorer_mod.py`` into a tmp dir on sys.path, import it, and undo everything after."""
    (tmp_path / "toy_scorer_mod.py").write_text(textwrap.dedent(TOY_SOURCE))
    monkeypatch.syspath_prepend(str(tmp_path))
    before = set(list_methods())
    module = importlib.import_module("toy_scorer_mod")
    try:
        yield module
    finally:
        if is_method("toy_ramp_method"):
            unregister_method("toy_ramp_method")
        sys.modules.pop("toy_scorer_mod", None)
        assert set(list_methods()) == before


def test_a_new_module_registers_and_exports(toy_module):
    name = "toy_ramp_method"
    assert name in list_methods()
    assert list_methods(module="toy_scorer_mod") == [name]
    assert list_methods("toy_*") == [name] and name not in list_methods(exclude_filters="toy_*")
    assert "toy_scorer_mod" in list_modules()
    assert method_options(name) == {"scale": 1.0}
    assert get_method(name) is toy_module.toy and get_sampler(name) is None
    # @export put the array-level function into the package namespace and __all__
    assert scoring.toy_ramp is toy_module.toy_ramp and "toy_ramp" in scoring.__all__
    from tdds_core.scoring import toy_ramp  # noqa: F401  (importable like the built-in exports)

    dyn = SimpleNamespace(num_samples=5)
    s = compute_scores(name, dyn, scale=2.0)
    assert s.dtype == np.float64 and s.shape == (5,)
    np.testing.assert_array_equal(s, [0.0, 2.0, 4.0, 6.0, 8.0])
    with pytest.raises(ScoringError, match=r"unknown option 'scael' for scoring method 'toy_ramp_method'; valid options: scale"):
        compute_scores(name, dyn, scael=2.0)

    unregister_method(name)
    assert name not in list_methods() and "toy_scorer_mod" not in list_modules()
    assert not hasattr(scoring, "toy_ramp") and "toy_ramp" not in scoring.__all__
    with pytest.raises(ScoringError, match="unknown scoring method 'toy_ramp_method'"):
        compute_scores(name, dyn)


def test_registered_context_manager_with_a_module_set_on_the_function():
    def flat(dynamics, *, level: int = 0, nan_policy: str = "raise") -> np.ndarray:
        """Toy: every sample scores ``level``."""
        return np.full(int(dynamics.num_samples), level, dtype=np.int64)

    flat.__module__ = "toy_flat_mod"
    dyn = SimpleNamespace(num_samples=3)
    with registered("toy_flat", flat):
        assert list_methods(module="toy_flat_mod") == ["toy_flat"]
        s = compute_scores("toy_flat", dyn, level=4)
        assert s.dtype == np.float64  # the registry casts to float64
        np.testing.assert_array_equal(s, [4.0, 4.0, 4.0])
        with pytest.raises(ScoringError, match="unknown option 'levle'"):
            compute_scores("toy_flat", dyn, levle=1)
        with pytest.raises(ValueError, match="already registered"):
            with registered("toy_flat", flat):
                pass  # pragma: no cover
    assert not is_method("toy_flat")
    with pytest.raises(KeyError):
        unregister_method("toy_flat")


def test_registry_checks_shape_and_name_clashes():
    def short(dynamics, *, nan_policy: str = "raise") -> np.ndarray:
        """Toy: one score too few."""
        return np.zeros(int(dynamics.num_samples) - 1)

    short.__module__ = "toy_short_mod"
    with registered("toy_short", short):
        with pytest.raises(ScoringError, match=r"returned shape \(2,\), expected \(3,\)"):
            compute_scores("toy_short", SimpleNamespace(num_samples=3))
    # a built-in name from another module is refused, and the built-in stays
    with pytest.raises(ValueError, match="'tdds' is already registered by tdds_core.scoring.tdds"):
        register_method("tdds")(short)
    assert get_method("tdds").__module__ == "tdds_core.scoring.tdds"


def test_export_refuses_shadowing_and_duplicates():
    def tdds_from_epochs():  # pragma: no cover - never called
        return None

    def compute_scores():  # pragma: no cover
        return None

    def aum():  # pragma: no cover
        return None

    for fn in (tdds_from_epochs, compute_scores, aum):
        fn.__module__ = "toy_clash_mod"
        with pytest.raises(ValueError, match="already exported|would shadow"):
            export(fn)
    assert scoring.tdds_from_epochs.__module__ == "tdds_core.scoring.tdds"
    assert scoring.aum.__name__ == "tdds_core.scoring.aum"


# every name `from tdds_core.scoring import ...` gave before discovery replaced the hand-kept lists
PUBLIC = ["MethodInfo", "register_method", "get_method", "list_methods", "is_method", "method_options",
          "resolve_params", "get_sampler", "compute_scores", "tdds_from_epochs", "tdds_from_array", "TddsAccumulator",
          "window_weights", "random_scores", "entropy_from_logits", "forgetting_from_epochs", "el2n_from_epochs",
          "aum_from_epochs", "margins", "moderate_from_features", "class_distances", "ccs_sample",
          "dyn_unc_from_epochs"]


@pytest.mark.parametrize("name", PUBLIC)
def test_previous_public_names_still_import(name):
    assert name in scoring.__all__
    exec(f"from tdds_core.scoring import {name}", {})

"""Module boundaries: each outside system behind its own module, dependencies pointing one way
(pipelines -> components -> tdds_core). Imports are read from the source (static imports and
importlib.import_module / __import__ with a constant name)."""
from __future__ import annotations

import ast
import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _imports(path: Path) -> list[tuple[int, str]]:
    """``(line, module)`` of every import in ``path`` (relative imports resolved against the package)."""
    with warnings.catch_warnings():   # invalid escapes in docstrings are not this test's business
        warnings.simplefilter("ignore")
        tree = ast.parse(path.read_text(), filename=str(path))
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                out.append((node.lineno, ".".join(base + ([node.module] if node.module else []))))
            elif node.module:
                out.append((node.lineno, node.module))
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) \
                and isinstance(node.args[0].value, str) \
                and getattr(node.func, "attr", getattr(node.func, "id", "")) in ("import_module", "__import__"):
            out.append((node.lineno, node.args[0].value))
    return out


def _offenders(folder: str, banned: tuple[str, ...], allowed: tuple[str, ...] = ()) -> tuple[list[str], list[str]]:
    """Imports of ``banned`` top-level packages under ``folder``: (outside ``allowed`` files, inside them)."""
    bad, ok = [], []
    for path in sorted((ROOT / folder).rglob("*.py")):
        rel = str(path.relative_to(ROOT))
        for line, name in _imports(path):
            if name.split(".")[0] in banned:
                (ok if rel in allowed else bad).append(f"{rel}:{line} imports {name}")
    return bad, ok


@pytest.mark.parametrize("banned, owner, fix", [
    (("boto3", "botocore", "s3transfer"), "tdds_core/storage.py", "give Store the operation you need"),
    (("mlflow",), "tdds_core/tracking.py", "give the Tracker the operation you need"),
    (("matplotlib",), "tdds_core/report.py", "put the plot in tdds_core/report.py"),
])
def test_one_module_per_outside_system(banned, owner, fix):
    bad, ok = _offenders("tdds_core", banned, (owner,))
    assert bad == [], f"only {owner} may import {'/'.join(banned)}; {fix}:\n" + "\n".join(bad)
    assert ok, f"the check found no import in {owner} at all: is it broken?"


def test_dependencies_point_one_way():
    bad, _ = _offenders("tdds_core", ("pipelines", "components"))
    assert bad == [], "tdds_core must not import the KFP layers:\n" + "\n".join(bad)
    bad, _ = _offenders("components", ("pipelines",))
    assert bad == [], "components must not import pipelines:\n" + "\n".join(bad)

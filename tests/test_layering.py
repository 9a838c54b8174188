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
    (("boto3", "botocore", "s3transfer"), "tdds_core/storage/s3.py", "give Store the operation you need"),
    (("mlflow",), "tdds_core/tracking/mlflow_tracker.py", "give the Tracker the operation you need"),
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


# ------------------------------------------------------------------------------------------ the house (issue 24)
PACKAGES = ("tdds_core", "components", "pipelines")
# deferred so the light paths stay light: `tdds score` never loads torch, `import tdds_core` never mlflow or kfp
HEAVY = frozenset({"torch", "torchvision", "mlflow", "kfp", "boto3", "botocore", "s3transfer", "kubernetes",
                   "matplotlib"})
MAX_LINES = 600
# KFP lightweight components: KFP copies each function's source into its task, so imports live in the body
FUNCTION_IMPORTS_REQUIRED = ("components/tasks.py",)
# the loaders of modules named at run time: plugins ($TDDS_PLUGINS), a registry's built-in modules (a KFP
# task loads only its stage) and the command line's table (a command loads only its own module)
DYNAMIC_LOADERS = ("tdds_core/plugins.py", "tdds_core/registry.py", "tdds_core/cli/__init__.py")


def _modules() -> dict[str, Path]:
    """Module name -> file, for every module of the three packages."""
    out = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _graph() -> tuple[dict[str, dict[str, set[str]]], list[tuple[str, int, str]], list[str]]:
    """``{module: {"top": targets imported at module level, "fn": targets imported inside a function}}``
    (a target ``a.b.c`` also brings its packages ``a.b`` and ``a``, except the importer's own ones),
    every import inside a function as (file, line, name), and every import of a module named at run time."""
    mods = _modules()

    def resolve(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, dict[str, set[str]]] = {}
    infunc, dynamic = [], []
    for name, path in mods.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tree = ast.parse(path.read_text(), filename=str(path))
        pkg = name if path.name == "__init__.py" else name.rpartition(".")[0]
        rel = str(path.relative_to(ROOT))
        edges = graph.setdefault(name, {"top": set(), "fn": set()})

        def visit(node: ast.AST, in_function: bool) -> None:
            for child in ast.iter_child_nodes(node):
                nested = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
                targets: list[str] = []
                if isinstance(child, ast.Import):
                    targets = [a.name for a in child.names]
                elif isinstance(child, ast.ImportFrom):
                    if child.level:
                        base = pkg.split(".")[: len(pkg.split(".")) - child.level + 1]
                        mod = ".".join(base + ([child.module] if child.module else []))
                    else:
                        mod = child.module or ""
                    subs = [f"{mod}.{a.name}" for a in child.names if f"{mod}.{a.name}" in mods]
                    targets = subs + ([mod] if len(subs) < len(child.names) else [])
                elif isinstance(child, ast.Call) and getattr(child.func, "attr", getattr(child.func, "id", "")) in (
                        "import_module", "__import__") and child.args:
                    arg = child.args[0]
                    if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                        targets = [arg.value]
                    else:
                        dynamic.append(f"{rel}:{child.lineno}")
                for t in targets:
                    if t == "__future__":
                        continue
                    if in_function and isinstance(child, (ast.Import, ast.ImportFrom)):
                        infunc.append((rel, child.lineno, t))
                    r = resolve(t) if t.split(".")[0] in PACKAGES else t.split(".")[0]
                    if r is None or r == name:
                        continue
                    found = {r}
                    parts = r.split(".")
                    found |= {".".join(parts[:i]) for i in range(1, len(parts))
                              if ".".join(parts[:i]) in mods and not name.startswith(".".join(parts[:i]) + ".")}
                    edges["fn" if in_function else "top"] |= found - {name}
                visit(child, nested)

        visit(tree, False)
    return graph, infunc, dynamic


def _cycles(graph: dict[str, dict[str, set[str]]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), over both kinds of import."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]["top"] | graph[v]["fn"]):
            if w not in graph:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def _loads_heavy(graph: dict[str, dict[str, set[str]]], module: str) -> bool:
    """Whether importing ``module`` loads a heavy package (through module-level imports)."""
    seen, todo = set(), [module]
    while todo:
        m = todo.pop()
        if m in seen:
            continue
        seen.add(m)
        if m in HEAVY:
            return True
        todo += list(graph.get(m, {}).get("top", ()))
    return False


def test_no_import_cycle():
    graph, _, _ = _graph()
    cycles = _cycles(graph)
    assert cycles == [], "import cycles (module-level and function-level imports both count; a package's " \
        "__init__ counts as imported by whatever imports one of its modules):\n" + "\n".join(map(str, cycles))


def test_an_import_inside_a_function_only_defers_a_heavy_package():
    graph, infunc, _ = _graph()
    bad = [f"{f}:{line} imports {t} inside a function" for f, line, t in infunc
           if f not in FUNCTION_IMPORTS_REQUIRED and t.split(".")[0] not in HEAVY
           and not (t.split(".")[0] in PACKAGES and _loads_heavy(graph, _resolve_module(t)))]
    assert bad == [], ("import these at module level (an import inside a function may only defer "
                       f"{', '.join(sorted(HEAVY))}, or a module of ours that loads one):\n" + "\n".join(bad))
    assert len(infunc) > 0, "the check found no import inside a function at all: is it broken?"


def _resolve_module(name: str) -> str:
    mods = _modules()
    while name and name not in mods:
        name = name.rpartition(".")[0]
    return name


def test_modules_are_named_at_run_time_only_by_the_loaders():
    _, _, dynamic = _graph()
    bad = [d for d in dynamic if d.split(":")[0] not in DYNAMIC_LOADERS]
    assert bad == [], "import a module by a name fixed in the source; only " + ", ".join(DYNAMIC_LOADERS) + \
        " load modules named at run time:\n" + "\n".join(bad)


def test_no_module_over_600_lines():
    big = [f"{p.relative_to(ROOT)}: {n} lines" for p in _modules().values()
           if (n := len(p.read_text().splitlines())) > MAX_LINES]
    assert big == [], f"split these at their seams (at most {MAX_LINES} lines a module):\n" + "\n".join(big)


def test_the_cycle_check_sees_a_cycle(tmp_path, monkeypatch):
    """The checker itself: two modules importing each other, one of them inside a function, are a cycle."""
    graph = {"a": {"top": {"b"}, "fn": set()}, "b": {"top": set(), "fn": {"a"}}, "c": {"top": {"a"}, "fn": set()}}
    assert _cycles(graph) == [["a", "b"]]
    assert _loads_heavy({"x": {"top": {"y"}, "fn": set()}, "y": {"top": {"torch"}, "fn": set()}}, "x")

"""The package's import graph shows its design: no cycles, imports flow one way, all at module top.

Walks every module's source with ``ast`` (nothing is imported), so the test fails on the line
that breaks a rule, not on a side effect. The layers, lowest first:

    0  errors, io, integrity, metrics, flops, version, distributed, runs, bench.timing/machine/memory
    1  ops, data
    2  models, students, teachers, checkpoint
    3  bundle, inference
    4  training, distill, export, bench, baselines, compare
    5  api
    6  cli

A module may import from its own layer (without a cycle) or below, never above. Export, bench and
the baselines run artifacts and measure them: they never import the training loop or distillation.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# Import root → folder (teachers/ and export/ install as blmkd.teachers and blmkd.export).
ROOTS = {"blmkd": REPO / "blmkd", "blmkd.teachers": REPO / "teachers", "blmkd.export": REPO / "export"}

LAYERS: dict[str, int] = {
    "blmkd": 0,
    "blmkd.version": 0,
    "blmkd.defaults": 0,
    "blmkd.errors": 0,
    "blmkd.io": 0,
    "blmkd.integrity": 0,
    "blmkd.metrics": 0,
    "blmkd.flops": 0,
    "blmkd.distributed": 0,
    "blmkd.runs": 0,
    "blmkd.bench.timing": 0,
    "blmkd.bench.machine": 0,
    "blmkd.bench.memory": 0,
    "blmkd.ops": 1,
    "blmkd.registry": 1,
    "blmkd.data": 1,
    "blmkd.models": 2,
    "blmkd.students": 2,
    "blmkd.teachers": 2,
    "blmkd.checkpoint": 2,
    "blmkd.bundle": 3,
    "blmkd.inference": 3,
    "blmkd.training": 4,
    "blmkd.distill": 4,
    "blmkd.export": 4,
    "blmkd.bench": 4,
    "blmkd.baselines": 4,
    "blmkd.compare": 4,
    "blmkd.api": 5,
    "blmkd.cli": 6,
    "blmkd.__main__": 6,
}
#: Modules that run or measure artifacts never reach into training.
NEVER = {
    "blmkd.export": ("blmkd.training", "blmkd.distill", "blmkd.api", "blmkd.cli"),
    "blmkd.bench": ("blmkd.training", "blmkd.distill", "blmkd.api", "blmkd.cli"),
    "blmkd.baselines": ("blmkd.training", "blmkd.distill", "blmkd.api", "blmkd.cli"),
    "blmkd.inference": ("blmkd.training", "blmkd.distill", "blmkd.export", "blmkd.bench"),
}
#: Third-party packages that may be imported inside a function: optional ones, and heavy readers
#: (scipy, h5py, spectral, tensorly) or progress bars loaded only by the code path that needs them.
LAZY_OK = {
    "tensorrt",
    "scipy",
    "h5py",
    "spectral",
    "tensorly",
    "rich",
    "matplotlib",
    "onnxruntime",
    "skl2onnx",
    "onnxslim",
    "sklearn",
    "rasterio",
    "pycuda",
    "cuda",
    "tomli",
    "tomllib",
}
#: Declarative tables allowed past the size limit.
LONG_OK = {"blmkd.data.registry"}
MAX_LINES = 420


def _modules() -> dict[str, Path]:
    mods = {}
    for root, folder in ROOTS.items():
        for path in sorted(folder.rglob("*.py")):
            parts = [p for p in path.relative_to(folder).with_suffix("").parts if p != "__init__"]
            if root == "blmkd" and parts and parts[0] in ("teachers", "export"):
                continue
            mods[".".join([root, *parts])] = path
    return mods


MODULES = _modules()


def _targets(name: str, path: Path, node: ast.Import | ast.ImportFrom) -> list[str]:
    """The project modules an import statement loads (a package's init only when nothing finer is named)."""
    if isinstance(node, ast.Import):
        candidates = [[a.name] for a in node.names]
    else:
        if node.level:
            base = name.split(".")[: len(name.split(".")) - (0 if path.name == "__init__.py" else 1)]
            base = base[: len(base) - (node.level - 1)]
            module = ".".join(base + ([node.module] if node.module else []))
        else:
            module = node.module or ""
        # `from pkg import sub` loads pkg.sub when it is a module, else a name defined in pkg.
        candidates = [[f"{module}.{a.name}", module] for a in node.names]
    found = []
    for options in candidates:
        for mod in options:
            if mod in MODULES:
                found.append(mod)
                break
    return found


def _layer(mod: str) -> int:
    best = max((k for k in LAYERS if mod == k or mod.startswith(k + ".")), key=len, default=None)
    assert best is not None, f"{mod} has no layer in tests/test_imports.py: add it to LAYERS"
    return LAYERS[best]


def _edges() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {m: set() for m in MODULES}
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                edges[name].update(t for t in _targets(name, path, node) if t != name)
    return edges


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles():
    assert _cycles(_edges()) == []


def test_imports_flow_one_way():
    bad = []
    for mod, targets in _edges().items():
        for t in sorted(targets):
            if _layer(t) > _layer(mod):
                bad.append(f"{mod} (layer {_layer(mod)}) imports {t} (layer {_layer(t)})")
            for scope, banned in NEVER.items():
                if (mod == scope or mod.startswith(scope + ".")) and t.startswith(banned) and _layer(t) > 0:
                    bad.append(f"{mod} imports {t}")
    assert bad == []


def test_a_module_never_imports_its_own_package():
    """``blmkd.data.readers`` importing ``blmkd.data`` runs the package's init half-way through its own."""
    bad = [
        f"{mod} imports {t}"
        for mod, targets in _edges().items()
        for t in targets
        if MODULES[t].name == "__init__.py" and mod.startswith(t + ".")
    ]
    assert bad == []


def test_project_imports_sit_at_module_top():
    bad = []
    for path in MODULES.values():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for fn in ast.walk(tree):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(fn):
                if isinstance(node, ast.Import):
                    roots = [a.name.split(".")[0] for a in node.names]
                elif isinstance(node, ast.ImportFrom):
                    roots = ["blmkd" if node.level else (node.module or "").split(".")[0]]
                else:
                    continue
                for root in roots:
                    if root == "blmkd":
                        bad.append(f"{path.relative_to(REPO)}:{node.lineno} imports blmkd inside {fn.name}()")
                    elif root not in LAZY_OK and root not in sys.stdlib_module_names:
                        bad.append(
                            f"{path.relative_to(REPO)}:{node.lineno} imports {root} inside {fn.name}()"
                        )
    assert bad == []


def test_benchmark_scripts_use_the_library_not_the_cli():
    bad = []
    for path in sorted((REPO / "benchmarks").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("blmkd.cli"):
                bad.append(f"{path.name}:{node.lineno} imports {node.module}")
    assert bad == []


@pytest.mark.parametrize("name", sorted(MODULES))
def test_modules_stay_small(name):
    lines = len(MODULES[name].read_text(encoding="utf-8").splitlines())
    if name not in LONG_OK:
        assert lines <= MAX_LINES, (
            f"{MODULES[name].relative_to(REPO)} has {lines} lines; split it along a seam"
        )


def test_the_graph_is_read_from_the_real_tree():
    """The walker sees the package: the modules it must find, and edges it must see."""
    edges = _edges()
    assert {"blmkd.cli", "blmkd.teachers", "blmkd.export", "blmkd.data"} <= set(MODULES)
    assert "blmkd.errors" in set().union(*edges.values())
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]

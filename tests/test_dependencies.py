"""What a bare ``pip install blmkd`` needs: every third-party module the package imports is a runtime
dependency, an extra whose absence is a one-line "pip install 'blmkd[x]'" error, or optional with a
fallback. Proved from the installed package's source and metadata, without the network."""

from __future__ import annotations

import ast
import importlib
import importlib.metadata as md
import importlib.util
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from blmkd.errors import BlmkdError

# The modules each extra provides, and a user-facing call that needs them.
EXTRA_MODULES = {"geo": ("rasterio",), "trt": ("tensorrt",)}


def _modules() -> dict[str, Path]:
    """Every module of the installed package (``blmkd.teachers`` and ``blmkd.export`` included)."""
    out = {}
    # teachers/ and export/ install as blmkd.teachers and blmkd.export from folders of their own
    for pkg in ("blmkd", "blmkd.teachers", "blmkd.export"):
        out[pkg] = Path(importlib.import_module(pkg).__file__)
        for info in pkgutil.walk_packages(importlib.import_module(pkg).__path__, pkg + "."):
            out[info.name] = Path(importlib.util.find_spec(info.name).origin)
    return out


def _third_party_imports() -> list[tuple[str, str, int, bool, bool]]:
    """(top-level module, file, line, at module level, inside ``try/except ImportError`` that does not re-raise)."""
    found = []
    for path in _modules().values():
        tree = ast.parse(path.read_text(), str(path))
        parent = {c: p for p in ast.walk(tree) for c in ast.iter_child_nodes(p)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            module_level, fallback, p = True, False, parent.get(node)
            while p is not None:
                if isinstance(p, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    module_level = False
                if isinstance(p, ast.Try) and any(
                    _catches_import_error(h) and not _raises(h) for h in p.handlers
                ):
                    fallback = True
                p = parent.get(p)
            for name in names:
                top = name.split(".")[0]
                if top != "blmkd" and top not in sys.stdlib_module_names:
                    found.append((top, str(path), node.lineno, module_level, fallback))
    return found


def _catches_import_error(handler: ast.ExceptHandler) -> bool:
    types = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
    return any(isinstance(t, ast.Name) and t.id in ("ImportError", "ModuleNotFoundError") for t in types)


def _raises(handler: ast.ExceptHandler) -> bool:
    return any(isinstance(n, ast.Raise) for n in ast.walk(handler))


def _requirements() -> tuple[set[str], dict[str, set[str]]]:
    """The installed metadata's runtime requirements and each extra's, as canonical names."""
    runtime: set[str] = set()
    extras: dict[str, set[str]] = {}
    for line in md.requires("blmkd") or []:
        req = Requirement(line)
        marker = str(req.marker or "")
        if "extra" not in marker:
            runtime.add(canonicalize_name(req.name))
            continue
        for extra in md.metadata("blmkd").get_all("Provides-Extra") or []:
            if req.marker.evaluate({"extra": extra}):
                extras.setdefault(extra, set()).add(canonicalize_name(req.name))
    return runtime, extras


_PACKAGES_DISTRIBUTIONS = md.packages_distributions()  # a scan of site-packages: once


def _distributions(module: str) -> set[str]:
    """The distributions that install ``module`` (its own name where none installed here does)."""
    return {canonicalize_name(d) for d in _PACKAGES_DISTRIBUTIONS.get(module, [module])}


def test_the_walk_sees_the_whole_package_and_its_imports():
    mods = _modules()
    assert {"blmkd.cli", "blmkd.teachers.ssa_mamba", "blmkd.export.onnx_export", "blmkd.bench.memory"} <= set(
        mods
    )
    found = {(top, Path(f).name) for top, f, *_ in _third_party_imports()}
    # a module-level import, an import inside a function, one behind a fallback: all seen
    assert {("numpy", "compare.py"), ("onnxslim", "onnx_export.py"), ("psutil", "memory.py")} <= found
    runtime, extras = _requirements()
    assert {"torch", "onnx", "onnxruntime"} <= runtime and extras["dev"] >= {"pytest"}


def test_every_import_is_a_dependency_an_extra_behind_an_error_or_optional():
    runtime, extras = _requirements()
    user_extras = {e: names for e, names in extras.items() if e != "dev"}
    problems = []
    for top, path, line, module_level, fallback in _third_party_imports():
        where = f"{Path(path).name}:{line} imports {top}"
        dists = _distributions(top)
        if dists & runtime:
            continue
        extra = next((e for e, names in user_extras.items() if dists & names), None)
        if extra is not None:
            if module_level:
                problems.append(f"{where} at module level, but it comes with the extra [{extra}]")
            elif top not in EXTRA_MODULES.get(extra, ()):
                problems.append(
                    f"{where} from the extra [{extra}], whose missing-module error is not tested here"
                )
        elif not fallback:
            problems.append(f"{where}, which is no runtime dependency (extras: {sorted(extras)})")
    assert not problems, "\n".join(problems)


def test_extras_map_to_the_modules_the_guards_are_tested_with():
    _, extras = _requirements()
    for extra, modules in EXTRA_MODULES.items():
        assert {canonicalize_name(m) for m in modules} <= extras[extra]


def _one_line(exc: BaseException) -> str:
    msg = str(exc)
    assert "\n" not in msg
    return msg


def test_missing_geo_extra_is_a_one_line_install_hint(monkeypatch, tmp_path):
    import numpy as np

    from blmkd.data import load_scene
    from blmkd.inference.maps import write_map

    monkeypatch.setitem(sys.modules, "rasterio", None)  # import fails as if it were not installed
    with pytest.raises(BlmkdError) as err:
        write_map(tmp_path / "map.tif", np.zeros((3, 3), np.int16), [1], ["a"])
    assert "pip install 'blmkd[geo]'" in _one_line(err.value) and not (tmp_path / "map.tif").exists()
    (tmp_path / "scene.tif").write_bytes(b"II*\x00")
    with pytest.raises(BlmkdError) as err:
        load_scene(tmp_path / "scene.tif")
    assert "pip install 'blmkd[geo]'" in _one_line(err.value)


def test_missing_trt_extra_is_a_one_line_install_hint(monkeypatch, tmp_path):
    from blmkd.inference.artifacts import open_artifact
    from blmkd.inference.tensorrt_runner import tensorrt_status

    monkeypatch.setitem(sys.modules, "tensorrt", None)
    ok, why = tensorrt_status()
    assert not ok and "pip install 'blmkd[trt]'" in why
    (tmp_path / "m.engine").write_bytes(b"x")
    with pytest.raises(BlmkdError) as err:
        open_artifact(tmp_path / "m.engine")
    assert "pip install 'blmkd[trt]'" in _one_line(err.value)


def test_every_module_imports_without_extras_or_dev_tools():
    """A bare install: the extras, the optional packages and the dev tools are made unimportable."""
    _, extras = _requirements()
    blocked = sorted(
        {m for mods in EXTRA_MODULES.values() for m in mods} | {"psutil", "pytest", "hypothesis", "build"}
    )
    assert canonicalize_name("pytest") in extras["dev"]
    code = (
        "import sys, importlib\n"
        f"for m in {blocked!r}: sys.modules[m] = None\n"
        f"for m in {sorted(m for m in _modules() if not m.endswith('__main__'))!r}: importlib.import_module(m)\n"
        "print('ok')\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr[-2000:]

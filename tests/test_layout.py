"""The package layout's rules (docs/architecture.md), checked on the source itself.

Packages follow the data flow and import only from their own layer or below
(scripts/import_graph.py); the statistics never load torch; no module re-exports names that
live elsewhere; nothing reaches into another module's private names.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import REPO

spec = importlib.util.spec_from_file_location("import_graph", REPO / "scripts" / "import_graph.py")
assert spec is not None and spec.loader is not None
import_graph = importlib.util.module_from_spec(spec)
spec.loader.exec_module(import_graph)

# Tests may exercise a module's private helpers (two implementations of one walk, say); code
# may not, and no test may reach into the trainer's privates (the selection rule is public).
CODE = sorted([*(REPO / "hmarl").rglob("*.py"), *(REPO / "scripts").glob("*.py")])
TESTS = sorted((REPO / "tests").glob("*.py"))


def test_every_module_is_in_a_layer_and_no_package_imports_from_above() -> None:
    graph = import_graph.imports()
    assert {"hmarl.stats.metrics", "hmarl.train.selection", "hmarl.app.__main__"} <= set(graph)
    assert import_graph.violations(graph) == []


def test_an_upward_import_would_be_reported() -> None:
    """The rule is not vacuous: stats importing the trainer, or report importing train."""
    graph = {
        "hmarl.stats.metrics": {"top": set(), "run": set(), "all": {"hmarl.train.trainer"}},
        "hmarl.report.html": {"top": set(), "run": set(), "all": {"hmarl.train.selection"}},
        "hmarl.train.trainer": {"top": set(), "run": set(), "all": {"hmarl.stats.metrics"}},
    }
    assert import_graph.violations(graph) == [
        "hmarl.report.html (layer 5) -> hmarl.train.selection (layer 6)",
        "hmarl.stats.metrics (layer 3) -> hmarl.train.trainer (layer 6)",
    ]
    with pytest.raises(ValueError, match="in no layer"):
        import_graph.layer("hmarl_extra.module")


def test_the_longest_chain_follows_module_level_imports() -> None:
    graph = {
        "a": {"top": {"b"}, "run": {"b", "d"}, "all": {"b", "d"}},
        "b": {"top": {"c"}, "run": {"c"}, "all": {"c"}},
        "c": {"top": set(), "run": set(), "all": set()},
        "d": {"top": {"b"}, "run": {"b"}, "all": {"b"}},
    }
    assert import_graph.longest_chain(graph) == ["a", "b", "c"]
    assert import_graph.longest_chain(graph, "run") == ["a", "d", "b", "c"]


@pytest.mark.parametrize("package", ["hmarl.stats", "hmarl.report", "hmarl.market", "hmarl.data"])
def test_packages_below_the_agent_import_no_torch(package: str) -> None:
    """Statistics, reports, markets and data are computed without loading the networks."""
    names = sorted(m for m in import_graph.modules() if m.startswith(package + "."))
    assert names, package
    probe = f"import sys, {', '.join(names)}; print('torch' in sys.modules)"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, env=env, check=True
    )
    assert out.stdout.strip() == "False", f"importing {package} loads torch"


def _module_getattr_and_reexports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    imported = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == "__getattr__":
            found.append(f"{path.name}: module-level __getattr__")
        if isinstance(node, ast.ImportFrom):
            for alias in node.names:
                imported.add(alias.asname or alias.name)
                if alias.asname is not None and alias.asname == alias.name:
                    found.append(f"{path.name}: re-exports {alias.name} (import ... as itself)")
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets
        ):
            listed = {
                e.value for e in getattr(node.value, "elts", []) if isinstance(e, ast.Constant)
            }
            found += [f"{path.name}: __all__ re-exports {n}" for n in sorted(listed & imported)]
    return found


def test_no_module_getattr_or_reexport_shims_in_hmarl() -> None:
    problems = [p for f in (REPO / "hmarl").rglob("*.py") for p in _module_getattr_and_reexports(f)]
    assert problems == []


def test_the_shim_finder_would_see_one(tmp_path: Path) -> None:
    shim = tmp_path / "shim.py"
    shim.write_text(
        "from hmarl.steps import ACTIONS as ACTIONS\nfrom hmarl.io import write_text\n"
        "__all__ = ['write_text']\n\ndef __getattr__(name):\n    return name\n"
    )
    assert _module_getattr_and_reexports(shim) == [
        "shim.py: re-exports ACTIONS (import ... as itself)",
        "shim.py: __all__ re-exports write_text",
        "shim.py: module-level __getattr__",
    ]


def _private_imports(paths: list[Path], prefix: str = "hmarl") -> list[str]:
    return [
        f"{path.relative_to(REPO)}:{node.lineno} {node.module}.{alias.name}"
        for path in paths
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(prefix)
        for alias in node.names
        if alias.name.startswith("_") and not alias.name.startswith("__")
    ]


def test_nothing_imports_a_private_name_from_another_hmarl_module() -> None:
    """A name another module needs is public where it lives (e.g. the selection rule)."""
    assert _private_imports(CODE) == []
    assert _private_imports(TESTS, "hmarl.train") == []

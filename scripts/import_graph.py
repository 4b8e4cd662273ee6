"""The import graph of ``hmarl/``: its layers, their rule, and the longest import chain.

    python scripts/import_graph.py            # the longest chain and any layering violation
    python scripts/import_graph.py --edges    # every module's hmarl imports as well
    python scripts/import_graph.py --deferred # chains through imports inside functions too

Packages follow the data flow (docs/architecture.md); a module imports only from its own layer
or those below it. Module-level imports make the chains (what importing a module loads);
imports inside functions (deferred on purpose: mlflow, Bokeh, Streamlit, the backtest in the
page) must obey the layers too. ``tests/test_layout.py`` asserts the rule with these functions.
"""

from __future__ import annotations

import argparse
import ast
import sys
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "hmarl"

# Bottom to top. A module's layer is that of its longest matching prefix.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("hmarl", "hmarl.steps", "hmarl.config", "hmarl.io", "hmarl.cli", "hmarl.runtime",
     "hmarl.tracking"),
    ("hmarl.data", "hmarl.sources"),
    ("hmarl.market",),
    ("hmarl.stats",),
    ("hmarl.agent",),
    ("hmarl.report",),
    ("hmarl.train",),
    ("hmarl.backtest",),
    ("hmarl.walkforward",),
    ("hmarl.app",),
)  # fmt: skip


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules(root: Path = ROOT) -> dict[str, Path]:
    return {module_name(p, root): p for p in sorted(root.rglob("*.py"))}


def layer(module: str) -> int:
    best, rank = -1, -1
    for i, names in enumerate(LAYERS):
        for name in names:
            if (module == name or module.startswith(name + ".")) and len(name) > best:
                best, rank = len(name), i
    if rank < 0:
        raise ValueError(f"{module} is in no layer of scripts/import_graph.py's LAYERS")
    return rank


def _target(node: ast.ImportFrom | ast.Import, known: dict[str, Path]) -> list[str]:
    """The hmarl modules an import statement loads (a name may be a submodule)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name.split(".")[0] == "hmarl"]
    if node.level or not node.module or node.module.split(".")[0] != "hmarl":
        return []
    out = [node.module]
    out += [f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in known]
    return out


def _typing_only(tree: ast.Module) -> set[int]:
    """ids of the import statements inside ``if TYPE_CHECKING:`` blocks (never run)."""
    out: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            out.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    return out


def imports(known: dict[str, Path] | None = None) -> dict[str, dict[str, set[str]]]:
    """Per module, the hmarl modules it imports: ``top`` (at module level, run on import),
    ``run`` (``top`` and those inside functions) and ``all`` (``run`` and type-only ones)."""
    known = known or modules()
    graph: dict[str, dict[str, set[str]]] = {}
    for name, path in known.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        typing_only = _typing_only(tree)
        top = {t for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))
               for t in _target(node, known)}  # fmt: skip
        every, run = set(), set()
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                targets = _target(node, known)
                every.update(targets)
                if id(node) not in typing_only:
                    run.update(targets)
        graph[name] = {"top": top - {name}, "run": run - {name}, "all": every - {name}}
    return graph


def violations(graph: dict[str, dict[str, set[str]]]) -> list[str]:
    """Imports from a higher layer than the importer's, as ``a -> b`` lines."""
    return sorted(
        f"{mod} (layer {layer(mod)}) -> {dep} (layer {layer(dep)})"
        for mod, deps in graph.items()
        for dep in deps["all"]
        if layer(dep) > layer(mod)
    )


def longest_chain(graph: dict[str, dict[str, set[str]]], kind: str = "top") -> list[str]:
    """The longest path of module-level imports (what importing its first module loads), or
    of every import that runs (``kind="run"``: what calling into it may load)."""

    @cache
    def chain(mod: str, seen: frozenset[str] = frozenset()) -> tuple[str, ...]:
        best: tuple[str, ...] = ()
        for dep in sorted(graph.get(mod, {}).get(kind, set())):
            if dep in seen or dep not in graph:
                continue
            c = chain(dep, seen | {mod})
            if len(c) > len(best):
                best = c
        return (mod, *best)

    return list(max((chain(m) for m in graph), key=len))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--edges", action="store_true", help="print every module's imports")
    parser.add_argument("--deferred", action="store_true", help="count imports in functions")
    parser.add_argument("--root", type=Path, default=ROOT, help="another checkout's hmarl/")
    args = parser.parse_args()
    root = args.root.resolve()
    graph = imports(modules(root))
    if args.edges:
        for mod in sorted(graph):
            print(f"{mod}: {', '.join(sorted(graph[mod]['all'])) or '-'}")
    chain = longest_chain(graph, "run" if args.deferred else "top")
    what = "import chain, deferred imports included" if args.deferred else "module-level chain"
    print(f"{root}: {len(graph)} modules; longest {what}, {len(chain)} modules deep:")
    print("  " + " -> ".join(chain))
    if root != ROOT:
        return 0  # the layers are this checkout's
    bad = violations(graph)
    print(f"layering violations: {len(bad)}")
    for line in bad:
        print("  " + line)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

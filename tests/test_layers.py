"""Layer rules: the ``.importlinter`` contracts, no import cycles, no private name imported across modules.

The import graph here is computed from the source (``ast``), for ``labeler/`` and ``store/``:

* module-level imports are the graph whose cycles are refused;
* imports inside a function are a deliberate lazy boundary (heavy libraries, plugins): left out of the
  cycle check, but the contracts (grimp) see them too;
* imports under ``if TYPE_CHECKING:`` never run and count nowhere.

KNOWN_* below are the cases still broken by code outside this change (each names the work that removes
it); a known exception that no longer occurs fails the test, so the list only ever shrinks.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from .conftest import REPO, parse_source

PACKAGES = ("labeler", "store")

# Cases still broken by code outside a change, each with a comment naming the work that removes it; empty
# now that the CLI package (labeler/cli/, public helpers in _common.py) and explicit method registration landed.
KNOWN_PRIVATE: set[tuple[str, str, str]] = set()
KNOWN_CYCLE_EDGES: set[tuple[str, str]] = set()
KNOWN_LAZY_CYCLE_EDGES: set[tuple[str, str]] = set()


@dataclass(frozen=True)
class Import:
    importer: str
    target: str  # the module imported (the longest module path of ours that the statement names)
    name: str | None  # the name taken from it (``from target import name``), None for a whole module
    lazy: bool  # inside a function
    line: int


def _modules() -> dict[str, tuple[Path, bool]]:
    out = {}
    for pkg in PACKAGES:
        for path in sorted((REPO / pkg).rglob("*.py")):
            parts = list(path.relative_to(REPO).with_suffix("").parts)
            is_pkg = parts[-1] == "__init__"
            out[".".join(parts[:-1] if is_pkg else parts)] = (path, is_pkg)
    return out


def _ours(modules: dict, dotted: str) -> str | None:
    parts = dotted.split(".")
    while parts and ".".join(parts) not in modules:
        parts.pop()
    return ".".join(parts) or None


def _visit(modules: dict, mod: str, package: list[str], node: ast.AST, lazy: bool, found: list[Import]) -> None:
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
            for other in child.orelse:
                _visit(modules, mod, package, other, lazy, found)
            continue
        if isinstance(child, ast.Import):
            for alias in child.names:
                if (target := _ours(modules, alias.name)) is not None:
                    found.append(Import(mod, target, None, lazy, child.lineno))
        elif isinstance(child, ast.ImportFrom):
            if child.level:
                base = package[: len(package) - (child.level - 1)]
                source = ".".join(base + ([child.module] if child.module else []))
            else:
                source = child.module or ""
            for alias in child.names:
                if f"{source}.{alias.name}" in modules:  # a submodule
                    found.append(Import(mod, f"{source}.{alias.name}", None, lazy, child.lineno))
                elif (target := _ours(modules, source)) is not None:
                    found.append(Import(mod, target, alias.name, lazy, child.lineno))
        inner = lazy or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
        _visit(modules, mod, package, child, inner, found)


def _imports(modules: dict[str, tuple[Path, bool]]) -> list[Import]:
    found: list[Import] = []
    for mod, (path, is_pkg) in modules.items():
        package = mod.split(".") if is_pkg else mod.split(".")[:-1]
        tree = parse_source(path)
        _visit(modules, mod, package, tree, False, found)
    return found


MODULES = _modules()
IMPORTS = _imports(MODULES)


def _is_private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _private_imports() -> set[tuple[str, str, str]]:
    """(importer, module, private name or module) for every private thing imported from another module.

    A private module (``labeler.models._hub``) may be imported, and anything taken from it, only from
    inside its own package.
    """
    out = set()
    for imp in IMPORTS:
        if imp.target == imp.importer:
            continue
        parts = imp.target.split(".")
        for k, part in enumerate(parts):
            owner = ".".join(parts[:k])  # the package the private module belongs to
            if _is_private(part) and imp.importer != owner and not imp.importer.startswith(owner + "."):
                out.add((imp.importer, owner, part))
        if imp.name is not None and _is_private(imp.name) and not _is_private(parts[-1]):
            out.add((imp.importer, imp.target, imp.name))
    return out


def _cycles(edges: set[tuple[str, str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    graph: dict[str, list[str]] = {}
    for a, b in sorted(edges):
        graph.setdefault(a, []).append(b)
        graph.setdefault(b, [])
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(graph[root]))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(graph[child])))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    comp = []
                    while True:
                        top = stack.pop()
                        on_stack.discard(top)
                        comp.append(top)
                        if top == node:
                            break
                    if len(comp) > 1:
                        out.append(sorted(comp))
    return out


def _module_level_edges() -> set[tuple[str, str]]:
    return {(i.importer, i.target) for i in IMPORTS if not i.lazy and i.importer != i.target}


def _is_cli(module: str) -> bool:
    return module == "labeler.cli" or module.startswith(("labeler.cli.", "labeler.cli_"))


def test_import_linter_contracts_hold():
    """The contracts of ``.importlinter``: store alone; only the CLI opens the app; nothing imports the CLI."""
    code = (
        "import sys\nfrom importlinter.cli import lint_imports\n"
        "sys.exit(lint_imports(config_filename='.importlinter', no_cache=True, no_logo=True))"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout, done.stdout


def test_no_private_name_is_imported_from_another_module():
    found = _private_imports()
    assert found - KNOWN_PRIVATE == set(), "make these public in the module that owns them, or move them"
    assert KNOWN_PRIVATE - found == set(), "no longer happens: remove it from KNOWN_PRIVATE"


def test_module_level_imports_have_no_cycles():
    edges = _module_level_edges()
    assert _cycles(edges - KNOWN_CYCLE_EDGES) == []
    assert KNOWN_CYCLE_EDGES - edges == set(), "no longer happens: remove it from KNOWN_CYCLE_EDGES"
    for edge in KNOWN_CYCLE_EDGES:  # each known edge still closes a cycle, or it is not an exception
        assert any(set(edge) <= set(c) for c in _cycles(edges - (KNOWN_CYCLE_EDGES - {edge}))), edge


def test_imports_inside_functions_close_no_cycle_either():
    """A lazy import is for a heavy library or a plugin, never to hide a cycle (labels <-> history was one)."""
    edges = {(i.importer, i.target) for i in IMPORTS if i.importer != i.target}
    known = KNOWN_CYCLE_EDGES | KNOWN_LAZY_CYCLE_EDGES
    assert _cycles(edges - known) == []
    assert KNOWN_LAZY_CYCLE_EDGES - edges == set(), "no longer happens: remove it from KNOWN_LAZY_CYCLE_EDGES"


def test_the_cli_imports_the_app_only_to_launch_it():
    into_app = [i for i in IMPORTS if _is_cli(i.importer) and i.target.startswith("labeler.ui")]
    assert into_app, "the CLI launches the app: expected `from .ui import launch` somewhere in it"
    for imp in into_app:
        assert (imp.target, imp.name, imp.lazy) == ("labeler.ui", "launch", True), imp


def test_the_graph_sees_every_kind_of_import():
    """The checks above rest on this reader: it resolves relative imports and tells lazy ones apart."""
    edges = {(i.importer, i.target, i.name, i.lazy) for i in IMPORTS}
    assert ("labeler.labels", "store", "in_chunks", False) in edges  # absolute, module level
    assert ("labeler.labels", "labeler.history", "snapshot", False) in edges  # relative
    assert ("labeler.train.apply", "labeler.methods", "get_method", False) in edges  # two levels up
    assert ("labeler.cli.project", "labeler.ui", "launch", True) in edges  # inside a function
    assert not any(i.importer == "labeler.train.runs" and i.target.startswith("labeler.methods") for i in IMPORTS)
    lazy = sum(i.lazy for i in IMPORTS)
    assert 0 < lazy < len(IMPORTS)
    assert _cycles({("a", "b"), ("b", "c"), ("c", "a"), ("c", "d")}) == [["a", "b", "c"]]


def test_only_the_app_package_imports_gradio():
    """gradio belongs to the browser app: ``labeler/ui/`` (and the thin ``app.py``); the core, the CLI and
    ``store`` never import it, not even inside a function."""
    offenders = []
    for path in sorted([*(REPO / "labeler").rglob("*.py"), *(REPO / "store").rglob("*.py")]):
        rel = path.relative_to(REPO).as_posix()
        if rel.startswith("labeler/ui/"):
            continue
        for node in ast.walk(parse_source(path)):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            if any(n == "gradio" or n.startswith("gradio.") or n.startswith("gradio_client") for n in names):
                offenders.append(f"{rel}:{node.lineno}")
    assert offenders == [], f"gradio imported outside labeler/ui/: {offenders}"

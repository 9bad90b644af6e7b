"""The package's import graph, read with ``ast``: no cycle, and every ``sam2trt`` import at the top of its file.

Edges are every import of a ``sam2trt`` module, at module level or inside a
function, absolute or relative (``from . import x``, ``from ..errors import y``),
and every ``lazy_import("sam2trt....")`` (:mod:`sam2trt.lazy`). A cycle through
any of them fails, even one that only a function-local import closes.

"Heavy" is defined here, explicitly: a module whose top level imports torch or
the official ``sam2`` package (:data:`HEAVY_DEPS`), directly or through another
module's top level. Only heavy modules may be imported lazily (inside a
function or with ``lazy_import``); a function-local import of a light ``sam2trt``
module fails. The checks run on a synthetic package first, so they can fail.
"""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys
from dataclasses import dataclass

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = "sam2trt"
#: Third-party packages that make a module heavy when its top level imports them.
HEAVY_DEPS = frozenset({"torch", "sam2"})
#: The heavy modules of the package as the rule above finds them (kept explicit: a new one is a decision).
EXPECTED_HEAVY = frozenset({"sam2trt.export.modules"})
#: Leaf modules: they import no other sam2trt module.
LEAVES = ("sam2trt.errors", "sam2trt.lazy", "sam2trt.platform", "sam2trt.signals")


@dataclass(frozen=True)
class Edge:
    """``src`` imports ``dst`` at line ``line``; ``kind`` is ``top``, ``local`` (in a function) or ``lazy``."""

    src: str
    dst: str
    line: int
    kind: str


def module_files(root: pathlib.Path, package: str) -> dict[str, pathlib.Path]:
    """``{dotted module name: file}`` for every ``.py`` file of ``root/package``."""
    out = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _owner(name: str, modules: dict) -> str | None:
    """The package module ``name`` lives in (``a.b.func`` -> ``a.b``), or None outside the package."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def _targets(node, src: str, is_pkg: bool, modules: dict, package: str) -> list[str]:
    """The package modules an ``Import``/``ImportFrom`` node names (relative imports resolved)."""
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    else:
        if node.level:
            base = src.split(".") if is_pkg else src.split(".")[:-1]
            base = base[:len(base) - (node.level - 1)]
            mod = ".".join(base + ([node.module] if node.module else []))
        else:
            mod = node.module or ""
        # ``from pkg import sub`` imports the submodule when there is one
        names = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in modules else mod for a in node.names]
    return [t for t in (_owner(n, modules) for n in names if n.split(".")[0] == package) if t]


def import_graph(root: pathlib.Path = ROOT, package: str = PACKAGE):
    """``(edges, third_party_top)`` of a package's sources.

    ``edges``: :class:`Edge` list. ``third_party_top``: ``{module: top-level
    names of packages outside it that its top level imports}``.
    """
    modules = module_files(root, package)
    edges: list[Edge] = []
    third: dict[str, set] = {m: set() for m in modules}

    for src, path in modules.items():
        tree = ast.parse(path.read_text(), str(path))
        is_pkg = path.name == "__init__.py"

        def visit(node, in_function: bool):
            for child in ast.iter_child_nodes(node):
                local = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
                if isinstance(child, (ast.Import, ast.ImportFrom)):
                    kind = "local" if local else "top"
                    for dst in _targets(child, src, is_pkg, modules, package):
                        edges.append(Edge(src, dst, child.lineno, kind))
                    if not local and not (isinstance(child, ast.ImportFrom) and child.level):
                        names = [a.name for a in child.names] if isinstance(child, ast.Import) else [child.module]
                        third[src].update(n.split(".")[0] for n in names if n and n.split(".")[0] != package)
                elif (isinstance(child, ast.Call) and getattr(child.func, "id", getattr(child.func, "attr", None)) == "lazy_import"
                      and child.args and isinstance(child.args[0], ast.Constant) and isinstance(child.args[0].value, str)):
                    dst = _owner(child.args[0].value, modules)
                    if dst:
                        edges.append(Edge(src, dst, child.lineno, "lazy"))
                visit(child, local)

        visit(tree, False)
    return edges, third


def find_cycle(edges) -> list[str] | None:
    """One cycle of the directed graph ``edges`` (``(src, dst)`` pairs or :class:`Edge`), as ``[a, b, ..., a]``; None if acyclic."""
    graph: dict[str, list[str]] = {}
    for e in edges:
        src, dst = (e.src, e.dst) if isinstance(e, Edge) else e
        graph.setdefault(src, []).append(dst)
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def dfs(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in graph.get(node, ()):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                found = dfs(nxt)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state:
            found = dfs(start)
            if found:
                return found
    return None


def heavy_modules(edges, third) -> set[str]:
    """Modules whose top level imports a :data:`HEAVY_DEPS` package, directly or through top-level sam2trt imports."""
    heavy = {m for m, names in third.items() if names & HEAVY_DEPS}
    top = [e for e in edges if e.kind == "top"]
    changed = True
    while changed:
        changed = False
        for e in top:
            if e.dst in heavy and e.src not in heavy:
                heavy.add(e.src)
                changed = True
    return heavy


def light_local_imports(edges, heavy) -> list[Edge]:
    """Function-local imports of light package modules (each one a violation)."""
    return [e for e in edges if e.kind == "local" and e.dst not in heavy]


def _describe(edges) -> str:
    return "\n".join(f"  {e.src} line {e.line}: imports {e.dst} ({e.kind})" for e in edges)


# ------------------------------------------------------------------ self-checks
def test_find_cycle_finds_a_cycle_and_only_a_cycle():
    assert find_cycle([("a", "b"), ("b", "c"), ("c", "a"), ("c", "d")]) == ["a", "b", "c", "a"]
    assert find_cycle([("a", "a")]) == ["a", "a"]
    assert find_cycle([("a", "b"), ("b", "c"), ("a", "c"), ("d", "c")]) is None


def test_the_checks_fail_on_a_synthetic_package(tmp_path):
    pkg = tmp_path / PACKAGE
    (pkg / "sub").mkdir(parents=True)
    files = {
        "__init__.py": "",
        "a.py": "from sam2trt import b\n",
        "b.py": "def f():\n    from .sub import c\n    return c\n",  # relative, function-local: closes the cycle
        "sub/__init__.py": "",
        "sub/c.py": "from ..a import x\nimport torch\n",  # heavy: torch at the top
        "d.py": "from sam2trt.lazy import lazy_import\nm = lazy_import('sam2trt.sub.c')\n"
                "def g():\n    import sam2trt.a\n",
        "lazy.py": "def lazy_import(name):\n    return name\n",
    }
    for name, text in files.items():
        (pkg / name).write_text(text)
    edges, third = import_graph(tmp_path, PACKAGE)
    kinds = {(e.src, e.dst, e.kind) for e in edges}
    assert ("sam2trt.b", "sam2trt.sub.c", "local") in kinds
    assert ("sam2trt.sub.c", "sam2trt.a", "top") in kinds
    assert ("sam2trt.d", "sam2trt.sub.c", "lazy") in kinds
    assert find_cycle(edges) is not None
    heavy = heavy_modules(edges, third)
    assert heavy == {"sam2trt.sub.c"}
    # b's local import of the heavy sam2trt.sub.c is allowed; d's of the light sam2trt.a is not
    assert [(e.src, e.dst) for e in light_local_imports(edges, heavy)] == [("sam2trt.d", "sam2trt.a")]


# ------------------------------------------------------------------ the package
def test_no_import_cycle():
    edges, _ = import_graph()
    assert len({e.src for e in edges}) > 20, "the walk found too few modules: is the package where it should be?"
    cycle = find_cycle(edges)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_heavy_modules_are_the_expected_ones():
    edges, third = import_graph()
    assert heavy_modules(edges, third) == EXPECTED_HEAVY


def test_no_function_local_import_of_a_light_module():
    edges, third = import_graph()
    bad = light_local_imports(edges, heavy_modules(edges, third))
    assert not bad, "import these at the top of the file:\n" + _describe(bad)


def test_leaves_import_no_other_sam2trt_module():
    edges, _ = import_graph()
    bad = [e for e in edges if e.src in LEAVES and e.dst != PACKAGE]
    assert not bad, _describe(bad)


def test_commands_that_do_not_export_never_import_torch(tmp_path):
    """``--help``, ``doctor`` and ``track`` (up to its model check) run without importing torch or sam2.

    (A ``None`` entry in ``sys.modules`` is a blocked import, as when the suite runs with torch made unimportable.)
    """
    code = ("import sys; import sam2trt.cli as c\n"
            "assert c.main(['--help']) == 0\n"
            "assert c.main(['doctor']) == 0\n"
            f"assert c.main(['track', {str(tmp_path / 'v.mp4')!r}, '--model', {str(tmp_path / 'm')!r}, '--box', '1,1,5,5']) == 3\n"
            "bad = sorted(m for m in ('torch', 'sam2', 'sam2trt.export.modules') if sys.modules.get(m) is not None)\n"
            "assert not bad, bad\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]

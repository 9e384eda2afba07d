"""The package's shape: imports run one way (no cycles, between modules or between packages), and every file and
function is small enough to read in one sitting.

Imports are read from the source (``ast``), including imports inside functions (a lazy import is still a
dependency), but not those under ``if TYPE_CHECKING:`` (annotations only). The layers, top to bottom::

    widgets / cli / bench / figures / notebooks  ->  session  ->  projection  ->  backends  ->  drag  ->  stylegan
    checkpoints  ->  stylegan
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parent.parent / "dragnb"
# Modules that only re-export another module's names under an older or shorter public path.
ALIASES = {"dragnb.drag.session", "dragnb.export"}
MAX_FILE_LINES = 500
MAX_FUNCTION_LINES = 80
LONG_FUNCTIONS = {("dragnb/toy/train.py", "train")}  # the training script keeps its one loop
# What each package may import from dragnb (besides itself and the leaf modules below).
# dragnb: __version__, lazy names
LEAVES = {"dragnb", "dragnb.devices", "dragnb.fileio", "dragnb.lazy", "dragnb.testing", "dragnb.viz"}
ALLOWED = {
    "stylegan": set(),
    "checkpoints": {"stylegan"},
    "drag": {"stylegan"},
    "backends": {"drag", "stylegan"},
    "projection": {"backends", "drag", "stylegan"},
    "session": {"projection", "backends", "drag", "stylegan", "checkpoints"},
    "toy": {"stylegan", "checkpoints", "session", "projection"},
    "widgets": {"session", "projection", "backends", "drag", "checkpoints", "stylegan"},
    "bench": {"session", "backends", "drag", "checkpoints", "stylegan", "toy"},
}


def _module_name(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PKG.rglob("*.py"))}


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The dragnb modules ``name`` imports (resolved to existing modules; ``from pkg import mod`` -> ``pkg.mod``)."""
    is_pkg = path.name == "__init__.py"
    package = name if is_pkg else name.rpartition(".")[0]
    out = set()
    tree = ast.parse(path.read_text())
    typing_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If) and ast.unparse(block.test) in
                   ("TYPE_CHECKING", "typing.TYPE_CHECKING") for n in ast.walk(block)}
    for node in ast.walk(tree):
        if id(node) in typing_only:  # annotations only: never imported at run time
            continue
        if isinstance(node, ast.Import):
            bases = [a.name for a in node.names]
            subs = []
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                base = ".".join(base + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            bases, subs = [base], [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        named = [t for t in subs if t in known]  # ``from pkg import mod``: the module, not pkg's __init__
        out.update(named)
        if len(named) < len(subs) or not subs:  # names defined in the base module itself
            out.update(b for b in bases if b in known)
    out.discard(name)
    return out


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    return {name: _imports(name, path, set(mods)) for name, path in mods.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
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

    sys.setrecursionlimit(10_000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def _package(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and (PKG / parts[1]).is_dir()) else None


def test_the_walker_sees_imports():
    g = _graph()
    assert "dragnb.drag.geometry" in g["dragnb.drag.core"]
    assert "dragnb.backends.torch_backend" in g["dragnb.backends"]  # a lazy import inside a function
    assert "dragnb.session.io" in g["dragnb.session.files"]  # ``from . import io``


def test_no_import_cycle_between_modules():
    g = {k: v - ALIASES for k, v in _graph().items() if k not in ALIASES}
    assert _cycles(g) == []


def test_no_import_cycle_between_packages():
    pk: dict[str, set[str]] = {}
    for mod, deps in _graph().items():
        a = _package(mod)
        if a is None or mod in ALIASES:
            continue
        pk.setdefault(a, set()).update(b for d in deps if (b := _package(d)) and b != a)
    assert _cycles(pk) == []


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_imports_run_one_way(package):
    bad = []
    for mod, deps in _graph().items():
        if _package(mod) != package or mod in ALIASES:
            continue
        for d in deps:
            p = _package(d)
            if d in LEAVES or p == package:
                continue
            if p not in ALLOWED[package]:
                bad.append(f"{mod} -> {d}")
    assert bad == []


def test_drag_core_imports_nothing_above_it():
    code = ("import sys, dragnb.drag.core\n"
            "up = sorted(m for m in sys.modules if m.startswith(('dragnb.backends', 'dragnb.session', "
            "'dragnb.widgets')))\nprint(up)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


def test_files_and_functions_are_small():
    big_files, long_functions = [], []
    for path in sorted(PKG.rglob("*.py")):
        src = path.read_text()
        rel = str(path.relative_to(PKG.parent))
        if len(src.splitlines()) > MAX_FILE_LINES:
            big_files.append(f"{rel}: {len(src.splitlines())} lines")
        for node in ast.walk(ast.parse(src)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES and (rel, node.name) not in LONG_FUNCTIONS:
                    long_functions.append(f"{rel}:{node.lineno} {node.name}: {n} lines")
    assert big_files == [] and long_functions == []


def test_nothing_points_outside_the_repository():
    root = PKG.parent
    hits = []
    for folder in ("dragnb", "docs", "notebooks", "tests", "tools", "scripts"):
        for path in sorted((root / folder).rglob("*")):
            if path.suffix not in (".py", ".md", ".ipynb", ".sh", ".json"):
                continue
            text = path.read_text(errors="replace")
            for needle in ("shared" + "/docs", "/wo" + "rk/", "../" + "shared"):  # split: this file is read too
                if needle in text:
                    hits.append(f"{path.relative_to(root)}: {needle}")
    assert hits == []

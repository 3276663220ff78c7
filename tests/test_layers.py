"""The library's layers hold: no import circle, no lower layer importing an upper one, private names stay private.

Imports are read from the source as a reader follows them: top-level, deferred (inside a function) and
`if TYPE_CHECKING:` imports all count. `from a.b import c` is an import of `a.b` and, when `c` is a
module, of `a.b.c`. A package is `fastiov_lib.<name>` (a top-level module is a package of its own).
"""
from __future__ import annotations

import ast
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LIB = ROOT / "fastiov_lib"

# bottom to top (README "Library packages"); a module imports only from its own layer or below
LAYERS = ["fastiov_lib", "safe_files", "config", "sh", "procs", "hw", "run", "analysis", "report", "cri", "testbeds", "bench",
          "notebook", "commands"]
LOWER = ("run", "analysis", "config", "hw")
UPPER = ("testbeds", "bench", "report", "notebook", "commands")

# Private names one module may use from another, each with the reason it stays private (at most 5).
ALLOWED_PRIVATE: dict[tuple[str, str], str] = {}


@dataclass
class Module:
    name: str
    path: Path
    tree: ast.Module
    imports: set[str] = field(default_factory=set)  # modules of fastiov_lib it imports
    private_uses: set[tuple[str, str]] = field(default_factory=set)  # (module, _name) used from another module


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _read_modules() -> dict[str, Module]:
    mods = {}
    for path in sorted(LIB.rglob("*.py")):
        mods[_module_name(path)] = Module(_module_name(path), path, ast.parse(path.read_text(), str(path)))
    return mods


def _resolve(name: str, mods: dict[str, Module]) -> str | None:
    while name and name not in mods:
        name = name.rpartition(".")[0]
    return name or None


def _absolute(node: ast.ImportFrom, mod: Module) -> str:
    if not node.level:
        return node.module or ""
    package = mod.name if mod.path.name == "__init__.py" else mod.name.rpartition(".")[0]
    base = package.split(".")[: len(package.split(".")) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def _analyse(mods: dict[str, Module]) -> None:
    for mod in mods.values():
        aliases: dict[str, str] = {}  # local name -> module it stands for
        for node in ast.walk(mod.tree):
            if isinstance(node, ast.Import):
                for a in node.names:
                    target = _resolve(a.name, mods) if a.name.startswith("fastiov_lib") else None
                    if target:
                        mod.imports.add(target)
                        if a.asname:
                            aliases[a.asname] = target
            elif isinstance(node, ast.ImportFrom):
                base = _absolute(node, mod)
                if not base.startswith("fastiov_lib"):
                    continue
                target = _resolve(base, mods)
                if target:
                    mod.imports.add(target)
                for a in node.names:
                    sub = f"{base}.{a.name}"
                    if sub in mods:
                        mod.imports.add(sub)
                        aliases[a.asname or a.name] = sub
                    elif a.name.startswith("_") and not a.name.startswith("__") and target:
                        mod.private_uses.add((target, a.name))
        for node in ast.walk(mod.tree):  # module._name
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases:
                if node.attr.startswith("_") and not node.attr.startswith("__"):
                    mod.private_uses.add((aliases[node.value.id], node.attr))
        mod.imports.discard(mod.name)


@pytest.fixture(scope="module")
def modules() -> dict[str, Module]:
    mods = _read_modules()
    _analyse(mods)
    return mods


def _package(name: str) -> str:
    return ".".join(name.split(".")[:2])


def _layer(name: str) -> str:
    part = name.split(".")[1] if "." in name else name  # the package's own __init__: the bottom
    return {"__main__": "commands"}.get(part, part)


def _circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one member (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.get(root, ()))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                comp = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    comp.append(member)
                    if member == node:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))
    return out


def test_no_module_imports_another_that_imports_it_back(modules):
    circles = _circles({m.name: m.imports for m in modules.values()})
    assert not circles, "module circles: " + "; ".join(" <-> ".join(c) for c in circles)


def test_no_package_imports_another_that_imports_it_back(modules):
    graph: dict[str, set[str]] = {}
    for m in modules.values():
        graph.setdefault(_package(m.name), set()).update(
            _package(t) for t in m.imports if _package(t) != _package(m.name))
    circles = _circles(graph)
    assert not circles, "package circles: " + "; ".join(" <-> ".join(c) for c in circles)


def test_every_module_imports_only_its_own_layer_or_below(modules):
    unknown = sorted({_layer(m) for m in modules if _layer(m) not in LAYERS})
    assert not unknown, f"packages missing from LAYERS: {unknown}"
    upward = [f"{m.name} -> {t}" for m in modules.values() for t in sorted(m.imports)
              if LAYERS.index(_layer(t)) > LAYERS.index(_layer(m.name))]
    assert not upward, "imports of an upper layer: " + "; ".join(upward)
    assert not [u for u in upward if u.split(".")[1] in LOWER and u.split(" -> ")[1].split(".")[1] in UPPER]


def test_private_names_stay_in_their_module(modules):
    used = {(owner, name): user for user, m in modules.items() for owner, name in m.private_uses}
    extra = sorted(f"{user} uses {owner}.{name}" for (owner, name), user in used.items()
                   if (owner, name) not in ALLOWED_PRIVATE)
    assert not extra, "private names used across modules: " + "; ".join(extra)
    assert len(ALLOWED_PRIVATE) <= 5 and all(ALLOWED_PRIVATE.values())


def test_no_private_name_in_an_all_list(modules):
    listed = []
    for m in modules.values():
        for node in m.tree.body:
            if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets):
                listed += [f"{m.name}.{e.value}" for e in getattr(node.value, "elts", [])
                           if isinstance(e, ast.Constant) and str(e.value).startswith("_")]
    assert not listed, f"private names in __all__: {listed}"


def test_following_a_run_directory_through_write_report_never_climbs_a_layer(modules):
    seen, todo, climbs = set(), ["fastiov_lib.report.markdown"], []
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for t in modules[name].imports:
            if LAYERS.index(_layer(t)) > LAYERS.index(_layer(name)):
                climbs.append(f"{name} -> {t}")
            todo.append(t)
    assert not climbs, climbs

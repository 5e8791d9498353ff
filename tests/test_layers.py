"""The layer order of docs/design.md, enforced: no module imports a higher layer, at module or function level.

::

    0  planner.errors, planner.registry, planner.config, planner._yaml, planner.files     the ground floor
    1  planner.ir                                                           the graph IR (torch-free)
    2  planner.cost (torch-free) | planner.nn                               pricing | building float modules
    3  planner.compress, planner.pretrained                                 compressing, loading weights
    4  trainers                                                             training, evaluation, probes
    5  planner.search                                                       spaces, studies, evaluators
    6  planner (the facade), planner.cli, planner.validate, planner.show, planner.profile, planner.testing

Modules of one layer may import each other except across the ``|`` (cost and nn never import each other).
Over all imports, module and function level, no module reaches itself again (no cycle, not even inside one
layer), so no import is local to dodge one; and no import is dynamic (``importlib.import_module``,
``__import__``), so this walk sees them all.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

LAYERS: tuple[tuple[str, ...], ...] = (
    ("planner.errors", "planner.registry", "planner.config", "planner._yaml", "planner.files"),
    ("planner.ir",),
    ("planner.cost", "planner.nn"),
    ("planner.compress", "planner.pretrained"),
    ("trainers",),
    ("planner.search",),
    ("planner", "planner.cli", "planner.validate", "planner.show", "planner.profile", "planner.testing"),
)
APART = {("planner.cost", "planner.nn"), ("planner.nn", "planner.cost")}
TORCH_FREE = (
    "planner.errors",
    "planner.registry",
    "planner.config",
    "planner._yaml",
    "planner.files",
    "planner.ir",
    "planner.cost",
)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _unit(module: str) -> str:
    """The layer unit of a module: its subpackage (``planner.ir``), a top-level module, or ``trainers``."""
    parts = module.split(".")
    if parts[0] == "trainers":
        return "trainers"
    return ".".join(parts[:2])


def _layer(unit: str) -> int:
    for i, units in enumerate(LAYERS):
        if unit in units:
            return i
    raise AssertionError(f"{unit} has no layer: add it to LAYERS and to docs/design.md")


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, imported module) for every import in the file, function-level ones included."""
    module = _module_name(path)
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, a.name) for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target not in ("planner", "trainers"):
                found.append((node.lineno, target))
                continue
            # ``from planner import nn`` imports the subpackage planner.nn; ``from planner import estimate`` the facade
            for a in node.names:
                sub = ROOT / target / a.name
                is_module = sub.is_dir() or sub.with_suffix(".py").exists()
                found.append((node.lineno, f"{target}.{a.name}" if is_module else target))
    return found


SOURCES = sorted([*(ROOT / "planner").rglob("*.py"), *(ROOT / "trainers").rglob("*.py")])


@pytest.mark.parametrize("path", SOURCES, ids=[_module_name(p) for p in SOURCES])
def test_no_import_of_a_higher_layer(path: Path) -> None:
    unit = _unit(_module_name(path))
    here = _layer(unit)
    wrong = []
    for line, target in _imports(path):
        if target.split(".")[0] not in ("planner", "trainers"):
            continue
        other = _unit(target)
        if target == "planner" and _layer(unit) < _layer("planner"):
            wrong.append(f"line {line}: imports the planner facade (import the submodule it re-exports)")
            continue
        if target == "planner":
            continue
        if _layer(other) > here or (unit, other) in APART:
            wrong.append(f"line {line}: {target} (layer {_layer(other)}) from {unit} (layer {here})")
    assert not wrong, f"{path.relative_to(ROOT)}:\n" + "\n".join(wrong)


@pytest.mark.parametrize(
    "path", [p for p in SOURCES if _unit(_module_name(p)) in TORCH_FREE], ids=lambda p: _module_name(p)
)
def test_torch_free_layers_never_import_torch(path: Path) -> None:
    torchy = [
        f"line {line}: {t}" for line, t in _imports(path) if t.split(".")[0] in ("torch", "torchaudio", "deepspeed")
    ]
    assert not torchy, f"{path.relative_to(ROOT)}:\n" + "\n".join(torchy)


MODULES = {_module_name(p): p for p in SOURCES}


def _module_edges(path: Path) -> set[str]:
    """The planner/trainers modules the file imports, module and function level: ``from pkg import name``
    counts as ``pkg.name`` where that is a module, else as ``pkg`` (its ``__init__``). Parent packages that
    Python runs on the way are not counted: a package re-exporting its submodules is no cycle."""
    module = _module_name(path)
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for a in node.names:
                out.add(f"{target}.{a.name}" if f"{target}.{a.name}" in MODULES else target)
    return {t for t in out if t in MODULES and t != module}


def _find_cycle(edges: dict[str, list[str]]) -> list[str] | None:
    """One import cycle ``[a, b, ..., a]`` of the graph, or None (depth-first, modules in sorted order)."""
    done: set[str] = set()

    def visit(m: str, stack: list[str]) -> list[str] | None:
        if m in stack:
            return stack[stack.index(m) :] + [m]
        if m in done:
            return None
        for t in edges.get(m, []):
            found = visit(t, [*stack, m])
            if found:
                return found
        done.add(m)
        return None

    for m in sorted(edges):
        found = visit(m, [])
        if found:
            return found
    return None


def test_no_import_cycle() -> None:
    cycle = _find_cycle({m: sorted(_module_edges(p)) for m, p in MODULES.items()})
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_cycle_check_can_fail() -> None:
    """The walk sees function-level imports, and a cycle through them is found."""
    export = _module_edges(ROOT / "planner" / "compress" / "_export.py")
    assert "planner.compress._materialize" in export  # imported inside load_packed
    edges = {m: sorted(_module_edges(p)) for m, p in MODULES.items()}
    edges["planner.nn.model"] = [*edges["planner.nn.model"], "planner.compress._materialize"]  # the old shortcut
    cycle = _find_cycle(edges)
    assert cycle is not None and "planner.nn.model" in cycle and "planner.compress._materialize" in cycle


@pytest.mark.parametrize("path", SOURCES, ids=[_module_name(p) for p in SOURCES])
def test_no_dynamic_import(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    dynamic = [
        f"line {n.lineno}"
        for n in ast.walk(tree)
        if isinstance(n, ast.Call)
        and (
            (isinstance(n.func, ast.Name) and n.func.id == "__import__")
            or (isinstance(n.func, ast.Attribute) and n.func.attr == "import_module")
        )
    ]
    assert not dynamic, f"{path.relative_to(ROOT)}: dynamic import at " + ", ".join(dynamic)


def _exception_bases() -> set[str]:
    """Names a class that is an exception derives from: the builtins and every class of planner.errors."""
    import builtins

    import planner.errors

    names = {n for n, v in vars(builtins).items() if isinstance(v, type) and issubclass(v, BaseException)}
    return names | {n for n, v in vars(planner.errors).items() if isinstance(v, type) and issubclass(v, BaseException)}


@pytest.mark.parametrize("path", [p for p in SOURCES if p.name != "errors.py"], ids=lambda p: _module_name(p))
def test_every_exception_class_lives_in_errors(path: Path) -> None:
    """One exception tree, in one file: other modules import (and may re-export) its classes."""
    bases = _exception_bases()
    defined = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ClassDef):
            names = {
                b.id if isinstance(b, ast.Name) else b.attr if isinstance(b, ast.Attribute) else "" for b in node.bases
            }
            if names & bases or any(n.endswith(("Error", "Exception")) for n in names):
                defined.append(f"line {node.lineno}: {node.name}")
    assert not defined, f"{path.relative_to(ROOT)}: define these in planner/errors.py:\n" + "\n".join(defined)

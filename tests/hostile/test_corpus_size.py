"""The hostile-input corpus keeps at least 60 cases across its areas."""

from __future__ import annotations

import ast
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _count_cases(path: Path) -> int:
    """Test functions in a module, a parametrized one counted once per literal parameter set."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    total = 0
    for node in tree.body:
        if not (isinstance(node, ast.FunctionDef) and node.name.startswith("test_")):
            continue
        count = 1
        for deco in node.decorator_list:
            if isinstance(deco, ast.Call) and getattr(deco.func, "attr", "") == "parametrize" and len(deco.args) >= 2:
                arg = deco.args[1]
                if isinstance(arg, (ast.List, ast.Tuple)):
                    count *= len(arg.elts)
                elif isinstance(arg, ast.Name):  # a module-level list of cases
                    for stmt in tree.body:
                        if (
                            isinstance(stmt, ast.Assign)
                            and any(getattr(t, "id", "") == arg.id for t in stmt.targets)
                            and isinstance(stmt.value, (ast.List, ast.Tuple))
                        ):
                            count *= len(stmt.value.elts)
        total += count
    return total


def test_corpus_has_at_least_60_cases() -> None:
    files = [p for p in HERE.glob("test_*.py") if p.name != Path(__file__).name]
    assert sum(_count_cases(p) for p in files) >= 60

"""No test module imports another test module, a ``conftest``, or anything through the ``tests.`` prefix.

Shared plain helpers live in ``tests/support.py`` and ``tests/hostile/support.py``, shared fixtures in the
``conftest.py`` files, which pytest loads itself. Importing ``test_x`` from another module runs its tests'
module code twice under two names and re-imports its fixtures (the ``noqa: F401`` imports this replaced);
``tests.`` only resolves under ``python -m pytest`` (which puts the repository root on ``sys.path``), not
under plain ``pytest`` (which puts ``tests/``), so the README's command failed at collection.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent


def _forbidden(module: str) -> bool:
    """Whether a dotted module name reaches a test module, a conftest, or goes through ``tests.``."""
    parts = module.split(".")
    return parts[0] == "tests" or any(p.startswith("test_") or p == "conftest" for p in parts)


def bad_imports(source: str, filename: str = "<test>") -> list[str]:
    """``LINE: what`` for every import in ``source`` (at any depth, relative ones included) that
    :func:`_forbidden` refuses."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            # `from . import test_x` / `from hostile import conftest` name the module in the imported names
            names = [base] if base else []
            names += [f"{base}.{alias.name}" if base else alias.name for alias in node.names
                      if alias.name.startswith("test_") or alias.name == "conftest"]  # fmt: skip
        else:
            continue
        found += [f"{node.lineno}: {name or '.'}" for name in names if name and _forbidden(name)]
    return found


@pytest.mark.parametrize("source", [
    "from test_train_units import DATA\n",
    "import test_search\n",
    "def f():\n    from test_train_multiprocess import _ok\n",
    "from tests.hostile.support import refused\n",
    "import tests.support\n",
    "from conftest import ROOT\n",
    "from .conftest import refused\n",
    "from . import test_studies\n",
    "from hostile.test_studies import STUDY_SPACE\n",
    "from hostile import conftest\n",
])  # fmt: skip
def test_the_check_catches_each_way_of_importing_a_test_module(source: str) -> None:
    assert bad_imports(source), source


@pytest.mark.parametrize("source", [
    "from support import DATA, recipe_text\n",
    "from hostile.support import refused, snapshot\n",
    "from hostile._runs import STUDENT\n",
    "import pytest\nfrom planner.testing import x\n",
])  # fmt: skip
def test_the_check_lets_helper_modules_through(source: str) -> None:
    assert bad_imports(source) == []


def test_no_test_module_imports_another_test_module() -> None:
    files = sorted(TESTS.rglob("*.py"))
    assert len(files) > 50  # the walk found the suite (tests/ and tests/hostile/), not an empty folder
    problems = [f"{p.relative_to(TESTS.parent)}:{where}" for p in files
                for where in bad_imports(p.read_text(encoding="utf-8"), str(p))]  # fmt: skip
    assert not problems, "import shared helpers from support / hostile.support, not from test modules:\n" + "\n".join(
        problems
    )

"""Every `from edlib.x import name` in the repository names something that exists. The
layout moved modules between layers; a script in bench/ or scripts/ that still imports an old
path only fails when somebody runs it (on a GPU machine, where time is short)."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FOLDERS = ("edlib", "bench", "scripts", "tests")


def _edlib_imports():
    for folder in FOLDERS:
        for path in sorted((REPO / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "edlib":
                    yield path, node.lineno, node.module, [a.name for a in node.names]
                elif isinstance(node, ast.Import):
                    for alias in node.names:
                        if alias.name.split(".")[0] == "edlib":
                            yield path, node.lineno, alias.name, []


def _resolves(module: str, name: str | None) -> bool:
    try:
        owner = importlib.import_module(module)
    except ModuleNotFoundError:
        return False
    if name is None or hasattr(owner, name):
        return True
    try:
        importlib.import_module(f"{module}.{name}")
        return True
    except ModuleNotFoundError:
        return False


def test_every_edlib_import_in_the_repository_resolves():
    seen = {}
    missing = []
    for path, line, module, names in _edlib_imports():
        for name in names or [None]:
            key = (module, name)
            if key not in seen:
                seen[key] = _resolves(module, None if name == "*" else name)
            if not seen[key]:
                missing.append(f"{path.relative_to(REPO)}:{line}: {module}" + (f" import {name}" if name else ""))
    assert len(seen) > 200  # the walk found the imports
    assert not missing, "\n".join(missing)

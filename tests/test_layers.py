"""The package's shape: imports run one way through the layers, with no cycles, and files
and the loop's functions stay small enough to read. Read from the source with ast (nothing is
imported), so a lazy import inside a function counts like any other."""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from collections import defaultdict
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "edlib"

# Each unit (a subpackage, or a module directly in edlib/) and its layer: a unit may import
# units of its own layer or below, never above. README.md "Layers" shows the same table.
LAYERS = {
    "edlib.files": 0,
    "edlib.quiet": 0,  # installed by the package's __init__: logging filters only
    "edlib.data": 0,
    "edlib.world": 0,
    "edlib.gather": 0,
    "edlib.model": 1,
    "edlib.train": 2,
    "edlib.sample": 2,
    "edlib.export": 2,
    "edlib.widgets": 3,
    "edlib.cli": 3,
    "edlib.demo": 3,
    "edlib.environment": 3,
    "edlib.workspace": 3,
    "edlib.notebook_setup": 3,
    "edlib.__main__": 3,
    "edlib": 0,  # the package's __init__: only __version__, imports nothing
}
# Same-layer imports that must not happen: sampling and export work from a model and its
# checkpoints, never from the loop (the loop's sampling plugin and export hook call them).
FORBIDDEN = {("edlib.sample", "edlib.train"), ("edlib.export", "edlib.train")}
# The bottom layer plans epochs and previews without loading a model: no torch stack at all.
HEAVY = ("torch", "diffusers", "transformers", "accelerate", "peft", "safetensors")
MAX_FILE_LINES = 500
MAX_LOOP_FUNCTION_LINES = 80


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _imports(name: str, path: Path, modules: dict[str, Path]) -> tuple[set[str], set[str]]:
    """The edlib modules `name` imports (resolved to modules where a name is one) and the
    top-level names of everything else it imports."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    internal, external = set(), set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            # `from edlib.model import checkpoint` imports the module edlib.model.checkpoint
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        else:
            continue
        for target in targets:
            if target == "edlib" or target.startswith("edlib."):
                while target and target not in modules:  # an attribute's module
                    target = target.rpartition(".")[0]
                if target:
                    internal.add(target)
            else:
                external.add(target.split(".")[0])
    return internal, external


def _unit(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2])


def _graph():
    modules = _modules()
    edges, external = {}, {}
    for name, path in modules.items():
        edges[name], external[name] = _imports(name, path, modules)
        edges[name].discard(name)
    return modules, edges, external


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan's algorithm)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []
    counter = [0]

    def visit(node):
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in edges.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_every_module_is_in_a_layer():
    modules, _, _ = _graph()
    unplaced = sorted(m for m in modules if _unit(m) not in LAYERS)
    assert not unplaced, f"place these in LAYERS (tests/test_layers.py) and README's layer table: {unplaced}"


def test_no_import_cycles_between_modules():
    _, edges, _ = _graph()
    assert _cycles(edges) == []


def test_no_import_cycles_between_subpackages():
    _, edges, _ = _graph()
    units = defaultdict(set)
    for source, targets in edges.items():
        units[_unit(source)] |= {_unit(t) for t in targets} - {_unit(source)}
    assert _cycles(units) == []


def test_imports_follow_the_layers():
    _, edges, _ = _graph()
    wrong = []
    for source, targets in sorted(edges.items()):
        for target in sorted(targets):
            pair = (_unit(source), _unit(target))
            if LAYERS[pair[1]] > LAYERS[pair[0]] or pair in FORBIDDEN:
                wrong.append(f"{source} imports {target}")
    assert wrong == []


def test_the_bottom_layer_imports_no_torch_stack():
    _, _, external = _graph()
    wrong = {m: sorted(external[m] & set(HEAVY)) for m in external if LAYERS[_unit(m)] == 0 and external[m] & set(HEAVY)}
    assert wrong == {}


def test_the_checker_sees_a_cycle_and_a_layer_break(tmp_path):
    """The checks above can fail: a cycle and an upward import are found when present."""
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    modules = {"edlib.data": Path("i"), "edlib.data.x": Path("x"), "edlib.model.y": Path("y")}
    probe = tmp_path / "x.py"
    probe.write_text("from edlib.model.y import thing\nimport torch.nn\nfrom . import z\n", encoding="utf-8")
    internal, external = _imports("edlib.data.x", probe, modules)
    assert internal == {"edlib.model.y", "edlib.data"} and external == {"torch"}
    assert LAYERS[_unit("edlib.model.y")] > LAYERS[_unit("edlib.data.x")]


def test_files_stay_small():
    long = {str(p.relative_to(PACKAGE.parent)): n for p in PACKAGE.rglob("*.py") if (n := len(p.read_text().splitlines())) > MAX_FILE_LINES}
    assert long == {}, f"split these files (over {MAX_FILE_LINES} lines)"


def test_the_loops_functions_fit_on_a_screen():
    long = {}
    for path in (PACKAGE / "train").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_LOOP_FUNCTION_LINES:
                    long[f"{path.name}:{node.name}"] = lines
    assert long == {}


@pytest.mark.parametrize(
    "code",
    [
        # the schema, validated against a model folder (its native resolution read from configs)
        "from edlib.model.config import TrainConfig\n"
        "from edlib.model.world import bundled_model_path\n"
        "assert TrainConfig(model=str(bundled_model_path()), data_root='d').resolution == 64",
        # the CLI's and notebooks' planning path: scan, preview, balance
        "import edlib.data.scan, edlib.data.preview, edlib.data.balance, edlib.data.preservation, edlib.world",
        "from edlib.train import TrainConfig",
    ],
)
def test_light_paths_do_not_import_torch(code):
    script = textwrap.dedent(code) + "\nimport sys\nassert 'torch' not in sys.modules, sorted(m for m in sys.modules if m.startswith('torch'))[:5]\n"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=PACKAGE.parent)
    assert result.returncode == 0, result.stderr[-2000:]

"""Package layout: imports point one way, downward, with no circles (module- and function-level imports).

Layers, top to bottom: commands (anif.cli) -> workflows -> engine pieces -> base. A module may
import from its own layer (no circles) or a lower one, never from a higher one.
"""

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "anif"

#: Layer of each module (longest matching prefix wins); 0 is the top.
LAYERS = {
    # commands
    "anif.cli": 0, "anif.__main__": 0,
    # workflows: sampling, labelling, training, benchmark, MD analysis, the AL loop
    "anif.sampling": 1, "anif.labeling": 1, "anif.training": 1, "anif.training_data": 1, "anif.teacher": 1,
    "anif.accuracy": 1, "anif.benchmark": 1, "anif.qbc_calibration": 1, "anif.md": 1, "anif.mlmm": 1, "anif.al": 1,
    "anif.labeling_settings": 1, "anif.training_settings": 1, "anif.md_settings": 1,
    # engine pieces: ensemble and kernels, OpenMM forces/integrators/reporters, dataset store
    "anif.models": 2, "anif.fused": 2, "anif.kernels": 2, "anif.openmm_plugin": 2, "anif.datasets": 2,
    "anif.comp6": 2, "anif.extxyz": 2, "anif.plausibility": 2, "anif.distributed": 2, "anif.vibrations": 2, "anif.outputs": 2,
    "anif.progress": 2,
    # base: structures, units, errors and numpy geometry
    "anif": 3, "anif.structures": 3, "anif.units": 3, "anif.errors": 3, "anif.geometry": 3, "anif.lazy": 3,
}
NAMES = ("commands", "workflows", "engine", "base")


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """anif modules imported anywhere in the file (``from pkg import mod`` counts as importing mod)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            found.update(f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names)
    return {m for m in found if m in modules and m != name}


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def _layer(module: str) -> int:
    prefixes = [p for p in LAYERS if module == p or module.startswith(p + ".")]
    assert prefixes, f"{module} is in no layer: add it to LAYERS in tests/test_layout.py"
    return LAYERS[max(prefixes, key=len)]


def test_every_module_has_a_layer():
    for module in _modules():
        _layer(module)


def test_no_import_points_upward():
    upward = sorted(f"{a} ({NAMES[_layer(a)]}) -> {b} ({NAMES[_layer(b)]})"
                    for a, targets in _graph().items() for b in targets if _layer(b) < _layer(a))
    assert not upward, "imports from a lower layer to a higher one:\n" + "\n".join(upward)


def test_no_import_cycles():
    graph = _graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles = []

    def visit(node: str, path: list[str]):
        state[node] = 1
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                cycles.append(" -> ".join(path[path.index(target):] + [target]))
            elif target not in state:
                visit(target, path + [target])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_old_module_names_are_the_new_modules():
    """Scripts and pickled PythonForce callables that name ``anif.benchmark`` keep working."""
    import importlib

    assert importlib.import_module("anif.benchmark") is importlib.import_module("anif.accuracy")


def test_the_openmm_layer_lives_in_openmm_plugin():
    """The specification's home of the OpenMM layer: the force, integrators, reporters, guard, builder
    and openmmml entry points are modules of ``anif.openmm_plugin`` itself, not aliases."""
    import importlib

    for name in ("force", "guard", "integrators", "reporters", "sampling_reporters", "potential", "builder"):
        module = importlib.import_module(f"anif.openmm_plugin.{name}")
        assert module.__name__ == f"anif.openmm_plugin.{name}"
        assert Path(module.__file__).parent == PACKAGE / "openmm_plugin"
    assert not (PACKAGE / "simulation").exists()


#: What an SQL statement starts with.
_SQL = re.compile(r"^\s*(SELECT|INSERT|UPDATE|DELETE|CREATE|DROP|ALTER|REPLACE|PRAGMA|BEGIN|COMMIT|ROLLBACK)\b")
#: The one module that speaks SQL: the campaign ledger.
LEDGER_MODULE = PACKAGE / "al" / "ledger.py"


def sql_strings(roots=(PACKAGE, PACKAGE.parent / "scripts"), allowed: Path = LEDGER_MODULE) -> list[str]:
    """``file:line: text`` of every string constant (f-string parts too) that starts an SQL statement,
    in the package and the scripts, outside ``allowed``."""
    found = []
    for path in sorted(p for root in roots for p in root.rglob("*.py")):
        root = next(r for r in roots if r in path.parents)
        if path == allowed:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and _SQL.match(node.value):
                found.append(f"{path.relative_to(root.parent)}:{node.lineno}: {node.value[:60]}")
    return found


def test_every_sql_statement_is_in_the_ledger():
    """The campaign's stages, report, commands and scripts read and write the ledger through its named
    methods (anif.al.ledger.Ledger), never in SQL of their own."""
    found = sql_strings()
    assert not found, f"{len(found)} SQL strings outside anif/al/ledger.py:\n" + "\n".join(found)

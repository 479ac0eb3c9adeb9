"""Package layout: the layers are the folders, imports point one way, downward, with no circles
(module- and function-level imports), and no module only aliases another.

Layers, top to bottom: commands (anif/cli) -> workflows -> engine -> base (the modules directly in
anif/). A module may import from its own layer (no circles) or a lower one, never from a higher one.
"""

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "anif"

NAMES = ("commands", "workflows", "engine", "base")
#: Layer of each package (a folder of anif with an __init__.py): every module in it has its layer.
#: Modules directly in anif/ are the base, except __main__ (it runs the commands).
LAYERS = {
    "cli": 0,
    # workflows: sampling, labelling, training, accuracy, MD and ML/MM, the AL loop
    "sampling": 1, "labeling": 1, "training": 1, "accuracy": 1, "md": 1, "al": 1,
    # engine: ensembles and kernels, the OpenMM layer, the dataset store
    "models": 2, "openmm_plugin": 2, "datasets": 2,
}
BASE = NAMES.index("base")
TOP_LEVEL = {"__main__": 0}


def _packages() -> set[str]:
    return {p.parent.name for p in PACKAGE.glob("*/__init__.py")}


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _lazy_homes(path: Path) -> dict[str, str]:
    """A package's names that load their submodule on first use (``lazy_exports``): name -> submodule."""
    homes = {}
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "lazy_exports":
            table = ast.literal_eval(node.args[1])
            homes.update({n: module for module, names in table.items() for n in names})
    return homes


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """anif modules imported anywhere in the file (``from pkg import mod`` counts as importing mod, and
    ``from pkg import name`` as importing the submodule that defines a lazily exported name)."""
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
            homes = _lazy_homes(modules[base]) if base in modules and modules[base].name == "__init__.py" else {}
            found.update(f"{base}.{a.name}" if f"{base}.{a.name}" in modules
                         else f"{base}.{homes[a.name]}" if a.name in homes else base for a in node.names)
    return {m for m in found if m in modules and m != name}


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def _layer(module: str) -> int:
    parts = module.split(".")[1:]  # without "anif"
    if not parts:
        return BASE
    if len(parts) == 1 and parts[0] not in _packages():
        return TOP_LEVEL.get(parts[0], BASE)
    assert parts[0] in LAYERS, f"package anif/{parts[0]} is in no layer: add it to LAYERS in tests/test_layout.py"
    return LAYERS[parts[0]]


def test_every_package_has_a_layer():
    assert _packages() == set(LAYERS), "LAYERS must name exactly the packages of anif/"
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


def _only_reexports(name: str, path: Path) -> bool:
    """The module's body (docstring aside) is imports and ``__all__``/``sys.modules`` assignments, and
    at least one import reaches outside its own package: it only aliases another module."""
    tree = ast.parse(path.read_text())
    body = [n for n in tree.body if not (isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant))]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    imports = [n for n in body if isinstance(n, (ast.Import, ast.ImportFrom))]

    def plain_assign(node) -> bool:
        if not isinstance(node, ast.Assign):
            return False
        return all((isinstance(t, ast.Name) and t.id == "__all__")
                   or (isinstance(t, ast.Subscript) and ast.unparse(t.value) == "sys.modules") for t in node.targets)

    def outside(node) -> bool:
        if isinstance(node, ast.Import):
            return any(a.name != "sys" for a in node.names)
        if node.level == 0:
            return node.module != "__future__"
        return node.level > 1 or (path.name != "__init__.py" and node.level == 1)

    return bool(imports) and all(isinstance(n, (ast.Import, ast.ImportFrom)) or plain_assign(n) for n in body) \
        and any(outside(n) for n in imports)


def test_no_module_only_aliases_another():
    """Goal 0: one name per module, no module kept only to re-export another under an old name."""
    aliases = sorted(name for name, path in _modules().items() if _only_reexports(name, path))
    assert not aliases, "modules that only re-export another: " + ", ".join(aliases)


def test_the_alias_check_finds_an_alias(tmp_path):
    alias = tmp_path / "old.py"
    alias.write_text('"""Old name."""\nimport sys\n\nfrom . import accuracy\n\nsys.modules[__name__] = accuracy\n')
    assert _only_reexports("anif.old", alias)
    assert not _only_reexports("anif.models", PACKAGE / "models" / "__init__.py")


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

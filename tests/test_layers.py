"""The package's layers, read from its imports: arrows point one way and never in a circle.

cli → coordinator / gateway / edge → protocol / app → privacy / data / models → leaves. The
device (``fedge.edge``) never imports the coordinator's side, the protocol layer imports neither
side, and no two subpackages import each other, directly or round about. Imports inside
``if TYPE_CHECKING:`` are for the type checker only and do not count; imports inside functions
do. A second check follows the imports a device makes when it starts (module level only) and
fails if any of them loads a server-only library.
"""

import ast
from collections import defaultdict
from pathlib import Path

import fedge

ROOT = Path(fedge.__file__).parent

#: A subpackage (or top-level module) of fedge, by layer: an import may go down or sideways.
LAYERS = {
    "cli": 4,
    "coordinator": 3,
    "gateway": 3,
    "edge": 3,
    "simulation": 3,
    "protocol": 2,
    "app": 2,
    "builder": 2,
    "release": 2,
    "runtime": 2,
    "privacy": 1,
    "data": 1,
    "models": 1,
    "tasks": 1,
    "inference": 1,
    "tracking": 1,
    "errors": 0,
    "log": 0,
    "files": 0,
    "options": 0,
    "records": 0,
    "charts": 0,
    "storage": 0,
    "v1": 0,
    "": 0,  # fedge/__init__.py
}

#: Arrows that may never exist, whatever the layers say.
FORBIDDEN = {
    "edge": {"coordinator", "gateway", "release", "builder", "runtime", "simulation", "cli"},
    "protocol": {"coordinator", "edge", "gateway", "cli", "release", "builder", "app", "runtime"},
    "release": {"coordinator", "edge", "gateway", "cli"},
}

#: What a device that only serves predictions loads when it starts, and may not need.
SERVER_ONLY = {
    "torch",
    "flwr",
    "ray",
    "sqlalchemy",
    "onnx",
    "matplotlib",
    "opacus",
    "torchvision",
    "starlette",
    "uvicorn",
    "alembic",
    "pandas",
}
DEVICE_ENTRY_POINTS = (
    "fedge.cli.main",
    "fedge.edge.agent",
    "fedge.edge.delivery",
    "fedge.edge.inference",
    "fedge.edge.identity",
    "fedge.edge.device",
)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _subpackage(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(path: Path, *, top_level_only: bool) -> set[str]:
    """The absolute module names ``path`` imports (resolving relative imports)."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST, nested: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for other in child.orelse:
                    visit(other, nested)
                continue
            inner = nested or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
            if isinstance(child, ast.Import) and not (top_level_only and nested):
                found.update(alias.name for alias in child.names)
            elif isinstance(child, ast.ImportFrom) and not (top_level_only and nested):
                base = child.module or ""
                if child.level:
                    anchor = package.split(".")[: len(package.split(".")) - (child.level - 1)]
                    base = ".".join([*anchor, base]) if base else ".".join(anchor)
                found.add(base)
                found.update(f"{base}.{alias.name}" for alias in child.names)
            visit(child, inner)

    visit(ast.parse(path.read_text(), str(path)), False)
    return found


def _sources() -> list[Path]:
    return sorted(p for p in ROOT.rglob("*.py") if "v1" not in p.relative_to(ROOT).parts)


def _known_modules() -> set[str]:
    return {_module_name(p) for p in ROOT.rglob("*.py")}


def _package_graph() -> dict[str, dict[str, set[str]]]:
    """subpackage → subpackage it imports → the modules whose imports make the arrow."""
    graph: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    known = _known_modules()
    for path in _sources():
        module = _module_name(path)
        for target in _imports(path, top_level_only=False):
            if target.startswith("fedge.") and target in known:
                src, dst = _subpackage(module), _subpackage(target)
                if src != dst:
                    graph[src][dst].add(module)
    return graph


def test_every_subpackage_has_a_layer() -> None:
    unplaced = {_subpackage(_module_name(p)) for p in _sources()} - set(LAYERS)
    assert not unplaced, f"place these in LAYERS: {sorted(unplaced)}"


def test_arrows_point_down_and_never_to_a_forbidden_side() -> None:
    problems = []
    for src, targets in _package_graph().items():
        for dst, modules in targets.items():
            if LAYERS[dst] > LAYERS[src]:
                problems.append(f"{src} (layer {LAYERS[src]}) imports {dst} (layer {LAYERS[dst]})")
            if dst in FORBIDDEN.get(src, set()):
                problems.append(f"{src} may not import {dst}")
            if problems and problems[-1].startswith(src):
                problems[-1] += f": in {', '.join(sorted(modules))}"
    assert not problems, "\n".join(problems)


def test_no_import_cycle_between_subpackages() -> None:
    graph = {src: set(targets) for src, targets in _package_graph().items()}
    cycles = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join([*stack[stack.index(nxt) :], nxt]))
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_a_device_starts_without_the_server_libraries() -> None:
    known = _known_modules()
    paths = {_module_name(p): p for p in ROOT.rglob("*.py")}
    seen: set[str] = set()
    todo = list(DEVICE_ENTRY_POINTS)
    heavy: dict[str, set[str]] = defaultdict(set)
    while todo:
        module = todo.pop()
        if module in seen or module not in paths:
            continue
        seen.add(module)
        parents = [".".join(module.split(".")[:i]) for i in range(2, len(module.split(".")))]
        todo.extend(p for p in parents if p in known)  # importing a.b.c runs a/b/__init__ first
        for target in _imports(paths[module], top_level_only=True):
            root = target.split(".")[0]
            if root in SERVER_ONLY:
                heavy[root].add(module)
            elif target in known:
                todo.append(target)
    assert not heavy, {lib: sorted(mods) for lib, mods in heavy.items()}

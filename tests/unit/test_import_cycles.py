"""No import cycles among the project's modules, counting every import: at module level, under
`if TYPE_CHECKING:`, and inside functions (a cycle moved into a function is still a cycle; it
only fails later). Two modules that import each other cannot be read, tested or moved alone."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = {
    "smsgw": ROOT / "libs/smsgw",
    "smsgw_dev": ROOT / "libs/smsgw_dev",
    "smsgw_intake": ROOT / "services/intake",
    "smsgw_routing": ROOT / "services/routing",
    "smsgw_carrier_adapter": ROOT / "services/carrier_adapter",
    "smsgw_receipt": ROOT / "services/receipt",
}


def _modules() -> dict[str, Path]:
    modules = {}
    for name, base in PACKAGES.items():
        for path in base.rglob("*.py"):
            parts = list(path.relative_to(base).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            if "v1" not in parts:  # generated from protos/
                modules[".".join([name, *parts])] = path
    return modules


def _imports(module: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The project modules `module` imports (a package it lives in does not count: importing a
    submodule runs its package's __init__ anyway, which is not a dependency of the submodule's)."""
    found = set()
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            targets = [prefix] + [f"{prefix}.{alias.name}" for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != module and not module.startswith(target + "."):
                found.add(target)
    return found


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles = []
    counter = 0
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    cycles.append(sorted(component))
    return cycles


def test_the_finder_sees_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_module_of_the_project_is_part_of_an_import_cycle():
    modules = _modules()
    assert "smsgw.projections.store" in modules and "smsgw_intake.servicer" in modules
    graph = {module: _imports(module, path, modules) for module, path in modules.items()}
    assert "smsgw.projections.store" in graph["smsgw.projections.sqlite"]  # the graph has edges
    assert _cycles(graph) == [], "break these cycles (move what both need into a module of its own)"


def test_the_libraries_never_import_a_service_and_the_runtime_never_the_development_package():
    modules = _modules()
    services = ("smsgw_intake", "smsgw_routing", "smsgw_carrier_adapter", "smsgw_receipt")
    for module, path in modules.items():
        imported = _imports(module, path, modules)
        if module.startswith(("smsgw.", "smsgw_dev.")) or module in ("smsgw", "smsgw_dev"):
            assert not {m for m in imported if m.startswith(services)}, f"{module} imports a service"
        if not module.startswith("smsgw_dev"):
            assert not {m for m in imported if m.startswith("smsgw_dev")}, f"{module} imports smsgw_dev"

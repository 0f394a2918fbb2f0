"""The house follows the data (CONTRIBUTING.md "Layout"): no import cycles, arrows from
earlier stages to later ones only, few flat modules, and the layout table names them all."""

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGES = ("tfdeblur", "export", "keras_layers")
# Stage of each part of the house; a module may import only its own stage or lower ones.
STAGES = {
    "keras_layers": 0,
    "tfdeblur.data": 1,
    "tfdeblur.models": 2,
    "tfdeblur.train": 3,
    "tfdeblur.infer": 3,
    "tfdeblur.evaluate": 4,
    "export": 4,
    "tfdeblur.commands": 5,
    "tfdeblur.cli": 5,
    "tfdeblur.__main__": 5,
}
FLAT_LIMIT = 6  # flat modules in tfdeblur/ besides __init__, __main__ and cli


def _modules() -> dict[str, pathlib.Path]:
    modules = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            modules[name.removesuffix(".__init__")] = path
    return modules


def _imports(modules) -> dict[str, set[str]]:
    """Module -> the project modules it imports anywhere in its body (functions too)."""

    def resolve(name):
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name

    graph = {}
    for name, path in modules.items():
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [f"{node.module}.{a.name}" for a in node.names]
            else:
                continue
            for target in map(resolve, names):
                if target and target != name and not name.startswith(target + "."):
                    targets.add(target)
        graph[name] = targets
    return graph


def _stage(module: str) -> int | None:
    for prefix in sorted(STAGES, key=len, reverse=True):
        if module == prefix or module.startswith(prefix + "."):
            return STAGES[prefix]
    return None  # flat modules and the package itself: shared by every stage


def test_no_import_cycles():
    graph = _imports(_modules())
    state = {}

    def visit(module, path):
        state[module] = "open"
        for target in sorted(graph[module]):
            if state.get(target) == "open":
                raise AssertionError(" -> ".join(path[path.index(target) :] + [target]))
            if target not in state:
                visit(target, path + [target])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])


def test_imports_point_to_earlier_stages():
    graph = _imports(_modules())
    backwards = []
    for module, targets in graph.items():
        for target in targets:
            here, there = _stage(module), _stage(target)
            if there is None and target != "tfdeblur" and here is None:
                continue
            if there is not None and (here is None or there > here):
                backwards.append(f"{module} -> {target}")
    assert not backwards, backwards


def test_few_flat_modules_and_the_table_names_every_part():
    flat = sorted(
        p.stem
        for p in (ROOT / "tfdeblur").glob("*.py")
        if p.stem not in ("__init__", "__main__", "cli")
    )
    assert len(flat) <= FLAT_LIMIT, flat
    table = (ROOT / "CONTRIBUTING.md").read_text().split("## Layout", 1)[1].split("\n## ", 1)[0]
    packages = sorted(p.parent.name for p in (ROOT / "tfdeblur").glob("*/__init__.py"))
    missing = [f"tfdeblur/{name}.py" for name in flat if f"`tfdeblur/{name}.py`" not in table]
    missing += [f"tfdeblur/{name}/" for name in packages if f"tfdeblur/{name}/" not in table]
    for package in packages:
        for path in (ROOT / "tfdeblur" / package).glob("*.py"):
            if package not in ("models", "commands") and path.stem != "__init__":
                if f"`{path.name}`" not in table:
                    missing.append(str(path.relative_to(ROOT)))
    assert not missing, f"CONTRIBUTING.md's layout table lacks {missing}"

"""The import structure the project promises (AST only: nothing is imported).

- An algorithm file under ``baselines/`` imports the core (``baselines.core``) and
  ``coworld_bench``, never another algorithm module, except a variant that subclasses
  its base (DV2 Finetune + EWC, Multi-Task DV2); the core imports no algorithm.
- No import circle among ``coworld_bench``'s modules (module-level imports).
- ``runner.py`` and ``bench.py`` touch algorithms only through the ``Algorithm``
  interface: they import no ``baselines`` module, and the attributes they read of an
  algorithm object or class are the interface's.
"""

import ast
from pathlib import Path

import coworld_bench
from coworld_bench.algorithm import Algorithm

ROOT = Path(coworld_bench.__file__).resolve().parents[1]


def _imports(path: Path, top_level_only: bool = False) -> list[tuple[str, list[str]]]:
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    out = []
    for node in nodes:
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.module, [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            out += [(a.name, []) for a in node.names]
    return out


def _base_names(path: Path) -> set[str]:
    return {b.id for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.ClassDef) for b in node.bases if isinstance(b, ast.Name)}


def test_algorithms_import_only_the_core_or_the_base_they_extend():
    algorithms = {p.stem for p in (ROOT / "baselines").glob("*.py") if p.stem != "__init__"}
    problems = []
    for path in sorted((ROOT / "baselines").rglob("*.py")):
        in_core = "core" in path.relative_to(ROOT / "baselines").parts
        bases = _base_names(path)
        for module, names in _imports(path):
            parts = module.split(".")
            if parts[0] != "baselines" or len(parts) < 2 or parts[1] == "core":
                continue
            if parts[1] in algorithms and parts[1] != path.stem:
                if in_core:
                    problems.append(f"{path.name} (core) imports the algorithm {module}")
                elif not names or not set(names) <= bases | {n for n in names
                                                              if n.endswith("Config")}:
                    problems.append(f"{path.name} imports {names} of {module} "
                                    "without subclassing it")
                elif not bases & set(names):
                    problems.append(f"{path.name} imports {module} without extending it")
    assert not problems, problems


def test_no_import_circle_in_the_package():
    package = ROOT / "coworld_bench"
    modules = {}
    for path in package.rglob("*.py"):
        rel = path.relative_to(ROOT).with_suffix("")
        name = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        modules[name] = path
    graph = {}
    for name, path in modules.items():
        targets = set()
        for module, names in _imports(path, top_level_only=True):
            for candidate in [module, *(f"{module}.{n}" for n in names)]:
                if candidate in modules and candidate != name:
                    targets.add(candidate)
        graph[name] = targets
    # A package imports its own submodules to re-export them; those edges are not circles.
    state, cycles = {}, []

    def visit(node, stack):
        state[node] = "open"
        for nxt in graph[node]:
            if nxt.startswith(node + "."):
                continue
            if state.get(nxt) == "open":
                cycles.append(stack[stack.index(nxt):] + [nxt] if nxt in stack else [node, nxt])
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not cycles, cycles


INTERFACE = {name for name in dir(Algorithm) if not name.startswith("_")} | {"config", "ctx"}


def _algorithm_attributes(path: Path, variables: set[str]) -> set[str]:
    """Attributes read of the named variables (``algo.x``, ``algorithm.x``...)."""
    read = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) \
                and node.value.id in variables:
            read.add(node.attr)
    return read


def test_runner_and_bench_use_only_the_algorithm_interface():
    for name in ("runner.py", "bench.py"):
        path = ROOT / "coworld_bench" / name
        assert not [m for m, _ in _imports(path) if m.split(".")[0] == "baselines"], name
        text = path.read_text()
        assert "getattr(cfg" not in text and "getattr(self.config" not in text, name
        read = _algorithm_attributes(path, {"algo", "algorithm", "algo_cls", "other"})
        # The config is the algorithm's own dataclass: only the runner's fields of it
        # (TrainConfig) are read here, plus train_every of an online step's report.
        outside = read - INTERFACE
        assert not outside, (name, sorted(outside))

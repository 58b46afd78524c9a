"""The import contract, checked statically (files are parsed, never imported).

Layers, lowest first; a module imports only its own layer or lower:

0. foundation: ``fewshot`` (its ``__init__``), errors, io, landmarks, crop, pose, registry, backends,
   analysis, selection, data;
1. components: ``generators``, ``au_models``, ``experiments.datasets`` (the package graph among them
   stays acyclic);
2. the adaptation pipeline: ``fewshot.adaptation``;
3. top: every other ``experiments`` module and ``cli``.

Also: no private name (``_x``, or a module ``_m``) imported from another package (for ``fewshot`` and
``experiments``: from another subpackage or module); an import inside a function only when the
imported module brings a heavy dependency (torch, mediapipe...) that the importer does not already
load (``cli`` is exempt: it defers everything to keep ``fewshot --help`` fast); no import cycle among
module-level imports. Imports under ``if TYPE_CHECKING:`` are not counted.

Run ``python tests/test_layers.py`` for the counts and the list of violations.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("fewshot", "generators", "au_models", "experiments")
SCRIPTS = ("cli",)
# modules whose deferred imports are deliberate (the CLI keeps `--help` free of every stage's imports)
DEFER_EXEMPT = ("cli",)
HEAVY = frozenset({
    "torch", "torchvision", "avalanche", "mediapipe", "face_alignment", "insightface", "onnxruntime", "ray",
    "matplotlib", "h5py", "ai_edge_litert", "tensorflow",
})
FOUNDATION = ("fewshot.errors", "fewshot.io", "fewshot.landmarks", "fewshot.crop", "fewshot.pose",
              "fewshot.registry", "fewshot.backends", "fewshot.analysis", "fewshot.selection", "fewshot.data")
# (prefix, layer); the longest matching prefix wins; a prefix matches itself and its submodules
LAYERS = (
    *((name, 0) for name in FOUNDATION),
    ("generators", 1), ("au_models", 1), ("experiments.datasets", 1),
    ("fewshot.adaptation", 2),
    ("experiments", 3), ("cli", 3),
)
# the bare package modules, matched exactly (`fewshot` is not a prefix of every fewshot.* module);
# experiments/__init__ runs whenever experiments.datasets loads, so it must stay a component too
PACKAGE_LAYERS = {"fewshot": 0, "experiments": 1}
COMPONENTS = ("generators", "au_models", "experiments.datasets")
# owners of private names: a top-level package, except these two whose subpackages and modules are
# owners of their own (experiments.train's private names are not experiments.runner's business)
SPLIT_OWNERS = ("fewshot", "experiments")


@dataclass(frozen=True)
class Import:
    importer: str  # dotted module name of the importing file
    path: Path
    line: int
    target: str  # absolute dotted module name (the submodule when `from pkg import submodule`)
    names: tuple[str, ...]  # names taken from the target by `from target import ...`; () for `import x`
    deferred: bool  # inside a function body
    statement: int  # id of the import statement (one statement may name several modules)


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_files(root: Path = ROOT, packages=PACKAGES, scripts=SCRIPTS) -> dict[str, Path]:
    """Dotted module name -> file, for every module of the packages and the top-level scripts."""
    files = {}
    for pkg in packages:
        for path in sorted((root / pkg).rglob("*.py")):
            files[module_name(path, root)] = path
    for script in scripts:
        if (root / f"{script}.py").is_file():
            files[script] = root / f"{script}.py"
    return files


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _walk(node: ast.AST, deferred: bool = False):
    """(import node, deferred) for every import, skipping TYPE_CHECKING-only blocks."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.Import, ast.ImportFrom)):
            yield child, deferred
        elif isinstance(child, ast.If) and _is_type_checking(child.test):
            for stmt in child.orelse:
                yield from _walk(ast.Module(body=[stmt], type_ignores=[]), deferred)
        else:
            inner = deferred or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            yield from _walk(child, inner)


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[:len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def parse_imports(files: dict[str, Path]) -> tuple[list[Import], dict[str, list[tuple[str, bool]]]]:
    """Intra-project imports, and every module's external imports as (top-level name, deferred)."""
    tops = {name.split(".")[0] for name in files}
    imports, external = [], {}
    statement = 0
    for module, path in files.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        is_package = path.name == "__init__.py"
        external[module] = []
        for node, deferred in _walk(tree):
            statement += 1
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.split(".")[0] in tops:
                        imports.append(Import(module, path, node.lineno, alias.name, (), deferred, statement))
                    else:
                        external[module].append((alias.name.split(".")[0], deferred))
                continue
            source = _resolve(module, is_package, node)
            if source.split(".")[0] not in tops:
                external[module].append((source.split(".")[0], deferred))
                continue
            plain = []
            for alias in node.names:
                sub = f"{source}.{alias.name}"
                if sub in files:
                    imports.append(Import(module, path, node.lineno, sub, (), deferred, statement))
                else:
                    plain.append(alias.name)
            if plain:
                imports.append(Import(module, path, node.lineno, source, tuple(plain), deferred, statement))
    return imports, external


def layer_of(module: str) -> int | None:
    if module in PACKAGE_LAYERS:
        return PACKAGE_LAYERS[module]
    best = None
    for prefix, layer in LAYERS:
        if (module == prefix or module.startswith(prefix + ".")) and (best is None or len(prefix) > len(best[0])):
            best = (prefix, layer)
    return None if best is None else best[1]


def component_of(module: str) -> str | None:
    return next((c for c in COMPONENTS if module == c or module.startswith(c + ".")), None)


def owner_of(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] in SPLIT_OWNERS and len(parts) > 1 else parts[0]


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _where(imp: Import, root: Path) -> str:
    return f"{imp.path.relative_to(root)}:{imp.line} {imp.importer} -> {imp.target}"


def _parents(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


class Contract:
    """The parsed import graph of one source tree and its rule checks (each returns violation lines)."""

    def __init__(self, root: Path = ROOT, packages=PACKAGES, scripts=SCRIPTS):
        self.root = root
        self.files = project_files(root, packages, scripts)
        self.imports, self.external = parse_imports(self.files)
        self.top_level: dict[str, set[str]] = {m: set() for m in self.files}
        for imp in self.imports:
            if not imp.deferred and imp.target in self.files:
                self.top_level[imp.importer].add(imp.target)
        self._heavy: dict[str, frozenset[str]] = {}

    def heavy(self, module: str) -> frozenset[str]:
        """Heavy dependencies loaded by importing ``module``: its parents' and its own module-level
        imports, followed transitively through project modules."""
        if module not in self._heavy:
            seen, todo, found = set(), [module], set()
            while todo:
                current = todo.pop()
                if current in seen or current not in self.files:
                    continue
                seen.add(current)
                found |= {name for name, deferred in self.external[current] if not deferred and name in HEAVY}
                todo.extend(self.top_level[current])
                todo.extend(_parents(current))
            self._heavy[module] = frozenset(found)
        return self._heavy[module]

    def unknown_targets(self) -> list[str]:
        return [f"{_where(i, self.root)} (no such module)" for i in self.imports if i.target not in self.files]

    def unlayered(self) -> list[str]:
        return sorted(f"{self.files[m].relative_to(self.root)} {m} (no layer)" for m in self.files if layer_of(m) is None)

    def upward(self) -> list[str]:
        out = []
        for imp in self.imports:
            low, high = layer_of(imp.importer), layer_of(imp.target)
            if low is not None and high is not None and high > low:
                out.append(f"{_where(imp, self.root)} (upward: layer {low} imports layer {high})")
        return out

    def component_cycles(self) -> list[str]:
        edges: dict[str, dict[str, Import]] = {c: {} for c in COMPONENTS}
        for imp in self.imports:
            a, b = component_of(imp.importer), component_of(imp.target)
            if a and b and a != b:
                edges[a].setdefault(b, imp)
        out = []
        for cycle in _cycles({a: set(bs) for a, bs in edges.items()}):
            hops = [edges[a][b] for a, b in zip(cycle, cycle[1:] + cycle[:1])]
            out.append("component cycle " + " -> ".join(cycle + cycle[:1]) + ": "
                       + "; ".join(f"{_where(h, self.root)} (component cycle)" for h in hops))
        return out

    def private_names(self) -> list[str]:
        out = []
        for imp in self.imports:
            parts = imp.target.split(".")
            held = [(".".join(parts[:i]), p) for i, p in enumerate(parts) if i and _private(p)]
            held += [(imp.target, name) for name in imp.names if _private(name)]
            for holder, name in held:
                if owner_of(holder) != owner_of(imp.importer):
                    out.append(f"{_where(imp, self.root)} (private name {name!r} of {owner_of(holder)})")
        return out

    def unjustified_deferred(self) -> list[str]:
        out = []
        for imp in self.imports:
            if not imp.deferred or imp.importer in DEFER_EXEMPT or imp.target not in self.files:
                continue
            gained = self.heavy(imp.target) - self.heavy(imp.importer)
            if not gained:
                out.append(f"{_where(imp, self.root)} (deferred without a heavy dependency: move it to the top)")
        return out

    def module_cycles(self) -> list[str]:
        out = []
        for cycle in _cycles(self.top_level):
            hops = []
            for a, b in zip(cycle, cycle[1:] + cycle[:1]):
                imp = next(i for i in self.imports if i.importer == a and i.target == b and not i.deferred)
                hops.append(f"{_where(imp, self.root)} (module-level cycle)")
            out.append("cycle " + " -> ".join(cycle + cycle[:1]) + ": " + "; ".join(hops))
        return out

    def counts(self) -> tuple[int, int]:
        """(intra-project import statements, of which deferred)."""
        statements = {i.statement: i.deferred for i in self.imports}
        return len(statements), sum(statements.values())


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle through each strongly connected component with more than one node (or a self-loop)."""
    index, low, stack, on_stack, sccs = {}, {}, [], set(), []

    def visit(node: str) -> None:  # Tarjan; the graphs here are a few hundred nodes
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            scc = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                scc.append(top)
                if top == node:
                    break
            if len(scc) > 1 or node in graph.get(node, ()):
                sccs.append(set(scc))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    cycles = []
    for scc in sccs:  # a shortest cycle back to the smallest member, by breadth-first search in the SCC
        start = min(scc)
        paths, seen = [[start]], {start}
        cycle = None
        while paths and cycle is None:
            grown = []
            for path in paths:
                for nxt in sorted(graph.get(path[-1], ())):
                    if nxt == start:
                        cycle = path
                        break
                    if nxt in scc and nxt not in seen:
                        seen.add(nxt)
                        grown.append(path + [nxt])
                if cycle:
                    break
            paths = grown
        cycles.append(cycle or [start])
    return cycles


def _check(violations: list[str]) -> None:
    if violations:
        print("\n".join(violations))
    assert not violations, f"{len(violations)} import-contract violation(s):\n" + "\n".join(violations)


@pytest.fixture(scope="module")
def contract() -> Contract:
    return Contract()


def test_every_import_resolves_and_every_module_has_a_layer(contract):
    assert len(contract.files) > 50  # the walk found the packages
    _check(contract.unknown_targets() + contract.unlayered())


def test_no_upward_imports(contract):
    _check(contract.upward())


def test_components_form_an_acyclic_package_graph(contract):
    _check(contract.component_cycles())


def test_no_private_names_across_packages(contract):
    _check(contract.private_names())


def test_deferred_imports_only_keep_a_heavy_dependency_away(contract):
    _check(contract.unjustified_deferred())


def test_no_cycles_among_module_level_imports(contract):
    _check(contract.module_cycles())


def test_the_checker_finds_each_kind_of_violation(tmp_path):
    """A tiny tree that breaks every rule once, so a checker that silently passes would fail here."""
    tree = {
        "fewshot/__init__.py": "from .adaptation import cfg\n",  # upward 0 -> 2
        "fewshot/errors.py": "",
        "fewshot/io.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from generators import grid\n",
        "fewshot/adaptation/__init__.py": "",
        "fewshot/adaptation/run.py": "import torch\n",
        "fewshot/adaptation/cfg.py": (
            "def f():\n    from ..errors import FewshotError\n"  # deferred, nothing heavy: violation
            "def g():\n    from .run import torch_thing\n"  # deferred, keeps torch away: fine
        ),
        "generators/__init__.py": "def f():\n    from fewshot.io import _helper\n",  # private + deferred
        "generators/grid.py": "import au_models.model\n",
        "au_models/__init__.py": "",
        "au_models/model.py": "from generators import grid\n",  # component cycle, module cycle
        "experiments/__init__.py": "",
        "experiments/train.py": "from .runner import go\n",
        "experiments/runner.py": "from .train import _cache\n",  # private across modules, module cycle
        "cli.py": "def main():\n    from experiments.runner import go\n",  # exempt from the deferral rule
    }
    for rel, text in tree.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    c = Contract(tmp_path)
    assert c.unknown_targets() == [] and c.unlayered() == []
    assert [v.split(" (")[0] for v in c.upward()] == ["fewshot/__init__.py:1 fewshot -> fewshot.adaptation.cfg"]
    assert len(c.component_cycles()) == 1 and "au_models -> generators -> au_models" in c.component_cycles()[0]
    assert sorted(v.split(" (")[0] for v in c.private_names()) == [
        "experiments/runner.py:1 experiments.runner -> experiments.train",
        "generators/__init__.py:2 generators -> fewshot.io",
    ]
    assert sorted(v.split(" (")[0] for v in c.unjustified_deferred()) == [
        "fewshot/adaptation/cfg.py:2 fewshot.adaptation.cfg -> fewshot.errors",
        "generators/__init__.py:2 generators -> fewshot.io",
    ]
    cycles = " ".join(c.module_cycles())
    assert "experiments.runner -> experiments.train -> experiments.runner" in cycles
    assert "au_models.model -> generators" in cycles
    assert c.heavy("fewshot.adaptation") == frozenset() and c.heavy("fewshot.adaptation.run") == {"torch"}
    assert c.counts() == (9, 4)  # the TYPE_CHECKING import is not one


if __name__ == "__main__":
    found = Contract()
    total, deferred = found.counts()
    print(f"{len(found.files)} modules, {total} intra-project import statements, {deferred} deferred")
    for check in ("unknown_targets", "unlayered", "upward", "component_cycles", "private_names",
                  "unjustified_deferred", "module_cycles"):
        lines = getattr(found, check)()
        print(f"\n## {check}: {len(lines)}")
        print("\n".join(lines))

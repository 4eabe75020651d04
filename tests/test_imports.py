"""No two modules of the jsbir package import each other in a circle, lazy imports included.

The check is static: every .py file under jsbir/ is parsed with ``ast`` and each explicit import
of a jsbir module, at the top level or inside a function, becomes an edge of the import graph.
``import a.b.c`` points at ``a.b.c``; ``from A import B`` points at the module ``A.B`` when there
is one and at ``A`` otherwise; relative imports are resolved against the importing module's
package. Importing a submodule also runs its parents' ``__init__`` at run time, but that is no
edge here: only imports written in the source count. Every strongly connected component of more
than one module is a cycle, reported with the import lines that form it.
"""

from __future__ import annotations

import ast
import dataclasses
import textwrap
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parents[1] / "jsbir"


@dataclasses.dataclass(frozen=True)
class Import:
    """One import statement of a module, pointing at another module of the package."""

    source: str
    target: str
    path: Path
    line: int
    text: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.text}  ({self.source} -> {self.target})"


def module_files(package_dir: Path) -> dict[str, Path]:
    """Module name -> file for every .py under package_dir (a package's __init__.py is the package)."""
    modules = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = path.relative_to(package_dir).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join((package_dir.name, *parts))] = path
    return modules


def _known_prefix(name: str, modules: dict[str, Path]) -> str | None:
    """The longest dotted prefix of name that is a module of the package, if any."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        if ".".join(parts[:end]) in modules:
            return ".".join(parts[:end])
    return None


def _targets(node: ast.Import | ast.ImportFrom, module: str, is_package: bool, modules: dict[str, Path]) -> set[str]:
    """The package modules one import statement points at."""
    if isinstance(node, ast.Import):
        found = (_known_prefix(alias.name, modules) for alias in node.names)
        return {target for target in found if target}
    base = node.module or ""
    if node.level:  # relative: start from the module's own package and climb level - 1 steps
        package = module.split(".") if is_package else module.split(".")[:-1]
        package = package[: len(package) - (node.level - 1)]
        base = ".".join(package + ([node.module] if node.module else []))
    targets = set()
    for alias in node.names:
        if f"{base}.{alias.name}" in modules:
            targets.add(f"{base}.{alias.name}")
        elif (target := _known_prefix(base, modules)) is not None:
            targets.add(target)
    return targets


def import_graph(package_dir: Path) -> dict[str, list[Import]]:
    """Module name -> its imports of other modules of the package, from anywhere in its source."""
    modules = module_files(package_dir)
    graph: dict[str, list[Import]] = {}
    for module, path in modules.items():
        source = path.read_text()
        lines = source.splitlines()
        edges = []
        for node in ast.walk(ast.parse(source, str(path))):
            if isinstance(node, ast.Import | ast.ImportFrom):
                for target in sorted(_targets(node, module, path.name == "__init__.py", modules)):
                    if target != module:
                        text = lines[node.lineno - 1].strip()
                        edges.append(Import(module, target, path, node.lineno, text))
        graph[module] = sorted(edges, key=lambda edge: (edge.line, edge.target))
    return graph


def strongly_connected(graph: dict[str, list[Import]]) -> list[list[str]]:
    """Tarjan's strongly connected components of the module graph, each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for edge in graph[node]:
            if edge.target not in index:
                visit(edge.target)
                low[node] = min(low[node], low[edge.target])
            elif edge.target in on_stack:
                low[node] = min(low[node], index[edge.target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(components)


def import_cycles(package_dir: Path) -> list[tuple[list[str], list[Import]]]:
    """Each cycle of the package as (its modules, the import statements among them)."""
    graph = import_graph(package_dir)
    cycles = []
    for component in strongly_connected(graph):
        if len(component) > 1:
            members = set(component)
            edges = [edge for module in component for edge in graph[module] if edge.target in members]
            cycles.append((component, edges))
    return cycles


def test_jsbir_has_no_import_cycles():
    assert (PACKAGE_DIR / "__init__.py").is_file()
    cycles = import_cycles(PACKAGE_DIR)
    report = "\n\n".join(
        f"cycle between {', '.join(modules)}:\n" + "\n".join(f"  {edge}" for edge in edges) for modules, edges in cycles
    )
    assert not cycles, f"import cycles in jsbir (lazy imports count too):\n{report}"


def _write(root: Path, files: dict[str, str]) -> None:
    for name, source in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source))


def test_detector_finds_exactly_the_planted_cycle(tmp_path: Path):
    fake = tmp_path / "fake"
    _write(
        fake,
        {
            # The package imports e: an implicit submodule -> parent edge would make e <-> fake a cycle.
            "__init__.py": "from fake.e import VALUE\n",
            # The planted cycle a -> b -> c -> a; c's import is lazy and relative.
            "a.py": "import os\nfrom fake import b\n",
            "b.py": "import fake.c\n",
            "c.py": "def late():\n    from . import a\n    return a\n",
            # No cycle: d uses the others, and from-imports of names that are not modules.
            "d.py": "import numpy as np\nfrom fake.a import thing\nfrom fake import e\nfrom .b import other\n",
            "e.py": "VALUE = 1\n",
            # `from fake.sub import util` must point at fake.sub.util, not fake.sub (no sub <-> leaf cycle).
            "sub/__init__.py": "from fake.sub.leaf import thing\n",
            "sub/leaf.py": "from fake.sub import util\nfrom .. import e\n",
            "sub/util.py": "def helper():\n    from fake import e\n",
        },
    )
    graph = import_graph(fake)
    assert {edge.target for edge in graph["fake.d"]} == {"fake.a", "fake.e", "fake.b"}
    assert {edge.target for edge in graph["fake.sub.leaf"]} == {"fake.sub.util", "fake.e"}

    cycles = import_cycles(fake)
    assert [modules for modules, _ in cycles] == [["fake.a", "fake.b", "fake.c"]]
    edges = cycles[0][1]
    assert {(edge.source, edge.target) for edge in edges} == {
        ("fake.a", "fake.b"),
        ("fake.b", "fake.c"),
        ("fake.c", "fake.a"),
    }
    lazy = next(edge for edge in edges if edge.source == "fake.c")
    assert (lazy.path, lazy.line, lazy.text) == (fake / "c.py", 2, "from . import a")

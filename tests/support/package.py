"""The package as source files: which file is which module, and what each imports.

For the layer, cycle and size tests. The file-to-module map comes from pyproject.toml's
``[tool.setuptools.package-dir]`` (``core/`` is ``certwright``, ``engine/`` is
``certwright.engine``, ...), so a folder added there is scanned without editing a test.
Imports are read from the AST, never by importing: ``import x``, ``from x import y`` and
relative imports, wherever they are (module level, functions, ``if TYPE_CHECKING:``), each
marked with whether it runs when its module is imported.
"""
from __future__ import annotations

import ast
import tomllib
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Import", "Module", "cycles", "find_imports", "modules", "package_dirs", "scan"]


@dataclass(frozen=True)
class Module:
    """One ``.py`` file of the package: its dotted name and its path from the root."""

    name: str
    path: Path
    is_package: bool  # an __init__.py: relative imports resolve from the module itself


@dataclass(frozen=True)
class Import:
    """One import of one of our modules by another."""

    importer: str
    target: str  # the module imported (the package itself for a name that is no module)
    line: int
    runtime: bool  # runs on import: not in a function nor under ``if TYPE_CHECKING:``


def package_dirs(root: Path) -> dict[str, str]:
    """pyproject's package-dir: package name -> folder, relative to ``root``."""
    config = tomllib.loads((root / "pyproject.toml").read_text())
    mapping: dict[str, str] = config["tool"]["setuptools"]["package-dir"]
    return dict(mapping)


def modules(root: Path) -> dict[str, Module]:
    """Every module in the mapped folders by dotted name (folders mapped elsewhere skipped)."""
    mapping = package_dirs(root)
    folders = {Path(folder): package for package, folder in mapping.items()}
    found: dict[str, Module] = {}
    for folder, package in folders.items():
        for path in sorted((root / folder).rglob("*.py")):
            rel = path.relative_to(root / folder)
            if "__pycache__" in rel.parts or any(
                    Path(folder, *rel.parts[:i]) in folders for i in range(1, len(rel.parts))):
                continue  # another mapping's folder nested in this one
            parts = [*rel.parts[:-1], rel.stem] if rel.name != "__init__.py" else [*rel.parts[:-1]]
            name = ".".join([package, *parts])
            found[name] = Module(name, path.relative_to(root), rel.name == "__init__.py")
    return found


class _Visitor(ast.NodeVisitor):
    def __init__(self, module: Module, known: set[str]) -> None:
        self.module, self.known = module, known
        self.found: list[Import] = []
        self.runtime = True

    def _ours(self, dotted: str) -> str | None:
        """The longest prefix of ``dotted`` that is one of our modules, or None."""
        parts = dotted.split(".")
        for n in range(len(parts), 0, -1):
            candidate = ".".join(parts[:n])
            if candidate in self.known:
                return candidate
        return None

    def _add(self, target: str | None, node: ast.stmt) -> None:
        if target is not None and target != self.module.name:
            self.found.append(Import(self.module.name, target, node.lineno, self.runtime))

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(self._ours(alias.name), node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:
            package = self.module.name if self.module.is_package \
                else self.module.name.rpartition(".")[0]
            for _ in range(node.level - 1):
                package = package.rpartition(".")[0]
            base = ".".join(p for p in (package, node.module or "") if p)
        else:
            base = node.module or ""
        for alias in node.names:
            submodule = f"{base}.{alias.name}"
            self._add(submodule if submodule in self.known else self._ours(base), node)

    def _nested(self, node: ast.AST, runtime: bool) -> None:
        saved, self.runtime = self.runtime, self.runtime and runtime
        self.generic_visit(node)
        self.runtime = saved

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        self._nested(node, False)

    def visit_AsyncFunctionDef(self, node: ast.AsyncFunctionDef) -> None:
        self._nested(node, False)

    def visit_Lambda(self, node: ast.Lambda) -> None:
        self._nested(node, False)

    def visit_If(self, node: ast.If) -> None:
        test = node.test
        if (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
                isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"):
            self.visit(test)
            for stmt in node.body:
                self._type_only(stmt)
            for stmt in node.orelse:
                self.visit(stmt)
            return
        self.generic_visit(node)

    def _type_only(self, stmt: ast.stmt) -> None:
        saved, self.runtime = self.runtime, False
        self.visit(stmt)
        self.runtime = saved


def find_imports(source: str, module: Module, known: set[str]) -> list[Import]:
    """Every import of a module in ``known`` that ``source`` (the text of ``module``) makes."""
    visitor = _Visitor(module, known)
    visitor.visit(ast.parse(source, str(module.path)))
    return visitor.found


def scan(root: Path) -> tuple[dict[str, Module], list[Import]]:
    """The modules under ``root`` (a repository laid out as pyproject says) and their imports."""
    found = modules(root)
    known = set(found)
    imports: list[Import] = []
    for module in found.values():
        imports += find_imports((root / module.path).read_text(), module, known)
    return found, imports


def cycles(edges: set[tuple[str, str]]) -> set[frozenset[str]]:
    """The strongly connected components of more than one module (Tarjan, iterative)."""
    graph: dict[str, list[str]] = {}
    for a, b in sorted(edges):
        graph.setdefault(a, []).append(b)
        graph.setdefault(b, [])
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: set[frozenset[str]] = set()
    for start, targets in graph.items():
        if start in index:
            continue
        work = [(start, iter(targets))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(graph[child])))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1:
                    out.add(frozenset(component))
    return out

"""The architecture, checked: which package may import which, the design's nevers, no import
circles, and a pure policy.

Every import counts, wherever it stands (inside a function, under TYPE_CHECKING): an import
moved into a function still ties the two modules together. The table below is the one the
README's architecture section shows.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "gateway"
FRONT_DOORS = {"__main__", "cli", "server"}

# Package (or shared module) -> the gateway packages it may import. The front doors (cli,
# server, __main__) may import anything; nothing may import them.
MAY_IMPORT: dict[str, set[str]] = {
    "model": set(),
    "addresses": set(),
    "lookalikes": set(),
    "config": {"model", "addresses"},
    "runtime": {"model", "config"},
    "speedups": {"runtime"},
    "rules": {"model", "config", "lookalikes"},
    "policy": {"model", "addresses", "lookalikes", "rules"},
    "store": {"model", "addresses", "runtime"},
    "auth": {"model", "addresses", "config", "runtime", "store"},
    "rewrite": {"model", "rules", "auth"},
    "mail": {"model", "lookalikes", "runtime", "speedups", "rewrite"},
    "services": {"model", "addresses", "config", "runtime", "store", "auth", "rewrite"},
    "upstream": {"model", "config", "runtime", "mail", "rewrite"},
    "pipeline": {
        "model", "addresses", "lookalikes", "config", "runtime", "rules", "policy", "mail",
        "rewrite", "store", "services", "upstream",
    },
    "ingress": {
        "model", "addresses", "config", "runtime", "rules", "mail", "rewrite", "store",
        "services", "auth", "pipeline",
    },
    "web": {
        "model", "addresses", "config", "runtime", "rules", "mail", "rewrite", "store",
        "services", "auth", "pipeline",
    },
}

# The design's nevers, stated on their own so that widening the table cannot drop one.
NEVER: list[tuple[str, str]] = [
    ("ingress", "upstream"),
    ("ingress", "web"),
    ("upstream", "policy"),
    ("upstream", "pipeline"),
    ("store", "policy"),
]

# The policy's modules are pure: they import rule TYPES (never the loaders), and nothing
# that reaches files, sockets, processes, the clock or randomness.
POLICY_RULE_MODULES = {
    "gateway.rules.ruleset", "gateway.rules.calling", "gateway.rules.calendars",
    "gateway.rules.keywords", "gateway.rules.errors", "gateway.rules.geography",
}
IO_MODULES = {
    "os", "io", "pathlib", "shutil", "tempfile", "glob", "socket", "ssl", "select",
    "selectors", "asyncio", "threading", "multiprocessing", "subprocess", "signal",
    "sqlite3", "asyncpg", "aiohttp", "aiosmtplib", "aiosmtpd", "smtplib", "http", "urllib",
    "tomllib", "logging", "time", "random", "secrets", "uuid",
}
CLOCK_AND_FILE_CALLS = {"open", "now", "utcnow", "today", "time", "monotonic"}


@dataclass(frozen=True)
class Import:
    importer: str
    imported: str
    line: int


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imports_of(name: str, path: Path) -> list[Import]:
    """Every import in the module, resolved to a module (`from pkg import mod` names mod)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [Import(name, alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                found.append(Import(name, candidate if candidate in MODULES else base, node.lineno))
    return found


ALL_IMPORTS = [i for name, path in MODULES.items() for i in imports_of(name, path)]
GATEWAY_IMPORTS = [
    i for i in ALL_IMPORTS if i.imported.startswith("gateway.") and i.imported != i.importer
]


def role(module: str) -> str:
    """The package a module belongs to (`gateway.store.sqlite.blocks` -> `store`)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "gateway"


def where(i: Import) -> str:
    return f"{MODULES[i.importer].relative_to(ROOT)}:{i.line} imports {i.imported}"


def test_every_package_is_in_the_table() -> None:
    roles = {role(m) for m in MODULES} - {"gateway"} - FRONT_DOORS
    assert roles == set(MAY_IMPORT), "a package was added or removed: give it its row"


def test_packages_import_only_what_the_table_allows() -> None:
    wrong = [
        where(i) for i in GATEWAY_IMPORTS
        if role(i.importer) not in FRONT_DOORS
        and role(i.imported) != role(i.importer)
        and role(i.imported) not in MAY_IMPORT[role(i.importer)]
    ]
    assert wrong == []


def test_nothing_imports_a_front_door() -> None:
    wrong = [
        where(i) for i in GATEWAY_IMPORTS
        if role(i.imported) in FRONT_DOORS and role(i.importer) not in FRONT_DOORS
    ]
    assert wrong == []


@pytest.mark.parametrize(("importer", "imported"), NEVER)
def test_the_nevers_hold(importer: str, imported: str) -> None:
    assert imported not in MAY_IMPORT[importer]
    wrong = [
        where(i) for i in GATEWAY_IMPORTS
        if role(i.importer) == importer and role(i.imported) == imported
    ]
    assert wrong == []


def test_the_package_table_has_no_circle() -> None:
    """Allowed edges alone form no circle, so no two packages can come to need each other."""
    assert find_cycle({p: set(deps) for p, deps in MAY_IMPORT.items()}) is None


def test_no_module_import_circle() -> None:
    graph: dict[str, set[str]] = defaultdict(set)
    for i in GATEWAY_IMPORTS:
        if i.imported in MODULES:
            graph[i.importer].add(i.imported)
    assert find_cycle(graph) is None


def test_policy_is_pure() -> None:
    wrong = []
    for i in ALL_IMPORTS:
        if role(i.importer) != "policy":
            continue
        top = i.imported.split(".")[0]
        if top == "gateway":
            if role(i.imported) == "rules" and i.imported not in POLICY_RULE_MODULES:
                wrong.append(where(i) + " (a rule loader: policy takes rule types only)")
        elif top in IO_MODULES:
            wrong.append(where(i))
    for name, path in MODULES.items():
        if role(name) != "policy":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call):
                called = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(
                    node.func, "id", ""
                )
                if called in CLOCK_AND_FILE_CALLS:
                    wrong.append(f"{path.relative_to(ROOT)}:{node.lineno} calls {called}()")
    assert wrong == []


def test_the_checker_sees_violations(tmp_path: Path) -> None:
    """The checks above would fail on a bad import: the parser resolves relative and
    `from package import module` forms to modules, and the cycle search finds circles."""
    source = tmp_path / "probe.py"
    source.write_text(
        "from gateway.upstream import twilio\nfrom .. import model\nimport gateway.web.admin\n"
    )
    found = {i.imported for i in imports_of("gateway.ingress.probe", source)}
    assert found == {"gateway.upstream.twilio", "gateway.model", "gateway.web.admin"}
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) is not None
    assert find_cycle({"a": {"b"}, "b": {"c"}}) is None


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One circle of the graph as a path, or None (iterative depth-first search)."""
    state: dict[str, int] = {}
    for start in sorted(graph):
        if state.get(start):
            continue
        stack = [(start, iter(sorted(graph.get(start, ()))))]
        path = [start]
        state[start] = 1
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                state[node] = 2
                stack.pop()
                path.pop()
            elif state.get(child) == 1:
                return [*path[path.index(child):], child]
            elif not state.get(child):
                state[child] = 1
                path.append(child)
                stack.append((child, iter(sorted(graph.get(child, ())))))
    return None

"""The layers hold: read from the source (every import, at the top or inside a function;
type-only imports under ``if TYPE_CHECKING:`` aside), so a change that breaks them fails here.

* ``dawait.core`` is pure: it imports nothing of dawait outside itself and no IO, clock or
  concurrency module (only the standard library's pure parts, and cronsim).
* ``dawait.runtime`` (the engine and the embedded stores) imports only the core and itself:
  not the SDK (``dawait``, ``dawait.errors``...), the cluster or the node.
* ``dawait.cluster`` (etcd) imports the core and the runtime, never the SDK or the node.
* No module imports, through any chain, a module that imports it back.
* Time only from the injected clock: nothing outside ``runtime/_clock.py`` reads the system
  clock or sleeps (``asyncio.sleep(0)``, a plain yield, aside).
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FOLDERS = {
    "sdk": "dawait",
    "core": "dawait.core",
    "runtime": "dawait.runtime",
    "cluster": "dawait.cluster",
    "node": "dawait.node",
}

CORE_MAY_IMPORT = {
    "__future__",
    "base64",
    "binascii",
    "collections",
    "dataclasses",
    "datetime",
    "enum",
    "functools",
    "hashlib",
    "itertools",
    "json",
    "math",
    "re",
    "types",
    "typing",
    "cronsim",
}


@dataclass(frozen=True)
class Import:
    module: str
    line: int


def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for folder, package in FOLDERS.items():
        for path in sorted((ROOT / folder).glob("*.py")):
            name = package if path.stem == "__init__" else f"{package}.{path.stem}"
            found[name] = path
    return found


MODULES = _modules()


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _walk(node: ast.AST) -> Iterator[ast.AST]:
    """Every node, except what sits under ``if TYPE_CHECKING:``."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and _is_type_checking(child.test):
            for orelse in child.orelse:
                yield orelse
                yield from _walk(orelse)
            continue
        yield child
        yield from _walk(child)


def _package_of(module: str) -> str:
    return module if MODULES[module].stem == "__init__" else module.rpartition(".")[0]


def imports_of(module: str) -> list[Import]:
    """What ``module`` imports at run time, each as the most specific module name."""
    tree = ast.parse(MODULES[module].read_text(), str(MODULES[module]))
    found: list[Import] = []
    for node in _walk(tree):
        if isinstance(node, ast.Import):
            found += [Import(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = _package_of(module).split(".")
                base = ".".join([*package[: len(package) - node.level + 1], *filter(None, [base])])
            for alias in node.names:
                # `from dawait.node import _api_models` imports the module dawait.node._api_models
                sub = f"{base}.{alias.name}"
                found.append(Import(sub if sub in MODULES else base, node.lineno))
    return found


def _dawait_imports(module: str) -> list[Import]:
    return [i for i in imports_of(module) if i.module.split(".")[0] == "dawait"]


def _layer(module: str) -> str:
    parts = module.split(".")
    if len(parts) > 1 and parts[1] in {"core", "runtime", "cluster", "node"}:
        return parts[1]
    return "sdk"


def _violations(layer: str, allowed: set[str]) -> list[str]:
    return [
        f"{module}:{i.line} imports {i.module}"
        for module in MODULES
        if _layer(module) == layer
        for i in _dawait_imports(module)
        if i.module in MODULES and _layer(i.module) not in allowed
    ]


def test_the_source_tree_is_what_this_test_reads() -> None:
    assert len(MODULES) > 40
    assert "dawait.core._promise" in MODULES
    assert {"dawait.runtime._engine", "dawait.cluster._node", "dawait.node._http"} <= set(MODULES)


def test_the_core_imports_no_io_and_nothing_outside_itself() -> None:
    wrong = [
        f"{module}:{i.line} imports {i.module}"
        for module in MODULES
        if _layer(module) == "core"
        for i in imports_of(module)
        if not (
            i.module.split(".")[0] in CORE_MAY_IMPORT
            or (i.module in MODULES and _layer(i.module) == "core")
        )
    ]
    assert wrong == []


def test_the_runtime_imports_only_the_core() -> None:
    assert _violations("runtime", {"core", "runtime"}) == []


def test_the_cluster_imports_no_sdk_and_no_node() -> None:
    assert _violations("cluster", {"core", "runtime", "cluster"}) == []


def _cycle() -> list[str] | None:
    graph = {
        module: sorted(
            {i.module for i in _dawait_imports(module) if i.module in MODULES} - {module}
        )
        for module in MODULES
    }
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = 1
        path.append(module)
        for imported in graph[module]:
            if state.get(imported) == 1:
                return [*path[path.index(imported) :], imported]
            if imported not in state:
                cycle = visit(imported)
                if cycle:
                    return cycle
        state[module] = 2
        path.pop()
        return None

    for module in graph:
        if module not in state:
            cycle = visit(module)
            if cycle:
                return cycle
    return None


def test_no_module_imports_itself_through_others() -> None:
    assert _cycle() is None


_CLOCK_CALLS = {
    ("time", "time"),
    ("time", "monotonic"),
    ("time", "perf_counter"),
    ("time", "time_ns"),
    ("time", "monotonic_ns"),
    ("time", "sleep"),
    ("asyncio", "sleep"),
    ("datetime", "now"),
    ("datetime", "utcnow"),
    ("datetime", "today"),
    ("loop", "time"),
}


def _clock_reads(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    found = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        owner = node.func.value
        name = (
            owner.id
            if isinstance(owner, ast.Name)
            else owner.attr
            if isinstance(owner, ast.Attribute)
            else "loop"
            if isinstance(owner, ast.Call)
            else ""
        )
        if name.endswith("loop"):
            name = "loop"
        if (name, node.func.attr) not in _CLOCK_CALLS:
            continue
        yields = (
            name == "asyncio"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and node.args[0].value == 0
        )
        if not yields:
            found.append(f"{path.relative_to(ROOT)}:{node.lineno} {name}.{node.func.attr}()")
    return found


def test_time_comes_only_from_the_clock_module() -> None:
    clock = ROOT / "runtime" / "_clock.py"
    wrong = [read for path in MODULES.values() if path != clock for read in _clock_reads(path)]
    assert wrong == []


def test_the_clock_check_sees_a_clock_read(tmp_path: Path) -> None:
    sample = ROOT / "runtime" / "_clock.py"
    assert _clock_reads(sample), "the clock module reads the clock: the check must see it"


@pytest.mark.parametrize("module", ["dawait.core._promise", "dawait.errors", "dawait.core"])
def test_importing_the_core_loads_no_io(module: str) -> None:
    io = ["asyncio", "sqlite3", "socket", "pydantic", "anyio", "aiohttp", "aetcd", "threading"]
    code = f"import sys; import {module}; print(','.join(m for m in {io!r} if m in sys.modules))"
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert loaded == ""


def test_every_event_the_engine_counts_is_in_the_metrics_table() -> None:
    from dawait.runtime._metrics import ENGINE_EVENTS

    counted = set()
    for path in MODULES.values():
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "event"
                and node.args
                and isinstance(node.args[0], ast.Constant)
            ):
                counted.add(node.args[0].value)
    assert counted, "the check must see the engine's events"
    assert counted <= set(ENGINE_EVENTS)


def test_the_module_map_in_the_design_doc_matches_the_tree() -> None:
    doc = (ROOT / "docs" / "design.md").read_text()
    mapped = set(re.findall(r"^\| `((?:sdk|core|runtime|cluster|node)/\w+\.py)` \|", doc, re.M))
    on_disk = {str(path.relative_to(ROOT)) for path in MODULES.values()}
    assert sorted(on_disk - mapped) == [], "modules missing from docs/design.md's module map"
    assert sorted(mapped - on_disk) == [], "docs/design.md maps modules that do not exist"


def test_no_module_is_past_600_lines() -> None:
    long = {
        str(path.relative_to(ROOT)): n
        for path in MODULES.values()
        if (n := len(path.read_text().splitlines())) > 600
    }
    assert long == {}

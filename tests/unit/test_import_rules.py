"""The allowed arrows between the packages (docs/architecture.md), checked on the source.

cli → tools → balancer → server → codec → proto; client → codec → proto. Every import counts, the
lazy ones inside functions too. import-linter was tried first: its graph builder cannot see the
``tensorgate`` namespace through setuptools' editable finder, so the rules are read with ``ast`` here.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]

#: folder -> package
PACKAGES = {
    "proto": "tensorgate.proto",
    "codec": "tensorgate.codec",
    "client": "tensorgate.client",
    "server": "tensorgate.server",
    "balancer": "tensorgate.balancer",
    "tools": "tensorgate.tools",
    "cli": "tensorgate.cli",
    "examples": "tensorgate.examples",
}

#: package -> the other packages it may import
ALLOWED = {
    "tensorgate.proto": set(),
    "tensorgate.codec": {"tensorgate.proto"},
    "tensorgate.client": {"tensorgate.codec", "tensorgate.proto"},
    "tensorgate.server": {"tensorgate.codec", "tensorgate.proto"},
    "tensorgate.balancer": {"tensorgate.server", "tensorgate.codec", "tensorgate.proto"},
    "tensorgate.tools": {
        "tensorgate.balancer", "tensorgate.server", "tensorgate.client", "tensorgate.codec",
        "tensorgate.proto", "tensorgate.examples",
    },
    "tensorgate.cli": set(PACKAGES.values()),
    "tensorgate.examples": set(),
}  # fmt: skip

#: what `pip install tensorgate` does not bring: the client and the codec must not need it
SERVER_ONLY = {"onnxruntime", "onnx", "pydantic", "pydantic_settings", "diskcache",
               "prometheus_client", "rich", "tqdm", "grpc_health", "grpc_reflection"}  # fmt: skip


def modules() -> Iterator[tuple[str, Path]]:
    for folder, package in PACKAGES.items():
        for path in sorted((REPO_ROOT / folder).rglob("*.py")):
            if path.name.endswith(("_pb2.py", "_pb2_grpc.py")):
                continue
            relative = path.relative_to(REPO_ROOT / folder).with_suffix("")
            parts = [p for p in relative.parts if p != "__init__"]
            yield ".".join([package, *parts]), path


def imports_of(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def package_of(module: str) -> str | None:
    return next((p for p in PACKAGES.values() if module == p or module.startswith(p + ".")), None)


GRAPH = {module: imports_of(path) for module, path in modules()}


def test_the_rules_see_every_package() -> None:
    assert {package_of(m) for m in GRAPH} == set(PACKAGES.values())


@pytest.mark.parametrize("package", list(ALLOWED))
def test_each_package_imports_only_what_its_layer_allows(package: str) -> None:
    wrong = sorted(
        f"{module} imports {target}"
        for module, targets in GRAPH.items()
        if package_of(module) == package
        for target in targets
        if (other := package_of(target)) and other != package and other not in ALLOWED[package]
    )
    assert not wrong, "\n".join(wrong)


def test_no_module_imports_a_private_module_of_another_package() -> None:
    wrong = sorted(
        f"{module} imports {target}"
        for module, targets in GRAPH.items()
        for target in targets
        if package_of(target) not in (None, package_of(module))
        and any(part.startswith("_") and part != "__init__" for part in target.split(".")[2:])
    )
    assert not wrong, "\n".join(wrong)


def test_the_client_and_the_codec_need_no_server_dependency() -> None:
    wrong = sorted(
        f"{module} imports {target}"
        for module, targets in GRAPH.items()
        if package_of(module) in ("tensorgate.client", "tensorgate.codec")
        for target in targets
        if target.split(".")[0] in SERVER_ONLY
    )
    assert not wrong, "\n".join(wrong)


def cycle_in(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle among the graph's own modules, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = 1
        stack.append(module)
        for target in sorted(graph[module]):
            if target not in graph or target == module:
                continue
            if state.get(target) == 1:
                return [*stack[stack.index(target) :], target]
            if target not in state and (found := visit(target)):
                return found
        stack.pop()
        state[module] = 2
        return None

    for module in sorted(graph):
        if module not in state and (found := visit(module)):
            return found
    return None


def test_no_import_cycles() -> None:
    graph = {
        module: {t for t in targets if t in GRAPH and GRAPH_PARENTS.get(module, "") != t}
        for module, targets in GRAPH.items()
    }
    cycle = cycle_in(graph)
    assert cycle is None, " -> ".join(cycle or [])


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert cycle_in({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert cycle_in({"a": {"b"}, "b": set()}) is None


#: a package's ``__init__`` re-exporting its modules is not a cycle with them
GRAPH_PARENTS = {module: module.rsplit(".", 1)[0] for module in GRAPH}

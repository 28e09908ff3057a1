"""The floors of DESIGN.md: every import (module-level or inside a function) runs downward,
and imports within one floor form no cycle."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import package_imports

PACKAGE = Path(__file__).resolve().parents[1] / "deepe_widgets"

FLOORS = [
    {"errors", "config", "names", "paths", "params", "processes", "kernels", "stagefiles",
     "provenance", "images", "raycluster", "envs"},  # foundation
    {"store"},
    {"runtime", "runtime.mlx", "runtime.script", "runtime.image_generation", "runtime.embedding",
     "runtime.vision_language", "runtime.evaluation", "runtime.preference", "runtime.devices"},
    {"methods", "datasets", "models", "metrics", "demo_data", "testing", "image_data", "simpletuner", "embeddings",
     "vision_language", "scriptmode"},  # catalogue
    {"trainings"},  # training types (trainings.* too)
    {"jobs", "evaluations", "compare", "reruns", "tracking", "gpus"},  # queue
    {"runner", "executors", "executors.base", "executors.local", "executors.ray", "publishing", "worker", "inference",
     "deployments"},  # execution
    {"cli", "app", "voila_server", "doctor", "ui", "__init__"},  # surfaces (ui.* and cli.* too)
]


def floor_of(module: str) -> int:
    for index, floor in enumerate(FLOORS):
        if module in floor or module.split(".")[0] in floor and module.split(".")[0] in ("ui", "cli", "trainings"):
            return index
    raise AssertionError(f"deepe_widgets.{module} is on no floor: add it to DESIGN.md's floors and FLOORS")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts.pop()
    return ".".join(parts)


def import_graph(sources: dict[str, tuple[str, bool]]) -> dict[str, set[str]]:
    return {module: package_imports(module, source, is_package) - {module}
            for module, (source, is_package) in sources.items()}


def violations(sources: dict[str, tuple[str, bool]]) -> list[str]:
    graph = import_graph(sources)
    problems = []
    for module, targets in sorted(graph.items()):
        for target in sorted(targets):
            if floor_of(target) > floor_of(module):
                problems.append(f"{module} (floor {floor_of(module) + 1}) imports {target} "
                                f"(floor {floor_of(target) + 1}): an upward arrow")
    # within a floor: no cycle
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for target in sorted(graph.get(node, ())):
            if floor_of(target) != floor_of(node):
                continue
            if state.get(target) == 1:
                problems.append("import cycle: " + " -> ".join(trail[trail.index(target):] + [target]))
            elif target not in state:
                visit(target, trail + [target])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    return problems


def package_sources() -> dict[str, tuple[str, bool]]:
    return {module_name(path): (path.read_text(encoding="utf-8"), path.name == "__init__.py")
            for path in sorted(PACKAGE.rglob("*.py"))}


def test_every_import_runs_down_the_floors():
    assert violations(package_sources()) == []


@pytest.mark.parametrize("module, planted", [
    ("store", "from . import jobs\n"),
    ("methods", "def f():\n    from .runner import execute_stage\n"),  # hidden in a function
    ("runtime", "def f():\n    from .. import models\n"),
])
def test_a_planted_upward_import_is_caught(module, planted):
    sources = package_sources()
    source, is_package = sources[module]
    sources[module] = (source + "\n" + planted, is_package)
    found = violations(sources)
    assert len(found) == 1 and "upward" in found[0], found


def test_a_cycle_within_a_floor_is_caught():
    sources = package_sources()
    sources["jobs"] = (sources["jobs"][0] + "\nfrom . import compare\n", False)
    assert any("cycle" in p for p in violations(sources)), violations(sources)


def test_every_module_is_on_a_floor():
    for module in package_sources():
        floor_of(module)

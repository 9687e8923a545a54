"""The workspace keeps its promises: packages import alone, nox lists its sessions."""

from __future__ import annotations

import ast
import importlib.util
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = sorted(p.parent for p in (ROOT / "packages").glob("*/pyproject.toml"))


def test_every_member_is_a_src_layout_package() -> None:
    assert [p.name for p in PACKAGES] == ["data", "eval", "models", "serve"]
    for package in PACKAGES:
        name = tomllib.loads((package / "pyproject.toml").read_text())["project"]["name"]
        module = name.replace("-", "_")
        assert (package / "src" / module / "__init__.py").is_file(), name
        assert (package / "README.md").is_file(), name
        assert (package / "tests").is_dir(), name


def test_siblings_are_workspace_dependencies() -> None:
    order = ["celestial-data", "celestial-models", "celestial-eval", "celestial-serve"]
    allowed = {
        "celestial-data": set(),
        "celestial-models": {"celestial-data"},
        "celestial-eval": {"celestial-data", "celestial-models"},
        "celestial-serve": {"celestial-data", "celestial-models"},
    }
    for package in PACKAGES:
        config = tomllib.loads((package / "pyproject.toml").read_text())
        name = config["project"]["name"]
        siblings = {d for d in config["project"]["dependencies"] if d in order}
        assert siblings <= allowed[name], f"{name} may not depend on {siblings - allowed[name]}"
        for sibling in siblings:
            assert config["tool"]["uv"]["sources"][sibling] == {"workspace": True}


@pytest.mark.slow
def test_lock_is_current() -> None:
    subprocess.run(["uv", "lock", "--check"], cwd=ROOT, check=True, capture_output=True)


@pytest.mark.slow
def test_nox_lists_every_session_with_a_description() -> None:
    listing = subprocess.run(
        [sys.executable, "-m", "nox", "-l", "--noxfile", str(ROOT / "noxfile.py")],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "NO_COLOR": "1"},
    ).stdout
    sessions = {
        line[2:].split(" -> ")[0]: line.split(" -> ")[-1]
        for line in listing.splitlines()
        if line[:2] in ("* ", "- ")
    }
    assert {"tests", "lint", "repro", "bench"} <= set(sessions)
    assert all(" -> " in line for line in listing.splitlines() if line[:2] in ("* ", "- "))


# Dependencies a package needs at run time without importing them by name.
RUNTIME_ONLY = {
    "celestial-serve": {"python-multipart"},  # LitServe parses uploads with it
    "celestial-models": {"flatbuffers"},  # jax.export serializes programs with it
}


def canonical(requirement: str) -> str:
    """The distribution name of a requirement string, normalised."""
    for stop in "<>=!~;[ ":
        requirement = requirement.split(stop)[0]
    return requirement.lower().replace("_", "-")


def imported_distributions(source: Path) -> set[str]:
    """Distributions providing the third-party modules a source tree imports."""
    import ast
    import importlib.metadata

    providers = importlib.metadata.packages_distributions()
    stdlib = sys.stdlib_module_names
    found = set()
    for path in source.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top in stdlib or top == "__future__":
                    continue
                for dist in providers.get(top, [top]):
                    found.add(dist.lower().replace("_", "-"))
    return found


@pytest.mark.parametrize("package", PACKAGES, ids=lambda p: p.name)
def test_declares_exactly_what_it_imports(package: Path) -> None:
    config = tomllib.loads((package / "pyproject.toml").read_text())
    name = config["project"]["name"]
    declared = {canonical(d) for d in config["project"]["dependencies"]}
    imported = imported_distributions(package / "src") - {name}
    assert imported <= declared, f"{name} imports undeclared {sorted(imported - declared)}"
    unused = declared - imported - RUNTIME_ONLY.get(name, set())
    assert not unused, f"{name} declares unused {sorted(unused)}"


@pytest.mark.slow
@pytest.mark.parametrize("package", PACKAGES, ids=lambda p: p.name)
def test_package_imports_on_its_own(package: Path) -> None:
    name = tomllib.loads((package / "pyproject.toml").read_text())["project"]["name"]
    module = name.replace("-", "_")
    subprocess.run(
        [
            "uv",
            "run",
            "--locked",
            "--package",
            name,
            "--no-default-groups",
            "--isolated",
            "python",
            "-c",
            f"import {module}",
        ],
        cwd=ROOT,
        check=True,
        capture_output=True,
        env={**os.environ, "UV_PYTHON_DOWNLOADS": "never"},
    )


# Which sibling packages each package may import: dependencies point one way.
ALLOWED = {
    "celestial_data": set(),
    "celestial_models": {"celestial_data"},
    "celestial_eval": {"celestial_data", "celestial_models"},
    "celestial_serve": {"celestial_data", "celestial_models"},
}


def module_imports(source: Path, package: str) -> dict[str, set[str]]:
    """``module -> celestial modules it imports``, anywhere in its file (nested imports too)."""
    graph: dict[str, set[str]] = {}
    for path in sorted((source / package).glob("*.py")):
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                found.add(node.module)
            elif isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
        graph[f"{package}.{path.stem}"] = {m for m in found if m.startswith("celestial_")}
    return graph


def cycle_in(graph: dict[str, set[str]]) -> list[str]:
    """A cycle of ``graph`` as a list of nodes, or [] when it has none."""
    state: dict[str, str] = {}

    def visit(node: str, path: list[str]) -> list[str]:
        state[node] = "open"
        for target in sorted(graph.get(node, ())):
            if state.get(target) == "open":
                return [*path[path.index(target) :], target] if target in path else [node, target]
            if target in graph and target not in state:
                found = visit(target, [*path, target])
                if found:
                    return found
        state[node] = "done"
        return []

    for node in sorted(graph):
        if node not in state and (found := visit(node, [node])):
            return found
    return []


@pytest.mark.parametrize("package", PACKAGES, ids=lambda p: p.name)
def test_imports_point_one_way_without_cycles(package: Path) -> None:
    name = package.name
    module = next(p.name for p in (package / "src").iterdir() if p.name.startswith("celestial_"))
    graph = module_imports(package / "src", module)
    siblings = {m.split(".")[0] for targets in graph.values() for m in targets} - {module}
    assert siblings <= ALLOWED[module], f"{name} imports {sorted(siblings - ALLOWED[module])}"
    inside = {
        node: {t for t in targets if t.startswith(f"{module}.")} for node, targets in graph.items()
    }
    # The package's __init__ re-exports its modules; cycles through it do not count.
    inside = {n: t - {module} for n, t in inside.items() if n != f"{module}.__init__"}
    assert not cycle_in(inside), f"{name}: modules import each other: {cycle_in(inside)}"


def test_the_cycle_check_finds_a_cycle() -> None:
    assert cycle_in({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert cycle_in({"a": {"b"}, "b": set()}) == []


def test_nox_sessions_take_a_project_by_its_name_or_its_folder() -> None:
    spec = importlib.util.spec_from_file_location("noxfile", ROOT / "noxfile.py")
    assert spec is not None and spec.loader is not None
    noxfile = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(noxfile)
    known = noxfile.dvc_projects()
    here = str(ROOT)
    assert noxfile.project_name("synthetic-bodies", here, known) == "synthetic-bodies"
    assert noxfile.project_name("projects/synthetic-bodies/", here, known) == "synthetic-bodies"
    inside = str(ROOT / "projects" / "planets-moons")
    assert noxfile.project_name("../synthetic-bodies", inside, known) == "synthetic-bodies"
    assert noxfile.project_name("synthtic-bodies", here, known) == "synthtic-bodies"  # refused

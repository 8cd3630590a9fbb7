"""The distributions: each installs on its own (dependencies by range, pointing one way),
and core finds no module by name (import-linter checks its static imports in make lint)."""

from __future__ import annotations

import ast
import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).parent.parent
PYPROJECTS = sorted(
    [
        ROOT / "pyproject.toml",
        *ROOT.glob("*/pyproject.toml"),
        *ROOT.glob("plugins*/*/pyproject.toml"),
    ]
)
OURS = re.compile(r"^(llama-box[a-z-]*)\s*(.*)$")


def distributions() -> dict[str, dict[str, str]]:
    """Each distribution of this repository: {dependency on another of ours: its spec}."""
    found = {}
    for path in PYPROJECTS:
        project = tomllib.loads(path.read_text())["project"]
        deps = {}
        for requirement in project.get("dependencies", []):
            if match := OURS.match(requirement):
                deps[match.group(1)] = match.group(2)
        found[project["name"]] = deps
    return found


def test_every_folder_is_a_distribution() -> None:
    names = set(distributions())
    assert {"llama-box", "llama-box-core", "llama-box-server", "llama-box-llamacpp"} <= names
    assert {"llama-box-cpu", "llama-box-example-sampler"} <= names


def test_dependencies_are_ranges_that_point_one_way() -> None:
    dists = distributions()
    assert dists["llama-box-core"] == {}, "core depends on none of ours"
    for name, deps in dists.items():
        for dep, spec in deps.items():
            assert "==" not in spec, f"{name} pins {dep}{spec}: use a range"
            assert spec.startswith(">=") and "<" in spec, f"{name}: {dep}{spec}"
        if name not in ("llama-box", "llama-box-core"):
            assert set(deps) == {"llama-box-core"}, f"{name} may depend on core only: {deps}"


def test_a_plugin_author_needs_no_web_stack_or_llama_cpp() -> None:
    core = tomllib.loads((ROOT / "core" / "pyproject.toml").read_text())["project"]
    for requirement in core["dependencies"]:
        assert not re.match(r"(litestar|click|uvicorn|llama-cpp-python|jinja2)\b", requirement)


def test_core_finds_no_module_by_name() -> None:
    for path in (ROOT / "core" / "llama_box_core").rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                called = ast.unparse(node.func)
                assert not called.endswith(("import_module", "__import__")), f"{path}: {called}"

"""The hook specs are the public contract: each one is documented and has a test."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

from llama_box_core import hookspecs

SPECS = sorted(
    name
    for name, function in inspect.getmembers(hookspecs, inspect.isfunction)
    if name.startswith("llama_box_")
)
TESTS = Path(__file__).parent


def test_there_are_hooks() -> None:
    assert len(SPECS) >= 10


@pytest.mark.parametrize("name", SPECS)
def test_hook_is_documented_and_typed(name: str) -> None:
    function = getattr(hookspecs, name)
    assert function.__doc__ and len(function.__doc__.strip()) > 40, f"{name} needs a docstring"
    signature = inspect.signature(function)
    assert signature.return_annotation is not inspect.Signature.empty
    for parameter in signature.parameters.values():
        assert parameter.annotation is not inspect.Parameter.empty, f"{name}({parameter.name})"


@pytest.mark.parametrize("name", SPECS)
def test_hook_has_a_test(name: str) -> None:
    """A hook counts as tested when a test other than this one implements or calls it."""
    pattern = re.compile(rf"\b{name}\b")
    users = [
        path.name
        for path in TESTS.glob("*.py")
        if path.name != Path(__file__).name and pattern.search(path.read_text())
    ]
    assert users, f"no test exercises {name}"

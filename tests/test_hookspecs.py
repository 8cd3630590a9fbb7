"""The hook specs are the public contract: each one, core's and the server's, is a pluggy
spec, documented and typed, and some test calls it through a plugin manager."""

from __future__ import annotations

import inspect
from types import ModuleType

import pytest

from llama_box_core import hookspecs as core_specs
from llama_box_server import hookspecs as server_specs
from tests.conftest import HOOK_CALLS, ran_the_whole_suite

SPECS: dict[str, ModuleType] = {
    name: module
    for module in (core_specs, server_specs)
    for name, function in inspect.getmembers(module, inspect.isfunction)
    if name.startswith("llama_box_") and function.__module__ == module.__name__
}


def test_there_are_hooks_in_both_modules() -> None:
    assert {module.__name__ for module in SPECS.values()} == {
        core_specs.__name__,
        server_specs.__name__,
    }
    assert len(SPECS) >= 12


@pytest.mark.parametrize("name", sorted(SPECS))
def test_hook_is_a_documented_typed_spec(name: str) -> None:
    function = getattr(SPECS[name], name)
    assert hasattr(function, f"{core_specs.PROJECT}_spec"), f"{name} is not marked @hookspec"
    assert function.__doc__ and len(function.__doc__.strip()) > 40, f"{name} needs a docstring"
    signature = inspect.signature(function)
    assert signature.return_annotation is not inspect.Signature.empty
    for parameter in signature.parameters.values():
        assert parameter.annotation is not inspect.Parameter.empty, f"{name}({parameter.name})"


def test_hook_is_called_through_the_plugin_manager(request: pytest.FixtureRequest) -> None:
    """Runs last (see conftest): every spec must have been called through a plugin manager
    by some test of this session. Only a run of the whole suite can tell."""
    session = request.session
    if not ran_the_whole_suite(session.config, session.items):
        pytest.skip("needs the whole suite: the hooks are called by the other tests")
    uncalled = sorted(set(SPECS) - HOOK_CALLS)
    assert not uncalled, f"no test calls these hooks through a plugin manager: {uncalled}"

"""The hook specs are the public contract: each one, core's and the server's, is a pluggy
spec, documented and typed, and some test calls it through a plugin manager."""

from __future__ import annotations

import inspect
from types import ModuleType

import pluggy
import pytest

from llama_box_core import hookspecs as core_specs
from llama_box_core import plugins as core_plugins
from llama_box_server import hookspecs as server_specs
from llama_box_server import plugins as server_plugins
from tests.hook_calls import HookCalls

SPEC_MODULES = (core_specs, server_specs)
SPECS: dict[str, ModuleType] = {
    name: module
    for module in SPEC_MODULES
    for name, function in inspect.getmembers(module, inspect.isfunction)
    if name.startswith("llama_box_") and function.__module__ == module.__name__
}
"""Every hook spec, by name, with the module that declares it."""


def specs_known_to(pm: pluggy.PluginManager) -> set[str]:
    return {name for name, caller in vars(pm.hook).items() if caller.spec is not None}


def test_both_modules_declare_hooks() -> None:
    for module in SPEC_MODULES:
        assert module.__name__ in {spec.__name__ for spec in SPECS.values()}, module.__name__


def test_the_plugin_managers_know_exactly_these_specs() -> None:
    """Nothing declared outside ``llama_box_*`` functions, nothing named so left unmarked."""
    assert specs_known_to(server_plugins.create_plugin_manager()) == set(SPECS)
    core = {name for name, module in SPECS.items() if module is core_specs}
    assert specs_known_to(core_plugins.create_plugin_manager()) == core


@pytest.mark.parametrize("name", sorted(SPECS))
def test_hook_is_a_documented_typed_spec(name: str) -> None:
    function = getattr(SPECS[name], name)
    assert hasattr(function, f"{core_specs.PROJECT}_spec"), f"{name} is not marked @hookspec"
    assert function.__doc__ and len(function.__doc__.strip()) > 40, f"{name} needs a docstring"
    signature = inspect.signature(function)
    assert signature.return_annotation is not inspect.Signature.empty
    for parameter in signature.parameters.values():
        assert parameter.annotation is not inspect.Parameter.empty, f"{name}({parameter.name})"


OTHER_PROJECT = "not_llama_box"


def probe_manager(project: str) -> pluggy.PluginManager:
    """A manager with one hook, ``llama_box_meta_test_probe``, that no real plugin has."""
    spec, impl = pluggy.HookspecMarker(project), pluggy.HookimplMarker(project)

    class Specs:
        @staticmethod
        @spec
        def llama_box_meta_test_probe(value: int) -> int:
            """Returns ``value + 1``."""
            raise NotImplementedError

    class Plugin:
        @impl
        def llama_box_meta_test_probe(self, value: int) -> int:
            return value + 1

    pm = pluggy.PluginManager(project)
    pm.add_hookspecs(Specs)
    pm.register(Plugin())
    return pm


def test_hook_calls_are_recorded_alongside_tracing(request: pytest.FixtureRequest) -> None:
    """The recorder and ``enable_tracing`` (``--trace-hooks``) stack, in either order of
    undoing; managers of other pluggy projects are left alone."""
    called = HookCalls.of(request.config).called
    probe = "llama_box_meta_test_probe"
    pm = probe_manager(core_specs.PROJECT)
    lines: list[str] = []
    pm.trace.root.setwriter(lines.append)
    undo_tracing = pm.enable_tracing()

    called.discard(probe)
    assert pm.hook.llama_box_meta_test_probe(value=1) == [2]
    assert probe in called
    assert any(probe in line for line in lines), lines

    undo_tracing()
    called.discard(probe)
    lines.clear()
    assert pm.hook.llama_box_meta_test_probe(value=2) == [3]
    assert probe in called and not lines

    called.discard(probe)
    assert probe_manager(OTHER_PROJECT).hook.llama_box_meta_test_probe(value=3) == [4]
    assert probe not in called


def test_hook_is_called_through_the_plugin_manager(request: pytest.FixtureRequest) -> None:
    """Runs last (see tests/hook_calls.py): every spec must have been called through a plugin
    manager by some test of this session. Only a run of the whole suite can tell."""
    recorder = HookCalls.of(request.config)
    reason = recorder.why_not_the_whole_suite(request.session.items)
    if reason is not None:
        pytest.skip(f"needs the whole suite, as the other tests call the hooks: {reason}")
    assert request.session.items[-1] is request.node, "the hook meta-test must run last"
    uncalled = sorted(set(SPECS) - recorder.called)
    assert not uncalled, (
        f"no test calls these hooks through a plugin manager: {', '.join(uncalled)}"
        f"{recorder.caveats()}"
    )

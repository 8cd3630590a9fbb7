"""Which llama-box hooks the tests call through a plugin manager, for the hook meta-test
(``tests/test_hookspecs.py``), and whether this session runs the whole suite: only then
does a hook that no test called mean something.

``tests/conftest.py`` installs a ``HookCalls`` when pytest starts; the meta-test finds it
with ``HookCalls.of(config)``. From then on, every ``pluggy.PluginManager`` created for
the ``llama_box`` project records the name of each hook called through it (pluggy's
hook-call monitoring, the mechanism ``pm.enable_tracing()`` is built on, so the two stack).
Only calls in this process count: servers that tests start as subprocesses are not seen.
"""

from __future__ import annotations

import fnmatch
import functools
from collections.abc import Callable, Generator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pluggy
import pytest

from llama_box_core.hookspecs import PROJECT

PLUGIN_NAME = "llama_box_hook_calls"
META_TEST = "test_hook_is_called_through_the_plugin_manager"
TESTS = Path(__file__).resolve().parent


class HookCalls:
    """A pytest plugin that records hook calls and what this session selected."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.called: set[str] = set()
        """The llama-box hooks called through a plugin manager so far."""
        self.recording = False
        self.deselected = 0
        self.skipped_files: set[Path] = set()
        self.failed: list[str] = []

    @classmethod
    def install(cls, config: pytest.Config) -> HookCalls:
        """Register the recorder and watch every llama-box plugin manager made from now on,
        until pytest ends (``pluggy.PluginManager`` is then restored)."""
        recorder = cls(config)
        config.pluginmanager.register(recorder, PLUGIN_NAME)
        config.add_cleanup(recorder.watch())
        return recorder

    @classmethod
    def of(cls, config: pytest.Config) -> HookCalls:
        recorder = config.pluginmanager.get_plugin(PLUGIN_NAME)
        assert isinstance(recorder, cls), "tests/conftest.py installs the hook-call recorder"
        return recorder

    # --- recording -------------------------------------------------------------------------

    def watch(self) -> Callable[[], None]:
        """Wrap ``pluggy.PluginManager.__init__`` so that each llama-box manager gets our
        monitor; returns the undo. Managers still alive afterwards keep a monitor that no
        longer records (undoing it could drop a tracer added on top of it)."""
        original = pluggy.PluginManager.__init__
        record, ignore = self._record, self._ignore

        @functools.wraps(original)
        def init(pm: pluggy.PluginManager, project_name: str, *args: Any, **kwargs: Any) -> None:
            original(pm, project_name, *args, **kwargs)
            if project_name == PROJECT:
                pm.add_hookcall_monitoring(record, ignore)

        def undo() -> None:
            self.recording = False
            pluggy.PluginManager.__init__ = original  # type: ignore[method-assign]

        pluggy.PluginManager.__init__ = init  # type: ignore[method-assign]
        self.recording = True
        return undo

    def _record(
        self, hook_name: str, _impls: Sequence[object], _kwargs: Mapping[str, object]
    ) -> None:
        if self.recording:  # set.add is atomic: hooks run in scheduler threads too
            self.called.add(hook_name)

    @staticmethod
    def _ignore(*_: object) -> None:
        pass

    # --- what the session selected ---------------------------------------------------------

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> Generator[None]:
        """The meta-test runs last, after every test that could call a hook: sorted once
        every other plugin (deselection, ``--ff``/``--nf``) has had its say."""
        yield
        items.sort(key=lambda item: getattr(item, "originalname", item.name) == META_TEST)

    def pytest_deselected(self, items: Sequence[pytest.Item]) -> None:
        self.deselected += len(items)  # -k, -m, --deselect, --lf, --sw

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        if report.skipped:  # a test file that skips itself (importorskip) was still selected
            self.skipped_files.add(self._path(report.nodeid))

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.failed and report.nodeid not in self.failed:
            self.failed.append(report.nodeid)

    def _path(self, nodeid: str) -> Path:
        return (self.config.rootpath / nodeid.split("::")[0]).resolve()

    def test_files(self) -> set[Path]:
        """Every test file under tests/, as pytest's ``python_files`` finds them."""
        patterns = self.config.getini("python_files")
        return {
            path.resolve()
            for path in TESTS.rglob("*.py")
            if any(fnmatch.fnmatch(path.name, pattern) for pattern in patterns)
        }

    def why_not_the_whole_suite(self, items: Sequence[pytest.Item]) -> str | None:
        """``None`` when this session selected every test under tests/, else the reason:
        every test file contributed tests (or skipped itself while being collected), no
        test was deselected, and no command-line argument picked tests inside a file."""
        if hasattr(self.config, "workerinput"):
            return "each pytest-xdist worker sees only its own share of the tests"
        if self.deselected:
            return f"{self.deselected} tests were deselected (-k, -m, --deselect, --lf...)"
        picked = [arg for arg in self.config.args if "::" in arg]
        if picked:
            return f"the command line picks single tests: {', '.join(picked)}"
        collected = {Path(str(item.path)).resolve() for item in items} | self.skipped_files
        missing = sorted(_shown(path) for path in self.test_files() - collected)
        if missing:
            shown = ", ".join(missing[:3]) + (
                f" and {len(missing) - 3} more" if len(missing) > 3 else ""
            )
            return f"not every test file was collected ({shown})"
        return None

    def caveats(self) -> str:
        """What may explain a hook nobody called: failures and files that skipped."""
        notes = []
        if self.failed:
            notes.append(f"{len(self.failed)} tests failed before this one")
        if self.skipped_files:
            skipped = ", ".join(sorted(_shown(path) for path in self.skipped_files))
            notes.append(f"these test files skipped themselves: {skipped}")
        return f" ({'; '.join(notes)})" if notes else ""


def _shown(path: Path) -> str:
    return str(path.relative_to(TESTS.parent)) if path.is_relative_to(TESTS.parent) else str(path)

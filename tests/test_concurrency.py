"""Continuous batching on the real model: concurrent requests get the same greedy output
as alone, and clients that leave free their slots."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.conftest import Server

pytestmark = pytest.mark.slow

# Continuations that are strongly determined, so batch-size float noise cannot flip them.
PROMPTS = [
    "1, 2, 3, 4, 5, 6, 7,",
    "Monday, Tuesday, Wednesday,",
    "A, B, C, D, E, F, G,",
    "January, February, March, April,",
    "10, 20, 30, 40, 50,",
    "one, two, three, four,",
    "a b c d e f g h",
    "2, 4, 6, 8, 10, 12,",
]


def complete(server: Server, prompt: str) -> str:
    with server.client(timeout=120) as client:
        response = client.post(
            "/completion", json={"prompt": prompt, "n_predict": 12, "temperature": 0}
        )
    assert response.status_code == 200, response.text
    return response.json()["content"]


def test_eight_concurrent_greedy_requests_equal_their_solo_runs(server: Server) -> None:
    alone = [complete(server, prompt) for prompt in PROMPTS]
    with ThreadPoolExecutor(len(PROMPTS)) as pool:
        together = list(pool.map(lambda p: complete(server, p), PROMPTS))
    assert together == alone


def busy_slots(server: Server) -> int:
    with server.client() as client:
        return sum(slot["is_processing"] for slot in client.get("/slots").json())


def test_disconnected_streams_free_their_slots(server: Server) -> None:
    def stream_then_leave(i: int) -> int:
        with (
            server.client(timeout=120) as client,
            client.stream(
                "POST",
                "/v1/completions",
                json={
                    "prompt": f"Story {i}:",
                    "max_tokens": 500,
                    "stream": True,
                    "ignore_eos": True,
                },
            ) as response,
        ):
            received = 0
            for line in response.iter_lines():
                received += line.startswith("data: ")
                if received == 3:
                    break  # leaving mid-generation closes the connection
            return received

    with ThreadPoolExecutor(20) as pool:
        assert list(pool.map(stream_then_leave, range(20))) == [3] * 20

    deadline = time.monotonic() + 30
    while busy_slots(server) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert busy_slots(server) == 0
    assert complete(server, PROMPTS[0])


def test_non_streaming_client_that_leaves_frees_its_slot(server: Server) -> None:
    with server.client(timeout=0.5) as client, pytest.raises(httpx.ReadTimeout):
        client.post("/completion", json={"prompt": "Story:", "n_predict": 2000, "ignore_eos": True})
    deadline = time.monotonic() + 10
    while busy_slots(server) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert busy_slots(server) == 0

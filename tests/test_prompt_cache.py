"""Prompt reuse and context shift on the real model."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.conftest import Server, start_server

pytestmark = pytest.mark.slow

LONG_PREFIX = " ".join(f"Item {i} is a small red box." for i in range(60))


def test_shared_prefix_is_reused_and_answers_faster(server: Server) -> None:
    with server.client(timeout=120) as client:

        def ask(tail: str) -> tuple[dict, float]:
            started = time.perf_counter()
            body = client.post(
                "/completion", json={"prompt": LONG_PREFIX + tail, "n_predict": 1, "temperature": 0}
            ).json()
            return body, time.perf_counter() - started

        first, cold = ask(" The first")
        second, warm = ask(" The second")
    assert first["tokens_evaluated"] > 400
    assert second["tokens_cached"] >= first["tokens_evaluated"] - 4
    # llama-server's timings: cache_n tokens reused, prompt_n evaluated.
    timings = first["timings"]
    assert timings["cache_n"] + timings["prompt_n"] == first["tokens_evaluated"]
    assert (second["timings"]["cache_n"], second["timings"]["prompt_n"]) == (
        second["tokens_cached"],
        second["tokens_evaluated"] - second["tokens_cached"],
    )
    print(
        f"\nprompt of {first['tokens_evaluated']} tokens: cold {cold * 1000:.0f} ms, "
        f"reusing {second['tokens_cached']} cached tokens {warm * 1000:.0f} ms"
    )
    assert warm < cold / 2


def test_openai_usage_reports_cached_tokens(server: Server) -> None:
    messages = [{"role": "user", "content": LONG_PREFIX}]
    with server.client(timeout=120) as client:
        client.post("/v1/chat/completions", json={"messages": messages, "max_tokens": 1})
        usage = client.post(
            "/v1/chat/completions", json={"messages": messages, "max_tokens": 1}
        ).json()["usage"]
    assert usage["prompt_tokens_details"]["cached_tokens"] == usage["prompt_tokens"] - 1


@pytest.fixture(scope="module")
def shifting(gemma_path: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("shift") / "llama-box.log"
    running = start_server(["-m", gemma_path, "-c", "256", "-np", "1", "--context-shift"], log)
    yield running
    running.stop()


def test_generation_goes_past_the_context_with_shift_on(shifting: Server) -> None:
    with shifting.client(timeout=120) as client:
        body = client.post(
            "/completion",
            json={
                "prompt": "Once upon a time",
                "n_predict": 400,
                "n_keep": -1,
                "temperature": 0,
                "ignore_eos": True,
            },
        ).json()
    assert body["tokens_predicted"] == 400  # past the 256-token slot
    assert body["truncated"] is True
    assert body["stop_type"] == "limit"


def test_long_prompt_is_cut_with_shift_on(shifting: Server) -> None:
    with shifting.client(timeout=120) as client:
        body = client.post(
            "/completion", json={"prompt": "word " * 400, "n_predict": 2, "n_keep": 10}
        ).json()
    assert body["tokens_evaluated"] < 256


@pytest.fixture(scope="module")
def reusing(gemma_path: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("reuse") / "llama-box.log"
    running = start_server(["-m", gemma_path, "-c", "2048", "-np", "1", "--cache-reuse", "16"], log)
    yield running
    running.stop()


def test_cache_reuse_shifts_chunks_after_an_edit_in_the_middle(reusing: Server) -> None:
    head = " ".join(f"Fact {i}: the sky is blue." for i in range(20))
    middle = " ".join(f"Note {i}: the grass is green." for i in range(15))
    tail = " ".join(f"Rule {i}: the sea is deep." for i in range(15))
    with reusing.client(timeout=120) as client:
        n_head = len(client.post("/tokenize", json={"content": head}).json()["tokens"])
        n_tail = len(client.post("/tokenize", json={"content": " " + tail}).json()["tokens"])
        client.post("/completion", json={"prompt": f"{head} {middle} {tail}", "n_predict": 1})
        edited = client.post(
            "/completion",
            json={
                "prompt": f"{head} {tail} The end.",
                "n_predict": 4,
                "temperature": 0,
                "ignore_eos": True,
            },
        ).json()
    # The head is a shared prefix; the tail's KV was shifted down over the dropped middle.
    assert edited["tokens_cached"] >= n_head + n_tail - 4
    assert edited["tokens_predicted"] == 4

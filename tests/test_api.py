"""Every endpoint of the text serving core, over HTTP, against the real Gemma model."""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from tests.conftest import Server

pytestmark = pytest.mark.slow

COUNTING = "1, 2, 3, 4, 5, 6,"


def sse_payloads(response: httpx.Response) -> list[str]:
    """The data of each server-sent event, checking the llama-server framing."""
    assert response.headers["content-type"].startswith("text/event-stream")
    body = response.read().decode()
    frames = body.split("\n\n")
    assert frames[-1] == ""
    assert all(frame.startswith("data: ") for frame in frames[:-1])
    return [frame[len("data: ") :] for frame in frames[:-1]]


def test_health(server: Server) -> None:
    with server.client() as client:
        assert client.get("/health").json() == {"status": "ok"}


def test_models_lists_the_model_with_meta(server: Server) -> None:
    with server.client() as client:
        body = client.get("/v1/models").json()
    (model,) = body["data"]
    assert body["object"] == "list"
    assert model["id"] == "gemma-3-270m-q4_k_m.gguf"
    assert model["meta"]["n_vocab"] == 262144
    assert model["meta"]["n_ctx_train"] == 32768
    assert model["meta"]["n_ctx_slot"] == 1024


def test_completion_native_string_prompt(server: Server) -> None:
    with server.client() as client:
        body = client.post(
            "/completion",
            json={"prompt": COUNTING, "n_predict": 6, "temperature": 0, "return_tokens": True},
        ).json()
    assert body["content"].startswith(" 7, 8,")
    assert body["tokens_predicted"] == 6 and len(body["tokens"]) == 6
    assert body["stop"] is True and body["stop_type"] == "limit"
    assert body["timings"]["predicted_n"] == 6
    assert body["generation_settings"]["n_ctx"] == 1024


def test_completion_native_token_and_mixed_prompts_match_text(server: Server) -> None:
    with server.client() as client:
        tokens = client.post("/tokenize", json={"content": COUNTING, "add_special": True}).json()
        as_text = client.post(
            "/completion", json={"prompt": COUNTING, "n_predict": 4, "temperature": 0}
        ).json()
        as_tokens = client.post(
            "/completion", json={"prompt": tokens["tokens"], "n_predict": 4, "temperature": 0}
        ).json()
        mixed = client.post(
            "/completion",
            json={
                "prompt": [*tokens["tokens"][:3], " 3, 4, 5, 6,"],
                "n_predict": 4,
                "temperature": 0,
            },
        ).json()
    assert as_tokens["content"] == as_text["content"]
    assert as_tokens["tokens_evaluated"] == as_text["tokens_evaluated"]
    assert mixed["content"] == as_text["content"]


def test_completion_native_several_prompts_give_an_array(server: Server) -> None:
    with server.client() as client:
        body = client.post(
            "/completion",
            json={"prompt": [COUNTING, "Monday, Tuesday,"], "n_predict": 3, "temperature": 0},
        ).json()
    assert [item["index"] for item in body] == [0, 1]
    assert body[0]["content"].startswith(" 7")
    assert "Wednesday" in body[1]["content"]


def test_completion_native_stream(server: Server) -> None:
    with (
        server.client() as client,
        client.stream(
            "POST",
            "/completion",
            json={"prompt": COUNTING, "n_predict": 5, "temperature": 0, "stream": True},
        ) as response,
    ):
        chunks = [json.loads(p) for p in sse_payloads(response)]
    assert all(not c["stop"] for c in chunks[:-1]) and chunks[-1]["stop"] is True
    assert "".join(c["content"] for c in chunks).startswith(" 7, 8")
    assert chunks[-1]["tokens_predicted"] == 5


def test_stop_strings(server: Server) -> None:
    with server.client() as client:
        body = client.post(
            "/completion",
            json={"prompt": COUNTING, "n_predict": 20, "temperature": 0, "stop": [" 9"]},
        ).json()
    assert body["content"] == " 7, 8,"
    assert body["stop_type"] == "word" and body["stopping_word"] == " 9"


def test_chat_completion_with_usage_extras(server: Server) -> None:
    with server.client() as client:
        response = client.post(
            "/v1/chat/completions",
            headers={"Content-Type": "application/json"},
            json={
                "model": "x",
                "max_tokens": 8,
                "temperature": 0,
                "messages": [{"role": "user", "content": "Introduce Beijing in 50 words."}],
            },
        )
    body = response.json()
    assert response.status_code == 200
    assert body["object"] == "chat.completion" and body["model"] == "x"
    assert body["choices"][0]["message"]["role"] == "assistant"
    assert body["choices"][0]["finish_reason"] == "length"
    usage = body["usage"]
    assert usage["completion_tokens"] == 8
    assert usage["total_tokens"] == usage["prompt_tokens"] + 8
    assert usage["time_to_first_token_ms"] > 0 and usage["tokens_per_second"] > 0


def test_chat_template_is_gemmas(server: Server) -> None:
    """The GGUF has no template: the built-in Gemma one is picked (and logged)."""
    with server.client() as client:
        body = client.post(
            "/completion",
            json={
                "prompt": "<start_of_turn>user\nhi<end_of_turn>\n<start_of_turn>model\n",
                "n_predict": 6,
                "temperature": 0,
            },
        ).json()
        chat = client.post(
            "/v1/chat/completions",
            json={
                "max_tokens": 6,
                "temperature": 0,
                "messages": [{"role": "user", "content": "hi"}],
            },
        ).json()
    assert chat["choices"][0]["message"]["content"] == body["content"]
    assert "built-in 'gemma'" in server.log()


def test_chat_content_parts_are_joined(server: Server) -> None:
    with server.client() as client:
        parts = client.post(
            "/v1/chat/completions",
            json={
                "max_tokens": 4,
                "temperature": 0,
                "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
            },
        ).json()
        plain = client.post(
            "/v1/chat/completions",
            json={
                "max_tokens": 4,
                "temperature": 0,
                "messages": [{"role": "user", "content": "hi"}],
            },
        ).json()
    assert parts["choices"][0]["message"] == plain["choices"][0]["message"]


def test_tokenize_detokenize_round_trip(server: Server) -> None:
    with server.client() as client:
        plain = client.post("/tokenize", json={"content": "Hello world"}).json()["tokens"]
        special = client.post(
            "/tokenize", json={"content": "Hello world", "add_special": True}
        ).json()["tokens"]
        pieces = client.post(
            "/tokenize", json={"content": "Hello world", "with_pieces": True}
        ).json()["tokens"]
        text = client.post("/detokenize", json={"tokens": plain}).json()["content"]
    assert special == [2, *plain]  # <bos>
    assert [p["id"] for p in pieces] == plain
    assert "".join(p["piece"] for p in pieces) == "Hello world"
    assert text == "Hello world"


def test_openai_client_chat_and_completions(server: Server) -> None:
    client = openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="sk-none")
    chat = client.chat.completions.create(
        model="gemma",
        max_tokens=5,
        temperature=0,
        messages=[{"role": "user", "content": "Count from 1 to 5."}],
    )
    assert chat.choices[0].message.content
    assert chat.usage is not None and chat.usage.completion_tokens <= 5

    completion = client.completions.create(
        model="gemma", prompt=COUNTING, max_tokens=4, temperature=0
    )
    assert completion.choices[0].text.startswith(" 7")
    assert completion.choices[0].finish_reason == "length"


def test_openai_client_streams(server: Server) -> None:
    client = openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="sk-none")
    stream = client.chat.completions.create(
        model="gemma",
        max_tokens=6,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
        messages=[{"role": "user", "content": "Count from 1 to 5."}],
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 6
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    plain = client.chat.completions.create(
        model="gemma",
        max_tokens=6,
        temperature=0,
        messages=[{"role": "user", "content": "Count from 1 to 5."}],
    )
    assert text == plain.choices[0].message.content

    completion_text = "".join(
        c.choices[0].text
        for c in client.completions.create(
            model="gemma", prompt=COUNTING, max_tokens=4, temperature=0, stream=True
        )
        if c.choices
    )
    assert completion_text == " 7, "


def test_seed_makes_sampling_repeatable(server: Server) -> None:
    # cache_prompt off: a reused prefix changes the logits' last bits, as in llama-server.
    request = {
        "prompt": "Once upon a time",
        "n_predict": 12,
        "temperature": 1.0,
        "seed": 42,
        "cache_prompt": False,
    }
    with server.client() as client:
        first = client.post("/completion", json=request).json()["content"]
        second = client.post("/completion", json=request).json()["content"]
    assert first == second


def test_unix_socket_server_answers(small_server: Server) -> None:
    with small_server.client() as client:
        assert client.get("/health").json() == {"status": "ok"}


def test_several_choices_with_n(server: Server) -> None:
    messages = [{"role": "user", "content": "Tell me a story."}]
    with server.client(timeout=120) as client:
        chat = client.post(
            "/v1/chat/completions",
            json={"messages": messages, "n": 3, "max_tokens": 6, "temperature": 1.0, "seed": 5},
        ).json()
        with client.stream(
            "POST",
            "/v1/chat/completions",
            json={
                "messages": messages,
                "n": 2,
                "max_tokens": 4,
                "stream": True,
                "stream_options": {"include_usage": True},
            },
        ) as response:
            chunks = [json.loads(p) for p in sse_payloads(response)[:-1]]
        legacy = client.post(
            "/v1/completions", json={"prompt": ["Once upon", "A long"], "n": 2, "max_tokens": 3}
        ).json()
    assert [c["index"] for c in chat["choices"]] == [0, 1, 2]
    assert len({c["message"]["content"] for c in chat["choices"]}) > 1
    assert chat["usage"]["completion_tokens"] == 18
    finished = {
        c["choices"][0]["index"]
        for c in chunks
        if c["choices"] and c["choices"][0]["finish_reason"]
    }
    assert finished == {0, 1}
    assert chunks[-1]["usage"]["completion_tokens"] == 8
    assert [c["index"] for c in legacy["choices"]] == [0, 1, 2, 3]


def test_openapi_document_describes_the_api(server: Server) -> None:
    with server.client() as client:
        schema = client.get("/schema/openapi.json").json()
    assert {"/v1/chat/completions", "/completion", "/tokenize", "/health"} <= set(schema["paths"])

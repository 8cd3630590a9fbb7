"""Bad input gets an OpenAI error object with the right status, never a 500 or a hang."""

from __future__ import annotations

import pytest

from tests.conftest import Server

pytestmark = pytest.mark.slow

CHAT = "/v1/chat/completions"
MESSAGES = [{"role": "user", "content": "hi"}]


def assert_error(response, status: int, *fragments: str) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == status
    assert (
        error["type"]
        == {
            400: "invalid_request_error",
            404: "not_found_error",
            405: "invalid_request_error",
            503: "unavailable_error",
        }[status]
    )
    for fragment in fragments:
        assert fragment in error["message"]
    return error


@pytest.mark.parametrize(
    ("path", "body", "fragment"),
    [
        (CHAT, {"messages": "hi"}, "messages"),
        (CHAT, {"messages": []}, "messages"),
        (CHAT, {"messages": MESSAGES, "top_p": 2}, "top_p"),
        (CHAT, {"messages": MESSAGES, "temperature": "hot"}, "temperature"),
        (CHAT, {"messages": MESSAGES, "max_tokens": -5}, "max_tokens"),
        (CHAT, {"messages": MESSAGES, "n": 0}, "n"),
        ("/completion", {"prompt": "a", "n_keep": -5}, "n_keep"),
        (CHAT, {"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, "image_url"),
        ("/v1/completions", {"prompt": 5}, "prompt"),
        ("/v1/completions", {"prompt": "a", "min_p": -1}, "min_p"),
        ("/completion", {"prompt": "a", "n_predict": "x"}, "n_predict"),
        ("/completion", {"prompt": []}, "empty"),
        ("/completion", {"prompt": [999999999]}, "outside the vocabulary"),
        ("/completion", {}, "prompt"),
        ("/tokenize", {"content": 3}, "content"),
        ("/detokenize", {"tokens": ["a"]}, "tokens"),
        ("/detokenize", {"tokens": [-1]}, "outside the vocabulary"),
    ],
)
def test_bad_request_bodies_are_400(server: Server, path: str, body: dict, fragment: str) -> None:
    with server.client() as client:
        assert_error(client.post(path, json=body), 400, fragment)


@pytest.mark.parametrize(
    "path", [CHAT, "/v1/completions", "/completion", "/tokenize", "/detokenize"]
)
def test_non_utf8_and_non_json_bodies_are_400(server: Server, path: str) -> None:
    with server.client() as client:
        assert_error(client.post(path, content=b'\xff\xfe{"a"'), 400)
        assert_error(client.post(path, content=b"not json"), 400)
        assert_error(client.post(path, content=b"[1, 2]"), 400)


def test_unknown_fields_are_ignored(server: Server) -> None:
    with server.client() as client:
        response = client.post(
            CHAT,
            json={
                "messages": MESSAGES,
                "max_tokens": 2,
                "reasoning_effort": "low",
                "parallel_tool_calls": False,
                "some_future_field": {"x": 1},
            },
        )
    assert response.status_code == 200


def test_unknown_route_is_404_and_wrong_method_405(server: Server) -> None:
    with server.client() as client:
        assert_error(client.get("/v1/nothing-here"), 404)
        assert_error(client.get(CHAT), 405)


def test_prompt_longer_than_the_slot_is_400_with_both_numbers(small_server: Server) -> None:
    with small_server.client() as client:
        response = client.post("/completion", json={"prompt": "word " * 400})
        assert response.status_code == 400
        error = response.json()["error"]
        # llama-server's type and fields for it, beside the message naming both lengths.
        assert error["type"] == "exceed_context_size_error" and "256" in error["message"]
        assert error["n_ctx"] == 256 and error["n_prompt_tokens"] > 256
        n_prompt = len(
            client.post("/tokenize", json={"content": "word " * 400, "add_special": True}).json()[
                "tokens"
            ]
        )
    assert str(n_prompt) in error["message"]


def test_huge_max_tokens_is_capped_by_the_context(small_server: Server) -> None:
    with small_server.client(timeout=120) as client:
        body = client.post(
            "/v1/completions",
            json={
                "prompt": "Once upon a time",
                "max_tokens": 10**9,
                "temperature": 0,
                "ignore_eos": True,
            },
        ).json()
    usage = body["usage"]
    assert body["choices"][0]["finish_reason"] == "length"
    assert usage["prompt_tokens"] + usage["completion_tokens"] == 256

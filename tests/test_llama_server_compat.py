"""llama-server's routes and shapes beyond the seeds: aliases without /v1,
/apply-template, token counting, timings.cache_n, and request bodies bounded before
decoding (nesting, size, array length: a 400 naming the limit, never a 500)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from litestar.testing import TestClient

from llama_box_core.settings import Settings
from llama_box_server.app import create_app
from llama_box_server.errors import ApiError
from llama_box_server.limits import check_json
from llama_box_server.plugins import create_plugin_manager, load_plugins
from tests.conftest import Server
from tests.fakes import FakeModelPlugin

MESSAGES = [{"role": "user", "content": "hi"}]


@pytest.fixture
def client(request: pytest.FixtureRequest) -> Iterator[TestClient]:
    settings = getattr(request, "param", None) or Settings(model="fake.gguf")
    pm = load_plugins(create_plugin_manager(), allow=[])
    pm.register(FakeModelPlugin())
    with TestClient(create_app(settings, pm)) as running:
        running.app.state.engine.wait_until_settled()
        yield running


def test_routes_answer_with_and_without_v1(client: TestClient) -> None:
    assert client.get("/v1/health").json() == {"status": "ok"}
    for path in ("/chat/completions", "/v1/chat/completions"):
        body = client.post(path, json={"messages": MESSAGES, "max_tokens": 2}).json()
        assert body["object"] == "chat.completion", path
    for path in ("/completion", "/completions"):
        body = client.post(path, json={"prompt": "ab", "n_predict": 2}).json()
        assert len(body["tokens"]) == 0 and body["stop"], path


def test_apply_template_and_input_tokens(client: TestClient) -> None:
    prompt = client.post("/apply-template", json={"messages": MESSAGES}).json()["prompt"]
    assert prompt == "user:hi;"  # the fake model's template
    for path in ("/chat/completions/input_tokens", "/v1/chat/completions/input_tokens"):
        counted = client.post(path, json={"messages": MESSAGES, "model": "x"}).json()
        assert counted == {"input_tokens": len(prompt), "object": "response.input_tokens"}
    assert client.post("/apply-template", json={"messages": []}).status_code == 400


def test_timings_carry_cache_n(client: TestClient) -> None:
    body = {"prompt": "abcdefgh", "n_predict": 2, "cache_prompt": True}
    first = client.post("/completion", json=body).json()["timings"]
    again = client.post("/completion", json=body).json()["timings"]
    assert (first["cache_n"], first["prompt_n"]) == (0, 8)
    assert (again["cache_n"], again["prompt_n"]) == (7, 1)  # the last token is evaluated again


NESTED = b'{"prompt": "x", "json_schema": ' + b"[" * 5000 + b"]" * 5000 + b"}"


@pytest.mark.parametrize(
    "path",
    ["/completion", "/v1/completions", "/v1/chat/completions", "/tokenize", "/apply-template"],
)
def test_deep_nesting_is_a_400_on_every_endpoint(client: TestClient, path: str) -> None:
    response = client.post(path, content=NESTED, headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    assert "nests deeper than 64 levels" in response.json()["error"]["message"]


@pytest.mark.parametrize(
    "client",
    [Settings(model="fake.gguf", max_body_size=1000, max_json_array=50)],
    indirect=True,
)
def test_body_size_and_array_length_are_bounded(client: TestClient) -> None:
    big = client.post("/tokenize", json={"content": "x" * 2000})
    assert big.status_code == 400 and "larger than 1000 bytes" in big.json()["error"]["message"]
    long = client.post("/completion", json={"prompt": list(range(1, 60)), "n_predict": 1})
    assert long.status_code == 400 and "more than 50 items" in long.json()["error"]["message"]
    assert client.post("/completion", json={"prompt": [1, 2], "n_predict": 1}).status_code == 200


def test_the_scan_skips_strings_and_counts_per_array() -> None:
    check_json(b'{"a": "[[[[[[[[[[", "b": [1, [2, 3], 4]}', max_depth=3, max_items=3)
    with pytest.raises(ApiError, match="more than 3 items"):
        check_json(b'{"b": [1, 2, 3, 4]}', max_depth=3, max_items=3)
    with pytest.raises(ApiError, match="deeper than 2"):
        check_json(b'{"a": {"b": [1]}}', max_depth=2, max_items=3)
    check_json(b'{"a": "\\"[[[["}', max_depth=1, max_items=1)  # an escaped quote


@pytest.mark.slow
def test_openai_client_with_a_base_url_without_v1(server: Server) -> None:
    import openai

    sdk = openai.OpenAI(base_url=server.base_url, api_key="none")
    chat = sdk.chat.completions.create(model="x", max_tokens=3, messages=MESSAGES)
    assert chat.choices[0].message.content is not None
    # As in llama-server, /completions without /v1 is the native completion, not OpenAI's
    # legacy one: only chat works through such a base URL.

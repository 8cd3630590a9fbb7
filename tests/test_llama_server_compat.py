"""llama-server's routes and shapes beyond the seeds: aliases without /v1,
/apply-template, token counting, timings.cache_n, and request bodies bounded before
decoding (nesting, size, array length: a 400 naming the limit, never a 500)."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator

import click
import httpx
import pytest
from litestar.testing import TestClient

from llama_box_core.settings import Settings
from llama_box_server import cli
from llama_box_server.app import create_app
from llama_box_server.compat import IGNORED_KEY as KEY
from llama_box_server.errors import ApiError
from llama_box_server.limits import check_json
from llama_box_server.llama_server_flags import LLAMA_SERVER_FLAGS
from llama_box_server.plugins import create_plugin_manager, load_plugins
from tests.conftest import Server, free_port
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
    continued = [*MESSAGES, {"role": "assistant", "content": "Hel"}]
    body = client.post("/apply-template", json={"messages": continued}).json()
    assert body["prompt"] == "user:hi;Hel"


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


# --- llama-server's flags ----------------------------------------------------------------


def command_flags() -> set[str]:
    command = cli.build_cli(load_plugins(create_plugin_manager(), allow=[]))
    flags = {"-h", "--help", "--usage"}
    for param in command.params:
        flags |= {*param.opts, *param.secondary_opts}
    return flags


def test_every_llama_server_flag_is_accepted() -> None:
    ours = command_flags()
    missing = [name for names, _, _ in LLAMA_SERVER_FLAGS for name in names if name not in ours]
    assert not missing
    assert len(LLAMA_SERVER_FLAGS) > 200


def test_llama_server_spellings_reach_the_settings(captured: list[Settings]) -> None:
    cli.main(["--temperature", "0.2", "--top-n-sigma", "1.5", "--typical-p", "0.7"])
    cli.main(["--sampler-seq", "kt", "--no-jinja", "-fa", "off", "--log-colors", "auto"])
    cli.main(["-fa", "--no-kv-unified", "--cors-origins", "localhost"])
    cli.main(["--no-flash-attn", "-kvu"])
    first, second, third, fourth = captured
    assert (first.sampling.temperature, first.sampling.top_n_sigma) == (0.2, 1.5)
    assert first.sampling.typical_p == 0.7
    assert second.sampling.samplers == ("top_k", "temperature") and not second.jinja
    assert (second.flash_attn, second.log_colors) == (False, None)
    assert (third.flash_attn, third.kv_unified, third.cors_origins) == (True, False, "localhost")
    assert (fourth.flash_attn, fourth.kv_unified) == (False, True)


def test_flags_without_meaning_here_are_logged_as_ignored(
    captured: list[Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    ignored: list[list[str]] = []
    monkeypatch.setattr(
        cli, "serve", lambda settings, pm: ignored.append(click.get_current_context().meta[KEY])
    )
    cli.main(["--no-ui", "--prio", "2", "--cache-ram", "0", "-cb", "--no-perf"])
    assert ignored == [["--no-webui", "--prio", "--cache-ram", "--no-cont-batching", "--no-perf"]]


def test_tools_make_cors_default_to_localhost(captured: list[Settings]) -> None:
    cli.main(["--tools", "all"])
    cli.main(["--tools", "all", "--cors-origins", "*"])
    assert [s.cors_origins for s in captured] == ["localhost", "*"]


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (["--hf-repo", "ggml-org/models"], "--hf-repo downloads a model"),
        (["-hf", "x"], "loads local files only"),
        (["--lora", "a.gguf"], "--lora is not supported by llama-box yet"),
        (["--ssl-key-file", "k.pem"], "TLS"),
        (["--gpt-oss-20b-default"], "downloads a model"),
    ],
)
def test_flags_that_need_what_llama_box_does_not_do_stop_with_one_line(
    args: list[str], reason: str
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "llama_box_server", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("llama-box: error:") and reason in lines[0]


@pytest.mark.parametrize(
    "client",
    [Settings(model="fake.gguf", alias="tinyllama-2,fim,code", tags="chat,small")],
    indirect=True,
)
def test_models_list_aliases_and_tags(client: TestClient) -> None:
    (model,) = client.get("/models").json()["data"]
    assert model["id"] == "code"  # the first alias in alphabetical order, as llama-server
    assert (model["aliases"], model["tags"]) == (["code", "fim", "tinyllama-2"], ["chat", "small"])
    assert (
        client.post("/v1/chat/completions", json={"messages": MESSAGES}).json()["model"] == "code"
    )


@pytest.mark.slow
def test_several_listen_addresses(gemma_path: str, tmp_path) -> None:
    port = free_port()
    log = (tmp_path / "log").open("wb")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "llama_box_server",
            "-m",
            gemma_path,
            "-c",
            "512",
            "--host",
            "127.0.0.1,::1",
            "--port",
            str(port),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        for host in ("127.0.0.1", "[::1]"):
            deadline = time.monotonic() + 60
            while True:
                try:
                    if httpx.get(f"http://{host}:{port}/health").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline and process.poll() is None
                time.sleep(0.2)
            body = {"prompt": "1, 2,", "n_predict": 2}
            assert httpx.post(f"http://{host}:{port}/completion", json=body).status_code == 200
    finally:
        process.terminate()
        process.wait(30)


# --- chat requests as llama-server takes them -------------------------------------------

CONVERSATION = [{"role": "system", "content": "Book"}, {"role": "user", "content": "Best book?"}]


@pytest.mark.parametrize("client", [Settings(model="fake.gguf", verbose=True)], indirect=True)
def test_a_final_assistant_message_is_continued(client: TestClient) -> None:
    """The fake template renders "role:content;" per turn; a continued assistant message
    follows the rendered turns without one of its own. --verbose shows the prompt."""
    for prefill, text in (
        ("Whi", "Whi"),
        ([{"type": "text", "text": "W"}, {"type": "text", "text": "h"}], "W\n\nh"),
    ):
        body = {"messages": [*CONVERSATION, {"role": "assistant", "content": prefill}]}
        answer = client.post("/chat/completions", json={**body, "max_tokens": 1}).json()
        expected = "system:Book;user:Best book?;" + text  # then the fake's token pieces
        assert answer["__verbose"]["prompt"] == "".join(f"<{ord(c) % 100}>" for c in expected)
    alias = {"messages": [*CONVERSATION, {"role": "assistant", "content": "Whi"}]}
    alias |= {"continue_final_message": True, "add_generation_prompt": False, "max_tokens": 1}
    assert client.post("/chat/completions", json=alias).status_code == 200


@pytest.mark.parametrize(
    "body",
    [
        {"continue_final_message": True, "add_generation_prompt": True,
         "messages": [*CONVERSATION, {"role": "assistant", "content": "W"}]},
        {"messages": [*CONVERSATION, {"role": "assistant", "content": "a"},
                      {"role": "assistant", "content": "b"}]},
        {"continue_final_message": True, "messages": CONVERSATION},
    ],
)  # fmt: skip
def test_chat_requests_llama_server_refuses(client: TestClient, body: dict) -> None:
    assert client.post("/chat/completions", json=body).status_code == 400


def test_prompt_objects_and_text_keys_in_openai_logit_bias(client: TestClient) -> None:
    text = client.post("/completion", json={"prompt": {"prompt_string": "ab"}, "n_predict": 1})
    assert text.status_code == 200
    media = {"prompt": {"prompt_string": "a", "multimodal_data": ["AAAA"]}, "n_predict": 1}
    response = client.post("/completion", json=media)
    assert response.status_code == 400 and "projector" in response.json()["error"]["message"]
    body = {"prompt": "ab", "n_predict": 2, "logit_bias": {"c": -100, "99": -100}}
    assert client.post("/completion", json=body).status_code == 200


@pytest.mark.parametrize("client", [Settings(model="fake.gguf", n_parallel=2)], indirect=True)
def test_a_prompt_past_the_slot_is_an_exceed_context_size_error(client: TestClient) -> None:
    response = client.post("/completion", json={"prompt": "x" * 100, "n_predict": 1})
    error = response.json()["error"]
    assert response.status_code == 400 and error["type"] == "exceed_context_size_error"
    assert (error["n_prompt_tokens"], error["n_ctx"]) == (100, 64)


@pytest.mark.parametrize(
    "path",
    [
        "/v1/embeddings",
        "/embedding",
        "/rerank",
        "/v1/responses",
        "/audio/transcriptions",
        "/models/load",
        "/tools",
        "/cors-proxy",
        "/v1/streams/lookup",
    ],
)
def test_routes_of_features_not_served_yet_say_so(client: TestClient, path: str) -> None:
    response = client.post(path, json={"input": "x"})
    assert response.status_code == 501
    assert response.json()["error"]["type"] == "not_supported_error"


def test_lora_adapters_are_listed_none(client: TestClient) -> None:
    assert client.get("/lora-adapters").json() == []
    assert client.post("/lora-adapters", json=[{"id": 0, "scale": 1.0}]).status_code == 400


def test_llama_server_environment_variables_set_the_options(
    captured: list[Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in {
        "LLAMA_ARG_TOP_K": "7",
        "LLAMA_ARG_CACHE_TYPE_K": "q8_0",
        "LLAMA_ARG_ENDPOINT_METRICS": "1",
        "LLAMA_ARG_CONTEXT_SHIFT": "1",
        "LLAMA_ARG_PORT": "9123",
    }.items():
        monkeypatch.setenv(name, value)
    cli.main([])
    (s,) = captured
    assert (s.sampling.top_k, s.cache_type_k, s.metrics) == (7, "q8_0", True)
    assert (s.context_shift, s.port) == (True, 9123)


def test_the_openapi_document_builds(client: TestClient) -> None:
    paths = client.get("/schema/openapi.json").json()["paths"]
    assert {"/v1/messages", "/apply-template", "/v1/embeddings", "/lora-adapters"} <= set(paths)


@pytest.mark.slow
def test_llama_server_routes_on_gemma(server: Server) -> None:
    with server.client(timeout=60) as http:
        prompt = http.post("/apply-template", json={"messages": MESSAGES}).json()["prompt"]
        assert "<start_of_turn>user\nhi<end_of_turn>" in prompt  # Gemma's built-in template
        counted = http.post("/v1/chat/completions/input_tokens", json={"messages": MESSAGES})
        tokens = http.post("/tokenize", json={"content": prompt, "add_special": True}).json()
        assert counted.json()["input_tokens"] == len(tokens["tokens"])
        body = {"prompt": "1, 2, 3,", "n_predict": 2, "temperature": 0}
        timings = http.post("/completions", json=body).json()["timings"]
        assert timings["cache_n"] + timings["prompt_n"] > 0
        nested = http.post("/v1/chat/completions", content=NESTED,
                           headers={"Content-Type": "application/json"})  # fmt: skip
        assert nested.status_code == 400 and "nests deeper" in nested.json()["error"]["message"]
        assert http.post("/v1/embeddings", json={"input": "x"}).status_code == 501

"""Sampling on the real model: every sampler moves the candidate distribution the way it
should, constrained output parses, probabilities are well-formed, and plugins' stages
join the chain."""

from __future__ import annotations

import json
import math

import httpx
import pytest

from llama_box_core.sampling import cli_logit_bias, sampler_names
from tests.conftest import Server

pytestmark = pytest.mark.slow

STORY = "Once upon a time, in a small village,"
COUNTING = "1, 2, 3, 4, 5, 6,"
# Only the stage under test trims candidates; temperature 1 keeps the model's distribution.
OPEN = {"temperature": 1.0, "top_k": 0, "top_p": 1.0, "min_p": 0.0, "seed": 1}


def first_step(client: httpx.Client, prompt: str = STORY, **fields: object) -> list[dict]:
    """The post-sampling candidates of the first generated token, most likely first."""
    body = {
        "prompt": prompt,
        "n_predict": 1,
        "n_probs": 100,
        "post_sampling_probs": True,
        "cache_prompt": False,  # a reused prefix changes the logits' last bits
        **OPEN,
        **fields,
    }
    response = client.post("/completion", json=body)
    assert response.status_code == 200, response.text
    return response.json()["completion_probabilities"][0]["top_probs"]


def support(candidates: list[dict]) -> int:
    return sum(c["prob"] > 0 for c in candidates)


def entropy(candidates: list[dict]) -> float:
    return -sum(c["prob"] * math.log(c["prob"]) for c in candidates if c["prob"] > 0)


def prob_of(candidates: list[dict], token: str) -> float:
    return next((c["prob"] for c in candidates if c["token"] == token), 0.0)


@pytest.fixture(scope="module")
def client(server: Server) -> httpx.Client:
    with server.client(timeout=120) as running:
        yield running


def test_truncating_samplers_shrink_the_candidates(client: httpx.Client) -> None:
    everything = support(first_step(client))
    assert everything == 100  # nothing removed: n_probs caps what is shown
    cases = {
        "top_k": ({"top_k": 5, "samplers": ["top_k", "temperature"]}, 5),
        "top_p": ({"top_p": 0.3, "samplers": ["top_p", "temperature"]}, None),
        "min_p": ({"min_p": 0.2, "samplers": ["min_p", "temperature"]}, None),
        "typ_p": ({"typical_p": 0.3, "samplers": ["typ_p", "temperature"]}, None),
        "top_n_sigma": ({"top_n_sigma": 1.0, "samplers": ["top_n_sigma", "temperature"]}, None),
    }
    for name, (fields, at_most) in cases.items():
        kept = support(first_step(client, **fields))
        assert 0 < kept < everything, name
        if at_most is not None:
            assert kept <= at_most, name


def test_min_keep_keeps_candidates(client: httpx.Client) -> None:
    few = support(first_step(client, top_p=0.01, samplers=["top_p", "temperature"]))
    kept = support(first_step(client, top_p=0.01, min_keep=6, samplers=["top_p", "temperature"]))
    assert few < 6 <= kept


def test_temperature_flattens_or_sharpens(client: httpx.Client) -> None:
    order = ["top_k", "temperature"]
    cold = entropy(first_step(client, temperature=0.5, top_k=40, samplers=order))
    warm = entropy(first_step(client, temperature=1.0, top_k=40, samplers=order))
    hot = entropy(first_step(client, temperature=1.5, top_k=40, samplers=order))
    assert cold < warm < hot
    greedy = first_step(client, temperature=0.0, top_k=40, samplers=order)
    assert support(greedy) == 1


def test_dynamic_temperature_changes_the_spread(client: httpx.Client) -> None:
    order = ["top_k", "temperature"]
    fixed = entropy(first_step(client, temperature=1.0, top_k=40, samplers=order))
    dynamic = entropy(
        first_step(client, temperature=1.0, top_k=40, dynatemp_range=0.9, samplers=order)
    )
    assert abs(fixed - dynamic) > 1e-3


def test_xtc_removes_the_most_likely_choices(client: httpx.Client) -> None:
    plain = first_step(client, top_k=40, samplers=["top_k", "temperature"])
    xtc = first_step(
        client,
        top_k=40,
        xtc_probability=1.0,
        xtc_threshold=0.05,
        samplers=["top_k", "xtc", "temperature"],
    )
    assert plain[0]["prob"] > 0.05
    assert xtc[0]["id"] != plain[0]["id"]
    assert support(xtc) < support(plain)


REPEATING = "the cat, the cat, the cat, the cat, the cat, the"


@pytest.mark.parametrize(
    "penalty",
    [
        {"repeat_penalty": 1.5},
        {"presence_penalty": 1.0},
        {"frequency_penalty": 1.0},
        {"dry_multiplier": 2.0, "dry_allowed_length": 1},
    ],
)
def test_penalties_make_repeats_less_likely(client: httpx.Client, penalty: dict) -> None:
    stages = ["dry" if "dry_multiplier" in penalty else "penalties", "top_k", "temperature"]
    base = first_step(client, REPEATING, top_k=40, samplers=stages)
    penalised = first_step(client, REPEATING, top_k=40, samplers=stages, **penalty)
    assert base[0]["token"] == " cat"
    assert prob_of(penalised, " cat") < prob_of(base, " cat")


@pytest.mark.parametrize("mirostat", [1, 2])
def test_mirostat_replaces_the_chain(client: httpx.Client, mirostat: int) -> None:
    candidates = first_step(client, mirostat=mirostat, mirostat_tau=2.0)
    assert 0 < support(candidates) < 100


def test_logit_bias_raises_and_bans(client: httpx.Client) -> None:
    plain = first_step(client, COUNTING, top_k=40, samplers=["top_k", "temperature"])
    top = plain[0]
    boosted_id = plain[3]["id"]
    boosted = first_step(
        client,
        COUNTING,
        top_k=40,
        samplers=["top_k", "temperature"],
        logit_bias=[[boosted_id, 3.0]],
    )
    assert prob_of(boosted, plain[3]["token"]) > plain[3]["prob"]
    for bias in ([[top["id"], False]], [[top["token"], False]], {str(top["id"]): -100}):
        banned = first_step(
            client, COUNTING, top_k=40, samplers=["top_k", "temperature"], logit_bias=bias
        )
        assert prob_of(banned, top["token"]) == 0.0, bias


def test_banned_token_never_appears(client: httpx.Client) -> None:
    seven = client.post("/tokenize", json={"content": "7"}).json()["tokens"]
    body = client.post(
        "/completion",
        json={
            "prompt": COUNTING,
            "n_predict": 12,
            "temperature": 0,
            "logit_bias": [[seven[0], False]],
        },
    ).json()
    assert "7" not in body["content"]


def test_same_seed_same_output_and_top_k_1_is_greedy(client: httpx.Client) -> None:
    def run(**fields: object) -> str:
        body = {"prompt": STORY, "n_predict": 16, "cache_prompt": False, **fields}
        return client.post("/completion", json=body).json()["content"]

    assert run(temperature=1.0, seed=7) == run(temperature=1.0, seed=7)
    assert run(temperature=1.0, top_k=1, seed=3) == run(temperature=0)


def test_samplers_order_by_letters_and_names(client: httpx.Client) -> None:
    by_names = first_step(client, top_k=3, samplers=["top_k", "temperature"])
    by_letters = first_step(client, top_k=3, samplers="kt")
    assert by_names == by_letters


# llama-cpp-python's schema converter enforces types, required keys and string lengths, but
# not numeric ranges (llama.cpp's C++ converter does).
PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 12},
        "age": {"type": "integer"},
    },
    "required": ["name", "age"],
    "additionalProperties": False,
}


def test_json_schema_output_validates(client: httpx.Client) -> None:
    body = client.post(
        "/completion",
        json={
            "prompt": "A person as JSON:",
            "n_predict": 60,
            "temperature": 0,
            "json_schema": PERSON,
        },
    ).json()
    value = json.loads(body["content"])
    assert set(value) == {"name", "age"}
    assert isinstance(value["name"], str) and len(value["name"]) <= 12
    assert isinstance(value["age"], int)


def test_response_format_json_schema_and_json_object(client: httpx.Client) -> None:
    messages = [{"role": "user", "content": "Describe a person as JSON."}]
    schema = client.post(
        "/v1/chat/completions",
        json={
            "messages": messages,
            "max_tokens": 60,
            "temperature": 0,
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "person", "schema": PERSON},
            },
        },
    ).json()
    assert set(json.loads(schema["choices"][0]["message"]["content"])) == {"name", "age"}
    small_object = {
        "type": "object",
        "properties": {"ok": {"type": "boolean"}},
        "required": ["ok"],
        "additionalProperties": False,
    }
    obj = client.post(
        "/v1/chat/completions",
        json={
            "messages": messages,
            "max_tokens": 30,
            "temperature": 0,
            "response_format": {"type": "json_object", "schema": small_object},
        },
    ).json()
    assert isinstance(json.loads(obj["choices"][0]["message"]["content"]), dict)
    legacy = client.post(
        "/v1/completions",
        json={
            "prompt": "{",
            "max_tokens": 40,
            "temperature": 0,
            "response_format": {"type": "json_object"},
        },
    ).json()
    assert legacy["choices"][0]["text"].lstrip().startswith("{")


def test_grammar_constrains_output(client: httpx.Client) -> None:
    body = client.post(
        "/completion",
        json={
            "prompt": "Answer yes or no:",
            "n_predict": 5,
            "temperature": 0,
            "grammar": 'root ::= ("yes" | "no") "."',
        },
    ).json()
    assert body["content"] in {"yes.", "no."}


@pytest.mark.parametrize(
    ("fields", "fragment"),
    [
        ({"grammar": "root ::= ("}, "Failed to parse grammar"),
        ({"json_schema": {"type": "object", "properties": {"a": {"$ref": "#/nowhere"}}}}, "schema"),
        ({"samplers": ["top_k", "no_such_stage"]}, "no_such_stage"),
        ({"logit_bias": [[10**9, 1.0]]}, "outside the vocabulary"),
        ({"logit_bias": {"abc": "high"}}, "logit_bias"),
        ({"response_format": {"type": "json_schema"}}, "needs a schema"),
        ({"mirostat": 3}, "mirostat"),
        ({"n_probs": -1}, "n_probs"),
    ],
)
def test_bad_sampling_settings_are_400(client: httpx.Client, fields: dict, fragment: str) -> None:
    response = client.post("/completion", json={"prompt": "x", "n_predict": 2, **fields})
    assert response.status_code == 400, response.text
    assert fragment in response.json()["error"]["message"]


def test_native_probabilities_are_sorted_and_sum_to_at_most_one(client: httpx.Client) -> None:
    body = client.post(
        "/completion", json={"prompt": STORY, "n_predict": 4, "n_probs": 5, "temperature": 0}
    ).json()
    steps = body["completion_probabilities"]
    assert len(steps) == 4
    for step in steps:
        values = [t["logprob"] for t in step["top_logprobs"]]
        assert len(values) == 5 and values == sorted(values, reverse=True)
        assert sum(math.exp(v) for v in values) <= 1 + 1e-6
        assert step["id"] == step["top_logprobs"][0]["id"]  # greedy picks the top one
        assert bytes(step["bytes"]).decode(errors="replace") == step["token"]
    assert "".join(s["token"] for s in steps) == body["content"]


def test_openai_logprobs_chat_and_legacy(client: httpx.Client, server: Server) -> None:
    import openai

    sdk = openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="none")
    chat = sdk.chat.completions.create(
        model="x",
        max_tokens=4,
        temperature=0,
        logprobs=True,
        top_logprobs=3,
        messages=[{"role": "user", "content": "Count to five."}],
    )
    content = chat.choices[0].logprobs.content
    assert len(content) == 4 and all(len(c.top_logprobs) == 3 for c in content)
    assert all(c.logprob <= 0 for c in content)
    assert "".join(c.token for c in content) == chat.choices[0].message.content

    streamed = list(
        sdk.chat.completions.create(
            model="x",
            max_tokens=4,
            temperature=0,
            logprobs=True,
            top_logprobs=2,
            stream=True,
            messages=[{"role": "user", "content": "Count to five."}],
        )
    )
    tokens = [
        c.choices[0].logprobs.content[0] for c in streamed if c.choices and c.choices[0].logprobs
    ]
    assert [t.token for t in tokens] == [c.token for c in content]

    legacy = sdk.completions.create(
        model="x", prompt=COUNTING, max_tokens=3, temperature=0, logprobs=2
    )
    logprobs = legacy.choices[0].logprobs
    assert len(logprobs.tokens) == 3 and len(logprobs.top_logprobs[0]) == 2
    assert logprobs.text_offset[0] == 0


def test_native_stream_carries_probabilities(client: httpx.Client) -> None:
    with client.stream(
        "POST", "/completion", json={"prompt": STORY, "n_predict": 3, "n_probs": 2, "stream": True}
    ) as response:
        chunks = [
            json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: ")
        ]
    per_token = [c["completion_probabilities"] for c in chunks if not c["stop"]]
    assert len(per_token) == 3 and all(len(p[0]["top_logprobs"]) == 2 for p in per_token)


def test_example_plugin_stage_changes_generation(client: httpx.Client) -> None:
    """llama-box-example-sampler is installed like any third-party plugin; its
    entry point offers the no_repeat stage."""

    def run(samplers: list[str]) -> list[int]:
        body = {
            "prompt": COUNTING,
            "n_predict": 12,
            "temperature": 0,
            "return_tokens": True,
            "samplers": samplers,
        }
        return client.post("/completion", json=body).json()["tokens"]

    greedy = run(["top_k", "temperature"])
    no_repeat = run(["no_repeat", "top_k", "temperature"])
    assert len(set(greedy)) < len(greedy)  # counting repeats ", "
    assert no_repeat != greedy
    for i, token in enumerate(no_repeat):
        assert token not in no_repeat[max(0, i - 8) : i]


def test_sampler_names_and_cli_logit_bias() -> None:
    assert sampler_names("kt") == ("top_k", "temperature")
    assert sampler_names("top_k;typical_p;temp") == ("top_k", "typ_p", "temperature")
    assert sampler_names(["Top-K", "nucleus"]) == ("top_k", "top_p")
    assert cli_logit_bias(["15043+1", "42-0.5", "7-inf"]) == (
        (15043, 1.0),
        (42, -0.5),
        (7, -math.inf),
    )
    with pytest.raises(ValueError, match="TOKEN_ID"):
        cli_logit_bias(["hello"])

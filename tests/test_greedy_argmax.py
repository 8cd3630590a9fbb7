"""Greedy requests skip the sampler chain's pass over the vocabulary (an argmax picks
the same token); anything that could pick another token keeps the chain."""

from __future__ import annotations

import pytest

from llama_box_core.types import SamplingParams
from llama_box_llamacpp.sampling import BUILTIN_STAGES, picks_the_highest_logit
from tests.conftest import Server

GREEDY = SamplingParams(temperature=0)


@pytest.mark.parametrize(
    "changes",
    [
        {"temperature": 0.0},
        {"temperature": -1.0, "top_k": 1},
        {"temperature": 0.0, "top_p": 0.5, "min_p": 0.2, "top_n_sigma": 1.0},
        {"temperature": 0.0, "xtc_probability": 0.5, "xtc_threshold": 0.6},
        {"temperature": 0.0, "samplers": ("dry", "typ_p", "top_k", "temperature")},
        {"temperature": 0.0, "logit_bias": [(5, -2.0)], "ignore_eos": True},
    ],
)
def test_greedy_settings_take_the_argmax(changes: dict) -> None:
    assert picks_the_highest_logit(SamplingParams(**changes), BUILTIN_STAGES)


@pytest.mark.parametrize(
    "changes",
    [
        {"temperature": 0.8},
        {"temperature": 0.0, "dynatemp_range": 0.5},
        {"temperature": 0.0, "repeat_penalty": 1.1},
        {"temperature": 0.0, "presence_penalty": 0.5},
        {"temperature": 0.0, "dry_multiplier": 0.8, "samplers": ("dry", "temperature")},
        {"temperature": 0.0, "typical_p": 0.5, "samplers": ("typ_p", "temperature")},
        {"temperature": 0.0, "xtc_probability": 0.5, "xtc_threshold": 0.1},
        {"temperature": 0.0, "logit_bias": [(5, 2.0)]},
        {"temperature": 0.0, "mirostat": 2},
        {"temperature": 0.0, "grammar": 'root ::= "a"'},
        {"temperature": 0.0, "n_probs": 3},
        {"temperature": 0.0, "samplers": ("top_k", "top_p")},
    ],
)
def test_anything_else_keeps_the_chain(changes: dict) -> None:
    assert not picks_the_highest_logit(SamplingParams(**changes), BUILTIN_STAGES)


def test_a_plugin_stage_under_a_builtin_name_keeps_the_chain() -> None:
    stages = {**BUILTIN_STAGES, "top_k": lambda params, model: None}
    assert not picks_the_highest_logit(GREEDY, stages)


@pytest.mark.slow
@pytest.mark.parametrize(
    "prompt", ["Once upon a time, in a small village,", "The capital of France is", "def f(x):"]
)
def test_argmax_and_chain_generate_the_same_tokens(server: Server, prompt: str) -> None:
    """n_probs sends the request through the chain; the tokens must not change."""
    body = {"prompt": prompt, "n_predict": 40, "temperature": 0, "cache_prompt": False}
    with server.client(timeout=120) as client:
        fast = client.post("/completion", json=body)
        chain = client.post("/completion", json={**body, "n_probs": 1})
    assert fast.status_code == chain.status_code == 200
    assert fast.json()["tokens"] == chain.json()["tokens"]
    assert fast.json()["content"] == chain.json()["content"]

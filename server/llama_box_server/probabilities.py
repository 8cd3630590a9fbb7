"""Token probabilities in the three shapes clients expect: llama.cpp's native
``completion_probabilities``, OpenAI chat ``logprobs.content`` and legacy ``logprobs``."""

from __future__ import annotations

import math
from collections.abc import Sequence

import msgspec

from llama_box_core.types import ProbabilityEntry, TokenProbabilities


def text_of(entry: ProbabilityEntry) -> str:
    return entry.piece.decode("utf-8", errors="replace")


def log_of(entry: ProbabilityEntry, post_sampling: bool) -> float:
    """OpenAI shapes always carry log-probabilities."""
    if not post_sampling:
        return entry.value
    return math.log(entry.value) if entry.value > 0 else -math.inf


# --- llama.cpp /completion -------------------------------------------------------------


class NativeCandidate(msgspec.Struct, omit_defaults=True):
    """One token: ``logprob``, or ``prob`` when the request asked for post-sampling."""

    id: int
    token: str
    bytes: list[int]
    logprob: float | None = None
    prob: float | None = None


class NativeProbabilities(NativeCandidate, omit_defaults=True):
    top_logprobs: list[NativeCandidate] | None = None
    top_probs: list[NativeCandidate] | None = None


def _candidate(entry: ProbabilityEntry, post_sampling: bool) -> NativeCandidate:
    value = {"prob" if post_sampling else "logprob": entry.value}
    return NativeCandidate(entry.id, text_of(entry), list(entry.piece), **value)


def native(step: TokenProbabilities) -> NativeProbabilities:
    """``logprob``/``top_logprobs``, or ``prob``/``top_probs`` after the sampler chain."""
    post, c = step.post_sampling, step.chosen
    top = [_candidate(e, post) for e in step.top]
    return NativeProbabilities(
        c.id,
        text_of(c),
        list(c.piece),
        **{"prob": c.value, "top_probs": top}
        if post
        else {"logprob": c.value, "top_logprobs": top},
    )


# --- OpenAI chat -------------------------------------------------------------------------


class ChatTopLogprob(msgspec.Struct):
    token: str
    logprob: float
    bytes: list[int]


class ChatTokenLogprob(ChatTopLogprob):
    top_logprobs: list[ChatTopLogprob]


class ChatLogprobs(msgspec.Struct):
    content: list[ChatTokenLogprob]


def chat(steps: Sequence[TokenProbabilities], top_n: int) -> ChatLogprobs:
    def entry(e: ProbabilityEntry, post: bool) -> ChatTopLogprob:
        return ChatTopLogprob(text_of(e), log_of(e, post), list(e.piece))

    return ChatLogprobs(
        content=[
            ChatTokenLogprob(
                text_of(s.chosen),
                log_of(s.chosen, s.post_sampling),
                list(s.chosen.piece),
                [entry(e, s.post_sampling) for e in s.top[:top_n]],
            )
            for s in steps
        ]
    )


# --- OpenAI legacy completions -------------------------------------------------------------


class LegacyLogprobs(msgspec.Struct):
    tokens: list[str]
    token_logprobs: list[float]
    top_logprobs: list[dict[str, float]]
    text_offset: list[int]


def legacy(steps: Sequence[TokenProbabilities], top_n: int, offset: int = 0) -> LegacyLogprobs:
    tokens = [text_of(s.chosen) for s in steps]
    offsets = []
    for token in tokens:
        offsets.append(offset)
        offset += len(token)
    return LegacyLogprobs(
        tokens=tokens,
        token_logprobs=[log_of(s.chosen, s.post_sampling) for s in steps],
        top_logprobs=[
            {text_of(e): log_of(e, s.post_sampling) for e in s.top[:top_n]} for s in steps
        ],
        text_offset=offsets,
    )

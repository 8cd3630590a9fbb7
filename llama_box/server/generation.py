"""What the completion endpoints share: sampling fields, prompt checks, running one or
several generations (streamed or collected), and SSE framing."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Sequence
from dataclasses import dataclass, field
from typing import Annotated, TypeVar

import msgspec
from litestar import Request
from msgspec import Meta

from llama_box.core.engine import (
    Engine,
    ErrorEvent,
    Event,
    FinishEvent,
    GenerationRequest,
    TokenEvent,
)
from llama_box.core.settings import Settings
from llama_box.core.types import SamplingParams
from llama_box.server.errors import ApiError, error_payload

Probability = Annotated[float, Meta(ge=0.0, le=1.0)]
Penalty = Annotated[float, Meta(ge=-2.0, le=2.0)]
NonNegative = Annotated[int, Meta(ge=0)]

# A prompt as llama.cpp's /completion takes it: text, token ids, or both mixed.
PromptPart = int | str
Prompt = str | list[PromptPart | list[PromptPart]]

SSE_DONE = b"data: [DONE]\n\n"
T = TypeVar("T")
_encoder = msgspec.json.Encoder()


def sse(payload: object) -> bytes:
    """One server-sent event, framed as llama-server and OpenAI frame it."""
    return b"data: " + _encoder.encode(payload) + b"\n\n"


class SamplingFields(msgspec.Struct, kw_only=True):
    """Request fields shared by every completion endpoint; ``None`` takes the CLI default.
    Unknown fields are ignored, so clients may send newer OpenAI fields."""

    temperature: Annotated[float, Meta(ge=0.0)] | None = None
    top_k: NonNegative | None = None
    top_p: Probability | None = None
    min_p: Probability | None = None
    min_keep: NonNegative | None = None
    seed: int | None = None
    repeat_penalty: Annotated[float, Meta(ge=0.0)] | None = None
    repeat_last_n: Annotated[int, Meta(ge=-1)] | None = None
    presence_penalty: Penalty | None = None
    frequency_penalty: Penalty | None = None
    stop: str | list[str] | None = None
    ignore_eos: bool = False

    def sampling_params(self, settings: Settings) -> SamplingParams:
        return SamplingParams(
            temperature=pick(self.temperature, settings.temp),
            top_k=pick(self.top_k, settings.top_k),
            top_p=pick(self.top_p, settings.top_p),
            min_p=pick(self.min_p, settings.min_p),
            min_keep=pick(self.min_keep, 0),
            seed=pick(self.seed, settings.seed),
            repeat_penalty=pick(self.repeat_penalty, 1.0),
            repeat_last_n=pick(self.repeat_last_n, 64),
            presence_penalty=pick(self.presence_penalty, 0.0),
            frequency_penalty=pick(self.frequency_penalty, 0.0),
        )

    def stop_words(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)


def pick(value: T | None, default: T) -> T:
    return default if value is None else value


class StreamOptions(msgspec.Struct, kw_only=True):
    include_usage: bool = False


class Usage(msgspec.Struct, kw_only=True):
    """OpenAI's usage, with llama-box's speed figures beside it."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_per_second: float
    time_to_first_token_ms: float
    time_per_output_token_ms: float
    tokens_per_second: float


def usage_of(finishes: Sequence[FinishEvent]) -> Usage:
    prompt = sum(f.n_prompt for f in finishes)
    completion = sum(f.n_predicted for f in finishes)
    first = finishes[0]
    timings = first.timings.summary(first.n_prompt, first.n_predicted)
    time_to_first_token = (first.timings.prompt_end - first.timings.queued) * 1000.0
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=prompt + completion,
        prompt_tokens_per_second=timings["prompt_per_second"],
        time_to_first_token_ms=time_to_first_token,
        time_per_output_token_ms=timings["predicted_per_token_ms"],
        tokens_per_second=timings["predicted_per_second"],
    )


# --- prompts ---------------------------------------------------------------------------


def split_prompts(prompt: Prompt) -> list[str | list[PromptPart]]:
    """llama.cpp's rule: a string, or one list of token ids (mixed with strings), is one
    prompt; a list of strings or of lists is several."""
    if isinstance(prompt, str) or not prompt:
        return [prompt]
    if any(isinstance(part, int) for part in prompt):
        if any(isinstance(part, list) for part in prompt):
            raise ApiError(400, "prompt mixes token ids with nested lists")
        return [prompt]  # type: ignore[list-item]
    return list(prompt)  # type: ignore[arg-type]


async def tokenize_prompt(engine: Engine, prompt: str | list[PromptPart]) -> list[int]:
    """Text gets the model's BOS (if it wants one) and special-token parsing; token ids are
    taken as they are."""
    parts = [prompt] if isinstance(prompt, str) else prompt
    tokens: list[int] = []
    for i, part in enumerate(parts):
        if isinstance(part, int):
            tokens.append(part)
        else:
            tokens += await engine.tokenize(part, add_special=i == 0, parse_special=True)
    return tokens


def check_prompt(engine: Engine, tokens: list[int]) -> None:
    model = engine.require_model()
    if not tokens:
        raise ApiError(400, "The prompt is empty")
    bad = next((t for t in tokens if not 0 <= t < model.n_vocab), None)
    if bad is not None:
        raise ApiError(400, f"Token id {bad} is outside the vocabulary [0, {model.n_vocab})")
    if len(tokens) >= model.n_ctx_slot:
        raise ApiError(
            400,
            f"The prompt has {len(tokens)} tokens, which does not fit the slot's context of "
            f"{model.n_ctx_slot} tokens (-c {model.n_ctx_slot * model.n_slots} "
            f"shared by -np {model.n_slots} slots)",
        )


async def build_requests(
    engine: Engine,
    prompts: Sequence[str | list[PromptPart]],
    fields: SamplingFields,
    n_predict: int | None,
) -> list[GenerationRequest]:
    settings = engine.settings
    params = fields.sampling_params(settings)
    requests = []
    for prompt in prompts:
        tokens = await tokenize_prompt(engine, prompt)
        check_prompt(engine, tokens)
        requests.append(
            GenerationRequest(
                prompt=tokens,
                params=params,
                n_predict=settings.n_predict if n_predict is None else n_predict,
                stop=fields.stop_words(),
                ignore_eos=fields.ignore_eos,
            )
        )
    return requests


# --- running generations ---------------------------------------------------------------------


@dataclass(slots=True)
class Completed:
    """The outcome of one collected generation."""

    text: str
    finish: FinishEvent
    tokens: list[int] = field(default_factory=list)


def raise_for(event: ErrorEvent) -> None:
    raise ApiError(event.status, event.message)


async def collect(engine: Engine, request: GenerationRequest) -> Completed:
    chunks: list[str] = []
    tokens: list[int] = []
    async for event in engine.generate(request):
        if isinstance(event, TokenEvent):
            chunks.append(event.text)
            tokens.append(event.token)
        elif isinstance(event, FinishEvent):
            chunks.append(event.text)
            return Completed("".join(chunks), event, tokens)
        else:
            raise_for(event)
    raise ApiError(500, "Generation ended without a result")


async def _until_disconnect(http_request: Request) -> None:
    while (await http_request.receive())["type"] != "http.disconnect":
        pass


async def unless_disconnected(http_request: Request, work: Awaitable[T]) -> T:
    """Await ``work`` unless the client leaves first: then cancel it (which cancels its
    generations and frees their slots) and raise."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_until_disconnect(http_request))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, ApiError):
                await task
    if task.cancelled():
        raise ApiError(400, "Client disconnected")
    return task.result()


async def collect_all(
    engine: Engine, http_request: Request, requests: Sequence[GenerationRequest]
) -> list[Completed]:
    return await unless_disconnected(
        http_request, asyncio.gather(*(collect(engine, r) for r in requests))
    )


async def merged_events(
    engine: Engine, requests: Sequence[GenerationRequest]
) -> AsyncIterator[tuple[int, Event]]:
    """The events of several generations as they come, each with its prompt's index."""
    if len(requests) == 1:
        async for event in engine.generate(requests[0]):
            yield 0, event
        return
    queue: asyncio.Queue[tuple[int, Event]] = asyncio.Queue()

    async def pump(index: int, request: GenerationRequest) -> None:
        async for event in engine.generate(request):
            await queue.put((index, event))

    tasks = [asyncio.ensure_future(pump(i, r)) for i, r in enumerate(requests)]
    try:
        remaining = len(requests)
        while remaining:
            index, event = await queue.get()
            remaining -= not isinstance(event, TokenEvent)
            yield index, event
    finally:
        for task in tasks:
            task.cancel()


async def start_stream(
    engine: Engine, http_request: Request, requests: Sequence[GenerationRequest]
) -> AsyncIterator[tuple[int, Event]]:
    """Wait for the first event before answering, so an error that comes before any token
    (a busy server) still gets its HTTP status instead of a 200 stream."""
    events = merged_events(engine, requests)
    try:
        first = await unless_disconnected(http_request, anext(events))
    except BaseException:
        await events.aclose()
        raise
    if isinstance(first[1], ErrorEvent):
        await events.aclose()
        raise_for(first[1])

    async def replay() -> AsyncIterator[tuple[int, Event]]:
        try:
            yield first
            async for item in events:
                yield item
        finally:
            await events.aclose()

    return replay()


def sse_error(event: ErrorEvent) -> bytes:
    return sse(error_payload(ApiError(event.status, event.message)))

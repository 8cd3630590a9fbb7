"""POST /completion (llama.cpp's native shape) and POST /v1/completions (OpenAI legacy)."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any

import msgspec
from litestar import Request, post
from litestar.di import NamedDependency
from litestar.params import JSONBody
from litestar.response import Stream
from msgspec import Meta

from llama_box.core.engine import Engine, ErrorEvent, FinishEvent, TokenEvent
from llama_box.core.hookspecs import hookimpl
from llama_box.server.errors import ApiError
from llama_box.server.generation import (
    SSE_DONE,
    Completed,
    Prompt,
    SamplingFields,
    StreamOptions,
    Usage,
    build_requests,
    collect_all,
    pick,
    split_prompts,
    sse,
    sse_error,
    start_stream,
    usage_of,
)

# --- llama.cpp's /completion ------------------------------------------------------------


class CompletionRequest(SamplingFields, kw_only=True):
    prompt: Prompt
    n_predict: Annotated[int, Meta(ge=-1)] | None = None
    max_tokens: Annotated[int, Meta(ge=-1)] | None = None
    stream: bool = False
    return_tokens: bool = False


class NativeCompletion(msgspec.Struct, kw_only=True):
    index: int
    content: str
    tokens: list[int]
    id_slot: int
    stop: bool
    model: str
    tokens_predicted: int
    tokens_evaluated: int
    tokens_cached: int
    generation_settings: dict[str, Any]
    prompt: str
    has_new_line: bool
    truncated: bool
    stop_type: str
    stopping_word: str
    timings: dict[str, float]


class NativeChunk(msgspec.Struct, kw_only=True):
    index: int
    content: str
    tokens: list[int]
    stop: bool = False


def native_result(
    engine: Engine,
    data: CompletionRequest,
    index: int,
    prompt: str,
    done: Completed,
) -> NativeCompletion:
    finish = done.finish
    return NativeCompletion(
        index=index,
        content=done.text,
        tokens=done.tokens if data.return_tokens else [],
        id_slot=finish.slot_id,
        stop=True,
        model=engine.settings.model_name,
        tokens_predicted=finish.n_predicted,
        tokens_evaluated=finish.n_prompt,
        tokens_cached=0,
        generation_settings=generation_settings(engine, data),
        prompt=prompt,
        has_new_line="\n" in done.text,
        truncated=False,
        stop_type=finish.stop_type,
        stopping_word=finish.stopping_word,
        timings=finish.timings.summary(finish.n_prompt, finish.n_predicted),
    )


def generation_settings(engine: Engine, data: CompletionRequest) -> dict[str, Any]:
    model = engine.require_model()
    return {
        "n_ctx": model.n_ctx_slot,
        "model": engine.settings.model_name,
        "n_predict": pick(n_predict_of(data), engine.settings.n_predict),
        "stop": data.stop_words(),
        "ignore_eos": data.ignore_eos,
        **msgspec.structs.asdict(data.sampling_params(engine.settings)),
    }


def n_predict_of(data: JSONBody[CompletionRequest]) -> int | None:
    return data.n_predict if data.n_predict is not None else data.max_tokens


@post("/completion", status_code=200)
async def completion(
    data: JSONBody[CompletionRequest], engine: NamedDependency[Engine], request: Request
) -> NativeCompletion | list[NativeCompletion] | Stream:
    prompts = split_prompts(data.prompt)
    requests = await build_requests(engine, prompts, data, n_predict_of(data))
    if data.stream:
        return Stream(
            native_stream(engine, data, await start_stream(engine, request, requests)),
            media_type="text/event-stream",
        )
    done = await collect_all(engine, request, requests)
    results = [
        native_result(engine, data, i, await engine.detokenize(r.prompt), d)
        for i, (r, d) in enumerate(zip(requests, done, strict=True))
    ]
    return results if len(results) > 1 else results[0]


async def native_stream(
    engine: Engine,
    data: CompletionRequest,
    events: AsyncIterator[tuple[int, Any]],
) -> AsyncIterator[bytes]:
    async for index, event in events:
        if isinstance(event, TokenEvent):
            yield sse(NativeChunk(index=index, content=event.text, tokens=[event.token]))
        elif isinstance(event, FinishEvent):
            final = native_result(engine, data, index, "", Completed(event.text, event))
            yield sse(final)
        elif isinstance(event, ErrorEvent):
            yield sse_error(event)
            return


# --- OpenAI's legacy /v1/completions ---------------------------------------------------------


class LegacyCompletionRequest(SamplingFields, kw_only=True):
    prompt: Prompt
    model: str | None = None
    max_tokens: Annotated[int, Meta(ge=0)] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: Annotated[int, Meta(ge=1)] = 1


class LegacyChoice(msgspec.Struct, kw_only=True):
    text: str
    index: int
    logprobs: None = None
    finish_reason: str | None = None


class LegacyCompletion(msgspec.Struct, kw_only=True):
    id: str
    object: str = "text_completion"
    created: int
    model: str
    choices: list[LegacyChoice]
    usage: Usage | None = None
    system_fingerprint: str | None = None


@post("/v1/completions", status_code=200)
async def legacy_completions(
    data: JSONBody[LegacyCompletionRequest], engine: NamedDependency[Engine], request: Request
) -> LegacyCompletion | Stream:
    if data.n != 1:
        raise ApiError(400, "Only n=1 is supported")
    requests = await build_requests(engine, split_prompts(data.prompt), data, data.max_tokens)
    header = {
        "id": f"cmpl-{uuid.uuid4().hex}",
        "created": int(time.time()),
        "model": data.model or engine.settings.model_name,
    }
    if data.stream:
        events = await start_stream(engine, request, requests)
        include_usage = data.stream_options is not None and data.stream_options.include_usage
        return Stream(legacy_stream(header, events, include_usage), media_type="text/event-stream")
    done = await collect_all(engine, request, requests)
    choices = [
        LegacyChoice(text=d.text, index=i, finish_reason=d.finish.reason)
        for i, d in enumerate(done)
    ]
    return LegacyCompletion(**header, choices=choices, usage=usage_of([d.finish for d in done]))


async def legacy_stream(
    header: dict[str, Any], events: AsyncIterator[tuple[int, Any]], include_usage: bool
) -> AsyncIterator[bytes]:
    finishes: list[FinishEvent] = []
    async for index, event in events:
        if isinstance(event, TokenEvent):
            if event.text:
                yield sse(
                    LegacyCompletion(**header, choices=[LegacyChoice(text=event.text, index=index)])
                )
        elif isinstance(event, FinishEvent):
            finishes.append(event)
            choice = LegacyChoice(text=event.text, index=index, finish_reason=event.reason)
            yield sse(LegacyCompletion(**header, choices=[choice]))
        elif isinstance(event, ErrorEvent):
            yield sse_error(event)
            return
    if include_usage and finishes:
        yield sse(LegacyCompletion(**header, choices=[], usage=usage_of(finishes)))
    yield SSE_DONE


@hookimpl
def llama_box_routes(register: Callable[..., None]) -> None:
    register(completion)
    register(legacy_completions)

"""POST /v1/chat/completions: messages through the chat template, then a completion."""

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
from llama_box.core.types import ChatMessage
from llama_box.server.errors import ApiError
from llama_box.server.generation import (
    SSE_DONE,
    SamplingFields,
    StreamOptions,
    Usage,
    build_requests,
    collect_all,
    sse,
    sse_error,
    start_stream,
    usage_of,
)


class ContentPart(msgspec.Struct, kw_only=True):
    type: str
    text: str | None = None


class MessageIn(msgspec.Struct, kw_only=True):
    role: Annotated[str, Meta(min_length=1)]
    content: str | list[ContentPart] | None = None


class ChatCompletionRequest(SamplingFields, kw_only=True):
    messages: Annotated[list[MessageIn], Meta(min_length=1)]
    model: str | None = None
    max_tokens: Annotated[int, Meta(ge=0)] | None = None
    max_completion_tokens: Annotated[int, Meta(ge=0)] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: Annotated[int, Meta(ge=1)] = 1


class MessageOut(msgspec.Struct, kw_only=True):
    role: str
    content: str


class Choice(msgspec.Struct, kw_only=True):
    index: int
    message: MessageOut
    logprobs: None = None
    finish_reason: str


class ChatCompletion(msgspec.Struct, kw_only=True):
    id: str
    object: str = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: Usage
    system_fingerprint: str | None = None


class Delta(msgspec.Struct, kw_only=True, omit_defaults=True):
    role: str | None = None
    content: str | None = None


class ChunkChoice(msgspec.Struct, kw_only=True):
    index: int
    delta: Delta
    logprobs: None = None
    finish_reason: str | None = None


class ChatCompletionChunk(msgspec.Struct, kw_only=True):
    id: str
    object: str = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = None
    system_fingerprint: str | None = None


def flatten(message: MessageIn) -> ChatMessage:
    """Text content parts joined; other kinds need a multimodal projector (--mmproj)."""
    content = message.content
    if content is None:
        return ChatMessage(role=message.role, content="")
    if isinstance(content, str):
        return ChatMessage(role=message.role, content=content)
    texts = []
    for part in content:
        if part.type != "text" or part.text is None:
            raise ApiError(400, f"Content of type {part.type!r} is not supported by this model")
        texts.append(part.text)
    return ChatMessage(role=message.role, content="\n".join(texts))


@post("/v1/chat/completions", status_code=200)
async def chat_completions(
    data: JSONBody[ChatCompletionRequest], engine: NamedDependency[Engine], request: Request
) -> ChatCompletion | Stream:
    if data.n != 1:
        raise ApiError(400, "Only n=1 is supported")
    try:
        prompt = await engine.apply_chat_template([flatten(m) for m in data.messages])
    except ValueError as error:
        raise ApiError(400, str(error)) from error
    max_tokens = data.max_completion_tokens if data.max_tokens is None else data.max_tokens
    requests = await build_requests(engine, [prompt], data, max_tokens)
    header = {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "created": int(time.time()),
        "model": data.model or engine.settings.model_name,
    }
    if data.stream:
        events = await start_stream(engine, request, requests)
        include_usage = data.stream_options is not None and data.stream_options.include_usage
        return Stream(chat_stream(header, events, include_usage), media_type="text/event-stream")
    (done,) = await collect_all(engine, request, requests)
    choice = Choice(
        index=0,
        message=MessageOut(role="assistant", content=done.text),
        finish_reason=done.finish.reason,
    )
    return ChatCompletion(**header, choices=[choice], usage=usage_of([done.finish]))


async def chat_stream(
    header: dict[str, Any], events: AsyncIterator[tuple[int, Any]], include_usage: bool
) -> AsyncIterator[bytes]:
    def chunk(delta: Delta, finish_reason: str | None = None) -> bytes:
        choice = ChunkChoice(index=0, delta=delta, finish_reason=finish_reason)
        return sse(ChatCompletionChunk(**header, choices=[choice]))

    yield chunk(Delta(role="assistant", content=""))
    async for _, event in events:
        if isinstance(event, TokenEvent):
            if event.text:
                yield chunk(Delta(content=event.text))
        elif isinstance(event, FinishEvent):
            if event.text:
                yield chunk(Delta(content=event.text))
            yield chunk(Delta(), event.reason)
            if include_usage:
                yield sse(ChatCompletionChunk(**header, choices=[], usage=usage_of([event])))
        elif isinstance(event, ErrorEvent):
            yield sse_error(event)
            return
    yield SSE_DONE


@hookimpl
def llama_box_routes(register: Callable[..., None]) -> None:
    register(chat_completions)

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
from msgspec import Meta

from llama_box_core.engine import Engine, ErrorEvent, FinishEvent, TokenEvent
from llama_box_core.hookspecs import hookimpl
from llama_box_core.settings import Settings
from llama_box_core.types import MAX_PROBS, ChatMessage
from llama_box_server import probabilities
from llama_box_server.errors import ApiError
from llama_box_server.generation import (
    SSE_DONE,
    EventStream,
    SamplingFields,
    StreamOptions,
    Usage,
    build_requests,
    collect_all,
    count_prompt_tokens,
    render_chat,
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
    logprobs: bool = False
    top_logprobs: Annotated[int, Meta(ge=0, le=MAX_PROBS)] | None = None
    verbose: bool = False
    """Answer with ``__verbose`` (the prompt the model was given), as with --verbose."""
    add_generation_prompt: bool | None = None
    continue_final_message: bool = False
    """Continue the last (assistant) message instead of starting a new turn (vLLM's name
    for what llama-server also does when the last message is the assistant's)."""
    chat_template_kwargs: dict[str, Any] | None = None
    """Extra Jinja template variables for this request, over --chat-template-kwargs."""


class MessageOut(msgspec.Struct, kw_only=True):
    role: str
    content: str


class Choice(msgspec.Struct, kw_only=True):
    index: int
    message: MessageOut
    logprobs: probabilities.ChatLogprobs | None = None
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


class RoleDelta(msgspec.Struct, kw_only=True):
    """The first delta of a choice: the role, and a null content (as OpenAI sends it)."""

    role: str = "assistant"
    content: None = None


class ChunkChoice(msgspec.Struct, kw_only=True):
    index: int
    delta: Delta | RoleDelta
    logprobs: probabilities.ChatLogprobs | None = None
    finish_reason: str | None = None


class ChatCompletionChunk(msgspec.Struct, kw_only=True):
    id: str
    object: str = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = None
    system_fingerprint: str | None = None


def flatten(message: MessageIn, separator: str = "\n") -> ChatMessage:
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
    return ChatMessage(role=message.role, content=separator.join(texts))


async def chat_prompt(engine: Engine, data: ChatCompletionRequest | TemplateRequest) -> str:
    """The prompt of a chat request. A final assistant message is continued, as
    llama-server does: the turns before it are rendered up to the assistant's turn, and
    its text follows (``continue_final_message`` asks for exactly that)."""
    messages, kwargs = data.messages, data.chat_template_kwargs
    if len(messages) >= 2 and messages[-1].role == messages[-2].role == "assistant":
        raise ApiError(400, "Cannot have 2 or more assistant messages at the end of the list.")
    if data.continue_final_message and data.add_generation_prompt:
        raise ApiError(400, "continue_final_message and add_generation_prompt exclude each other")
    if messages[-1].role != "assistant":
        if data.continue_final_message:
            raise ApiError(400, "continue_final_message needs a final assistant message")
        return await render_chat(engine, [flatten(m) for m in messages], kwargs)
    head = await render_chat(engine, [flatten(m) for m in messages[:-1]], kwargs)
    return head + flatten(messages[-1], "\n\n").content


@post(["/v1/chat/completions", "/chat/completions"], status_code=200)
async def chat_completions(
    data: JSONBody[ChatCompletionRequest],
    engine: NamedDependency[Engine],
    settings: NamedDependency[Settings],
    request: Request,
) -> ChatCompletion | EventStream | dict[str, Any]:
    prompt = await chat_prompt(engine, data)
    max_tokens = data.max_completion_tokens if data.max_tokens is None else data.max_tokens
    top_n = (data.top_logprobs or 0) if data.logprobs else None
    requests = await build_requests(
        engine,
        settings,
        [prompt],
        data,
        max_tokens,
        n_probs=None if top_n is None else max(1, top_n),
        n_choices=data.n,
    )
    header = {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "created": int(time.time()),
        "model": data.model or settings.model_name,
    }
    if data.stream:
        events = await start_stream(engine, request, requests)
        include_usage = data.stream_options is not None and data.stream_options.include_usage
        return EventStream(chat_stream(header, events, include_usage, top_n, data.n))
    done = await collect_all(engine, request, requests)
    choices = [
        Choice(
            index=i,
            message=MessageOut(role="assistant", content=d.text),
            finish_reason=d.finish.reason,
            logprobs=None if top_n is None else probabilities.chat(d.probabilities, top_n),
        )
        for i, d in enumerate(done)
    ]
    completion = ChatCompletion(**header, choices=choices, usage=usage_of([d.finish for d in done]))
    if settings.verbose or data.verbose:  # llama-server's debugging aid: the model's input
        verbose = {"prompt": await engine.detokenize(requests[0].prompt)}
        return msgspec.to_builtins(completion) | {"__verbose": verbose}
    return completion


async def chat_stream(
    header: dict[str, Any],
    events: AsyncIterator[tuple[int, Any]],
    include_usage: bool,
    top_n: int | None,
    n_choices: int,
) -> AsyncIterator[bytes]:
    def chunk(
        index: int,
        delta: Delta | RoleDelta,
        finish_reason: str | None = None,
        logprobs: probabilities.ChatLogprobs | None = None,
    ) -> bytes:
        choice = ChunkChoice(
            index=index, delta=delta, finish_reason=finish_reason, logprobs=logprobs
        )
        return sse(ChatCompletionChunk(**header, choices=[choice]))

    for index in range(n_choices):
        yield chunk(index, RoleDelta())
    finishes: list[FinishEvent] = []
    async for index, event in events:
        if isinstance(event, TokenEvent):
            probs = event.probabilities
            if event.text or probs:
                logprobs = probabilities.chat([probs], top_n or 0) if probs else None
                yield chunk(index, Delta(content=event.text), logprobs=logprobs)
        elif isinstance(event, FinishEvent):
            finishes.append(event)
            if event.text:
                yield chunk(index, Delta(content=event.text))
            yield chunk(index, Delta(), event.reason)
        elif isinstance(event, ErrorEvent):
            yield sse_error(event)
            return
    if include_usage and finishes:
        last = ChatCompletionChunk(**header, choices=[], usage=usage_of(finishes))
        # llama-server's timings ride on the usage chunk (for timings_per_token clients).
        timings = {"timings": finishes[0].timings_summary()}
        yield sse(msgspec.to_builtins(last) | timings)
    yield SSE_DONE


class TemplateRequest(msgspec.Struct, kw_only=True):
    """The part of a chat request that makes its prompt (other fields are ignored)."""

    messages: Annotated[list[MessageIn], Meta(min_length=1)]
    add_generation_prompt: bool | None = None
    continue_final_message: bool = False
    chat_template_kwargs: dict[str, Any] | None = None


class RenderedPrompt(msgspec.Struct, kw_only=True):
    prompt: str


class InputTokens(msgspec.Struct, kw_only=True):
    input_tokens: int
    object: str = "response.input_tokens"


@post("/apply-template", status_code=200)
async def apply_template(
    data: JSONBody[TemplateRequest], engine: NamedDependency[Engine]
) -> RenderedPrompt:
    """The prompt a chat request would run, as llama-server's /apply-template gives it."""
    return RenderedPrompt(prompt=await chat_prompt(engine, data))


@post(["/v1/chat/completions/input_tokens", "/chat/completions/input_tokens"], status_code=200)
async def count_input_tokens(
    data: JSONBody[TemplateRequest], engine: NamedDependency[Engine]
) -> InputTokens:
    """How many prompt tokens a chat request would take."""
    prompt = await chat_prompt(engine, data)
    return InputTokens(input_tokens=await count_prompt_tokens(engine, prompt))


@hookimpl
def llama_box_routes(register: Callable[..., None]) -> None:
    register(chat_completions)
    register(apply_template)
    register(count_input_tokens)

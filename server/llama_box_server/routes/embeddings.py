"""POST /v1/embeddings (OpenAI's shape) and llama-server's /embedding, /embeddings.

Inputs are tokenized here and encoded by the engine, many inputs and many requests per
step. Pooled vectors are L2-normalised (``embd_normalize`` chooses another norm, as in
llama-server); with ``--pooling none`` only /embeddings answers, one unnormalised vector
per token.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any, Literal

import msgspec
import numpy as np
from litestar import post
from litestar.connection import ASGIConnection
from litestar.di import NamedDependency
from litestar.handlers import BaseRouteHandler
from litestar.params import JSONBody
from litestar.types import Guard

from llama_box_core.engine import Engine
from llama_box_core.hookspecs import hookimpl
from llama_box_core.settings import Settings
from llama_box_server.errors import ApiError

EmbeddingInput = str | list[Any]


class EmbeddingsRequest(msgspec.Struct, kw_only=True):
    input: EmbeddingInput | None = None
    content: EmbeddingInput | None = None
    """llama-server's older name for ``input``."""
    model: str | None = None
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = None
    embd_normalize: int = 2
    """-1 none, 0 max absolute (int16 scale), 1 taxicab, 2 Euclidean, >2 p-norm."""
    user: str | None = None


class Embedding(msgspec.Struct):
    index: int
    embedding: list[float] | str
    object: str = "embedding"


class Usage(msgspec.Struct):
    prompt_tokens: int
    total_tokens: int


class EmbeddingsResponse(msgspec.Struct):
    data: list[Embedding]
    model: str
    usage: Usage
    object: str = "list"


class TokenEmbeddings(msgspec.Struct):
    index: int
    embedding: list[list[float]]


def requires(capability: str, flag: str, feature: str) -> Guard:
    """A guard: a server whose model lacks ``capability`` answers 501 (llama-server's
    message), before the body is read, so whatever the body is."""

    def guard(connection: ASGIConnection, _handler: BaseRouteHandler) -> None:
        engine: Engine = connection.app.state.engine
        if capability not in engine.info.capabilities:
            raise ApiError(501, f"This server does not support {feature}. Start it with `{flag}`")

    return guard


EMBEDDINGS = requires("embeddings", "--embeddings", "embeddings")


def parse_inputs(engine: Engine, value: EmbeddingInput | None) -> list[list[int] | str]:
    """A string, strings, token ids, or lists of token ids: one text or token list per
    input (the engine tokenizes the texts as it encodes them)."""
    if value is None:
        raise ApiError(400, '"input" is required')
    items: list[Any] = [value] if isinstance(value, str) else list(value)
    if items and all(isinstance(item, int) for item in items):
        items = [items]
    if not items:
        raise ApiError(400, '"input" must not be empty')
    n_vocab = engine.info.n_vocab
    for index, item in enumerate(items):
        if isinstance(item, str):
            if not item:
                raise ApiError(400, f"input {index} is an empty string")
        elif isinstance(item, list) and all(
            isinstance(t, int) and not isinstance(t, bool) for t in item
        ):
            if not item:
                raise ApiError(400, f"input {index} is an empty list of tokens")
            if not all(0 <= t < n_vocab for t in item):
                raise ApiError(400, f"input {index} has a token id outside [0, {n_vocab})")
        else:
            raise ApiError(
                400, f"input {index} must be a string or a list of token ids, not {item!r:.40}"
            )
    return items


def normalize(vector: np.ndarray, norm: int) -> np.ndarray:
    """llama.cpp's ``common_embd_normalize``."""
    vector = vector.astype(np.float64)
    if norm < 0:
        return vector
    if norm == 0:
        scale = np.abs(vector).max() / 32760.0
    elif norm == 2:
        scale = np.sqrt((vector * vector).sum())
    else:
        scale = (np.abs(vector) ** norm).sum() ** (1.0 / norm)
    return vector / scale if scale > 0 else vector * 0.0


async def encode(
    engine: Engine, inputs: list[list[int] | str], output: Any
) -> tuple[list[Any], int]:
    """The engine's results and the tokens they took; a refused input is a 400."""
    try:
        return await engine.encode(inputs, output)
    except ValueError as error:
        raise ApiError(400, str(error)) from error


def check_request(data: EmbeddingsRequest) -> None:
    if data.dimensions is not None:
        raise ApiError(
            400, '"dimensions" is not supported: the model gives vectors of its own size'
        )


@post("/v1/embeddings", status_code=200, guards=[EMBEDDINGS])
async def openai_embeddings(
    data: JSONBody[EmbeddingsRequest],
    engine: NamedDependency[Engine],
    settings: NamedDependency[Settings],
) -> EmbeddingsResponse:
    check_request(data)
    if engine.info.pooling == "none":
        raise ApiError(
            400, "Pooling type 'none' is not OAI compatible. Please use a different pooling type"
        )
    inputs = parse_inputs(engine, data.input if data.input is not None else data.content)
    vectors, n_tokens = await encode(engine, inputs, "pooled")
    items = []
    for index, vector in enumerate(vectors):
        values = normalize(vector, data.embd_normalize).astype(np.float32)
        embedding: list[float] | str = (
            base64.b64encode(values.tobytes()).decode()
            if data.encoding_format == "base64"
            else values.tolist()
        )
        items.append(Embedding(index=index, embedding=embedding))
    return EmbeddingsResponse(
        data=items,
        model=data.model or settings.model_name,
        usage=Usage(prompt_tokens=n_tokens, total_tokens=n_tokens),
    )


@post(["/embedding", "/embeddings"], status_code=200, guards=[EMBEDDINGS])
async def llama_embeddings(
    data: JSONBody[EmbeddingsRequest], engine: NamedDependency[Engine]
) -> list[TokenEmbeddings]:
    check_request(data)
    inputs = parse_inputs(engine, data.content if data.content is not None else data.input)
    if engine.info.pooling == "none":
        per_token, _ = await encode(engine, inputs, "tokens")
        return [
            TokenEmbeddings(index=index, embedding=array.tolist())
            for index, array in enumerate(per_token)
        ]
    vectors, _ = await encode(engine, inputs, "pooled")
    return [
        TokenEmbeddings(
            index=index,
            embedding=[normalize(vector, data.embd_normalize).astype(np.float32).tolist()],
        )
        for index, vector in enumerate(vectors)
    ]


@hookimpl
def llama_box_routes(register: Callable[..., None]) -> None:
    register(openai_embeddings)
    register(llama_embeddings)

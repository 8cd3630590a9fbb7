"""POST /tokenize and POST /detokenize."""

from __future__ import annotations

from collections.abc import Callable

import msgspec
from litestar import post
from litestar.di import NamedDependency
from litestar.params import JSONBody

from llama_box_core.engine import Engine
from llama_box_core.hookspecs import hookimpl
from llama_box_server.errors import ApiError


class TokenizeRequest(msgspec.Struct, kw_only=True):
    content: str
    add_special: bool = False
    with_pieces: bool = False


class TokenPiece(msgspec.Struct):
    id: int
    piece: str | list[int]
    """The token's text, or its bytes when they are not valid UTF-8 on their own."""


class TokenizeResponse(msgspec.Struct):
    tokens: list[int | TokenPiece]


class DetokenizeRequest(msgspec.Struct, kw_only=True):
    tokens: list[int]


class DetokenizeResponse(msgspec.Struct):
    content: str


@post("/tokenize", status_code=200)
async def tokenize(
    data: JSONBody[TokenizeRequest], engine: NamedDependency[Engine]
) -> TokenizeResponse:
    tokens = await engine.tokenize(data.content, add_special=data.add_special, parse_special=True)
    if not data.with_pieces:
        return TokenizeResponse(tokens=tokens)
    pieces = []
    for token in tokens:
        raw = await engine.token_piece(token)
        try:
            pieces.append(TokenPiece(token, raw.decode("utf-8")))
        except UnicodeDecodeError:
            pieces.append(TokenPiece(token, list(raw)))
    return TokenizeResponse(tokens=pieces)


@post("/detokenize", status_code=200)
async def detokenize(
    data: JSONBody[DetokenizeRequest], engine: NamedDependency[Engine]
) -> DetokenizeResponse:
    try:
        return DetokenizeResponse(content=await engine.detokenize(data.tokens))
    except ValueError as error:
        raise ApiError(400, str(error)) from error


@hookimpl
def llama_box_routes(register: Callable[..., None]) -> None:
    register(tokenize)
    register(detokenize)

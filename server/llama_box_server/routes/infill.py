"""POST /infill: fill in the middle, with llama.cpp's FIM tokens and repo-level pattern."""

from __future__ import annotations

from collections.abc import Callable

import msgspec
from litestar import Request, post
from litestar.di import NamedDependency
from litestar.params import JSONBody

from llama_box_core.engine import Engine
from llama_box_core.hookspecs import hookimpl
from llama_box_core.settings import Settings
from llama_box_server.errors import ApiError
from llama_box_server.generation import EventStream, require_completion
from llama_box_server.routes.completions import NativeCompletion, NativeFields, run_native

REPO_NAME = "myproject"


class ExtraChunk(msgspec.Struct, kw_only=True):
    filename: str = ""
    text: str = ""


class InfillRequest(NativeFields, kw_only=True):
    input_prefix: str = ""
    input_suffix: str = ""
    input_extra: list[ExtraChunk] = msgspec.field(default_factory=list)
    prompt: str = ""
    """Text after the FIM middle token: the start of the middle, already written."""


async def infill_tokens(engine: Engine, data: InfillRequest) -> list[int]:
    """``[extra] <FIM_PRE>prefix<FIM_SUF>suffix<FIM_MID>prompt``; with the repo-level
    pattern (``<FIM_REP>`` and ``<FIM_SEP>``) when the model has those tokens."""
    require_completion(engine)
    fim = engine.info.fim_tokens
    if "infill" not in engine.info.capabilities:
        raise ApiError(400, "This model has no fill-in-the-middle tokens: /infill needs them")

    async def text(value: str) -> list[int]:
        return await engine.tokenize(value, add_special=False, parse_special=False)

    extra: list[int] = []
    if fim["rep"] >= 0 and fim["sep"] >= 0:
        extra += [fim["rep"], *await text(f"{REPO_NAME}\n")]
        for chunk in data.input_extra:
            extra += [fim["sep"], *await text(f"{chunk.filename}\n"), *await text(chunk.text)]
        extra += [fim["sep"], *await text("filename\n")]
    else:
        for chunk in data.input_extra:
            extra += await text(chunk.text)
    head = await engine.tokenize("", add_special=True, parse_special=False)  # BOS, if any
    return [
        *head,
        *extra,
        fim["pre"],
        *await text(data.input_prefix),
        fim["suf"],
        *await text(data.input_suffix),
        fim["mid"],
        *await text(data.prompt),
    ]


@post("/infill", status_code=200)
async def infill(
    data: JSONBody[InfillRequest],
    engine: NamedDependency[Engine],
    settings: NamedDependency[Settings],
    request: Request,
) -> NativeCompletion | list[NativeCompletion] | EventStream:
    prompt = await infill_tokens(engine, data)
    return await run_native(engine, settings, request, data, [prompt])


@hookimpl
def llama_box_routes(register: Callable[..., None]) -> None:
    register(infill)

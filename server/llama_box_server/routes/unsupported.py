"""llama-server routes whose features llama-box does not serve yet: each answers 501 with
what is missing (a client learns why, rather than meeting a 404), and GET /lora-adapters
lists the adapters loaded, none."""

from __future__ import annotations

from collections.abc import Callable

import msgspec
from litestar import get, post
from litestar.handlers import HTTPRouteHandler

from llama_box_core.hookspecs import hookimpl
from llama_box_server.errors import ApiError

MISSING = {
    "responses": (
        ["/v1/responses", "/responses", "/v1/responses/input_tokens", "/responses/input_tokens"],
        "OpenAI's Responses API",
    ),
    "transcriptions": (
        ["/v1/audio/transcriptions", "/audio/transcriptions"],
        "audio transcription",
    ),
    "control": (["/v1/chat/completions/control"], "reasoning control"),
    "stream_lookup": (["/v1/streams/lookup"], "resumable streams"),
    "router": (
        ["/models", "/models/load", "/models/unload"],
        "loading and unloading models (the router mode)",
    ),
    "tools": (["/tools"], "built-in tools"),
    "cors_proxy": (["/cors-proxy"], "the web UI's CORS proxy"),
}


def not_supported(name: str, paths: list[str], feature: str) -> HTTPRouteHandler:
    def handler() -> None:
        raise ApiError(501, f"This server does not support {feature} yet")

    handler.__name__ = f"{name}_not_supported"
    return post(paths, status_code=200, sync_to_thread=False)(handler)


class LoraAdapter(msgspec.Struct, kw_only=True):
    id: int
    path: str
    scale: float


@get("/lora-adapters", sync_to_thread=False)
def list_lora_adapters() -> list[LoraAdapter]:
    return []  # --lora is not supported yet, so none is ever loaded


@post("/lora-adapters", status_code=200, sync_to_thread=False)
def set_lora_adapters() -> None:
    raise ApiError(400, "No LoRA adapter is loaded (--lora is not supported by llama-box yet)")


@hookimpl
def llama_box_routes(register: Callable[..., None]) -> None:
    for name, (paths, feature) in MISSING.items():
        register(not_supported(name, paths, feature))
    register(list_lora_adapters)
    register(set_lora_adapters)

"""Bounds on request bodies, checked before any JSON is decoded: size, nesting depth and
array length. A body past one of them is a 400 that names the limit (never a decoder's
recursion error, never a 500)."""

from __future__ import annotations

import asyncio
import re

from litestar.enums import ScopeType
from litestar.middleware import ASGIMiddleware
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from llama_box_core.settings import Settings
from llama_box_server.errors import ApiError

# A JSON string (skipped whole, escapes included) or a structural character that matters.
_TOKENS = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{},]')
_BIG_BODY = 256 * 1024
"""Bodies larger than this are scanned on a worker thread, off the event loop."""


def check_json(body: bytes, max_depth: int, max_items: int) -> None:
    """``ApiError`` (400) if ``body`` nests deeper than ``max_depth`` or has an array of
    more than ``max_items`` items. Not a validator: malformed JSON is the decoder's job."""
    open_arrays: list[int] = []  # per open container: items so far (-1 for objects)
    for match in _TOKENS.finditer(body):
        token = match.group()
        if token in (b"[", b"{"):
            if len(open_arrays) >= max_depth:
                raise ApiError(400, f"The JSON body nests deeper than {max_depth} levels")
            open_arrays.append(1 if token == b"[" else -1)
        elif token in (b"]", b"}"):
            if open_arrays:
                open_arrays.pop()
        elif token == b"," and open_arrays and open_arrays[-1] > 0:
            open_arrays[-1] += 1
            if open_arrays[-1] > max_items:
                raise ApiError(400, f"A JSON array in the body has more than {max_items} items")


class BodyLimitsMiddleware(ASGIMiddleware):
    """Reads a request's body whole (refusing it past ``--max-body-size``), checks its
    JSON, then hands the same bytes to the handler."""

    scopes = (ScopeType.HTTP,)

    def __init__(self, settings: Settings) -> None:
        self.max_size = settings.max_body_size
        self.max_depth = settings.max_json_depth
        self.max_items = settings.max_json_array

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        if scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await next_app(scope, receive, send)
            return
        body, disconnected = await self._read(receive)
        if disconnected:
            return
        if len(body) > _BIG_BODY:
            await asyncio.to_thread(check_json, body, self.max_depth, self.max_items)
        else:
            check_json(body, self.max_depth, self.max_items)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()  # what comes after the body: a disconnect
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await next_app(scope, replay, send)

    async def _read(self, receive: Receive) -> tuple[bytes, bool]:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return b"", True
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_size:
                raise ApiError(400, f"The request body is larger than {self.max_size} bytes")
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks), False

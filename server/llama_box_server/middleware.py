"""HTTP-level request controls: request ids (and the request log), API keys, and pacing
streams to the rate a client asks for in ``X-Request-Tokens-Per-Second``."""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
import uuid
from collections.abc import Sequence
from contextvars import ContextVar

from litestar.datastructures import Headers
from litestar.enums import ScopeType
from litestar.middleware import ASGIMiddleware
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from llama_box_core.engine import Engine
from llama_box_core.settings import Settings
from llama_box_server.errors import ApiError

log = logging.getLogger(__name__)

REQUEST_ID_HEADER = "X-Request-ID"
TOKENS_PER_SECOND_HEADER = "X-Request-Tokens-Per-Second"
PUBLIC_ROUTES = frozenset(
    {("GET", "/health"), ("GET", "/v1/health"), ("GET", "/v1/models"), ("GET", "/models")}
)
"""What answers without an API key: probes and model discovery, as in llama-server."""

request_id: ContextVar[str | None] = ContextVar("llama_box_request_id", default=None)
"""The id of the request being handled in this context (``None`` outside requests)."""


class RequestIdFilter(logging.Filter):
    """Gives every record a ``request_id`` attribute ("-" outside a request), for the
    log formats to show."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.get() or "-"
        return True


class RequestIdMiddleware:
    """The outermost layer: takes the client's ``X-Request-ID`` (or makes one), keeps it
    in ``request_id`` for the whole request, echoes it on the response and logs one line
    per request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await self.app(scope, receive, send)
            return
        rid = Headers.from_scope(scope).get(REQUEST_ID_HEADER) or uuid.uuid4().hex
        header = (REQUEST_ID_HEADER.lower().encode(), rid.encode("latin-1"))
        status = 0
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        token = request_id.set(rid)
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            # Logged once the body is sent, so a stream's line comes when it ends; health
            # probes only at debug level, as llama-server, not to flood the log. Status 0:
            # the client left before any answer.
            log.log(
                logging.DEBUG if scope["path"] in ("/health", "/v1/health") else logging.INFO,
                "%s %s -> %d (%.1f ms)",
                scope["method"],
                scope["path"],
                status,
                (time.perf_counter() - started) * 1000.0,
            )
            request_id.reset(token)


def load_api_keys(settings: Settings) -> list[str]:
    """The keys of ``--api-key`` and of ``--api-key-file`` (one a line, blanks skipped)."""
    keys = list(settings.api_key)
    if settings.api_key_file:
        with open(settings.api_key_file, encoding="utf-8") as file:
            keys += [line.strip() for line in file if line.strip()]
    return keys


class ApiKeyMiddleware(ASGIMiddleware):
    """401 unless the request carries a configured key as ``Authorization: Bearer KEY`` or
    ``X-Api-Key: KEY`` (public routes excepted)."""

    scopes = (ScopeType.HTTP,)

    def __init__(self, keys: Sequence[str]) -> None:
        self.keys = [key.encode("utf-8") for key in keys]

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        if (scope["method"], scope["path"]) not in PUBLIC_ROUTES and not self._allowed(scope):
            raise ApiError(401, "Invalid API Key")
        await next_app(scope, receive, send)

    def _allowed(self, scope: Scope) -> bool:
        headers = Headers.from_scope(scope)
        scheme, _, bearer = headers.get("authorization", "").partition(" ")
        given = bearer.strip() if scheme.lower() == "bearer" else headers.get("x-api-key", "")
        if not given:
            return False
        candidate = given.encode("latin-1")  # the bytes as sent (Litestar decodes latin-1)
        # Every key is compared, each in constant time, so timing tells nothing of them.
        matches = [hmac.compare_digest(candidate, key) for key in self.keys]
        return any(matches)


class TokenPacingMiddleware(ASGIMiddleware):
    """Paces a streamed answer to the request's ``X-Request-Tokens-Per-Second``.

    Only sending is slowed: each server-sent event (one per token) waits for its turn,
    while the engine keeps generating into the request's queue at full speed, so its slot
    frees as soon as it would unpaced and other requests are not slowed. Answers that are
    not streams go out when done.
    """

    scopes = (ScopeType.HTTP,)

    def __init__(self, engine: Engine, tokens_per_second: int) -> None:
        self.engine = engine
        self.ceiling = float(tokens_per_second)
        """-tps: the most a request may ask for; -1: the measured decode throughput."""

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        rate = await self.rate(Headers.from_scope(scope).get(TOKENS_PER_SECOND_HEADER))
        if rate is None:
            await next_app(scope, receive, send)
            return
        interval = 1.0 / rate
        loop = asyncio.get_running_loop()
        due = 0.0

        async def paced_send(message: Message) -> None:
            nonlocal due
            # A stream sends each event as a body part with more to come; a whole answer
            # is one part, and goes at once.
            if message["type"] == "http.response.body" and message.get("more_body"):
                now = loop.time()
                if due > now:
                    await asyncio.sleep(due - now)
                # No catching up in bursts after the engine was the slower one.
                due = max(due, now) + interval
            await send(message)

        await next_app(scope, receive, paced_send)

    async def rate(self, header: str | None) -> float | None:
        """Tokens per second for this request: the header's value, capped by
        ``-tps N`` (N > 0) or by the measured decode throughput (-1); ``None``: unpaced."""
        if header is None:
            return None
        try:
            asked = float(header)
        except ValueError:
            asked = 0.0
        if not asked > 0.0 or asked == float("inf"):
            raise ApiError(400, f"{TOKENS_PER_SECOND_HEADER} must be a positive number")
        ceiling = self.ceiling
        if ceiling < 0:
            ceiling = (await self.engine.snapshot()).stats.decode_tokens_per_second
        return min(asked, ceiling) if ceiling > 0 else asked

"""CORS as llama-server does it (``--cors-origins``, ``--cors-methods``,
``--cors-headers``, ``--cors-credentials``), before routing: a preflight (OPTIONS) on any
path is answered at once, without an API key, since browsers send none with it."""

from __future__ import annotations

from urllib.parse import urlsplit

from litestar.datastructures import Headers
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from llama_box_core.settings import Settings

LOCALHOST = "localhost"
LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})


def is_loopback(origin: str) -> bool:
    try:
        return urlsplit(origin).hostname in LOOPBACK_HOSTS
    except ValueError:
        return False


class CorsMiddleware:
    """Header names as llama-server writes them: clients that read headers into a plain
    dict (llama.cpp's own tests do) look them up with this capitalisation."""

    def __init__(self, app: ASGIApp, settings: Settings, expose: tuple[str, ...] = ()) -> None:
        self.app = app
        self.origins = settings.cors_origins
        self.listed = {o.strip() for o in settings.cors_origins.split(",") if o.strip()}
        self.credentials = settings.cors_credentials
        self.preflight_headers = [
            (b"Access-Control-Allow-Credentials", b"true" if self.credentials else b"false"),
            (b"Access-Control-Allow-Methods", settings.cors_methods.encode("latin-1")),
            (b"Access-Control-Allow-Headers", settings.cors_headers.encode("latin-1")),
        ]
        self.expose = [(b"Access-Control-Expose-Headers", ", ".join(expose).encode())]

    def allowed_origin(self, origin: str | None) -> str | None:
        """The Access-Control-Allow-Origin value for a request from ``origin``, if any:
        "*" reflects every origin when credentials are allowed (a browser refuses "*" with
        credentials), "localhost" reflects loopback origins only, a list reflects its
        members."""
        if self.origins == "*":
            return (origin or "*") if self.credentials else "*"
        if not origin:
            return None
        if self.origins == LOCALHOST:
            return origin if is_loopback(origin) else None
        return origin if origin in self.listed else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        allow = self.allowed_origin(Headers.from_scope(scope).get("origin"))
        origin_header = [(b"Access-Control-Allow-Origin", allow.encode("latin-1"))] if allow else []
        if scope["method"] == "OPTIONS":
            headers = [*origin_header, *self.preflight_headers, (b"content-length", b"0")]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": b""})
            return

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), *origin_header, *self.expose]
            await send(message)

        await self.app(scope, receive, send_with_cors)

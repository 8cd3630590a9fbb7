"""The server's hooks: what plugins add to the HTTP API and to the ``llama-box`` command.

These live with the server because they speak its types (Litestar handlers, click
options); the model, text and generation hooks are core's (``llama_box_core.hookspecs``).
Implement them with core's ``hookimpl`` marker, like every other hook.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import pluggy

from llama_box_core.hookspecs import PROJECT

if TYPE_CHECKING:
    import click
    from litestar.handlers import BaseRouteHandler

    from llama_box_core.settings import Settings

hookspec = pluggy.HookspecMarker(PROJECT)


# --- registration ------------------------------------------------------------------------


@hookspec
def llama_box_cli_options(register: Callable[[str, click.Option], None]) -> None:
    """Add options to the ``llama-box`` command.

    Call ``register(group, option)`` once per option; ``group`` is the heading it is listed
    under in ``--help`` (for example ``"server/completion"``). The parsed value reaches the
    plugin as ``settings.plugin_options[option.name]``. A name that is already taken is
    refused with an error at start-up.
    """


@hookspec
def llama_box_routes(register: Callable[[BaseRouteHandler], None], settings: Settings) -> None:
    """Add HTTP routes to the server.

    Call ``register(handler)`` with Litestar route handlers (``@get``/``@post``
    functions or routers). Handlers may declare an ``engine: Engine`` parameter to receive
    the running engine. Two handlers for the same method and path fail start-up.
    """

"""The plugin manager: built-in plugins and entry points, loaded from one explicit call."""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Iterable
from typing import Any

import pluggy

from llama_box.core import hookspecs

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "llama_box"
ALLOW_LIST_ENV = "LLAMA_BOX_PLUGINS"
"""Comma-separated entry-point names to load; unset loads every installed plugin."""
TRACE_ENV = "LLAMA_BOX_TRACE_HOOKS"

# Features that live in this distribution; they register through the same hooks as any
# third-party plugin.
BUILTIN_PLUGINS = (
    "llama_box.server.routes.health",
    "llama_box.server.routes.models",
    "llama_box.server.routes.completions",
    "llama_box.server.routes.chat",
    "llama_box.server.routes.tokenize",
    "llama_box.server.routes.slots",
    "llama_box.server.routes.infill",
    "llama_box.server.routes.props",
    "llama_box.server.routes.metrics",
    "llama_box.core.chat_template",
)


def create_plugin_manager() -> pluggy.PluginManager:
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    return pm


def allow_list_from_env() -> set[str] | None:
    raw = os.environ.get(ALLOW_LIST_ENV)
    if raw is None:
        return None
    return {name.strip() for name in raw.split(",") if name.strip()}


def load_plugins(
    pm: pluggy.PluginManager,
    *,
    allow: Iterable[str] | None = None,
    trace: bool = False,
) -> pluggy.PluginManager:
    """Register the built-in plugins, then the installed entry points, then verify.

    ``allow`` limits which entry points load (default: ``$LLAMA_BOX_PLUGINS``, else all).
    ``trace`` (or ``$LLAMA_BOX_TRACE_HOOKS=1``) logs every hook call at debug level.
    """
    for module_name in BUILTIN_PLUGINS:
        if pm.get_plugin(module_name) is None:
            pm.register(importlib.import_module(module_name), name=module_name)

    allowed = set(allow) if allow is not None else allow_list_from_env()
    if allowed is None:
        pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
    else:
        for name in sorted(allowed):
            if pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP, name=name) == 0:
                log.warning("plugin %s is in %s but not installed", name, ALLOW_LIST_ENV)

    # A hookimpl whose name matches no spec is a typo: fail loudly instead of never running.
    pm.check_pending()

    if trace or os.environ.get(TRACE_ENV) == "1":
        enable_hook_tracing(pm)
    return pm


def enable_hook_tracing(pm: pluggy.PluginManager) -> None:
    """Log every hook call and its result at debug level."""
    pm.trace.root.setwriter(lambda message: log.debug("hook %s", message.rstrip()))
    pm.enable_tracing()


def describe_plugins(pm: pluggy.PluginManager) -> list[dict[str, Any]]:
    """Name, distribution, version and hooks of each loaded plugin (``--list-plugins``)."""
    dists = {id(plugin): dist for plugin, dist in pm.list_plugin_distinfo()}
    described = []
    for name, plugin in sorted(pm.list_name_plugin(), key=lambda item: str(item[0])):
        dist = dists.get(id(plugin))
        hooks = sorted(caller.name for caller in pm.get_hookcallers(plugin) or [])
        described.append(
            {
                "name": name,
                "distribution": dist.metadata["Name"] if dist else "llama-box",
                "version": dist.version if dist else _own_version(),
                "hooks": hooks,
            }
        )
    return described


def _own_version() -> str:
    from llama_box import __version__

    return __version__

"""The plugin manager: the caller's built-in plugins and the installed entry points,
loaded from one explicit call, never on import."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from importlib.metadata import packages_distributions, version
from types import ModuleType
from typing import Any

import pluggy

from llama_box_core import hookspecs

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "llama_box"
ALLOW_LIST_ENV = "LLAMA_BOX_PLUGINS"
"""Comma-separated entry-point names to load; unset loads every installed plugin."""
TRACE_ENV = "LLAMA_BOX_TRACE_HOOKS"


def create_plugin_manager(*extra_specs: ModuleType) -> pluggy.PluginManager:
    """A manager with core's hook specs, plus ``extra_specs`` (the server adds its own)."""
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    for specs in extra_specs:
        pm.add_hookspecs(specs)
    return pm


def allow_list_from_env() -> set[str] | None:
    raw = os.environ.get(ALLOW_LIST_ENV)
    if raw is None:
        return None
    return {name.strip() for name in raw.split(",") if name.strip()}


def load_plugins(
    pm: pluggy.PluginManager,
    builtins: Iterable[object] = (),
    *,
    allow: Iterable[str] | None = None,
    trace: bool = False,
) -> pluggy.PluginManager:
    """Register ``builtins`` (the caller's own features, through the same path as any
    plugin), then the installed entry points, then verify every hook implementation.

    ``allow`` limits which entry points load (default: ``$LLAMA_BOX_PLUGINS``, else all).
    ``trace`` (or ``$LLAMA_BOX_TRACE_HOOKS=1``) logs every hook call at debug level.
    """
    for plugin in builtins:
        name = getattr(plugin, "__name__", None) or type(plugin).__name__
        if pm.get_plugin(name) is None:
            pm.register(plugin, name=name)

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
    owners = packages_distributions()
    described = []
    for name, plugin in sorted(pm.list_name_plugin(), key=lambda item: str(item[0])):
        dist = dists.get(id(plugin))
        if dist is not None:
            dist_name, dist_version = dist.metadata["Name"], dist.version
        else:  # a built-in: the distribution that ships its top-level package
            package = (getattr(plugin, "__module__", None) or str(name)).split(".")[0]
            dist_name = next(iter(owners.get(package, [])), package)
            dist_version = _version_of(dist_name)
        hooks = sorted(caller.name for caller in pm.get_hookcallers(plugin) or [])
        described.append(
            {"name": name, "distribution": dist_name, "version": dist_version, "hooks": hooks}
        )
    return described


def _version_of(dist_name: str) -> str:
    try:
        return version(dist_name)
    except Exception:  # not installed as a distribution
        return "unknown"

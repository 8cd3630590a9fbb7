"""Jinja chat templates (``--jinja``), rendered in a sandbox as llama.cpp's minja does."""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from llama_box_core.hookspecs import hookimpl
from llama_box_core.model import Model, ModelInfo
from llama_box_core.settings import Settings
from llama_box_core.types import ChatMessage

log = logging.getLogger(__name__)


def _raise_exception(message: str) -> None:
    raise ValueError(message)


@functools.lru_cache(maxsize=4)
def compile_template(source: str) -> jinja2.Template:
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    return env.from_string(source)


@functools.lru_cache(maxsize=4)
def read_template_file(path: str) -> str:
    with open(path, encoding="utf-8") as file:
        return file.read()


def jinja_source(info: ModelInfo, settings: Settings) -> str | None:
    if settings.chat_template_file:
        return read_template_file(settings.chat_template_file)
    return info.chat_template


@functools.cache
def _warn_no_template(builtin: str) -> None:
    log.warning("--jinja: the model has no chat template; rendering with the built-in %r", builtin)


@hookimpl(tryfirst=True)
def llama_box_apply_chat_template(
    model: Model,
    messages: Sequence[ChatMessage],
    settings: Settings,
    template_kwargs: Mapping[str, Any],
) -> str | None:
    if not settings.jinja:
        return None
    source = jinja_source(model.info, settings)
    if source is None:
        _warn_no_template(model.info.builtin_template)
        return None  # the model plugin's built-in template renders, as llama-server falls back
    try:
        variables = {
            **template_kwargs,  # a request's over --chat-template-kwargs, as llama-server
            "messages": [{"role": m.role, "content": m.content} for m in messages],
            "add_generation_prompt": True,
            **model.info.special_tokens,
        }
        return compile_template(source).render(variables)
    except jinja2.TemplateError as error:
        raise ValueError(f"the chat template failed: {error}") from error

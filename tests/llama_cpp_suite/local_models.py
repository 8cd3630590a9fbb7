"""A pytest plugin for llama.cpp's own server tests: every preset serves the local model
(``LLAMA_BOX_SUITE_MODEL``) instead of one downloaded from a hub, and nothing is
downloaded. Loaded with ``-p local_models`` by ``run.py``.

One more change, for both servers alike: response headers are looked up
case-insensitively, as HTTP defines them (the tests copy them into a plain dict and look
up llama-server's capitalisation; uvicorn sends names in lower case)."""

from __future__ import annotations

import os
import sys
import types
from collections.abc import Callable
from typing import Any

# utils.py imports wget for the downloads this plugin turns off.
sys.modules.setdefault("wget", types.ModuleType("wget"))

import requests  # noqa: E402
import utils  # noqa: E402  (llama.cpp's tests/utils.py, on PYTHONPATH)

MODEL = os.environ["LLAMA_BOX_SUITE_MODEL"]


def _local(preset: Callable[[], Any]) -> Callable[[], Any]:
    def make() -> Any:
        server = preset()
        server.model_hf_repo = server.model_hf_file = server.model_url = None
        server.model_file = MODEL
        server.offline = False
        return server

    return make


for _name, _member in list(vars(utils.ServerPreset).items()):
    if isinstance(_member, staticmethod) and _name != "load_all":
        setattr(utils.ServerPreset, _name, staticmethod(_local(_member.__func__)))
utils.ServerPreset.load_all = staticmethod(lambda: None)

_make_request = utils.ServerProcess.make_request


def _make_request_with_http_headers(self: Any, *args: Any, **kwargs: Any) -> Any:
    result = _make_request(self, *args, **kwargs)
    result.headers = requests.structures.CaseInsensitiveDict(result.headers)
    return result


utils.ServerProcess.make_request = _make_request_with_http_headers

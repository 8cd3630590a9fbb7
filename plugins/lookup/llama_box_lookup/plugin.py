"""The ``lookup`` speculator, offered when ``--lookup-ngram-min`` is above 0."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from llama_box_core.hookspecs import hookimpl
from llama_box_core.model import Model
from llama_box_core.settings import Settings
from llama_box_lookup import ngrams

log = logging.getLogger(__name__)


class LookupSpeculator:
    """Per slot, an n-gram cache of the slot's own tokens (grown as they come); across
    slots, the dynamic cache (learns every finished request) and the static one."""

    name = "lookup"

    def __init__(self, settings: Settings) -> None:
        self.n_min = min(settings.lookup_ngram_min, ngrams.NGRAM_MAX)
        self.static = (
            ngrams.load(settings.lookup_cache_static) if settings.lookup_cache_static else {}
        )
        self.dynamic_path = settings.lookup_cache_dynamic
        self.dynamic: ngrams.NgramCache = {}
        if self.dynamic_path:
            try:
                self.dynamic = ngrams.load(self.dynamic_path)
            except FileNotFoundError:
                log.info("the dynamic lookup cache %s is new", self.dynamic_path)
        self._contexts: dict[int, tuple[int, ngrams.NgramCache]] = {}
        """Per slot: how many of its tokens the context cache has counted, and the cache."""

    def _context(self, slot_id: int, tokens: Sequence[int]) -> ngrams.NgramCache:
        n, cache = self._contexts.get(slot_id, (0, {}))
        if len(tokens) < n:  # a context shift dropped tokens: count them again
            n, cache = 0, {}
        ngrams.update(cache, tokens, n, self.n_min, ngrams.NGRAM_MAX)
        self._contexts[slot_id] = (len(tokens), cache)
        return cache

    def propose(self, slot_id: int, tokens: Sequence[int], n_max: int) -> list[int]:
        context = self._context(slot_id, tokens)
        return ngrams.draft(tokens, n_max, context, self.dynamic, self.static, self.n_min)

    def accepted(self, slot_id: int, tokens: Sequence[int], n_drafted: int) -> None:
        pass  # the context cache learns the kept tokens with the next proposal

    def release(self, slot_id: int, tokens: Sequence[int]) -> None:
        self._contexts.pop(slot_id, None)  # the slot's next request starts its own context
        if self.dynamic_path:
            ngrams.update(self.dynamic, tokens, 0, self.n_min, ngrams.NGRAM_MAX)

    def close(self) -> None:
        if self.dynamic_path:
            ngrams.save(self.dynamic, self.dynamic_path)


@hookimpl
def llama_box_create_speculator(model: Model, settings: Settings) -> LookupSpeculator | None:
    if settings.lookup_ngram_min <= 0:
        return None
    if settings.model_draft:
        log.warning("--lookup-ngram-min is not used: the draft model (-md) speculates")
        return None
    return LookupSpeculator(settings)

"""What the scheduler thread publishes to the rest of the server: immutable snapshots.

The scheduler is the only reader and writer of its live state; everything else gets
these frozen copies, taken between two steps (``Engine.snapshot``) or published whole
(``GenerationDefaults``, replaced rather than changed).
"""

from __future__ import annotations

import msgspec

from llama_box_core.settings import Settings
from llama_box_core.types import SamplingParams


class SchedulerConfig(msgspec.Struct, kw_only=True, frozen=True):
    """The settings the scheduler itself acts on (the model plugin gets all of them);
    their defaults are Settings'."""

    batch_size: int
    timeout: float
    cache_prompt: bool
    cache_reuse: int
    slot_prompt_similarity: float
    context_shift: bool
    draft_max: int
    draft_min: int

    @classmethod
    def from_settings(cls, settings: Settings) -> SchedulerConfig:
        return cls(
            batch_size=settings.batch_size,
            timeout=settings.timeout,
            cache_prompt=settings.cache_prompt,
            cache_reuse=settings.cache_reuse,
            slot_prompt_similarity=settings.slot_prompt_similarity,
            context_shift=settings.context_shift,
            draft_max=settings.draft_max,
            draft_min=settings.draft_min,
        )


class GenerationDefaults(msgspec.Struct, kw_only=True, frozen=True):
    """What a request gets for each field it leaves out (POST /props replaces it)."""

    sampling: SamplingParams
    n_predict: int = -1


class EngineStats(msgspec.Struct, kw_only=True):
    """Running totals for /metrics, kept by the scheduler thread (copied in snapshots)."""

    prefill_tokens: int = 0
    prefill_seconds: float = 0.0
    decode_tokens: int = 0
    decode_seconds: float = 0.0
    requests_finished: int = 0
    embedding_requests: int = 0
    embedding_tokens: int = 0
    rerank_requests: int = 0
    rerank_tokens: int = 0
    drafted_tokens: int = 0
    drafted_accepted: int = 0

    def count_step(self, n_prefill: int, n_decode: int, seconds: float) -> None:
        """Split a step's time between prompt and generated tokens by their share."""
        total = n_prefill + n_decode
        self.prefill_tokens += n_prefill
        self.decode_tokens += n_decode
        self.prefill_seconds += seconds * n_prefill / total
        self.decode_seconds += seconds * n_decode / total

    @property
    def decode_tokens_per_second(self) -> float:
        return self.decode_tokens / self.decode_seconds if self.decode_seconds else 0.0


class SlotSnapshot(msgspec.Struct, kw_only=True, frozen=True):
    id: int
    n_ctx: int
    is_processing: bool
    n_past: int
    """Tokens in the slot's KV cache."""
    n_cached: int
    """Tokens the slot's cache holds for prompt reuse."""


class EngineSnapshot(msgspec.Struct, kw_only=True, frozen=True):
    slots: tuple[SlotSnapshot, ...]
    stats: EngineStats
    n_queued: int

    @property
    def n_busy_slots(self) -> int:
        return sum(slot.is_processing for slot in self.slots)

    @property
    def kv_cache_tokens(self) -> int:
        return sum(slot.n_past for slot in self.slots if slot.is_processing)

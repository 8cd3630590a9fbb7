"""The scheduler's side of speculative decoding: how many drafts a slot may take this
step, and the bookkeeping once they are verified (scheduler thread)."""

from __future__ import annotations

from llama_box_core.engine.slots import Slot
from llama_box_core.engine.state import EngineStats, SchedulerConfig
from llama_box_core.model import SlotCache
from llama_box_core.speculation import Speculator


class Drafting:
    def __init__(self, speculator: Speculator, config: SchedulerConfig, stats: EngineStats) -> None:
        self.speculator = speculator
        self._config = config
        self._stats = stats

    def propose(self, slot: Slot, spare: int, n_ctx_slot: int) -> list[int]:
        """Draft tokens to verify after the slot's next token: none when fewer than
        --draft-min fit the batch's spare rows, the slot's context or the request's limit
        (the step's last sampled token is never decoded, so one fewer)."""
        config = self._config
        n_max = min(
            config.draft_max,
            spare,
            n_ctx_slot - slot.n_past - 1,
            slot.limit - slot.n_predicted - 1,
        )
        if n_max < max(1, config.draft_min):
            return []
        drafts = self.speculator.propose(slot.id, [*slot.cache, slot.next_token], n_max)
        if len(drafts) < config.draft_min:
            return []
        drafts = drafts[:n_max]
        self._stats.drafted_tokens += len(drafts)
        slot.n_drafted += len(drafts)  # before verifying: the request may end in this step
        return drafts

    def settle(self, slot: Slot, drafts: list[int], kept: int, cache: SlotCache) -> None:
        """The first ``kept`` drafts were the target's own tokens (the slot counted them as
        it kept them): cut the rest from the KV cache, count, tell the speculator."""
        if kept < len(drafts):
            cache.drop_slot_tail(slot.id, slot.n_past)
        self._stats.drafted_accepted += kept
        self.speculator.accepted(slot.id, drafts[:kept], len(drafts))

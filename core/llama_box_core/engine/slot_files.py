"""Slot actions between two steps (POST /slots/{id}?action=...): save an idle slot's KV
cache to a file, restore it, erase it (scheduler thread)."""

from __future__ import annotations

from collections.abc import Sequence

from llama_box_core.engine.slots import Slot
from llama_box_core.model import SlotCache


class SlotBusy(RuntimeError):
    """A slot operation needs an idle slot."""


def idle_slot(slots: Sequence[Slot], slot_id: int) -> Slot:
    if not 0 <= slot_id < len(slots):
        raise ValueError(f"there is no slot {slot_id} (slots: 0 to {len(slots) - 1})")
    slot = slots[slot_id]
    if not slot.idle:
        raise SlotBusy(f"slot {slot_id} is processing a request")
    return slot


def save(slot: Slot, cache: SlotCache, path: str) -> tuple[int, int]:
    """(tokens saved, bytes written)."""
    return len(slot.cache), cache.save_slot(slot.id, path, slot.cache)


def restore(slot: Slot, cache: SlotCache, path: str) -> tuple[int, int]:
    """(tokens restored, bytes read)."""
    slot.cache = []
    tokens, read = cache.restore_slot(slot.id, path)
    slot.cache = tokens
    slot.n_past = len(tokens)
    return len(tokens), read


def erase(slot: Slot, cache: SlotCache) -> int:
    """How many tokens the slot held."""
    erased = len(slot.cache)
    cache.clear_slot(slot.id)
    slot.cache = []
    slot.n_past = 0
    return erased

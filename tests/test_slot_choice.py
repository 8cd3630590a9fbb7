"""Which idle slot a request goes to: a worthwhile prompt-cache hit, otherwise the one that
keeps the busy slots' ids together (llama.cpp attends over the whole id range)."""

from __future__ import annotations

from llama_box_core.engine.slots import SHARED_TOKENS_PER_WIDENED_SLOT, Slot, choose_slot


def slots(n: int = 8) -> list[Slot]:
    # Higher ids were used longer ago, so least-recently-used alone would pick slot 7.
    return [Slot(id=i, last_used=float(n - i)) for i in range(n)]


def choose(all_slots: list[Slot], busy_ids: set[int], prompt: list[int], cache: bool = True):
    busy = [slot for slot in all_slots if slot.id in busy_ids]
    idle = [slot for slot in all_slots if slot.id not in busy_ids]
    return choose_slot(idle, busy, prompt, cache, 0.1).id


def test_without_a_cache_hit_the_busy_ids_stay_together() -> None:
    all_slots = slots()
    assert choose(all_slots, {0, 1, 3}, [5, 6]) == 2
    assert choose(all_slots, {4, 5}, [5, 6]) in (3, 6)
    assert choose(all_slots, {0, 1, 2, 3}, [5, 6]) == 4


def test_with_nothing_busy_the_slot_unused_longest_is_taken() -> None:
    assert choose(slots(), set(), [5, 6]) == 7


def test_a_cache_hit_inside_the_range_wins() -> None:
    all_slots = slots()
    all_slots[2].cache = [5, 6, 7]
    assert choose(all_slots, {0, 1, 3}, [5, 6, 7, 8]) == 2
    all_slots[4].cache = [5, 6, 7]
    assert choose(all_slots, {0, 1, 2, 3}, [5, 6, 7, 8]) == 4


def test_a_short_hit_far_away_does_not_widen_the_range() -> None:
    all_slots = slots()
    all_slots[7].cache = [5, 6, 7]
    assert choose(all_slots, {0, 1}, [5, 6, 7, 8]) == 2


def test_a_long_hit_far_away_is_worth_widening_for() -> None:
    all_slots = slots()
    prompt = list(range(1, 4 * SHARED_TOKENS_PER_WIDENED_SLOT + 2))
    all_slots[6].cache = prompt[:-1]
    assert choose(all_slots, {0, 1}, prompt) == 6
    assert choose(all_slots, {0, 1}, prompt, cache=False) == 2

"""Speculative decoding: what a speculation plugin (a draft model, n-gram lookup) gives
the engine.

A plugin returns a ``Speculator`` from ``llama_box_create_speculator``. Each step, for
every generating slot, the scheduler asks it for draft tokens that may follow the slot's
tokens, puts them into the slot's rows of the shared batch after the slot's next token,
and samples each row of the target model in turn: a draft is kept while it equals what
the target samples itself, so the output (greedy or not) is exactly the target's. The
rows past the first mismatch are cut from the KV cache, and the speculator learns how
many drafts were kept. Everything here runs on the scheduler thread.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable


@runtime_checkable
class Speculator(Protocol):
    """Proposes draft tokens for slots of the loaded model."""

    name: str
    """What ``/props`` and the logs call it (``draft``, ``lookup``)."""

    def propose(self, slot_id: int, tokens: Sequence[int], n_max: int) -> list[int]:
        """Up to ``n_max`` tokens likely to follow ``tokens`` (all of the slot's tokens:
        prompt, generated, and last the token the step decodes next; valid during the call
        only: copy what you keep). Fewer, or none, when unsure."""
        ...

    def accepted(self, slot_id: int, tokens: Sequence[int], n_drafted: int) -> None:
        """The step kept the first ``len(tokens)`` of the ``n_drafted`` drafts it was
        given; ``tokens`` are those kept."""
        ...

    def release(self, slot_id: int, tokens: Sequence[int]) -> None:
        """The slot's request ended with these tokens (a lookup cache may learn them); the
        slot's next tokens belong to another request."""
        ...

    def close(self) -> None:
        """Free what the speculator holds (a draft model), save what it keeps."""
        ...

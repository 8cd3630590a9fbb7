"""GET /slots: what each slot is doing."""

from __future__ import annotations

from collections.abc import Callable

import msgspec
from litestar import get
from litestar.di import NamedDependency
from litestar.params import FromQuery

from llama_box.core.engine import Engine
from llama_box.core.hookspecs import hookimpl
from llama_box.server.errors import ApiError


class SlotState(msgspec.Struct, kw_only=True):
    id: int
    n_ctx: int
    is_processing: bool
    state: int
    """0: idle, 1: processing (llama-box v1)."""
    n_past: int


@get("/slots", sync_to_thread=False)
def list_slots(
    engine: NamedDependency[Engine], fail_on_no_slot: FromQuery[int] = 0
) -> list[SlotState]:
    model = engine.require_model()
    states = [
        SlotState(
            id=slot.id,
            n_ctx=model.n_ctx_slot,
            is_processing=not slot.idle,
            state=0 if slot.idle else 1,
            n_past=slot.n_past,
        )
        for slot in engine.slots
    ]
    if fail_on_no_slot and all(s.is_processing for s in states):
        raise ApiError(503, "No slot available")
    return states


@hookimpl
def llama_box_routes(register: Callable[..., None]) -> None:
    register(list_slots)

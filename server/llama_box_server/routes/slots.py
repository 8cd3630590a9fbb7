"""GET /slots (what each slot is doing) and POST /slots/{id}?action=save|restore|erase."""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import msgspec
from litestar import get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery, JSONBody

from llama_box_core.engine import Engine, SlotBusy
from llama_box_core.hookspecs import hookimpl
from llama_box_core.settings import Settings
from llama_box_server.errors import ApiError


class SlotState(msgspec.Struct, kw_only=True):
    id: int
    n_ctx: int
    is_processing: bool
    state: int
    """0: idle, 1: processing (llama-box v1)."""
    n_past: int


def require_slots_endpoint(settings: Settings) -> None:
    if not settings.slots:
        raise ApiError(501, "This server does not support slots endpoint.")


@get("/slots")
async def list_slots(
    engine: NamedDependency[Engine],
    settings: NamedDependency[Settings],
    fail_on_no_slot: FromQuery[int] = 0,
) -> list[SlotState]:
    require_slots_endpoint(settings)
    states = [
        SlotState(
            id=slot.id,
            n_ctx=slot.n_ctx,
            is_processing=slot.is_processing,
            state=int(slot.is_processing),
            n_past=slot.n_past,
        )
        for slot in (await engine.snapshot()).slots
    ]
    if fail_on_no_slot and all(s.is_processing for s in states):
        raise ApiError(503, "No slot available")
    return states


class SlotFile(msgspec.Struct, kw_only=True):
    filename: str | None = None


class SlotSaved(msgspec.Struct, kw_only=True):
    id_slot: int
    filename: str
    n_saved: int
    n_written: int
    timings: dict[str, float]


class SlotRestored(msgspec.Struct, kw_only=True):
    id_slot: int
    filename: str
    n_restored: int
    n_read: int
    timings: dict[str, float]


class SlotErased(msgspec.Struct, kw_only=True):
    id_slot: int
    n_erased: int


def slot_file(folder: str | None, filename: str | None) -> tuple[str, str]:
    """The file a slot is saved to: a plain name inside --slot-save-path, nothing else."""
    if not folder:
        raise ApiError(501, "Slot saving is disabled: start the server with --slot-save-path")
    name = filename or ""
    if (
        not name
        or name in {".", ".."}
        or ".." in name
        or any(c in name for c in ("/", "\\", "\0", os.sep))
        or name != name.strip()
    ):
        raise ApiError(400, f"Invalid file name {name!r}: use a plain name, without folders")
    path = os.path.join(folder, name)
    if os.path.dirname(os.path.realpath(path)) != os.path.realpath(folder):
        raise ApiError(400, f"Invalid file name {name!r}: it leaves the slot save folder")
    return name, path


@post("/slots/{id_slot:int}", status_code=200)
async def slot_action(
    id_slot: FromPath[int],
    action: FromQuery[str],
    engine: NamedDependency[Engine],
    settings: NamedDependency[Settings],
    data: JSONBody[SlotFile | None] = None,
) -> SlotSaved | SlotRestored | SlotErased:
    require_slots_endpoint(settings)
    started = time.perf_counter()
    try:
        if action == "erase":
            return SlotErased(id_slot=id_slot, n_erased=await engine.erase_slot(id_slot))
        if action not in ("save", "restore"):
            raise ApiError(400, f"Unknown action {action!r}: use save, restore or erase")
        name, path = slot_file(settings.slot_save_path, data.filename if data else None)
        if action == "save":
            n_saved, written = await engine.save_slot(id_slot, path)
            ms = (time.perf_counter() - started) * 1000
            return SlotSaved(
                id_slot=id_slot,
                filename=name,
                n_saved=n_saved,
                n_written=written,
                timings={"save_ms": ms},
            )
        if not os.path.isfile(path):
            raise ApiError(400, f"No saved slot named {name!r}")
        n_restored, read = await engine.restore_slot(id_slot, path)
        ms = (time.perf_counter() - started) * 1000
        return SlotRestored(
            id_slot=id_slot,
            filename=name,
            n_restored=n_restored,
            n_read=read,
            timings={"restore_ms": ms},
        )
    except SlotBusy as error:
        raise ApiError(503, str(error)) from error
    except ValueError as error:
        raise ApiError(400, str(error)) from error


@hookimpl
def llama_box_routes(register: Callable[..., None]) -> None:
    register(list_slots)
    register(slot_action)

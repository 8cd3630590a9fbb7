"""The engine: slots, the scheduler thread and continuous batching."""

from llama_box_core.engine.request import (
    ErrorEvent,
    Event,
    FinishEvent,
    GenerationRequest,
    TokenEvent,
)
from llama_box_core.engine.scheduler import Engine, EngineNotReady, SlotBusy

__all__ = [
    "Engine",
    "EngineNotReady",
    "ErrorEvent",
    "Event",
    "FinishEvent",
    "GenerationRequest",
    "SlotBusy",
    "TokenEvent",
]

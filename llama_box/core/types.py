"""The value types that cross the hook boundary between the core and plugins."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import msgspec
import numpy as np


@runtime_checkable
class TextModel(Protocol):
    """A loaded text model, as returned by ``llama_box_load_model``.

    It carries what the core needs to know about the model; the work on it (tokenize,
    decode, sample) goes through hooks that the loading plugin answers.
    """

    path: str
    architecture: str
    n_ctx_train: int
    n_vocab: int
    add_bos: bool
    n_ctx_slot: int
    """Tokens each slot may hold: the context divided between the parallel slots."""
    n_slots: int
    chat_template: str | None
    """The Jinja chat template from the GGUF metadata, if the file has one."""
    special_tokens: dict[str, str]
    """Text of special tokens a chat template may use: ``bos_token``, ``eos_token``."""

    def is_end_of_generation(self, token: int) -> bool: ...

    def metadata(self) -> dict[str, Any]:
        """What /v1/models shows in its ``meta`` field."""
        ...

    def clear_slot(self, slot_id: int) -> None:
        """Forget the slot's KV cache."""
        ...

    def close(self) -> None: ...


class DecodeBatch:
    """One decode step: token, position, slot and wants-logits for each entry.

    The arrays are preallocated once and filled in place each step, so a model plugin can
    point its native batch at them without copying.
    """

    __slots__ = ("capacity", "logits", "n_tokens", "native", "pos", "seq_id", "token")

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.token = np.zeros(capacity, dtype=np.int32)
        self.pos = np.zeros(capacity, dtype=np.int32)
        self.seq_id = np.zeros(capacity, dtype=np.int32)
        self.logits = np.zeros(capacity, dtype=np.int8)
        self.n_tokens = 0
        self.native: Any = None
        """Free for the model plugin to cache its native view of these arrays."""

    @property
    def room(self) -> int:
        return self.capacity - self.n_tokens

    def add(self, tokens: list[int], start_pos: int, seq_id: int, logits_last: bool) -> int:
        """Append tokens of one slot; return the batch index of the last one."""
        n, end = len(tokens), self.n_tokens + len(tokens)
        self.token[self.n_tokens : end] = tokens
        self.pos[self.n_tokens : end] = np.arange(start_pos, start_pos + n, dtype=np.int32)
        self.seq_id[self.n_tokens : end] = seq_id
        self.logits[self.n_tokens : end] = 0
        if logits_last:
            self.logits[end - 1] = 1
        self.n_tokens = end
        return end - 1

    def clear(self) -> None:
        self.n_tokens = 0


class SamplingParams(msgspec.Struct, kw_only=True, frozen=True):
    """The sampler settings of one request (defaults come from the CLI)."""

    temperature: float = 0.8
    top_k: int = 40
    top_p: float = 0.9
    min_p: float = 0.1
    min_keep: int = 0
    seed: int = -1
    repeat_penalty: float = 1.0
    repeat_last_n: int = 64
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0


class Sampler(Protocol):
    """A per-request sampler made by ``llama_box_create_sampler``; freed with ``close``."""

    def close(self) -> None: ...


class ChatMessage(msgspec.Struct, kw_only=True):
    """A chat message after the server flattened its content parts to text."""

    role: str
    content: str


class Backend(msgspec.Struct, kw_only=True):
    """A compute backend a hardware plugin found on this machine."""

    name: str
    devices: list[str]
    description: str = ""


class DecodeError(RuntimeError):
    """llama_decode failed for a batch; the requests in it are failed, the server goes on."""

"""The value types that cross the hook boundary between the core and plugins."""

from __future__ import annotations

from collections.abc import Callable, Sequence
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
    builtin_template: str
    """What renders chat without --jinja: a built-in template's name, or the GGUF template
    text the model plugin recognises."""
    special_tokens: dict[str, str]
    """Text of special tokens a chat template may use: ``bos_token``, ``eos_token``."""

    def is_end_of_generation(self, token: int) -> bool: ...

    def metadata(self) -> dict[str, Any]:
        """What /v1/models shows in its ``meta`` field."""
        ...

    can_shift: bool
    """Whether the KV cache can move positions (needed for context shift)."""
    fim_tokens: dict[str, int]
    """Fill-in-the-middle tokens ``pre``, ``suf``, ``mid``, ``rep``, ``sep`` (-1: none)."""

    def clear_slot(self, slot_id: int) -> None:
        """Forget the slot's KV cache."""
        ...

    def keep_slot_prefix(self, slot_id: int, n_keep: int) -> bool:
        """Drop the slot's cache after its first ``n_keep`` tokens. Return False (and
        clear the slot) when the cache no longer holds what reusing them needs (a
        sliding-window cache forgets old positions)."""
        ...

    def move_slot_tokens(self, slot_id: int, start: int, end: int, to: int) -> None:
        """Move the cached tokens at positions [start, end) down to ``to`` (<= start),
        dropping what lay in [to, start): a KV shift, for --cache-reuse."""
        ...

    def save_slot(self, slot_id: int, path: str, tokens: Sequence[int]) -> int:
        """Write the slot's KV cache and its tokens to ``path``; return bytes written."""
        ...

    def restore_slot(self, slot_id: int, path: str) -> tuple[list[int], int]:
        """Load a file written by ``save_slot`` into the slot; return its tokens and the
        bytes read. ``ValueError`` if the file does not fit this model or slot."""
        ...

    def shift_slot(self, slot_id: int, n_keep: int, n_discard: int, n_past: int) -> None:
        """Context shift: forget ``n_discard`` tokens after the first ``n_keep`` and move
        the rest back, so generation can go on in a full slot."""
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


DEFAULT_SAMPLERS = ("penalties", "top_k", "top_p", "min_p", "xtc", "temperature")
DEFAULT_DRY_BREAKERS = ("\n", ":", '"', "*")


class SamplingParams(msgspec.Struct, kw_only=True, frozen=True):
    """The sampler settings of one request, resolved against the CLI defaults.

    ``samplers`` names the stages in order: built-in ones (see ``DEFAULT_SAMPLERS``,
    ``dry``, ``top_n_sigma``, ``typ_p``) or stages plugins registered through
    ``llama_box_sampler_stages``. Token-level inputs are already token ids here.
    """

    temperature: float = 0.8
    dynatemp_range: float = 0.0
    dynatemp_exponent: float = 1.0
    top_k: int = 40
    top_p: float = 0.9
    min_p: float = 0.1
    typical_p: float = 1.0
    top_n_sigma: float = -1.0
    xtc_probability: float = 0.0
    xtc_threshold: float = 0.1
    min_keep: int = 0
    seed: int = -1
    repeat_penalty: float = 1.0
    repeat_last_n: int = 64
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    dry_multiplier: float = 0.0
    dry_base: float = 1.75
    dry_allowed_length: int = 2
    dry_penalty_last_n: int = -1
    dry_sequence_breakers: tuple[str, ...] = DEFAULT_DRY_BREAKERS
    mirostat: int = 0
    mirostat_tau: float = 5.0
    mirostat_eta: float = 0.1
    logit_bias: tuple[tuple[int, float], ...] = ()
    """(token id, bias); a bias of -inf bans the token."""
    ignore_eos: bool = False
    grammar: str | None = None
    """GBNF text constraining the output."""
    json_schema: str | None = None
    """A JSON schema (as JSON text) the output must match."""
    samplers: tuple[str, ...] = DEFAULT_SAMPLERS
    n_probs: int = 0
    """Report this many most likely tokens with each generated token."""
    post_sampling_probs: bool = False
    """Report probabilities after the sampler chain instead of the model's softmax."""


TOKEN_DATA = np.dtype([("id", np.int32), ("logit", np.float32), ("p", np.float32)])


class Candidates:
    """The candidate tokens of one sampling step, as zero-copy numpy views.

    ``ids``, ``logits`` and ``probs`` view the first ``size`` entries of the native array;
    a stage edits logits in place, reorders or drops entries (write them, then lower
    ``size``), and says ``sorted = True`` when it leaves them in descending order.
    """

    __slots__ = ("_entries", "selected", "size", "sorted")

    def __init__(self, entries: np.ndarray, size: int, sorted_: bool, selected: int) -> None:
        self._entries = entries
        self.size = size
        self.sorted = sorted_
        self.selected = selected

    @property
    def entries(self) -> np.ndarray:
        """The structured view (fields ``id``, ``logit``, ``p``) of the live candidates."""
        return self._entries[: self.size]

    @property
    def ids(self) -> np.ndarray:
        return self._entries["id"][: self.size]

    @property
    def logits(self) -> np.ndarray:
        return self._entries["logit"][: self.size]

    @property
    def probs(self) -> np.ndarray:
        return self._entries["p"][: self.size]


class SamplerStage(Protocol):
    """A sampler stage written in Python, made per request by a registered factory.

    ``apply`` runs once per generated token at the stage's place in the chain;
    ``accept`` (optional) learns the token that was finally picked.
    """

    def apply(self, candidates: Candidates) -> None: ...


StageFactory = Callable[[SamplingParams, "TextModel"], Any]
"""Makes a stage for one request: a ``SamplerStage``, or an object native to the model
plugin (the llama.cpp plugin's built-in stages return native samplers)."""


class ProbabilityEntry(msgspec.Struct, frozen=True):
    id: int
    piece: bytes
    value: float
    """A log-probability, or a probability when the request asked for post-sampling ones."""


class TokenProbabilities(msgspec.Struct, frozen=True):
    """The chosen token and the most likely ones at its step, most likely first."""

    chosen: ProbabilityEntry
    top: list[ProbabilityEntry]
    post_sampling: bool


class Sampler(Protocol):
    """A per-request sampler made by ``llama_box_create_sampler``; freed with ``close``."""

    last_probabilities: TokenProbabilities | None
    """Set by each sample when the request asked for ``n_probs``."""

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

"""The value types that cross the hook boundary between the core and plugins."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

import msgspec
import numpy as np

if TYPE_CHECKING:
    from llama_box_core.model import Model


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


StageFactory = Callable[[SamplingParams, "Model"], Any]
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

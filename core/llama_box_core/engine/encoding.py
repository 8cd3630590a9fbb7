"""Embeddings and rank scores: whole inputs of every waiting request packed into shared
steps (continuous batching, as for text), on the scheduler thread.

Each input takes one sequence id for one step: as many inputs as there are slots, and as
many tokens as one micro-batch holds (a non-causal model must see an input whole), go
into each decode. A request is answered once all of its inputs are.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from llama_box_core.engine.request import settle_soon
from llama_box_core.engine.state import EngineStats
from llama_box_core.model import (
    DecodeBatch,
    DecodeError,
    DecodeOutputs,
    InvalidBatch,
    Model,
    ModelInfo,
)

EncodeOutput = Literal["pooled", "tokens", "rank"]


@dataclass(slots=True, eq=False)
class EncodeRequest:
    """Inputs (token ids, or text the scheduler tokenizes as it packs it) to embed or
    score; answered through ``future`` with one result per input: a vector (``pooled``),
    a tokens x n_embd array (``tokens``) or a float (``rank``). Texts are replaced by
    their tokens."""

    inputs: list[list[int] | str]
    output: EncodeOutput
    future: asyncio.Future[list[Any]]
    results: list[Any] = field(default_factory=list)
    remaining: int = 0
    cancelled: bool = False

    def __post_init__(self) -> None:
        self.results = [None] * len(self.inputs)
        self.remaining = len(self.inputs)


def check_input(index: int, tokens: list[int], info: ModelInfo) -> None:
    """``ValueError`` for an input the model cannot take in one step."""
    if not tokens:
        raise ValueError(f"input {index} is empty")
    if len(tokens) > info.max_encode_tokens:
        raise ValueError(
            f"input {index} is too large to process: {len(tokens)} tokens, but the "
            f"micro-batch (-ub) holds {info.n_ubatch} and each slot's context {info.n_ctx_slot}"
        )


class EncodeQueue:
    """The inputs waiting to be encoded, in arrival order: ``add`` from any thread (a
    deque's appends and pops are atomic), the rest on the scheduler thread."""

    def __init__(self) -> None:
        self._waiting: deque[tuple[EncodeRequest, int]] = deque()
        self._batch = DecodeBatch(0)

    def __bool__(self) -> bool:
        return bool(self._waiting)

    def add(self, request: EncodeRequest) -> None:
        self._waiting.extend((request, index) for index in range(len(request.inputs)))

    def fail_all(self, status: int, message: str) -> None:
        while self._waiting:
            request, _ = self._waiting.popleft()
            self._answer_error(request, DecodeError(message), status)

    def step(
        self,
        model: Model,
        info: ModelInfo,
        decode: Callable[[DecodeBatch], DecodeOutputs | None],
        tokenize: Callable[[str], list[int]],
        stats: EngineStats,
    ) -> list[int]:
        """Encode the next inputs that fit one step; return the sequence ids it used."""
        capacity = info.max_encode_tokens
        if self._batch.capacity != capacity:
            self._batch = DecodeBatch(capacity)
        batch = self._batch
        batch.clear()
        taken: list[tuple[EncodeRequest, int, int, int]] = []  # request, index, seq, row
        while self._waiting and len(taken) < info.n_slots:
            request, index = self._waiting[0]
            if request.cancelled:
                self._waiting.popleft()
                continue
            tokens = request.inputs[index]
            if isinstance(tokens, str):
                # Here rather than on a worker thread: one hop less for a short input.
                try:
                    tokens = request.inputs[index] = tokenize(tokens)
                    check_input(index, tokens, info)
                except ValueError as error:
                    self._answer_error(request, InvalidBatch(str(error)), 400)
                    continue
                except Exception as error:  # a plugin's bug: this request fails, not the queue
                    self._answer_error(request, DecodeError(f"tokenizing failed: {error}"), 500)
                    continue
            if len(tokens) > batch.room:
                break
            self._waiting.popleft()
            seq = len(taken)
            model.clear_slot(seq)
            # Every row is an output (pooling reads them all); the first row's index.
            taken.append((request, index, seq, batch.add(tokens, 0, seq, "all")))
        if not taken:
            return []
        started = time.perf_counter()
        try:
            outputs = decode(batch)
            if outputs is None:
                raise DecodeError("no plugin decodes this model")
            for request, index, seq, row in taken:
                request.results[index] = self._read(outputs, request, index, seq, row)
        except Exception as error:  # every request of the step is answered, never left waiting
            status = getattr(error, "status", 500)
            for request in {id(r): r for r, *_ in taken}.values():
                self._answer_error(request, error, status)
            return [seq for _, _, seq, _ in taken]
        seconds = time.perf_counter() - started
        stats.prefill_tokens += batch.n_tokens
        stats.prefill_seconds += seconds
        for request, index, _, _ in taken:
            tokens = len(request.inputs[index])
            if request.output == "rank":
                stats.rerank_tokens += tokens
            else:
                stats.embedding_tokens += tokens
            request.remaining -= 1
            if request.remaining == 0 and not request.future.done():
                if request.output == "rank":
                    stats.rerank_requests += 1
                else:
                    stats.embedding_requests += 1
                settle_soon(request.future, request.future.set_result, request.results)
        return [seq for _, _, seq, _ in taken]

    @staticmethod
    def _read(
        outputs: DecodeOutputs, request: EncodeRequest, index: int, seq: int, row: int
    ) -> Any:
        if request.output == "rank":
            return outputs.rank_score(seq)
        if request.output == "pooled":
            return np.array(outputs.sequence_embedding(seq), dtype=np.float32)
        n = len(request.inputs[index])
        return np.stack([outputs.embedding(row + i) for i in range(n)]).astype(np.float32)

    def _answer_error(self, request: EncodeRequest, error: Exception, status: int) -> None:
        request.cancelled = True  # its other inputs are dropped as they come up
        if not request.future.done():
            failure = error if isinstance(error, DecodeError) else DecodeError(str(error))
            failure.status = status
            settle_soon(request.future, request.future.set_exception, failure)

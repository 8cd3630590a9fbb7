"""The engine: one thread owns the model and runs every active request in one batch per step.

The asyncio side only submits requests and reads their event queues; every native call
(load, decode, sample, free) happens in the scheduler thread, so the event loop never
waits on llama.cpp.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pluggy

from llama_box_core.engine.request import (
    ErrorEvent,
    Event,
    FinishEvent,
    FinishReason,
    GenerationRequest,
    StopType,
    TokenEvent,
)
from llama_box_core.engine.text import TextAssembler
from llama_box_core.sampling import default_params
from llama_box_core.settings import Settings
from llama_box_core.types import (
    ChatMessage,
    DecodeBatch,
    DecodeError,
    Sampler,
    SamplingParams,
    StageFactory,
    TextModel,
)

log = logging.getLogger(__name__)

T = TypeVar("T")
IDLE_WAIT_SECONDS = 0.5
"""How often an idle scheduler wakes to expire queued requests and notice shutdown."""


def collect_sampler_stages(pm: pluggy.PluginManager) -> dict[str, StageFactory]:
    """Every sampler stage the plugins offer, by name (a name offered twice is an error)."""
    stages: dict[str, StageFactory] = {}

    def register(name: str, factory: StageFactory) -> None:
        if name in stages:
            raise ValueError(f"two plugins register the sampler stage {name!r}")
        stages[name] = factory

    pm.hook.llama_box_sampler_stages(register=register)
    return stages


class SlotBusy(RuntimeError):
    """A slot operation needs an idle slot."""


class EngineNotReady(RuntimeError):
    """The model is still loading (or failed to load)."""


@dataclass(slots=True, eq=False)
class Slot:
    id: int
    request: GenerationRequest | None = None
    sampler: Sampler | None = None
    assembler: TextAssembler | None = None
    pending: list[int] = field(default_factory=list)
    """Prompt tokens not decoded yet."""
    n_past: int = 0
    """Tokens of this slot in the KV cache."""
    n_predicted: int = 0
    limit: int = 0
    next_token: int = -1
    """The last sampled token: decoded in the next step."""
    batch_index: int = -1
    """Where this slot's logits are in the current batch (-1: none this step)."""
    n_in_batch: int = 0
    cache: list[int] = field(default_factory=list)
    """The tokens in this slot's KV cache, kept after a request for prompt reuse."""
    n_cached: int = 0
    truncated: bool = False
    last_used: float = 0.0

    @property
    def idle(self) -> bool:
        return self.request is None


@dataclass(slots=True)
class EngineStats:
    """Running totals the scheduler keeps for /metrics (written by its thread only)."""

    prefill_tokens: int = 0
    prefill_seconds: float = 0.0
    decode_tokens: int = 0
    decode_seconds: float = 0.0
    requests_finished: int = 0


class Engine:
    """Owns the model and the scheduler thread; shared by every request handler."""

    def __init__(self, pm: pluggy.PluginManager, settings: Settings) -> None:
        self.pm = pm
        self.hook = pm.hook
        self.settings = settings
        self.model: TextModel | None = None
        self.load_error: BaseException | None = None
        self.ready = threading.Event()
        self.slots: list[Slot] = []
        self.stats = EngineStats()
        self.sampler_stages = collect_sampler_stages(pm)
        self.default_sampling = default_params(settings)
        self._queue: deque[GenerationRequest] = deque()
        self._commands: deque[tuple[Callable[[], Any], asyncio.Future[Any]]] = deque()
        self._wakeup = threading.Condition()
        self._stopping = False
        self._batch = DecodeBatch(0)
        self._thread = threading.Thread(target=self._run, name="llama-box-scheduler", daemon=True)

    # --- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        with self._wakeup:
            self._stopping = True
            self._wakeup.notify_all()
        self._thread.join()

    def wait_until_settled(self) -> None:
        """Block until the model has loaded or failed to (call it from a worker thread)."""
        while not self.ready.wait(0.1) and self._thread.is_alive():
            pass

    def require_model(self) -> TextModel:
        if self.model is None or not self.ready.is_set():
            raise EngineNotReady("Loading model" if self.load_error is None else "Model failed")
        return self.model

    # --- the asyncio side --------------------------------------------------------------

    def submit(self, request: GenerationRequest) -> None:
        self.require_model()
        request.loop = asyncio.get_running_loop()
        request.timings.queued = time.perf_counter()
        with self._wakeup:
            self._queue.append(request)
            self._wakeup.notify()

    def cancel(self, request: GenerationRequest) -> None:
        """Drop a request (its client went away); its slot frees at the next step."""
        request.cancelled = True
        with self._wakeup:
            self._wakeup.notify()

    async def generate(self, request: GenerationRequest) -> AsyncIterator[Event]:
        """Submit and yield events until the last one; cancels the request if the
        consumer stops early (a client disconnect closes this generator)."""
        self.submit(request)
        finished = False
        try:
            while not finished:
                event = await request.events.get()
                finished = not isinstance(event, TokenEvent)
                yield event
        finally:
            if not finished:
                self.cancel(request)

    async def run_in_scheduler(self, command: Callable[[], T]) -> T:
        """Run ``command`` on the scheduler thread between two steps (the thread owns the
        model, so KV-cache operations go through here) and return its result."""
        self.require_model()
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        with self._wakeup:
            self._commands.append((command, future))
            self._wakeup.notify()
        return await future

    async def save_slot(self, slot_id: int, path: str) -> tuple[int, int]:
        """Write an idle slot's cache to ``path``: (tokens saved, bytes written)."""

        def save() -> tuple[int, int]:
            slot = self._idle_slot(slot_id)
            return len(slot.cache), self.model.save_slot(slot.id, path, slot.cache)  # type: ignore[union-attr]

        return await self.run_in_scheduler(save)

    async def restore_slot(self, slot_id: int, path: str) -> tuple[int, int]:
        """Load a saved cache into an idle slot: (tokens restored, bytes read)."""

        def restore() -> tuple[int, int]:
            slot = self._idle_slot(slot_id)
            slot.cache = []
            tokens, read = self.model.restore_slot(slot.id, path)  # type: ignore[union-attr]
            slot.cache = tokens
            slot.n_past = len(tokens)
            return len(tokens), read

        return await self.run_in_scheduler(restore)

    async def erase_slot(self, slot_id: int) -> int:
        """Forget an idle slot's cache; return how many tokens it held."""

        def erase() -> int:
            slot = self._idle_slot(slot_id)
            erased = len(slot.cache)
            self.model.clear_slot(slot.id)  # type: ignore[union-attr]
            slot.cache = []
            slot.n_past = 0
            return erased

        return await self.run_in_scheduler(erase)

    def _idle_slot(self, slot_id: int) -> Slot:
        if not 0 <= slot_id < len(self.slots):
            raise ValueError(f"there is no slot {slot_id} (slots: 0 to {len(self.slots) - 1})")
        slot = self.slots[slot_id]
        if not slot.idle:
            raise SlotBusy(f"slot {slot_id} is processing a request")
        return slot

    async def tokenize(self, text: str, *, add_special: bool, parse_special: bool) -> list[int]:
        model = self.require_model()
        return await asyncio.to_thread(
            self.hook.llama_box_tokenize,
            model=model,
            text=text,
            add_special=add_special,
            parse_special=parse_special,
        )

    async def detokenize(self, tokens: Sequence[int]) -> str:
        model = self.require_model()
        return await asyncio.to_thread(self.hook.llama_box_detokenize, model=model, tokens=tokens)

    async def token_piece(self, token: int) -> bytes:
        model = self.require_model()
        return await asyncio.to_thread(
            self.hook.llama_box_token_to_piece, model=model, token=token, special=True
        )

    async def create_sampler(self, params: SamplingParams, prompt: Sequence[int]) -> Sampler:
        """Build a request's sampler off the event loop; ``ValueError`` for bad settings."""
        model = self.require_model()
        sampler = await asyncio.to_thread(
            self.hook.llama_box_create_sampler,
            model=model,
            params=params,
            stages=self.sampler_stages,
            prompt=prompt,
        )
        if sampler is None:
            raise ValueError("no plugin can build a sampler for this model")
        return sampler

    async def apply_chat_template(self, messages: Sequence[ChatMessage]) -> str:
        model = self.require_model()
        return await asyncio.to_thread(
            self.hook.llama_box_apply_chat_template,
            model=model,
            messages=messages,
            settings=self.settings,
        )

    @property
    def n_busy_slots(self) -> int:
        return sum(not slot.idle for slot in self.slots)

    @property
    def n_queued(self) -> int:
        return len(self._queue)

    # --- the scheduler thread ----------------------------------------------------------

    def _run(self) -> None:
        try:
            self._load()
        except BaseException as error:
            self.load_error = error
            log.error("model failed to load: %s", error)
            return
        try:
            while not self._stopping:
                try:
                    self._run_commands()
                    self._admit()
                    if all(slot.idle for slot in self.slots):
                        self._wait_for_work()
                    else:
                        self._step()
                except Exception:
                    # A bug in one step fails the requests in flight, not the server.
                    log.exception("scheduler step failed")
                    for slot in self.slots:
                        if slot.request is not None:
                            self._finish_with_error(slot, 500, "Internal error while generating")
        finally:
            self._shutdown()

    def _run_commands(self) -> None:
        while self._commands:
            command, future = self._commands.popleft()
            try:
                result: Any = command()
                outcome = (future.set_result, result)
            except Exception as error:
                outcome = (future.set_exception, error)
            future.get_loop().call_soon_threadsafe(_settle, future, *outcome)

    def _wait_for_work(self) -> None:
        with self._wakeup:
            if not self._queue and not self._commands and not self._stopping:
                self._wakeup.wait(IDLE_WAIT_SECONDS)

    def _load(self) -> None:
        path = self.settings.model or ""
        started = time.perf_counter()
        model = self.hook.llama_box_load_model(path=path, settings=self.settings)
        if model is None:
            raise ValueError(f"no installed plugin can load {path!r}")
        self.model = model
        self.slots = [Slot(id=i) for i in range(model.n_slots)]
        self._batch = DecodeBatch(max(self.settings.batch_size, model.n_slots))
        log.info(
            "model loaded in %.2f s: %s, %d slots of %d tokens",
            time.perf_counter() - started,
            path,
            model.n_slots,
            model.n_ctx_slot,
        )
        self.ready.set()

    def _shutdown(self) -> None:
        for slot in self.slots:
            if slot.request is not None:
                self._finish_with_error(slot, 503, "Server is shutting down")
        while self._queue:
            request = self._queue.popleft()
            request.sampler.close()
            self._post(request, ErrorEvent(503, "Server is shutting down"))
        if self.model is not None:
            self.model.close()

    def _admit(self) -> None:
        """Move queued requests into idle slots, oldest first."""
        now = time.perf_counter()
        admitted: list[tuple[Slot, GenerationRequest]] = []
        with self._wakeup:
            idle = [slot for slot in self.slots if slot.idle]
            while self._queue:
                request = self._queue[0]
                if request.cancelled:
                    self._queue.popleft()
                    request.sampler.close()
                elif now - request.timings.queued > self.settings.timeout:
                    self._queue.popleft()
                    request.sampler.close()
                    self._post(request, ErrorEvent(503, "Server is busy: no slot became free"))
                elif idle:
                    self._queue.popleft()
                    slot = self._choose_slot(idle, request)
                    idle.remove(slot)
                    admitted.append((slot, request))
                else:
                    break
        for slot, request in admitted:
            try:
                self._start(slot, request, now)
            except Exception as error:
                log.exception("could not start request %d", request.id)
                self._finish_with_error(slot, 500, f"Could not start generation: {error}")

    def _choose_slot(self, idle: list[Slot], request: GenerationRequest) -> Slot:
        """The idle slot whose cache shares the longest prefix with the prompt, if it
        shares enough of it (-sps); otherwise the one unused for longest."""
        if self.settings.cache_prompt and request.cache_prompt:
            best = max(idle, key=lambda slot: common_prefix(slot.cache, request.prompt))
            shared = common_prefix(best.cache, request.prompt)
            threshold = self.settings.slot_prompt_similarity
            if shared and shared >= threshold * len(request.prompt):
                return best
        return min(idle, key=lambda slot: slot.last_used)

    def _start(self, slot: Slot, request: GenerationRequest, now: float) -> None:
        model = self.model
        assert model is not None
        slot.request = request
        reuse = 0
        if self.settings.cache_prompt and request.cache_prompt:
            # At least the last prompt token is evaluated again: its logits start generation.
            reuse = min(common_prefix(slot.cache, request.prompt), len(request.prompt) - 1)
            if self.settings.cache_reuse > 0 and model.can_shift:
                reuse = self._reuse_chunks(slot, request.prompt, reuse)
        if not model.keep_slot_prefix(slot.id, reuse):
            reuse = 0
        slot.cache = request.prompt[:reuse]
        slot.n_cached = reuse
        slot.truncated = False
        slot.sampler = request.sampler
        slot.assembler = TextAssembler(request.stop)
        slot.pending = request.prompt[reuse:]
        slot.n_past = reuse
        slot.n_predicted = 0
        room = model.n_ctx_slot - len(request.prompt)
        if self.settings.context_shift and model.can_shift:
            room = request.n_predict if request.n_predict >= 0 else sys.maxsize
        slot.limit = room if request.n_predict < 0 else min(request.n_predict, room)
        request.timings.prompt_start = now

    def _reuse_chunks(self, slot: Slot, prompt: list[int], n_past: int) -> int:
        """--cache-reuse, as llama-server does it: past the shared prefix, find runs of at
        least N prompt tokens further on in the slot's cache and shift them into place
        instead of evaluating them again. Returns how many prompt tokens are now cached."""
        cache, limit = slot.cache, len(prompt) - 1
        head_cache = head_prompt = n_past
        while head_cache < len(cache) and head_prompt < limit:
            run = 0
            while (
                head_cache + run < len(cache)
                and head_prompt + run < limit
                and cache[head_cache + run] == prompt[head_prompt + run]
            ):
                run += 1
            if run >= self.settings.cache_reuse:
                self.model.move_slot_tokens(  # type: ignore[union-attr]
                    slot.id, head_cache, head_cache + run, head_prompt
                )
                head_cache += run
                head_prompt += run
            else:
                head_cache += 1
        return head_prompt

    def _step(self) -> None:
        batch = self._batch
        batch.clear()
        for slot in self.slots:
            if slot.request is not None and slot.request.cancelled:
                self._release(slot)

        # Every generating slot gets its one token in; prompts fill the room left, so a
        # long prompt never stalls the streams already running for more than one step.
        n_decode = 0
        for slot in self.slots:
            slot.batch_index = -1
            slot.n_in_batch = 0
            if slot.request is not None and not slot.pending:
                if slot.n_past >= self.model.n_ctx_slot:  # type: ignore[union-attr]
                    self._shift_context(slot)
                slot.batch_index = batch.add([slot.next_token], slot.n_past, slot.id, True)
                slot.n_in_batch = 1
                n_decode += 1
        for slot in self.slots:
            if slot.request is None or not slot.pending or batch.room == 0:
                continue
            chunk = slot.pending[: batch.room]
            last = len(chunk) == len(slot.pending)
            index = batch.add(chunk, slot.n_past, slot.id, logits_last=last)
            slot.batch_index = index if last else -1
            slot.n_in_batch = len(chunk)
        if batch.n_tokens == 0:
            return

        model = self.model
        started = time.perf_counter()
        try:
            self.hook.llama_box_decode(model=model, batch=batch)
        except DecodeError as error:
            log.error("decode failed: %s", error)
            for slot in self.slots:
                if slot.n_in_batch:
                    slot.cache = []  # what the failed batch left in the KV cache is unknown
                    self.model.clear_slot(slot.id)  # type: ignore[union-attr]
                    self._finish_with_error(slot, 500, f"Decoding failed: {error}")
            return

        now = time.perf_counter()
        self._count(batch.n_tokens - n_decode, n_decode, now - started)
        outbox: list[tuple[GenerationRequest, Event]] = []
        for slot in self.slots:
            if not slot.n_in_batch:
                continue
            slot.n_past += slot.n_in_batch
            if slot.pending:
                slot.cache += slot.pending[: slot.n_in_batch]
                del slot.pending[: slot.n_in_batch]
                if slot.pending:
                    continue
                slot.request.timings.prompt_end = now  # type: ignore[union-attr]
            else:
                slot.cache.append(slot.next_token)
            if slot.batch_index >= 0:
                self._on_logits(slot, now, outbox)
        self._post_many(outbox)

    def _shift_context(self, slot: Slot) -> None:
        """The slot is full: drop half of what follows the kept prompt head, as
        llama-server does, and go on. Only reached with --context-shift."""
        request = slot.request
        assert request is not None and self.model is not None
        n_keep = len(request.prompt) if request.n_keep < 0 else request.n_keep
        n_keep = min(n_keep + self.model.add_bos, slot.n_past - 1)
        n_discard = (slot.n_past - n_keep) // 2
        self.model.shift_slot(slot.id, n_keep, n_discard, slot.n_past)
        del slot.cache[n_keep : n_keep + n_discard]
        slot.n_past -= n_discard
        slot.truncated = True
        log.debug("slot %d: context shift, kept %d, dropped %d", slot.id, n_keep, n_discard)

    def _count(self, n_prefill: int, n_decode: int, seconds: float) -> None:
        """Split a step's time between prompt and generated tokens by their share."""
        stats = self.stats
        total = n_prefill + n_decode
        stats.prefill_tokens += n_prefill
        stats.decode_tokens += n_decode
        stats.prefill_seconds += seconds * n_prefill / total
        stats.decode_seconds += seconds * n_decode / total

    @property
    def kv_cache_tokens(self) -> int:
        return sum(slot.n_past for slot in self.slots if not slot.idle)

    def _on_logits(
        self, slot: Slot, now: float, outbox: list[tuple[GenerationRequest, Event]]
    ) -> None:
        request, assembler = slot.request, slot.assembler
        assert request is not None and assembler is not None
        if slot.limit <= 0:
            outbox.append((request, self._finish(slot, "length", "limit", "")))
            return
        token = self.hook.llama_box_sample(
            model=self.model, sampler=slot.sampler, batch_index=slot.batch_index
        )
        slot.n_predicted += 1
        request.timings.last_token = now
        probabilities = slot.sampler.last_probabilities if request.params.n_probs else None  # type: ignore[union-attr]
        if not request.params.ignore_eos and self.model.is_end_of_generation(token):  # type: ignore[union-attr]
            outbox.append((request, self._finish(slot, "stop", "eos", "")))
            return
        piece = self.hook.llama_box_token_to_piece(model=self.model, token=token, special=False)
        text, stop_word = assembler.feed(piece)
        outbox.append((request, TokenEvent(text, token, probabilities)))
        if stop_word is not None:
            outbox.append((request, self._finish(slot, "stop", "word", stop_word)))
        elif slot.n_predicted >= slot.limit:
            outbox.append((request, self._finish(slot, "length", "limit", "")))
        else:
            slot.next_token = token

    def _finish(
        self, slot: Slot, reason: FinishReason, stop_type: StopType, stopping_word: str
    ) -> FinishEvent:
        request, assembler = slot.request, slot.assembler
        assert request is not None and assembler is not None
        event = FinishEvent(
            reason=reason,
            stop_type=stop_type,
            stopping_word=stopping_word,
            text="" if stop_type == "word" else assembler.flush(),
            n_prompt=len(request.prompt),
            n_predicted=slot.n_predicted,
            timings=request.timings,
            slot_id=slot.id,
            n_cached=slot.n_cached,
            truncated=slot.truncated,
        )
        self.stats.requests_finished += 1
        self._release(slot)
        return event

    def _finish_with_error(self, slot: Slot, status: int, message: str) -> None:
        request = slot.request
        self._release(slot)
        if request is not None:
            self._post(request, ErrorEvent(status, message))

    def _release(self, slot: Slot) -> None:
        """Free the slot; its KV cache stays for the next request's prompt reuse."""
        if slot.sampler is not None:
            slot.sampler.close()
        slot.last_used = time.perf_counter()
        slot.request = None
        slot.sampler = None
        slot.assembler = None
        slot.pending = []

    def _post(self, request: GenerationRequest, event: Event) -> None:
        self._post_many([(request, event)])

    @staticmethod
    def _post_many(outbox: list[tuple[GenerationRequest, Event]]) -> None:
        """Hand events to their event loops: one wake-up per loop per step."""
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[GenerationRequest, Event]]] = {}
        for request, event in outbox:
            if request.loop is not None:
                by_loop.setdefault(request.loop, []).append((request, event))
        for loop, items in by_loop.items():
            # A closed loop raises RuntimeError: nobody is listening any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_deliver, items)


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """How many leading tokens two sequences share."""
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


def _settle(future: asyncio.Future[Any], setter: Callable[[Any], None], value: Any) -> None:
    if not future.done():  # the caller may have gone away
        setter(value)


def _deliver(items: list[tuple[GenerationRequest, Event]]) -> None:
    for request, event in items:
        request.events.put_nowait(event)

"""Scheduling logic of the engine, on the fake model (fast): continuous batching, the
queue, limits, cancellation and failures."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

import pytest

from llama_box_core.engine import (
    Engine,
    ErrorEvent,
    FinishEvent,
    GenerationRequest,
    TokenEvent,
)
from llama_box_core.model import DecodeError, InvalidBatch, KvCacheFull
from llama_box_core.plugins import create_plugin_manager
from llama_box_core.settings import Settings
from llama_box_core.types import SamplingParams
from tests.fakes import FakeModel, FakeModelPlugin, FakeSampler


@pytest.fixture
def plugin() -> FakeModelPlugin:
    return FakeModelPlugin(n_ctx_slot=64)


@contextlib.contextmanager
def running_engine(plugin: FakeModelPlugin, **settings: object) -> Iterator[Engine]:
    """An engine on the fake model, started and loaded; stopped on leaving."""
    pm = create_plugin_manager()
    pm.register(plugin)
    engine = Engine(pm, Settings(model="fake.gguf", **settings))  # type: ignore[arg-type]
    engine.start()
    engine.wait_until_settled()
    try:
        yield engine
    finally:
        engine.stop()


@pytest.fixture
def engine(plugin: FakeModelPlugin) -> Iterator[Engine]:
    with running_engine(plugin, n_parallel=2, batch_size=16) as running:
        yield running


def request(
    prompt: list[int], n_predict: int = 5, ignore_eos: bool = False, **kwargs: object
) -> GenerationRequest:
    return GenerationRequest(
        prompt=prompt,
        params=SamplingParams(ignore_eos=ignore_eos),
        sampler=FakeSampler(),
        n_predict=n_predict,
        **kwargs,
    )


async def run(engine: Engine, req: GenerationRequest) -> tuple[list[int], FinishEvent]:
    tokens = []
    async for event in engine.generate(req):
        if isinstance(event, TokenEvent):
            tokens.append(event.token)
        elif isinstance(event, FinishEvent):
            return tokens, event
        else:
            raise AssertionError(event)
    raise AssertionError("no finish")


def model_of(engine: Engine) -> FakeModel:
    assert isinstance(engine.scheduler.model, FakeModel)
    return engine.scheduler.model


def busy_slots(engine: Engine) -> int:
    """Read from the test's thread while the scheduler may run: fine for a test's polling."""
    return sum(not slot.idle for slot in engine.scheduler.slots)


def test_each_request_continues_its_own_sequence(engine: Engine) -> None:
    async def main() -> list[tuple[list[int], FinishEvent]]:
        reqs = [request([10 * i + 1, 10 * i + 2], n_predict=4) for i in range(5)]
        return await asyncio.gather(*(run(engine, r) for r in reqs))

    for i, (tokens, finish) in enumerate(asyncio.run(main())):
        assert tokens == [10 * i + 3, 10 * i + 4, 10 * i + 5, 10 * i + 6]
        assert finish.reason == "length" and finish.stop_type == "limit"
        assert finish.n_prompt == 2 and finish.n_predicted == 4


def test_one_batch_mixes_slots_and_prompt_chunks_with_decode_tokens(engine: Engine) -> None:
    model_of(engine).decode_delay = 0.002

    async def main() -> None:
        first = asyncio.ensure_future(run(engine, request([1, 2, 3], n_predict=20)))
        while not model_of(engine).batches:
            await asyncio.sleep(0.001)
        await run(engine, request(list(range(40, 70)), n_predict=2))
        await first

    asyncio.run(main())
    batches = model_of(engine).batches
    mixed = [b for b in batches if len({seq for _, _, seq, _ in b}) == 2]
    assert mixed, "no step decoded both slots together"
    # A step that carries a 1-token decode for one slot and a prompt chunk for the other.
    assert any(
        sum(seq == s for _, _, seq, _ in b) == 1 and sum(seq != s for _, _, seq, _ in b) > 1
        for b in mixed
        for s in (0, 1)
    )
    assert max(len(b) for b in batches) <= 16, "the batch size (-b) was exceeded"


def test_positions_are_contiguous_per_slot(engine: Engine) -> None:
    asyncio.run(run(engine, request(list(range(1, 40)), n_predict=6)))
    positions = [pos for b in model_of(engine).batches for _, pos, _, _ in b]
    assert positions == list(range(39 + 5))


def test_requests_beyond_the_slots_wait_in_order(engine: Engine) -> None:
    model_of(engine).decode_delay = 0.002
    finished: list[int] = []

    async def tracked(i: int) -> None:
        await run(engine, request([i], n_predict=3))
        finished.append(i)

    async def main() -> None:
        tasks = []
        for i in range(6):
            tasks.append(asyncio.ensure_future(tracked(i)))
            await asyncio.sleep(0.001)
        await asyncio.gather(*tasks)

    asyncio.run(main())
    assert sorted(finished) == list(range(6))
    assert finished[:2] == sorted(finished[:2]) and set(finished[:2]) <= {0, 1, 2}


def test_generation_is_capped_by_the_slot_context(engine: Engine) -> None:
    tokens, finish = asyncio.run(run(engine, request(list(range(60)), n_predict=-1)))
    assert len(tokens) == 64 - 60
    assert finish.reason == "length"


def test_end_of_generation_token_stops(engine: Engine) -> None:
    model_of(engine).end_token = 8
    tokens, finish = asyncio.run(run(engine, request([5], n_predict=10)))
    assert tokens == [6, 7]
    assert finish.reason == "stop" and finish.stop_type == "eos"
    tokens, finish = asyncio.run(run(engine, request([5], n_predict=5, ignore_eos=True)))
    assert tokens == [6, 7, 8, 9, 10]


def test_stop_string_ends_and_is_not_sent(engine: Engine) -> None:
    async def main() -> tuple[str, FinishEvent]:
        text = []
        async for event in engine.generate(request([1], n_predict=10, stop=["<4><5>"])):
            if isinstance(event, TokenEvent | FinishEvent):
                text.append(event.text)
            if isinstance(event, FinishEvent):
                return "".join(text), event
        raise AssertionError

    text, finish = asyncio.run(main())
    assert text == "<2><3>"
    assert finish.stop_type == "word" and finish.stopping_word == "<4><5>"


def test_cancelled_request_frees_its_slot(engine: Engine, plugin: FakeModelPlugin) -> None:
    model_of(engine).decode_delay = 0.001

    async def main() -> None:
        stream = engine.generate(request([1], n_predict=1000))
        await anext(stream)
        await stream.aclose()  # what a client disconnect does
        for _ in range(1000):
            if busy_slots(engine) == 0:
                break
            await asyncio.sleep(0.005)

    asyncio.run(main())
    assert busy_slots(engine) == 0
    assert all(slot.sampler is None for slot in engine.scheduler.slots)


def test_decode_failure_fails_the_batch_and_the_engine_goes_on(engine: Engine) -> None:
    async def main() -> ErrorEvent | FinishEvent:
        model_of(engine).fail_next_decode = DecodeError("fake failure")
        async for event in engine.generate(request([1], n_predict=3)):
            if not isinstance(event, TokenEvent):
                return event
        raise AssertionError

    event = asyncio.run(main())
    assert isinstance(event, ErrorEvent) and event.status == 500
    tokens, _ = asyncio.run(run(engine, request([1], n_predict=3)))
    assert tokens == [2, 3, 4]
    assert busy_slots(engine) == 0


@pytest.mark.parametrize(
    ("error", "status"),
    [(KvCacheFull("full"), 500), (InvalidBatch("bad"), 400), (DecodeError("other"), 500)],
)
def test_decode_errors_map_to_their_status(engine: Engine, error: DecodeError, status: int) -> None:
    async def main() -> ErrorEvent | FinishEvent:
        model_of(engine).fail_next_decode = error
        async for event in engine.generate(request([1], n_predict=3)):
            if not isinstance(event, TokenEvent):
                return event
        raise AssertionError

    event = asyncio.run(main())
    assert isinstance(event, ErrorEvent) and event.status == status
    assert ("clear", 0) in model_of(engine).kv_ops, "what the batch left in the slot is unknown"


def test_snapshot_and_defaults_go_through_the_scheduler_thread(engine: Engine) -> None:
    async def main() -> None:
        before = await engine.snapshot()
        assert [s.id for s in before.slots] == [0, 1] and before.n_queued == 0
        await run(engine, request([1, 2, 3], n_predict=2))
        after = await engine.snapshot()
        assert after.stats.decode_tokens >= 1 and after.stats.requests_finished == 1
        assert max(s.n_cached for s in after.slots) == 4  # prompt + the decoded token
        await engine.update_defaults(n_predict=7, temperature=0.1)
        assert engine.defaults.n_predict == 7 and engine.defaults.sampling.temperature == 0.1

    asyncio.run(main())


def test_requests_waiting_past_the_timeout_get_503(plugin: FakeModelPlugin) -> None:
    async def main(engine: Engine) -> ErrorEvent | FinishEvent:
        hog = asyncio.ensure_future(run(engine, request([1], n_predict=60)))
        await asyncio.sleep(0.05)
        async for event in engine.generate(request([1], n_predict=1)):
            hog.cancel()
            return event  # type: ignore[return-value]
        raise AssertionError

    with running_engine(plugin, n_parallel=1, timeout=1) as engine:
        model_of(engine).decode_delay = 0.05
        event = asyncio.run(main(engine))
    assert isinstance(event, ErrorEvent) and event.status == 503


def test_stop_closes_the_model(plugin: FakeModelPlugin) -> None:
    with running_engine(plugin) as engine:
        pass
    assert model_of(engine).closed


def test_prompt_cache_reuses_the_longest_shared_prefix(engine: Engine) -> None:
    first, _ = asyncio.run(run(engine, request(list(range(1, 21)), n_predict=3)))
    asyncio.run(run(engine, request([50, 51, 52], n_predict=2)))  # takes the other slot
    model = model_of(engine)
    model.batches.clear()
    # Shares the 20-token prompt and the 2 generated tokens decoded after it.
    again = list(range(1, 21)) + first[:2] + [90]
    _, finish = asyncio.run(run(engine, request(again, n_predict=2)))
    assert finish.n_cached == 22
    prompt_entries = [e for e in model.batches[0] if not e[3]] + [model.batches[0][-1]]
    assert [pos for _, pos, _, _ in prompt_entries] == [22]  # only the new token is evaluated
    no_cache = request(again, n_predict=2, cache_prompt=False)
    _, finish = asyncio.run(run(engine, no_cache))
    assert finish.n_cached == 0


def test_context_shift_keeps_the_prompt_head(plugin: FakeModelPlugin) -> None:
    with running_engine(plugin, n_parallel=1, context_shift=True) as engine:
        tokens, finish = asyncio.run(run(engine, request([1, 2, 3, 4], n_predict=150, n_keep=2)))
    assert len(tokens) == 150 and finish.truncated  # beyond the 64-token slot
    shifts = [op for op in model_of(engine).kv_ops if op[0] == "shift"]
    assert shifts and all(op[2] == 2 for op in shifts)  # the first n_keep tokens stay
    positions = [pos for b in model_of(engine).batches for _, pos, _, _ in b]
    assert max(positions) < 64


def test_cache_reuse_shifts_matching_chunks_into_place(plugin: FakeModelPlugin) -> None:
    with running_engine(plugin, n_parallel=1, cache_reuse=4) as engine:
        asyncio.run(run(engine, request(list(range(1, 21)), n_predict=1)))
        # Tokens 6 to 10 were dropped from the middle: 11 to 20 can be shifted down.
        prompt = [1, 2, 3, 4, 5, *range(11, 21), 50]
        _, finish = asyncio.run(run(engine, request(prompt, n_predict=1)))
    assert finish.n_cached == 15
    assert ("move", 0, 10, 20, 5) in model_of(engine).kv_ops

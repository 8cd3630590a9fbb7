"""Speculation's scheduling logic on the fake model (which continues any sequence with
last token + 1): drafts go in after the next token, kept drafts advance the slot, rejected
ones are cut from the KV cache, misses back off, and nothing leaks into the next request."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from llama_box_core.engine import Engine, ErrorEvent, TokenEvent
from llama_box_core.engine.drafting import MAX_BACKOFF
from llama_box_core.hookspecs import hookimpl
from llama_box_core.model import KvCacheFull
from llama_box_core.plugins import create_plugin_manager
from llama_box_core.settings import Settings
from tests.fakes import N_VOCAB, FakeModelPlugin
from tests.test_scheduler import model_of, request, run


class Oracle:
    """Proposes what the fake model will say (``right``) or something it never says."""

    name = "oracle"

    def __init__(self, right: bool) -> None:
        self.right = right
        self.proposals = 0
        self.kept: list[int] = []
        self.last: list[int] = []

    def propose(self, slot_id: int, tokens: Sequence[int], n_max: int) -> list[int]:
        self.proposals += 1
        last = tokens[-1]
        if self.right:
            self.last = [(last + i) % N_VOCAB for i in range(1, min(n_max, 3) + 1)]
        else:
            self.last = [(last + 50) % N_VOCAB] * min(n_max, 3)
        return self.last

    def accepted(self, slot_id: int, tokens: Sequence[int], n_drafted: int) -> None:
        self.kept.append(len(tokens))

    def release(self, slot_id: int, tokens: Sequence[int]) -> None:
        pass

    def close(self) -> None:
        pass


class SpeculatorPlugin:
    def __init__(self, speculator: Oracle) -> None:
        self.speculator = speculator

    @hookimpl
    def llama_box_create_speculator(self) -> Oracle:
        return self.speculator


def generate(
    speculator: Oracle,
    n_predict: int = 12,
    fail_first: bool = False,
    prompt: Sequence[int] = (5, 6),
):
    """One request through an engine whose speculator hook answers ``speculator``."""
    pm = create_plugin_manager()
    pm.register(FakeModelPlugin(n_ctx_slot=64))
    pm.register(SpeculatorPlugin(speculator))
    engine = Engine(pm, Settings(model="fake.gguf", n_parallel=1, batch_size=32))
    engine.start()
    engine.wait_until_settled()
    try:
        model = model_of(engine)
        prompt = [5, 6]
        if fail_first:  # a step that fails with drafts in it, then a new request whose
            asyncio.run(fail_after_first_token(engine))  # first token is the first draft
            prompt = [speculator.last[0] - 2, speculator.last[0] - 1]
        tokens, finish = asyncio.run(run(engine, request(prompt, n_predict=n_predict)))
        return tokens, finish, model
    finally:
        engine.stop()


async def fail_after_first_token(engine: Engine) -> None:
    """The next step, which verifies this slot's drafts, fails: the request ends."""
    model = model_of(engine)
    model.decode_delay = 0.05  # slow enough that the flag below is set before the next step
    armed = False
    try:
        async for event in engine.generate(request([1, 2], n_predict=8)):
            if isinstance(event, TokenEvent) and not armed:
                model.fail_next_decode, armed = KvCacheFull("full"), True
            elif isinstance(event, ErrorEvent):
                return
    finally:
        model.decode_delay = 0.0
    raise AssertionError("the failing step did not fail the request")


def test_kept_drafts_give_the_plain_tokens_in_fewer_steps() -> None:
    oracle = Oracle(right=True)
    tokens, finish, model = generate(oracle)
    assert tokens == list(range(7, 19))
    assert finish.n_drafted > 0 and finish.n_drafts_accepted == finish.n_drafted
    assert not [op for op in model.kv_ops if op[0] == "drop"]
    assert len(model.batches) < 12  # several tokens a step
    assert any(len([row for row in batch if row[3]]) > 1 for batch in model.batches)


def test_rejected_drafts_are_cut_and_the_slot_backs_off() -> None:
    oracle = Oracle(right=False)
    tokens, finish, model = generate(oracle, n_predict=40)
    assert tokens == list(range(7, 47))
    assert finish.n_drafts_accepted == 0 and finish.n_drafted > 0
    drops = [op for op in model.kv_ops if op[0] == "drop"]
    assert drops and all(op[1] == 0 for op in drops)
    # Each drop keeps exactly the tokens decoded so far: prompt + generated - 1.
    assert drops[0][2] == 2 + 1
    # Back-off: 40 steps, but waits of 1, 2, 4, 8, 16 leave only a handful of proposals.
    assert oracle.proposals <= 6 and MAX_BACKOFF == 16


def test_drafts_of_a_failed_step_do_not_reach_the_next_request() -> None:
    """The next request's first token equals the first draft of the step that failed; it
    must not be taken for a kept draft of that step."""
    oracle = Oracle(right=True)
    tokens, finish, _ = generate(oracle, fail_first=True)
    assert tokens == list(range(tokens[0], tokens[0] + 12))
    assert finish.n_drafts_accepted == finish.n_drafted

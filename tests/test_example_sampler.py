"""The example sampler plugin, tested the way a plugin author tests a stage: with
``llama_box_core.sampler_kit`` alone (numpy; no llama.cpp, no server)."""

from __future__ import annotations

import numpy as np
import pytest

from llama_box_core.sampler_kit import GEMMA3_VOCAB, make_candidates, picks, run_stage, softmax
from llama_box_core.types import TOKEN_DATA, Candidates
from llama_box_example_sampler import WINDOW, NoRepeat


def peaked(token: int, n_vocab: int = 100) -> np.ndarray:
    """Logits whose best token is ``token``, then token + 1, token + 2..."""
    logits = np.full(n_vocab, -10.0, dtype=np.float32)
    for rank in range(20):
        logits[(token + rank) % n_vocab] = 10.0 - rank
    return logits


def test_the_kit_makes_what_llama_cpp_hands_a_first_stage() -> None:
    candidates = make_candidates()
    assert candidates.size == candidates.capacity == GEMMA3_VOCAB
    assert candidates.entries.dtype == TOKEN_DATA and not candidates.sorted
    assert (candidates.ids == np.arange(GEMMA3_VOCAB)).all() and candidates.selected == -1
    assert not candidates.probs.any()
    probs = softmax(make_candidates([0.0, np.log(3.0)]))
    np.testing.assert_allclose(probs, [0.25, 0.75], rtol=1e-6)


class KeepBest:
    """A top-k-like stage: keeps the ``k`` best candidates, sorted or in token order."""

    def __init__(self, k: int, *, sort: bool = True, claim_sorted: bool = True) -> None:
        self.k, self.sort, self.claim_sorted = k, sort, claim_sorted
        self.accepted: list[int] = []

    def apply(self, candidates: Candidates) -> None:
        order = np.argsort(-candidates.logits, kind="stable")[: self.k]
        kept = candidates.entries[order if self.sort else np.sort(order)].copy()
        candidates.entries[: self.k] = kept
        candidates.size = self.k
        candidates.sorted = self.claim_sorted

    def accept(self, token: int) -> None:
        self.accepted.append(token)


def test_the_kit_honours_size_and_sorted_and_calls_accept() -> None:
    stage = KeepBest(2)
    done = run_stage(stage, make_candidates([1.0, 5.0, 3.0, 2.0]))
    assert done.size == 2 and done.sorted and done.ids.tolist() == [1, 2]
    assert done.selected == 0 and stage.accepted == [1]
    unsorted = KeepBest(3, sort=False, claim_sorted=False)
    done = run_stage(unsorted, make_candidates([1.0, 2.0, 5.0, 3.0]), accept=False)
    assert done.ids.tolist() == [1, 2, 3] and done.selected == 1 and unsorted.accepted == []


def test_the_kit_rejects_a_wrong_size_or_sorted_claim() -> None:
    with pytest.raises(ValueError, match="sorted"):
        run_stage(KeepBest(3, sort=False), make_candidates([1.0, 2.0, 5.0, 3.0]))

    class Overflow:
        def apply(self, candidates: Candidates) -> None:
            candidates.size = candidates.capacity + 1

    with pytest.raises(ValueError, match="size"):
        run_stage(Overflow(), make_candidates([1.0]))


def test_no_repeat_bans_the_last_picks_and_nothing_else() -> None:
    stage = NoRepeat()
    chosen = picks(stage, [peaked(7)] * 12)
    # Each step the best token not picked in the last WINDOW steps: 7, 8, ..., 15, then 7
    # again once it has left the window.
    assert chosen == [7 + i for i in range(WINDOW + 1)] + [7, 8, 9]
    candidates = run_stage(NoRepeat(), make_candidates(peaked(7)))
    assert np.isfinite(candidates.logits).all(), "a fresh stage bans nothing"


def test_no_repeat_on_the_whole_vocabulary() -> None:
    stage = NoRepeat()
    first = run_stage(stage, make_candidates(seed=1))
    best = int(first.ids[first.selected])
    second = run_stage(stage, make_candidates(seed=1))
    assert int(second.ids[second.selected]) != best
    assert second.logits[best] == -np.inf and np.isfinite(np.delete(second.logits, best)).all()

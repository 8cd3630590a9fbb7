"""What a sampler plugin's own tests need: real-shaped candidates and a stage run the way
the server's sampler chain runs it, with numpy alone (no llama.cpp, no server).

    from llama_box_core.sampler_kit import make_candidates, run_stage

    candidates = run_stage(MyStage(), make_candidates())
    assert candidates.selected >= 0

The candidates are what a stage placed first in the chain receives: the whole vocabulary
(Gemma 3's 262,144 tokens by default), in token order, unsorted, probabilities not yet
computed. ``run_stage`` then does what the chain does after a stage: it reads back ``size``
and ``sorted`` (checking both, as later native stages trust them), picks the most likely
remaining token, and tells the stage (``accept``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from llama_box_core.types import TOKEN_DATA, Candidates, SamplerStage

GEMMA3_VOCAB = 262_144


def make_candidates(
    logits: Sequence[float] | np.ndarray | None = None,
    *,
    n_vocab: int = GEMMA3_VOCAB,
    seed: int = 0,
) -> Candidates:
    """Candidates over a vocabulary: ids 0..n-1 with ``logits`` (random normal ones when
    None), ``p`` zero, unsorted and nothing selected, as llama.cpp hands them over."""
    if logits is None:
        logits = np.random.default_rng(seed).standard_normal(n_vocab).astype(np.float32)
    values = np.asarray(logits, dtype=np.float32)
    entries = np.zeros(len(values), dtype=TOKEN_DATA)
    entries["id"] = np.arange(len(values), dtype=np.int32)
    entries["logit"] = values
    return Candidates(entries, len(values), False, -1)


def softmax(candidates: Candidates) -> np.ndarray:
    """The probabilities of the live candidates (a stage that needs ``probs`` fills them
    this way, as llama.cpp's own stages do)."""
    logits = candidates.logits.astype(np.float64)
    weights = np.exp(logits - logits.max())
    return (weights / weights.sum()).astype(np.float32)


def run_stage(stage: SamplerStage, candidates: Candidates, *, accept: bool = True) -> Candidates:
    """Apply ``stage`` as the chain does, pick the best remaining token greedily (a banned
    one, with logit -inf, is never picked) and, when ``accept``, let the stage learn it.
    Returns the candidates, ``selected`` the index of the pick (-1: nothing left)."""
    stage.apply(candidates)
    if not 0 <= candidates.size <= candidates.capacity:
        raise ValueError(f"the stage left size {candidates.size}, outside the candidates")
    live = candidates.logits
    if candidates.sorted and (np.diff(live) > 0).any():
        # llama.cpp's later stages trust the flag (softmax takes the first logit as the max).
        raise ValueError("the stage set sorted but left the logits out of descending order")
    if candidates.size == 0 or not np.isfinite(live).any():
        candidates.selected = -1
        return candidates
    candidates.selected = int(np.argmax(live))
    if accept and hasattr(stage, "accept"):
        stage.accept(int(candidates.ids[candidates.selected]))
    return candidates


def picks(stage: SamplerStage, steps: Sequence[np.ndarray | Sequence[float]]) -> list[int]:
    """The tokens a stateful stage lets through over several steps, one logits row each."""
    chosen = []
    for logits in steps:
        candidates = run_stage(stage, make_candidates(logits))
        chosen.append(int(candidates.ids[candidates.selected]) if candidates.selected >= 0 else -1)
    return chosen

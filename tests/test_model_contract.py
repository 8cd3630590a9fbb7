"""The model contract on the real Gemma model, in process: several rows of one slot in one
step, cutting the KV tail, embedding rows, rows shared by several sequences, and typed
decode errors. Greedy picks come from the step's outputs (``DecodeOutputs.logits``)."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import numpy as np
import pytest

from llama_box_core.model import DecodeBatch, InvalidBatch, KvCacheFull, Model
from llama_box_core.settings import Settings

pytestmark = pytest.mark.slow
lc = pytest.importorskip("llama_cpp")

from llama_box_llamacpp.model import LlamaCppModel  # noqa: E402

N_SLOTS, N_CTX = 2, 512  # 256 tokens a slot
PROMPT = "1, 2, 3, 4, 5, 6,"


@pytest.fixture(scope="module")
def model(gemma_path: str) -> Iterator[LlamaCppModel]:
    logging.getLogger("llama_box_llamacpp").setLevel(logging.WARNING)
    settings = Settings(model=gemma_path, ctx_size=N_CTX, n_parallel=N_SLOTS, batch_size=512)
    loaded = LlamaCppModel(gemma_path, settings)
    yield loaded
    loaded.close()


@pytest.fixture
def batch(model: LlamaCppModel) -> DecodeBatch:
    for slot in range(N_SLOTS):
        model.clear_slot(slot)
    return DecodeBatch(512, n_embd=model.info.n_embd, max_sequences=N_SLOTS)


def prompt_tokens(model: LlamaCppModel) -> list[int]:
    return model.tokenize(PROMPT, add_special=True, parse_special=False)


def greedy_one_at_a_time(model: LlamaCppModel, batch: DecodeBatch, n: int) -> list[int]:
    """Prompt, then ``n`` greedy tokens, one decode step each, in slot 0."""
    prompt = prompt_tokens(model)
    batch.clear()
    row = batch.add(prompt, 0, 0)
    tokens: list[int] = []
    for i in range(n):
        tokens.append(int(model.decode(batch).logits(row).argmax()))
        batch.clear()
        row = batch.add(tokens[-1:], len(prompt) + i, 0)
    return tokens


def test_the_model_describes_itself_apart_from_its_slots(model: LlamaCppModel) -> None:
    assert isinstance(model, Model)
    info = model.info
    assert (info.kind, info.architecture, info.n_vocab) == ("text", "gemma3", 262_144)
    assert (info.n_slots, info.n_ctx_slot, info.n_embd) == (N_SLOTS, N_CTX // N_SLOTS, 640)
    assert info.can_shift and "completion" in info.capabilities
    assert "infill" not in info.capabilities  # Gemma 3 270M has no FIM tokens
    assert info.metadata["n_ctx_slot"] == N_CTX // N_SLOTS


def test_several_tokens_of_one_slot_in_one_step_give_each_rows_logits(
    model: LlamaCppModel, batch: DecodeBatch
) -> None:
    """Draft verification: the greedy continuation fed back in one step, outputs at every
    row; the argmax at row i is the token one-at-a-time decoding picked next."""
    expected = greedy_one_at_a_time(model, batch, 6)
    model.clear_slot(0)
    prompt = prompt_tokens(model)
    batch.clear()
    batch.add(prompt[:-1], 0, 0, "none")
    first = batch.add([prompt[-1], *expected[:-1]], len(prompt) - 1, 0, "all")
    outputs = model.decode(batch)
    picked = [int(outputs.logits(first + i).argmax()) for i in range(len(expected))]
    assert picked == expected


def test_cutting_the_kv_tail_and_decoding_again_gives_the_same_logits(
    model: LlamaCppModel, batch: DecodeBatch
) -> None:
    prompt = prompt_tokens(model)
    drafts = [236743, 236832, 236764]  # " 7," then a rejected guess
    batch.add(prompt, 0, 0, "none")
    model.decode(batch)
    # The same batch shape both times: llama.cpp's last bits depend on the batch size.
    batch.clear()
    row = batch.add(drafts, len(prompt), 0, "all")
    first = model.decode(batch).logits(row + 2).copy()
    # Reject the drafts: cut slot 0 back to the prompt, decode them again.
    assert model.keep_slot_prefix(0, len(prompt))
    batch.clear()
    row = batch.add(drafts, len(prompt), 0, "all")
    again = model.decode(batch).logits(row + 2)
    np.testing.assert_allclose(again, first, atol=1e-3)


def test_a_row_shared_by_two_sequences_serves_both(gemma_path: str) -> None:
    """A shared prompt decoded once into slots 0 and 1 (llama.cpp couples sequences only
    in a unified KV cache, --kv-unified); each then continues alone."""
    settings = Settings(model=gemma_path, ctx_size=N_CTX, n_parallel=2, kv_unified=True)
    model = LlamaCppModel(gemma_path, settings)
    try:
        batch = DecodeBatch(64, max_sequences=2)
        prompt = prompt_tokens(model)
        batch.add(prompt[:-1], 0, [0, 1], "none")
        row0 = batch.add(prompt[-1:], len(prompt) - 1, 0)
        row1 = batch.add(prompt[-1:], len(prompt) - 1, 1)
        outputs = model.decode(batch)
        assert outputs.logits(row0).argmax() == outputs.logits(row1).argmax() == 236743
        for slot in (0, 1):
            assert lc.llama_memory_seq_pos_max(model._memory, slot) == len(prompt) - 1
    finally:
        model.close()


def test_embedding_rows_stand_in_for_tokens(model: LlamaCppModel, batch: DecodeBatch) -> None:
    """Rows of (scaled) token embeddings, as a multimodal chunk enters the batch, then a
    token row in the same step: the logits match those of the tokens themselves."""
    import gguf

    prompt = prompt_tokens(model)
    batch.add(prompt, 0, 0)
    reference = model.decode(batch).logits(batch.n_tokens - 1).copy()
    reader = gguf.GGUFReader(model.info.path)
    (table,) = [t for t in reader.tensors if t.name == "token_embd.weight"]
    # One quantised row per token; Gemma scales token embeddings by sqrt(n_embd) in its
    # graph, and raw embedding rows it does not.
    rows = gguf.quants.dequantize(table.data[prompt[:-1]], table.tensor_type)
    rows = rows.astype(np.float32) * np.sqrt(model.info.n_embd)
    batch.clear()
    batch.add_embeddings(rows, 0, 1)
    row = batch.add(prompt[-1:], len(prompt) - 1, 1)
    logits = model.decode(batch).logits(row)
    assert logits.argmax() == reference.argmax()
    top = set(np.argsort(reference)[-10:])
    assert len(top & set(np.argsort(logits)[-10:])) >= 9
    assert np.corrcoef(logits, reference)[0, 1] > 0.999


def test_decode_failures_are_typed(model: LlamaCppModel, batch: DecodeBatch) -> None:
    batch.add([model.info.n_vocab + 5], 0, 0)
    with pytest.raises(InvalidBatch) as invalid:
        model.decode(batch)
    assert invalid.value.status == 400
    batch.clear()
    batch.add([236764] * (N_CTX // N_SLOTS + 10), 0, 0)
    with pytest.raises(KvCacheFull) as full:
        model.decode(batch)
    assert full.value.status == 500 and "Context size has been exceeded" in str(full.value)
    batch.clear()
    rows = np.zeros((2, model.info.n_embd), dtype=np.float32)
    batch.add_embeddings(rows, 0, 1, "last")
    batch.add([2], 0, 0)
    with pytest.raises(InvalidBatch, match="embedding rows cannot ask for outputs"):
        model.decode(batch)

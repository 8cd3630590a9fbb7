"""A fake text model plugin for unit tests of scheduling logic (the real model proves
features elsewhere). Its "model" continues any sequence with last token + 1."""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np

from llama_box_core.hookspecs import hookimpl
from llama_box_core.model import DecodeBatch, DecodeError, ModelInfo
from llama_box_core.settings import Settings
from llama_box_core.types import ChatMessage, SamplingParams

N_VOCAB = 100


class FakeModel:
    def __init__(self, n_slots: int, n_ctx_slot: int) -> None:
        self.info = ModelInfo(
            kind="text",
            path="fake.gguf",
            architecture="fake",
            n_ctx_train=4096,
            n_vocab=N_VOCAB,
            n_embd=8,
            n_slots=n_slots,
            n_ctx_slot=n_ctx_slot,
            add_bos=False,
            builtin_template="fake",
            special_tokens={"bos_token": "", "eos_token": ""},
            fim_tokens={"pre": 90, "suf": 91, "mid": 92, "rep": 93, "sep": 94},
            capabilities=frozenset({"completion", "kv_shift", "infill"}),
            metadata={"n_vocab": N_VOCAB},
        )
        self.kv_ops: list[tuple] = []
        """KV cache operations, in order."""
        self.batches: list[list[tuple[int, int, int, bool]]] = []
        """Each decoded batch as (token, position, slot, wants output) entries."""
        self.end_token: int | None = None
        self.fail_next_decode: DecodeError | None = None
        self.decode_delay = 0.0
        self.closed = False

    def is_end_of_generation(self, token: int) -> bool:
        return token == self.end_token

    def clear_slot(self, slot_id: int) -> None:
        self.kv_ops.append(("clear", slot_id))

    def keep_slot_prefix(self, slot_id: int, n_keep: int) -> bool:
        self.kv_ops.append(("keep", slot_id, n_keep))
        return True

    def drop_slot_tail(self, slot_id: int, n_keep: int) -> None:
        self.kv_ops.append(("drop", slot_id, n_keep))

    def move_slot_tokens(self, slot_id: int, start: int, end: int, to: int) -> None:
        self.kv_ops.append(("move", slot_id, start, end, to))

    def shift_slot(self, slot_id: int, n_keep: int, n_discard: int, n_past: int) -> None:
        self.kv_ops.append(("shift", slot_id, n_keep, n_discard, n_past))

    def close(self) -> None:
        self.closed = True


class FakeOutputs:
    """Logits that put all the mass on "the row's token + 1"."""

    def __init__(self, tokens: np.ndarray) -> None:
        self.tokens = tokens

    def logits(self, row: int) -> np.ndarray:
        logits = np.full(N_VOCAB, -np.inf, dtype=np.float32)
        logits[(self.tokens[row] + 1) % N_VOCAB] = 0.0
        return logits


class FakeSampler:
    def __init__(self) -> None:
        self.closed = False
        self.last_probabilities = None

    def close(self) -> None:
        self.closed = True


class FakeModelPlugin:
    """Loads a FakeModel for any path; ``release`` lets a test hold the load."""

    def __init__(self, n_ctx_slot: int = 64, hold_load: bool = False) -> None:
        self.n_ctx_slot = n_ctx_slot
        self.release = threading.Event()
        if not hold_load:
            self.release.set()
        self.model: FakeModel | None = None
        self.samplers: list[FakeSampler] = []

    @hookimpl
    def llama_box_load_model(self, path: str, settings: Settings) -> FakeModel:
        self.release.wait()
        self.model = FakeModel(settings.n_parallel, self.n_ctx_slot)
        return self.model

    @hookimpl
    def llama_box_apply_chat_template(self, messages: Sequence[ChatMessage]) -> str:
        return "".join(f"{m.role}:{m.content};" for m in messages)

    @hookimpl
    def llama_box_tokenize(self, text: str) -> list[int]:
        return [ord(c) % N_VOCAB for c in text]

    @hookimpl
    def llama_box_detokenize(self, tokens: Sequence[int]) -> str:
        return "".join(f"<{t}>" for t in tokens)

    @hookimpl
    def llama_box_token_to_piece(self, token: int) -> bytes:
        return f"<{token}>".encode()

    @hookimpl
    def llama_box_decode(self, model: FakeModel, batch: DecodeBatch) -> FakeOutputs:
        if model.fail_next_decode is not None:
            error, model.fail_next_decode = model.fail_next_decode, None
            raise error
        if model.decode_delay:
            threading.Event().wait(model.decode_delay)
        n = batch.n_tokens
        model.batches.append(
            list(
                zip(
                    batch.token[:n].tolist(),
                    batch.pos[:n].tolist(),
                    batch.seq_id[:n, 0].tolist(),
                    (batch.output[:n] != 0).tolist(),
                    strict=True,
                )
            )
        )
        self._last = np.array(batch.token[:n])
        return FakeOutputs(self._last)

    @hookimpl
    def llama_box_create_sampler(self, params: SamplingParams) -> FakeSampler:
        sampler = FakeSampler()
        self.samplers.append(sampler)
        return sampler

    @hookimpl
    def llama_box_sample(self, batch_index: int) -> int:
        return int(self._last[batch_index] + 1) % N_VOCAB

"""Speculative decoding: a draft model (Gemma as its own draft exercises the whole path)
and n-gram lookup give the target's own tokens, greedy or seeded, alone or beside other
slots, with and without prompt-cache hits; counts reach /metrics and the response.

Every server here runs with --no-repack: llama.cpp's repacked CPU kernels compute a
batch of 4 or more rows with other rounding than one row (logits move by up to ~0.5 on
this model), so with repacking even a plain server's output depends on batch shapes."""

from __future__ import annotations

import struct
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from llama_box_lookup import ngrams
from tests.conftest import Server, start_server

PROMPTS = [
    "The quick brown fox jumps over the lazy dog. The quick brown fox",
    "Once upon a time, in a small village by the sea,",
    "1, 2, 3, 4, 5, 6,",
    "def fibonacci(n):\n    if n < 2:\n        return n\n    return",
]
# Continuations the model is sure of: a batch's other rows may still move free text by a
# last bit (as in llama-server), but not these.
DETERMINED = [PROMPTS[2], PROMPTS[3], "100, 101, 102, 103, 104,", "Monday, Tuesday, Wednesday,"]
COMMON = ["-c", "4096", "-np", "4", "--no-repack", "--metrics"]


def serve(tmp: Path, *flags: str) -> Server:
    return start_server([*COMMON, *flags], tmp / "llama-box.log")


@pytest.fixture(scope="module")
def plain(gemma_path: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    running = serve(tmp_path_factory.mktemp("plain"), "-m", gemma_path)
    yield running
    running.stop()


@pytest.fixture(scope="module", params=["draft", "lookup"])
def speculating(
    request: pytest.FixtureRequest, gemma_path: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp(request.param)
    if request.param == "draft":
        flags = ["-md", gemma_path, "--draft-max", "6", "--draft-p-min", "0.5"]
    else:
        flags = ["--lookup-ngram-min", "1", "--draft-max", "8"]
    running = serve(tmp, "-m", gemma_path, *flags)
    yield running
    running.stop()


def complete(server: Server, prompt: str, **fields: object) -> dict:
    body = {"prompt": prompt, "n_predict": 48, "temperature": 0, "return_tokens": True}
    with server.client(timeout=120) as client:
        response = client.post("/completion", json={**body, **fields})
    assert response.status_code == 200, response.text
    return response.json()


def metric(server: Server, name: str) -> float:
    with server.client(timeout=30) as client:
        text = client.get("/metrics").text
    return next(float(line.split()[1]) for line in text.splitlines() if line.startswith(name))


pytestmark = pytest.mark.slow


@pytest.mark.parametrize("prompt", PROMPTS)
def test_greedy_tokens_equal_the_plain_ones(
    plain: Server, speculating: Server, prompt: str
) -> None:
    expected = complete(plain, prompt, cache_prompt=False)["tokens"]
    assert complete(speculating, prompt, cache_prompt=False)["tokens"] == expected
    if prompt not in DETERMINED:
        return
    # A prompt-cache hit decodes the prompt's last token alone, which can round otherwise
    # than within the whole prompt: compare hits with hits.
    complete(plain, prompt)
    expected_hit = complete(plain, prompt)
    complete(speculating, prompt)
    hit = complete(speculating, prompt)
    assert hit["timings"]["cache_n"] > 0 and expected_hit["timings"]["cache_n"] > 0
    assert hit["tokens"] == expected_hit["tokens"]


def test_drafts_are_counted_per_response_and_in_metrics(speculating: Server) -> None:
    before = metric(speculating, "llamabox:tokens_drafted_total")
    result = complete(speculating, PROMPTS[0], n_predict=64)
    timings = result["timings"]
    assert timings["draft_n"] > 0 and 0 < timings["draft_n_accepted"] <= timings["draft_n"]
    assert metric(speculating, "llamabox:tokens_drafted_total") - before == timings["draft_n"]
    assert metric(speculating, "llamacpp:tokens_drafted_accepted_total") > 0


def test_four_concurrent_slots_and_seeded_sampling(plain: Server, speculating: Server) -> None:
    seeded = {"temperature": 0.9, "seed": 7, "cache_prompt": False}
    expected = {p: complete(plain, p, cache_prompt=False)["tokens"] for p in DETERMINED}
    expected_seeded = complete(plain, PROMPTS[1], **seeded)["tokens"]
    results: dict[str, list[int]] = {}

    def worker(prompt: str) -> None:
        results[prompt] = complete(speculating, prompt, cache_prompt=False)["tokens"]

    threads = [threading.Thread(target=worker, args=(p,)) for p in DETERMINED]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == expected
    # Each emitted token is sampled from the target's own row, one draw of the seeded
    # sampler per token, as without speculation: the same seed gives the same text.
    assert complete(speculating, PROMPTS[1], **seeded)["tokens"] == expected_seeded


def test_streaming_and_chat_with_speculation(plain: Server, speculating: Server) -> None:
    body = {"messages": [{"role": "user", "content": "Count from 1 to 20."}], "max_tokens": 24}
    with speculating.client(timeout=120) as client:
        chat = client.post("/v1/chat/completions", json=body | {"temperature": 0})
        assert chat.status_code == 200 and chat.json()["choices"][0]["message"]["content"]
        streamed = ""
        fields = {"n_predict": 32, "stream": True, "temperature": 0, "cache_prompt": False}
        with client.stream(
            "POST", "/completion", json={"prompt": PROMPTS[2], **fields}
        ) as response:
            for line in response.iter_lines():
                if line.startswith("data: ") and '"content"' in line:
                    streamed += httpx.Response(200, content=line[6:]).json()["content"]
    expected = complete(plain, PROMPTS[2], n_predict=32, cache_prompt=False)["content"]
    assert streamed == expected


def test_a_draft_model_with_another_vocabulary_is_refused(gemma_path: str, tmp_path: Path) -> None:
    from tests.models import minilm

    with pytest.raises(RuntimeError, match="vocabulary differs"):
        start_server(
            ["-m", gemma_path, "-md", str(minilm.gguf_path()), "-np", "1"], tmp_path / "log"
        )


def test_the_dynamic_lookup_cache_is_saved_in_llama_cpp_format(
    gemma_path: str, tmp_path: Path
) -> None:
    path = tmp_path / "dynamic.bin"
    running = start_server(
        ["-m", gemma_path, "-np", "1", "--lookup-ngram-min", "2", "-lcd", str(path)],
        tmp_path / "log",
    )
    try:
        complete(running, PROMPTS[0], n_predict=16)
    finally:
        running.stop()
    cache = ngrams.load(path)
    assert cache and all(2 <= len(ngram) <= ngrams.NGRAM_MAX for ngram in cache)
    raw = path.read_bytes()
    first = struct.unpack_from("<4ii", raw)
    assert first[4] >= 1 and (-1 in first[:4]) == (len([t for t in first[:4] if t != -1]) < 4)


def test_context_shift_and_slot_files_with_speculation(gemma_path: str, tmp_path: Path) -> None:
    """A slot of 128 tokens shifts while drafts are verified; a slot saved after a
    speculative generation holds exactly its tokens and restores to the same answer."""
    (tmp_path / "saved").mkdir()
    running = start_server(
        [
            *("-m", gemma_path, "-c", "128", "-np", "1", "--no-repack", "--context-shift"),
            *("--lookup-ngram-min", "1", "--slot-save-path", str(tmp_path / "saved")),
        ],
        tmp_path / "log",
    )
    try:
        long = complete(running, PROMPTS[0], n_predict=300, ignore_eos=True)
        assert long["tokens_predicted"] == 300 and long["truncated"]
        assert long["timings"]["draft_n_accepted"] > 0
        first = complete(running, PROMPTS[2], n_predict=24)
        with running.client(timeout=60) as client:
            saved = client.post("/slots/0?action=save", json={"filename": "s.bin"}).json()
            assert saved["n_saved"] == first["tokens_evaluated"] + first["tokens_predicted"] - 1
            client.post("/slots/0?action=erase")
            client.post("/slots/0?action=restore", json={"filename": "s.bin"})
        again = complete(running, PROMPTS[2], n_predict=24)
        assert again["tokens_cached"] == first["tokens_evaluated"] - 1
        assert again["content"] == first["content"]
    finally:
        running.stop()


# --- the n-gram caches alone (fast) ---------------------------------------------------------


@pytest.mark.parametrize("n_min", [1, 2])
def test_lookup_drafts_what_followed_before(n_min: int) -> None:
    tokens = [1, 2, 3, 4, 5, 1, 2, 3, 4, 5, 1, 2]
    context: ngrams.NgramCache = {}
    ngrams.update(context, tokens, 0, n_min, ngrams.NGRAM_MAX)
    assert ngrams.draft(tokens, 4, context, {}, {}, n_min) == [3, 4, 5, 1]
    assert ngrams.draft([9, 9], 4, context, {}, {}, n_min) == []


def test_lookup_files_round_trip_in_llama_cpp_layout(tmp_path: Path) -> None:
    cache = {(1, 2): Counter({3: 5, 4: 1}), (7,): Counter({8: 2})}
    path = tmp_path / "cache.bin"
    ngrams.save(cache, path)
    raw = path.read_bytes()
    assert raw[:20] == struct.pack("<4ii", 1, 2, -1, -1, 2)
    assert len(raw) == 2 * 20 + 3 * 8
    assert ngrams.load(path) == cache
    (tmp_path / "bad.bin").write_bytes(b"\x01\x02")
    with pytest.raises(ValueError, match="truncated"):
        ngrams.load(tmp_path / "bad.bin")


def test_static_and_dynamic_caches_need_more_evidence() -> None:
    dynamic = {(5,): Counter({6: 1})}
    assert ngrams.draft([5], 2, {}, dynamic, {}, 1) == []  # one sighting is not enough
    dynamic = {(5,): Counter({6: 4})}
    static = {(5, 6): Counter({7: 9, 8: 1})}
    assert ngrams.draft([5], 2, {}, dynamic, static, 1) == [6, 7]


def test_the_lookup_plugin_offers_a_speculator_through_the_hook(tmp_path: Path) -> None:
    from llama_box_core.plugins import create_plugin_manager, load_plugins
    from llama_box_core.settings import Settings
    from llama_box_lookup.plugin import LookupSpeculator

    pm = load_plugins(create_plugin_manager(), allow=["lookup"])
    assert pm.hook.llama_box_create_speculator(model=None, settings=Settings()) is None
    dynamic = tmp_path / "dynamic.bin"
    settings = Settings(lookup_ngram_min=1, lookup_cache_dynamic=str(dynamic))
    speculator = pm.hook.llama_box_create_speculator(model=None, settings=settings)
    assert isinstance(speculator, LookupSpeculator)
    assert speculator.propose(0, [1, 2, 3, 1, 2, 3, 1, 2], 3) == [3, 1, 2]
    speculator.release(0, [4, 5, 6, 4, 5, 6, 4, 5, 6, 4, 5, 6, 4, 5])
    speculator.close()
    assert ngrams.load(dynamic)[(4, 5)][6] >= 3

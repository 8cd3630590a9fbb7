"""POST /v1/rerank (and /rerank, /v1/reranking, /reranking): Jina's shape.

Each document is scored with the query by a reranker model (rank pooling): the pair is
joined as llama-server joins it (BOS, query, EOS, SEP, document, EOS, as the vocabulary
adds them), and all pairs go to the engine together, packed into shared steps. Scores go
through a sigmoid unless ``normalize`` is false (the v2 seed's raw ``relevance_score``).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import msgspec
from litestar import post
from litestar.di import NamedDependency
from litestar.params import JSONBody

from llama_box_core.engine import Engine
from llama_box_core.hookspecs import hookimpl
from llama_box_core.settings import Settings
from llama_box_server.errors import ApiError
from llama_box_server.routes.embeddings import encode, requires


class TextDocument(msgspec.Struct):
    text: str


class RerankRequest(msgspec.Struct, kw_only=True):
    query: str
    documents: list[str | TextDocument]
    model: str | None = None
    top_n: int | None = None
    return_documents: bool = True
    normalize: bool = True


class RankedResult(msgspec.Struct, omit_defaults=True):
    index: int
    relevance_score: float
    document: TextDocument | None = None


class RerankUsage(msgspec.Struct):
    prompt_tokens: int
    total_tokens: int


class RerankResponse(msgspec.Struct):
    model: str
    results: list[RankedResult]
    usage: RerankUsage
    object: str = "list"


def sigmoid(score: float) -> float:
    return 1.0 / (1.0 + math.exp(-score)) if score >= -700 else 0.0


@post(
    ["/v1/rerank", "/rerank", "/v1/reranking", "/reranking"],
    status_code=200,
    guards=[requires("rerank", "--rerank", "reranking")],
)
async def rerank(
    data: JSONBody[RerankRequest],
    engine: NamedDependency[Engine],
    settings: NamedDependency[Settings],
) -> RerankResponse:
    if not data.query:
        raise ApiError(400, '"query" must not be empty')
    if not data.documents:
        raise ApiError(400, '"documents" must not be empty')
    if data.top_n is not None and data.top_n < 1:
        raise ApiError(400, '"top_n" must be at least 1')
    texts = [d.text if isinstance(d, TextDocument) else d for d in data.documents]
    for index, text in enumerate(texts):
        if not text:
            raise ApiError(400, f"document {index} is empty")
    prefix, middle, suffix = engine.info.rerank_joins
    query, *documents = await engine.tokenize_all(
        [data.query, *texts], add_special=False, parse_special=False
    )
    pairs: list[list[int] | str] = [[*prefix, *query, *middle, *d, *suffix] for d in documents]
    scores, n_tokens = await encode(engine, pairs, "rank")
    results = [
        RankedResult(
            index=index,
            relevance_score=sigmoid(score) if data.normalize else score,
            document=TextDocument(texts[index]) if data.return_documents else None,
        )
        for index, score in enumerate(scores)
    ]
    results.sort(key=lambda result: result.relevance_score, reverse=True)
    return RerankResponse(
        model=data.model or settings.model_name,
        results=results[: data.top_n],
        usage=RerankUsage(prompt_tokens=n_tokens, total_tokens=n_tokens),
    )


@hookimpl
def llama_box_routes(register: Callable[..., None]) -> None:
    register(rerank)

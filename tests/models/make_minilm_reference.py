"""Writes minilm_reference.json: for fixed sentences, llama.cpp's tokens and the cosine
similarities of a float64 numpy forward pass of the original safetensors weights (mean
pooling, L2). Run once; the tests compare the server against it.

    .venv/bin/python -m tests.models.make_minilm_reference
"""

from __future__ import annotations

import itertools
import json
import logging
from pathlib import Path

import numpy as np

from llama_box_core.settings import Settings
from llama_box_llamacpp.model import LlamaCppModel
from tests.models import bert, minilm

SENTENCES = [
    "A man is playing a guitar.",
    "Someone is strumming a guitar on stage.",
    "The cat sleeps on the warm windowsill.",
    "A kitten is napping in the sun by the window.",
    "Stock markets fell sharply after the announcement.",
    "Shares dropped when the news came out.",
    "How do I bake sourdough bread at home?",
    "Photosynthesis turns light into chemical energy.",
]
OUT = Path(__file__).with_name("minilm_reference.json")


def main() -> None:
    logging.disable(logging.INFO)
    model = LlamaCppModel(str(minilm.gguf_path()), Settings(embeddings=True, warmup=False))
    tokens = {s: model.tokenize(s, add_special=True, parse_special=True) for s in SENTENCES}
    model.close()
    weights = minilm.weights()
    vectors = {s: bert.mean_pooled(weights, minilm.SHAPE, tokens[s]) for s in SENTENCES}
    pairs = [
        [a, b, float(np.dot(vectors[a], vectors[b]))]
        for a, b in itertools.combinations(SENTENCES, 2)
    ]
    OUT.write_text(json.dumps({"tokens": tokens, "cosine": pairs}, indent=1) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()

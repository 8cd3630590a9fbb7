"""Speculative decoding: generation speed with and without each kind, against llama-server
(built from the same llama.cpp by bench/build_llama_server.sh) with the same flags.

    .venv/bin/python bench/speculative.py [--requests 4] [--draft-max 8]

Two single-stream tasks on Gemma 3 270M, greedy: "copy" (a passage, then the model asked
to write it again: n-gram lookup can draft from the context) and "free" (a story opening:
little to look up). Kinds: none, n-gram lookup (llama-box --lookup-ngram-min 1,
llama-server --spec-type ngram-cache), a draft model (-md, Gemma as its own draft:
every draft is accepted, and drafting costs as much as it saves) and a weak draft model
(bench/weak_draft.py: Gemma's tokenizer on a tiny random network, so acceptance is low).
Printed: generated
tokens/s (from each response's timings), the speed-up over the same server without
speculation, and the share of drafts accepted.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import httpx
from llama_cpp_build import built_binary
from weak_draft import weak_draft

from bench import Running, default_model

HERE = Path(__file__).resolve().parent
PASSAGE = (
    "The lighthouse keeper climbed the spiral stairs every evening at dusk. He trimmed the "
    "wick, polished the great lens, and wrote the weather in a leather book: wind from the "
    "west, a low swell, gulls circling the harbour. Ships passed far out, their lights small "
    "as stars, and none of them ever knew his name."
)
TASKS = {
    "copy": f"Text: {PASSAGE}\n\nThe same text, copied exactly:\n{PASSAGE[:40]}",
    "free": "Once upon a time, in a small village by the sea,",
}


def kinds(model: str, draft_max: int, p_min: float) -> dict[str, dict[str, list[str]]]:
    n, p_min = str(draft_max), str(p_min)
    weak = str(weak_draft(model))
    return {
        "none": {"llama-box": [], "llama-server": []},
        "lookup": {
            "llama-box": ["--lookup-ngram-min", "1", "--draft-max", n],
            "llama-server": ["--spec-type", "ngram-cache", "--spec-draft-n-max", n],
        },
        "draft": {
            "llama-box": ["-md", model, "--draft-max", n, "--draft-p-min", p_min],
            "llama-server": [
                *("--spec-type", "draft-simple", "-md", model),
                *("--spec-draft-n-max", n, "--spec-draft-p-min", p_min),
            ],
        },
        "weak": {
            "llama-box": ["-md", weak, "--draft-max", n, "--draft-p-min", p_min],
            "llama-server": [
                *("--spec-type", "draft-simple", "-md", weak),
                *("--spec-draft-n-max", n, "--spec-draft-p-min", p_min),
            ],
        },
    }


def run(url: str, prompt: str, requests: int, n_predict: int) -> tuple[float, int, int]:
    rates, drafted, accepted = [], 0, 0
    with httpx.Client(base_url=url, timeout=600) as client:
        for i in range(requests + 1):
            body = {"prompt": prompt, "n_predict": n_predict, "temperature": 0}
            body |= {"cache_prompt": False, "ignore_eos": True}
            timings = client.post("/completion", json=body).raise_for_status().json()["timings"]
            if i:  # the first is a warm-up
                rates.append(timings["predicted_per_second"])
                drafted += timings.get("draft_n", 0)
                accepted += timings.get("draft_n_accepted", 0)
    return statistics.median(rates), drafted, accepted


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=4)
    parser.add_argument("--n-predict", type=int, default=96)
    parser.add_argument("--draft-max", type=int, default=8)
    parser.add_argument("--draft-p-min", type=float, default=0.8)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    model = default_model()
    (HERE / "results").mkdir(exist_ok=True)
    table: dict[tuple[str, str, str], tuple[float, int, int]] = {}
    for kind, servers in kinds(model, args.draft_max, args.draft_p_min).items():
        for server, flags in servers.items():
            options = argparse.Namespace(
                model=model,
                ctx=4096,
                parallel=1,
                threads=args.threads,
                server_args=" ".join(flags),
                llama_server=built_binary(),
            )
            running = Running(server, options)
            try:
                for task, prompt in TASKS.items():
                    result = run(running.url, prompt, args.requests, args.n_predict)
                    table[(server, kind, task)] = result
                    print(f"  {server} {kind} {task}: {result[0]:.1f} tok/s", file=sys.stderr)
            finally:
                running.stop()
    print(
        f"\nGemma 3 270M Q4_K_M, -c 4096 -np 1 -t {args.threads}, greedy, {args.n_predict} "
        f"tokens, median of {args.requests} requests, draft max {args.draft_max}, "
        f"draft p-min {args.draft_p_min}\n"
    )
    print(f"{'server':<14}{'kind':<8}{'task':<6}{'tok/s':>8}{'speed-up':>10}{'accepted':>10}")
    for (server, kind, task), (rate, drafted, accepted) in table.items():
        plain = table[(server, "none", task)][0]
        share = f"{accepted / drafted:.2f}" if drafted else "-"
        print(f"{server:<14}{kind:<8}{task:<6}{rate:>8.1f}{rate / plain:>10.3f}{share:>10}")
    print("\nllama-box's speed-up / llama-server's")
    for kind in ("lookup", "draft", "weak"):
        for task in TASKS:
            ours = table[("llama-box", kind, task)][0] / table[("llama-box", "none", task)][0]
            theirs = (
                table[("llama-server", kind, task)][0] / table[("llama-server", "none", task)][0]
            )
            print(f"  {kind} {task}: x{ours:.3f} / x{theirs:.3f} = {ours / theirs:.3f}")


if __name__ == "__main__":
    main()

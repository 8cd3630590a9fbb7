"""Embeddings per second: llama-box against llama-server (built from the same llama.cpp by
bench/build_llama_server.sh), both serving all-MiniLM-L6-v2 (converted by the tests'
converter) with the same flags, one after another.

    .venv/bin/python bench/embeddings.py [--starts 3]

Loads: 256 short inputs in one request; 256 requests of one input from 8 concurrent
clients. Printed: inputs per second per server (median over the starts) and the ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
sys.path.append(str(HERE.parent))  # after bench/ itself: `bench` is bench.py
from llama_cpp_build import built_binary  # noqa: E402

from bench import Running  # noqa: E402
from tests.models import minilm  # noqa: E402

INPUTS = [
    f"Sentence {i}: the quick brown fox jumps over the lazy dog number {i}." for i in range(256)
]


async def one_request(url: str) -> float:
    async with httpx.AsyncClient(base_url=url, timeout=300) as client:
        await client.post("/v1/embeddings", json={"input": INPUTS[:8]})
        started = time.perf_counter()
        response = await client.post("/v1/embeddings", json={"input": INPUTS})
        response.raise_for_status()
        assert len(response.json()["data"]) == len(INPUTS)
        return len(INPUTS) / (time.perf_counter() - started)


async def concurrent(url: str, clients: int = 8) -> float:
    limits = httpx.Limits(max_connections=clients + 2)
    async with httpx.AsyncClient(base_url=url, timeout=300, limits=limits) as client:
        queue = list(INPUTS)

        async def worker() -> None:
            while queue:
                text = queue.pop()
                response = await client.post("/v1/embeddings", json={"input": text})
                response.raise_for_status()

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        return len(INPUTS) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--starts", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--parallel", type=int, default=8)
    args = parser.parse_args()
    options = argparse.Namespace(
        model=str(minilm.gguf_path()),
        ctx=4096,
        parallel=args.parallel,
        threads=args.threads,
        server_args="--embeddings",
        llama_server=built_binary(),
    )
    (HERE / "results").mkdir(exist_ok=True)
    rates: dict[tuple[str, str], list[float]] = {}
    for start in range(args.starts):
        for name in ("llama-box", "llama-server"):
            running = Running(name, options)
            try:
                for load, run in (("1 x 256", one_request), ("256 x 1, 8 clients", concurrent)):
                    rate = asyncio.run(run(running.url))
                    rates.setdefault((name, load), []).append(rate)
                    print(f"  start {start + 1} {name} {load}: {rate:.0f}/s", file=sys.stderr)
            finally:
                running.stop()
    print(
        f"\nall-MiniLM-L6-v2 F16, -c 4096 -np {args.parallel} -t {args.threads} --embeddings, "
        f"median of {args.starts} starts (inputs embedded per second)\n"
    )
    print(f"{'load':<22}{'llama-box':>11}{'llama-server':>14}{'ratio':>8}")
    for load in ("1 x 256", "256 x 1, 8 clients"):
        ours = statistics.median(rates[("llama-box", load)])
        theirs = statistics.median(rates[("llama-server", load)])
        print(f"{load:<22}{ours:>11.0f}{theirs:>14.0f}{ours / theirs:>8.3f}")


if __name__ == "__main__":
    main()

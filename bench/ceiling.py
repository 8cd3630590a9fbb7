"""llama.cpp's own ceiling for the streaming benchmark: ``llama-batched-bench`` (built from
the same vendored llama.cpp as llama-server, by bench/build_llama_server.sh) decoding the
same numbers of sequences on the same model and threads, without HTTP or sampling; then
each server's aggregate generation rate of the last ``bench.py`` run as a fraction of it.

    .venv/bin/python bench/ceiling.py [--results bench/results/latest.json] [--prompt 16]
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
from pathlib import Path

from llama_cpp_build import built_binary

HERE = Path(__file__).parent


def ceiling(settings: dict, prompt_tokens: int) -> dict[int, float]:
    """Generation tokens/s of llama-batched-bench at each concurrency of the run."""
    sequences = ",".join(str(c) for c in settings["concurrency"])
    command = [
        str(built_binary("llama-batched-bench")),
        "-m",
        settings["model"],
        "-c",
        str(settings["ctx"]),
    ]
    command += ["-b", "2048", "-ub", "512", "-t", str(settings["threads"])]
    command += ["-tb", str(settings["threads"]), "-npp", str(prompt_tokens)]
    command += ["-ntg", str(settings["max_tokens"]), "-npl", sequences]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    rates = {}
    for row in re.findall(r"^\|\s*\d+\s*\|.*$", output, re.MULTILINE):
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        rates[int(cells[2])] = float(cells[7])  # B, S_TG t/s
    return rates


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--results", type=Path, default=HERE / "results" / "latest.json")
    parser.add_argument("--prompt", type=int, default=16, help="prompt tokens per sequence")
    args = parser.parse_args()
    run = json.loads(args.results.read_text())
    rates = ceiling(run["settings"], args.prompt)
    print(f"{'server':18} {'c':>2} {'tok/s':>8} {'ceiling':>8} {'fraction':>9}")
    for result in run["results"]:
        c = result["concurrency"]
        top = rates[c]
        print(
            f"{result['server']:18} {c:>2} {result['tokens_per_second']:8.1f} {top:8.1f}"
            f" {result['tokens_per_second'] / top:9.3f}"
        )


if __name__ == "__main__":
    main()

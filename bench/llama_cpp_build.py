"""llama.cpp's own programs, built by bench/build_llama_server.sh from the sources
llama-cpp-python vendors (same commit, same options), into a cache outside the repo."""

from __future__ import annotations

import subprocess
from pathlib import Path

HERE = Path(__file__).resolve().parent


def built_binary(name: str = "llama-server") -> Path:
    """The path of ``llama-server`` or ``llama-batched-bench``, built on first use."""
    built = subprocess.run(
        [str(HERE / "build_llama_server.sh")], check=True, capture_output=True, text=True
    )
    return Path(built.stdout.split()[-1]).with_name(name)

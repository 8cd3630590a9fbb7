"""The repack probe's child process: load a model with repacking on, run the warm-up
batch (a real multi-token, two-sequence decode), exit 0. A native crash kills only this
process; the server sees the exit status. Usage: python -m llama_box_llamacpp.probe
MODEL THREADS"""

from __future__ import annotations

import sys

from llama_box_core.settings import Settings


def main(argv: list[str]) -> int:
    model_path, threads = argv[0], int(argv[1])
    from llama_box_llamacpp.model import LlamaCppModel

    settings = Settings(
        model=model_path, repack=True, ctx_size=1024, n_parallel=2, threads=threads, warmup=True
    )
    LlamaCppModel(model_path, settings).close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

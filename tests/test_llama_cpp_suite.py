"""The fast part of llama.cpp's own server tests against llama-box: every test that
llama-server passes on the same model (recorded in tests/llama_cpp_suite/) must pass, bar
the listed exceptions. The whole run, side by side with llama-server, is
``tests/llama_cpp_suite/run.py``."""

from __future__ import annotations

import json

import pytest

from tests.llama_cpp_suite import run

FAST_FILES = ["unit/test_tokenize.py", "unit/test_basic.py", "unit/test_security.py"]


@pytest.mark.slow
def test_llama_box_passes_what_llama_server_passes(gemma_path: str) -> None:
    outcomes = run.run_suite("llama-box", FAST_FILES, gemma_path)
    reference = json.loads(run.RECORDED.read_text())
    ran = {
        test
        for test in reference
        if test.split("::")[0] in {f[:-3].replace("/", ".") for f in FAST_FILES}
    }
    assert ran and ran <= set(outcomes), "the suite did not run the recorded tests"
    missing = run.regressions(outcomes, {t: reference[t] for t in ran})
    assert not missing, f"llama-server passes these, llama-box does not: {missing}"

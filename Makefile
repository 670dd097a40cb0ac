# The two commands: `make demo` and `make test`. Both create .venv and install ganrt first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
GANRT := $(VENV)/bin/ganrt
STAMP := $(VENV)/.ganrt-installed
DEMO_OUT ?= demo-out

.PHONY: install demo test lint gpu-check clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# The CPU build of torch: asked for by exact version first, so nothing pulls a CUDA build later.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[cpu,serve,dev,ray,triton]'
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(PY) -m ganrt.benchmarks.demo --out $(DEMO_OUT)

test: install
	$(PY) -m pytest -q

lint: install
	$(VENV)/bin/ruff check .

gpu-check: install
	$(PY) tools/gpu_check.py

clean:
	rm -rf $(VENV) $(DEMO_OUT) build dist *.egg-info

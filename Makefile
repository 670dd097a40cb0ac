# The two commands: `make demo` and `make test`. Both create .venv and install ganrt first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
GANRT := $(VENV)/bin/ganrt
STAMP := $(VENV)/.ganrt-installed
DEMO_OUT ?= demo-out
# The backend Python of `ganrt triton` (numpy < 2, the nvidia-pytriton wheel), beside $(VENV) where ganrt finds it.
# When it cannot be built, make goes on and the Triton tests skip, saying why (the last lines of pip's output).
TRITON_VENV ?= $(VENV)-triton
TRITON_STAMP := $(TRITON_VENV)/.ganrt-installed
TRITON_FAILED := $(TRITON_VENV).failed

.PHONY: install triton-env demo test lint gpu-check clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# The CPU build of torch: asked for by exact version first, so nothing pulls a CUDA build later.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[cpu,serve,dev,ray,triton]'
	touch $(STAMP)

install: $(STAMP)

$(TRITON_STAMP): pyproject.toml
	@rm -rf $(TRITON_VENV) $(TRITON_FAILED)
	@echo "building $(TRITON_VENV), the backend Python of ganrt triton"
	@( $(PYTHON) -m venv $(TRITON_VENV) && $(TRITON_VENV)/bin/python -m pip install -q --upgrade pip && \
	   $(TRITON_VENV)/bin/python -m pip install -q torch==2.13.0 && \
	   $(TRITON_VENV)/bin/python -m pip install -q -e '.[cpu,triton-server]' ) > $(TRITON_VENV).log 2>&1 \
	  && touch $(TRITON_STAMP) \
	  || { tail -n 5 $(TRITON_VENV).log > $(TRITON_FAILED); \
	       echo "$(TRITON_VENV) could not be built (see $(TRITON_FAILED)): the Triton tests will skip"; }

triton-env: $(TRITON_STAMP)

demo: install
	$(PY) -m ganrt.benchmarks.demo --out $(DEMO_OUT)

test: install triton-env
	$(PY) -m pytest -q

lint: install
	$(VENV)/bin/ruff check .

gpu-check: install
	$(PY) tools/gpu_check.py

clean:
	rm -rf $(VENV) $(TRITON_VENV) $(TRITON_VENV).log $(TRITON_FAILED) $(DEMO_OUT) build dist *.egg-info

# Two entry points for a fresh machine: `make demo` (the main job: a fedloop policy comparison) and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip install --disable-pip-version-check -q -c constraints.txt

.PHONY: demo test install bench instances lint clean paper paper-quick

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) -e ".[dev,plot,fed,flower]"
	touch $@

install: $(VENV)/.installed

demo: install
	$(VENV)/bin/fedloop compare --out runs/demo

# Two pytest workers (pytest-xdist): the long end-to-end tests (the quick report, the Flower deployments) mostly
# wait on subprocesses, so they overlap; `-n 0` runs in one process (e.g. `make test JOBS=0`).
JOBS ?= 2
test: install
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -n $(JOBS) --dist worksteal

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check alignsolve

bench: install
	$(PY) benchmarks/run_targets.py
	$(PY) benchmarks/run_solvers.py

# The report from the committed results (seconds); paper-quick re-runs every benchmark small first (minutes).
paper: install
	$(PY) paper/make_paper.py

paper-quick: install
	$(PY) paper/make_paper.py --quick

instances: install
	$(PY) datasets/instances/make_instances.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis .benchmarks paper/quick

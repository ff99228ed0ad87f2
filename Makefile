# Two set-up commands (see README): `make demo` and `make test`. Both create .venv first.
PY ?= python3
VENV ?= .venv
BIN = $(VENV)/bin

.PHONY: install demo test lint bench docs

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# the local CPU build of PyTorch; avoids multi-GB CUDA wheels on CPU machines
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[test,hf,speech,docs]"
	touch $@

demo: install
	$(BIN)/memlens demo --out demo-out

test: install
	# the layers contract in pyproject.toml (docs/architecture.md): no import runs upward
	$(BIN)/lint-imports
	# the documentation site, strictly: no broken link, anchor or API reference (docs/)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet -d "$$(mktemp -d)"
	$(BIN)/python -m pytest -q -ra

lint: install
	$(BIN)/ruff check src tests benchmarks experiments notebooks

docs: install
	# serve the documentation site locally (http://127.0.0.1:8000)
	$(BIN)/mkdocs serve

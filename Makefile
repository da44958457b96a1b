# The README's two commands: `make demo` and `make test`. Each creates .venv when missing.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck unit install clean protos bench

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[all,dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/fedge simulate --out runs/demo

lint: $(STAMP)
	$(BIN)/ruff check fedge tests benchmarks server clients
	$(BIN)/ruff format --check fedge tests benchmarks server clients

typecheck: $(STAMP)
	$(BIN)/mypy fedge server clients benchmarks

unit: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider

test: lint typecheck unit

protos: $(STAMP)
	$(BIN)/python scripts/gen_protos.py

bench: $(STAMP)
	for b in benchmarks/*.py; do $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) runs build *.egg-info

# The README's two commands: `make demo` and `make test`. Each creates .venv when missing.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck unit install browser clean protos bench lock

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[all,dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/fedge simulate --out runs/demo

lint: $(STAMP)
	$(BIN)/ruff check fedge tests benchmarks server clients
	$(BIN)/ruff format --check fedge tests benchmarks server clients

typecheck: $(STAMP)
	$(BIN)/mypy fedge server clients benchmarks

# The console's browser tests drive Debian's chromium (Playwright never downloads a browser).
# As root on Debian it is installed here; elsewhere those tests are skipped, saying why (-rs lists
# every skip and its reason), except under CI=true, where a missing browser fails them.
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 \
		&& apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } \
		|| echo "chromium is not installed: the console's browser tests will be skipped (under CI=true, fail)"

unit: $(STAMP) browser
	$(BIN)/python -m pytest -q -rs -p no:cacheprovider

test: lint typecheck unit

protos: $(STAMP)
	$(BIN)/python scripts/gen_protos.py

bench: $(STAMP)
	for b in $(filter-out benchmarks/__init__.py,$(wildcard benchmarks/*.py)); do \
		$(BIN)/python -m benchmarks.$$(basename $$b .py) || exit 1; done

lock: $(STAMP)
	{ grep '^#' constraints.txt; $(BIN)/python -m pip freeze --exclude-editable; } > constraints.txt.new
	mv constraints.txt.new constraints.txt

clean:
	rm -rf $(VENV) runs build *.egg-info

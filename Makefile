PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CONFIG ?= gateway.example.toml

.PHONY: run test lint bench clean browser postgresql

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@ $(VENV)/.installed

run: $(VENV)/.installed
	$(BIN)/compliance-gateway serve --config $(CONFIG)

test: $(VENV)/.installed-test browser postgresql
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

# Debian's Chromium for the review page's browser test; where it cannot be installed (not
# root, no apt), the test skips and says why.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	      || echo "chromium could not be installed: the browser test will skip"; \
	  else echo "not root or no apt-get: chromium not installed, the browser test will skip"; fi; }

# Debian's PostgreSQL server binaries for the PostgreSQL store tests (the tests start their
# own throwaway server); where they cannot be installed, those tests skip and say why.
postgresql:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null) \
	      || echo "*** postgresql could not be installed: the PostgreSQL tests will SKIP ***"; \
	  else echo "*** not root or no apt-get: PostgreSQL not installed, its tests will SKIP ***"; fi; }

bench: $(VENV)/.installed-test
	cd bench && ../$(BIN)/python run.py

lint: $(VENV)/.installed-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) var
